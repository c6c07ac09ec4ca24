/**
 * The CPU group's variable-size collectives (host/cpu/variable.ts) and scatter called on the
 * group itself, 3 ranks in this process over real sockets: exact results with uneven sizes (a
 * rank with none included) for every reduce op, and every refusal — rejected on the calling rank
 * before anything is queued, naming that rank — after which the group still runs the next call on
 * every rank.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { groupForFile } from '../helpers/cpu_groups.js';
import { premulSum } from '../../host/core/premul.js';
import { tensor, type CpuTensor } from '../../host/core/tensor.js';
import { isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

const P = 3;
const { gs } = groupForFile(P, { groupName: 'cpu-variable', timeoutMs: 10_000 });

/** rows × 2 float32 values: rank r's row i is [100r + i, -(100r + i)]. */
const rowsOf = (r: number, n: number, dtype: 'float32' | 'int32' = 'float32'): CpuTensor => {
  const v = Array.from({ length: n }, (_, i) => [100 * r + i, -(100 * r + i)]).flat();
  return tensor(dtype === 'int32' ? Int32Array.from(v) : Float32Array.from(v), { shape: [n, 2] });
};

/** Refused on rank 0 alone: INVALID_ARGUMENT naming rank 0, the message starting with `prefix`. */
async function refused(p: Promise<unknown>, prefix: string, what: string): Promise<GroupcommError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), `${what}: ${e}`);
  assert.is((e as GroupcommError).rank, 0, `${what}: names the calling rank (${(e as Error).message})`);
  assert.ok((e as Error).message.startsWith(prefix), `${what}: '${(e as Error).message}'`);
  return e as GroupcommError;
}

test('allGatherv: uneven sizes (one rank with none) in rank order, into out too', async () => {
  const sizes = [2, 0, 3];
  const got = await Promise.all(gs.map((g, r) => g.allGatherv(rowsOf(r, sizes[r]), { sizes })));
  const want = [...rowsOf(0, 2).data, ...rowsOf(2, 3).data];
  for (const t of got) {
    assert.equal(t.shape, [5, 2]);
    assert.equal([...t.data], want);
  }
  const outs = gs.map(() => tensor(new Float32Array(10), { shape: [5, 2] }));
  const got2 = await Promise.all(gs.map((g, r) => g.allGatherv(rowsOf(r, sizes[r]), { sizes, out: outs[r] })));
  got2.forEach((t, r) => { assert.is(t, outs[r]); assert.equal([...t.data], want); });
});

test('reduceScatterv: sum, max, avg and premulSum over uneven blocks, exact', async () => {
  const sizes = [1, 2, 0];
  const inputs = gs.map((_, r) => rowsOf(r, 3, 'int32'));
  const col = (i: number, f: (vs: number[]) => number) => [f(inputs.map((t) => t.data[2 * i] as number)), f(inputs.map((t) => t.data[2 * i + 1] as number))];
  const sum = (vs: number[]) => vs.reduce((a, b) => a + b, 0);
  const cases: [string, unknown, (vs: number[]) => number][] = [
    ['sum', 'sum', sum],
    ['max', 'max', (vs) => Math.max(...vs)],
    ['avg', 'avg', (vs) => Math.trunc(sum(vs) / P)],
    ['premulSum(3)', premulSum(3), (vs) => 3 * sum(vs)],
  ];
  for (const [name, op, f] of cases) {
    const got = await Promise.all(gs.map((g, r) => g.reduceScatterv(inputs[r], { sizes, op: op as 'sum' })));
    assert.equal(got.map((t) => t.shape), [[1, 2], [2, 2], [0, 2]], name);
    assert.equal([...got[0].data], col(0, f), `${name} rank 0`);
    assert.equal([...got[1].data], [...col(1, f), ...col(2, f)], `${name} rank 1`);
    assert.is(got[2].data.length, 0, name);
  }
  // float avg divides exactly; this rank's input is left as it was.
  const f = gs.map((_, r) => rowsOf(r, 3));
  const got = await Promise.all(gs.map((g, r) => g.reduceScatterv(f[r], { sizes: [3, 0, 0], op: 'avg' })));
  assert.equal([...got[0].data], [100, -100, 101, -101, 102, -102]);
  assert.equal([...f[1].data], [...rowsOf(1, 3).data]);
});

test('allToAll with splits: uneven blocks both ways; outputSplits alone means equal input blocks', async () => {
  // ins[r][p]: rows rank r sends rank p; outs[r][p] = ins[p][r].
  const ins = [[1, 0, 2], [2, 1, 0], [0, 2, 1]];
  const outs = ins.map((_, r) => ins.map((row) => row[r]));
  const got = await Promise.all(gs.map((g, r) => g.allToAll(rowsOf(r, 3), { inputSplits: ins[r], outputSplits: outs[r] })));
  for (let r = 0; r < P; r++) {
    const want: number[] = [];
    for (let p = 0; p < P; p++) {
      const from = ins[p].slice(0, r).reduce((a, b) => a + b, 0);
      want.push(...[...(rowsOf(p, 3).data as Float32Array)].slice(2 * from, 2 * (from + ins[p][r])));
    }
    assert.equal([...got[r].data], want, `rank ${r}`);
  }
  const eq = await Promise.all(gs.map((g, r) => g.allToAll(rowsOf(r, 3), { outputSplits: [1, 1, 1] })));
  assert.equal([...eq[2].data], [2, -2, 102, -102, 202, -202]);
});

test('every refusal rejects on the calling rank alone, names it, and costs the group nothing', async () => {
  const g = gs[0];
  const ok = rowsOf(0, 2);
  const bool = tensor(new Uint8Array(6), { dtype: 'bool', shape: [3, 2] });
  await refused(g.allGatherv(ok, { sizes: [1, 1, 1] }), "allGatherv: rank 0's input has 2 rows (dim 0), sizes[0] says 1", 'rows vs sizes');
  await refused(g.allGatherv(undefined as never, { sizes: [2, 1, 1] }), 'allGatherv: expected a CPU tensor', 'no tensor');
  await refused(g.allGatherv({ ...ok, shape: [3, 2] }, { sizes: [3, 1, 1] }), 'allGatherv: shape [3, 2] of float32 needs 24 bytes, data has 16', 'short data');
  await refused(g.allGatherv(tensor(new Float32Array(1), { shape: [] }), { sizes: [1, 1, 1] }), 'allGatherv: a 0-d tensor has no rows to split', '0-d');
  for (const sizes of [[2, 1], [2, -1, 0], [2, 1.5, 0], undefined]) {
    await refused(g.allGatherv(ok, { sizes } as never), 'allGatherv sizes: expected 3 integers >= 0 (one per rank)', `sizes ${JSON.stringify(sizes)}`);
  }
  await refused(g.allGatherv(ok, { sizes: [2, 1, 1], out: tensor(new Float32Array(6), { shape: [3, 2] }) }), 'allGatherv: out is float32[3, 2], expected float32[4, 2]', 'out shape');
  await refused(g.allGatherv(ok, { sizes: [2, 1, 1], out: tensor(new Int32Array(8), { shape: [4, 2] }) }), 'allGatherv: out is int32[4, 2]', 'out dtype');
  const big = tensor(new Float32Array(8), { shape: [4, 2] });
  await refused(g.allGatherv(tensor(big.data.subarray(0, 4), { shape: [2, 2] }), { sizes: [2, 1, 1], out: big }), 'allGatherv', 'out overlapping the input');
  await refused(g.reduceScatterv(ok, { sizes: [1, 0, 0] }), "reduceScatterv: rank 0's input has 2 rows (dim 0), the sizes add up to 1", 'rows vs sum');
  await refused(g.reduceScatterv(ok, { sizes: [2, 0, 0], op: 'median' as never }), "reduceScatterv: unknown reduce op 'median'", 'unknown op');
  await refused(g.reduceScatterv(bool, { sizes: [3, 0, 0], op: 'avg' }), 'reduceScatterv: avg is not defined for bool', 'bool avg');
  await refused(g.reduceScatterv(bool, { sizes: [3, 0, 0], op: premulSum(2) }), 'reduceScatterv: premulSum is not defined for bool', 'bool premulSum');
  await refused(g.reduceScatterv(ok, { sizes: [2, 0, 0], out: tensor(new Float32Array(2), { shape: [1, 2] }) }), 'reduceScatterv: out is float32[1, 2], expected float32[2, 2]', 'out shape');
  await refused(g.allToAll(ok, { inputSplits: [1, 0, 0] }), "allToAll: rank 0's input has 2 rows (dim 0), inputSplits add up to 1", 'inputSplits sum');
  await refused(g.allToAll(ok, { inputSplits: [1, 1, 0], outputSplits: [2, 0, 0] }), 'allToAll: rank 0 sends itself 1 rows (inputSplits) but expects 2 (outputSplits)', 'self block');
  await refused(g.allToAll(ok, { inputSplits: [2, 0, 0] }), 'allToAll: output: dim 0 has 2 rows, not divisible by the world size 3; pass splits', 'outputs by default');
  await refused(g.allToAll(ok, { outputSplits: [2, 0, 0] }), 'allToAll: input: dim 0 has 2 rows, not divisible by the world size 3; pass splits', 'inputs by default');
  await refused(g.allToAll(ok, { inputSplits: [2, 0, 0], outputSplits: [2, 0] }), 'allToAll outputSplits: expected 3 integers >= 0', 'outputSplits length');
  // Nothing was queued or numbered: every rank's next call pairs up and is right.
  const sizes = [1, 1, 1];
  const got = await Promise.all(gs.map((gr, r) => gr.allGatherv(rowsOf(r, 1), { sizes })));
  for (const t of got) assert.equal([...t.data], [0, -0, 100, -100, 200, -200]);
});

test('scatter from each root: every rank gets its block (into its out); refusals name the rank', async () => {
  for (let src = 0; src < P; src++) {
    const outs = gs.map(() => tensor(new Float32Array(4), { shape: [2, 2] }));
    const input = rowsOf(src, 2 * P);
    const got = await Promise.all(gs.map((g, r) => g.scatter(r === src ? input : undefined, { src, out: outs[r] })));
    got.forEach((t, r) => {
      assert.is(t, outs[r], `src ${src} rank ${r}: into out`);
      assert.equal([...t.data], [...(input.data as Float32Array)].slice(4 * r, 4 * (r + 1)), `src ${src} rank ${r}`);
    });
  }
  const out = tensor(new Float32Array(4), { shape: [2, 2] });
  await refused(gs[0].scatter(rowsOf(0, 5), { src: 0, out }), 'scatter: input is float32[5, 2], expected float32[6, 2] for out float32[2, 2]', 'input shape');
  await refused(gs[0].scatter(rowsOf(0, 6), { src: 3, out }), 'scatter src', 'src past the end');
  await refused(gs[0].scatter(rowsOf(0, 6), { src: 0, out: undefined as never }), 'scatter out: expected a CPU tensor', 'no out');
  await refused(gs[0].reduceScatter(rowsOf(0, 2)), 'reduceScatter: dim 0 of [2, 2] must be a multiple of the world size 3', 'reduceScatter rows');
  await refused(gs[0].allToAll(rowsOf(0, 2)), 'allToAll: dim 0 of [2, 2] must be a multiple of the world size 3', 'allToAll rows');
  const e = (() => { try { gs[0].transportTo(3); } catch (x) { return x as GroupcommError; } })();
  assert.equal([e?.code, e?.rank], ['ERR_GROUPCOMM_INVALID_ARGUMENT', 0]);
  const sums = await Promise.all(gs.map((g) => g.allReduce(tensor(Float32Array.from([1])))));
  for (const t of sums) assert.equal([...t.data], [3]);
});

test('send/recv of different sizes: the receiver fails with PROTOCOL naming itself and the sender, posted first or not; the pair goes on', async () => {
  const check = (e: GroupcommError | undefined, got: number, want: number, what: string) => {
    assert.is(e?.code, 'ERR_GROUPCOMM_PROTOCOL', `${what}: ${e}`);
    assert.equal([e!.rank, e!.peerRank], [1, 0], what);
    assert.match(e!.message, `from rank 0 has ${got} bytes, expected ${want}: the ranks called different collectives or sizes`, what);
  };
  // The receive is waiting when the frame comes.
  const [e1] = await Promise.all([
    gs[1].recv(tensor(new Float32Array(8)), 0).then(() => undefined, (e: GroupcommError) => e),
    gs[0].send(tensor(Float32Array.from([1, 2, 3, 4])), 1),
  ]);
  check(e1, 16, 32, 'posted first');
  // The frame came first (kept for a receive not yet made).
  await gs[0].send(tensor(Float32Array.from([1, 2, 3, 4])), 1, { tag: 3 });
  await new Promise((r) => setTimeout(r, 50));
  check(await gs[1].recv(tensor(new Float32Array(2)), 0, { tag: 3 }).then(() => undefined, (e: GroupcommError) => e), 16, 8, 'frame first');
  const [got] = await Promise.all([gs[1].recv(tensor(new Float32Array(2)), 0), gs[0].send(tensor(Float32Array.from([5, 6])), 1)]);
  assert.equal([...got.data], [5, 6]);
});

test('ranks that disagree on the sizes: each fails naming the peer and both views, and the group goes on', async () => {
  const views = [[1, 1, 1], [1, 1, 1], [2, 0, 1]];
  const res = await Promise.all(gs.map((g, r) => g.allGatherv(rowsOf(r, 1), { sizes: views[r] }).then(() => undefined, (e: GroupcommError) => e)));
  for (const r of [0, 1]) {
    const e = res[r]!;
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), `rank ${r}: ${e}`);
    assert.equal([e.rank, e.peerRank], [r, 2]);
    assert.is(e.message, `allGatherv: ranks disagree: rank 2 has float32 rows of [2], sizes [2, 0, 1], rank ${r} expects float32 rows of [2], sizes [1, 1, 1]`);
  }
  assert.equal([res[2]?.rank, res[2]?.peerRank !== undefined], [2, true]);
  const sums = await Promise.all(gs.map((g) => g.allReduce(tensor(Float32Array.from([1, 2])))));
  for (const t of sums) assert.equal([...t.data], [3, 6]);
});

test.run();
