// host/cpu/variable.ts against a scripted host and Exchange: P ranks in this process, frames
// delivered on a timer and recorded. Pins what a group of CpuGroups cannot see: the name and
// options each collective hands its group, exactly which frames go out (a header to every peer, a
// payload only for a part that has rows), headers read from anywhere in a larger buffer, a header
// that is only a prefix of the expected one, an unknown dtype and a row of several dims in the
// disagreement message; and the refusals cpu_variable does not reach.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { allGatherv, allToAllv, reduceScatterv, type VariableHost } from '../../host/cpu/variable.js';
import type { Exchange } from '../../host/cpu/exchange.js';
import { tensor, type CpuTensor } from '../../host/core/tensor.js';
import { isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

const HEADER = 0;
const PAYLOAD = 1;
type Frame = { from: number; to: number; slot: number; bytes: number };

/** One operation: a host and an Exchange per rank; `edit` rewrites a frame on its way. */
class World {
  readonly hosts: Host[];
  readonly frames: Frame[] = [];
  edit?: (f: Frame, data: Uint8Array) => Uint8Array;
  constructor(readonly P: number) {
    this.hosts = [...Array(P).keys()].map((r) => new Host(this, r));
  }
  payloads(from: number): number[] {
    return this.frames.filter((f) => f.from === from && f.slot === PAYLOAD).map((f) => f.to).sort();
  }
  headers(from: number): number[] {
    return this.frames.filter((f) => f.from === from && f.slot === HEADER).map((f) => f.to).sort();
  }
}

class Host implements VariableHost {
  readonly calls: [string, unknown][] = [];
  private arrived = new Map<string, Uint8Array>();
  private posted = new Map<string, (b: Uint8Array) => void>();
  constructor(readonly world: World, readonly rank: number) {}
  get worldSize(): number { return this.world.P; }

  runVariable<T>(what: string, opts: unknown, prepare: () => (ex: Exchange) => Promise<T>): Promise<T> {
    this.calls.push([what, opts]);
    try {
      return prepare()(this as unknown as Exchange);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  send(peer: number, slot: number, payload: Uint8Array): void {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.world.P || peer === this.rank) throw new Error(`rank ${this.rank} sent to ${peer}`);
    const f = { from: this.rank, to: peer, slot, bytes: payload.byteLength };
    this.world.frames.push(f);
    const data = payload.slice();
    setTimeout(() => this.world.hosts[peer].arrive(this.rank, slot, this.world.edit ? this.world.edit(f, data) : data), 0);
  }

  private arrive(from: number, slot: number, data: Uint8Array): void {
    const key = `${from}:${slot}`;
    const p = this.posted.get(key);
    if (p) { this.posted.delete(key); p(data); } else this.arrived.set(key, data);
  }

  recv(peer: number, slot: number, dest?: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const take = (data: Uint8Array) => {
        if (dest && dest.byteLength !== data.byteLength) { reject(new Error(`slot ${slot} from ${peer}: ${data.byteLength} bytes, expected ${dest.byteLength}`)); return; }
        if (dest) dest.set(data);
        resolve(dest ?? data);
      };
      const key = `${peer}:${slot}`;
      const early = this.arrived.get(key);
      if (early) { this.arrived.delete(key); take(early); } else this.posted.set(key, take);
    });
  }
}

/** rows × 2 float32 values: rank r's row i is [100r + i, -(100r + i)]. */
const rowsOf = (r: number, n: number): CpuTensor => {
  const v = Array.from({ length: n }, (_, i) => [100 * r + i, -(100 * r + i)]).flat();
  return tensor(Float32Array.from(v), { shape: [n, 2] });
};

/** Settles within `ms` or fails (a mutant that stops the exchange must not hang the file). */
function within<T>(p: Promise<T>, ms = 2000): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`not settled within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

const settled = <T>(ps: Promise<T>[]) => within(Promise.all(ps.map((p) => p.then((v) => v, (e: GroupcommError) => e))));

test('each collective runs under its own name with the caller\'s options; a header to every peer, a payload only for a part with rows', async () => {
  const P = 3;
  let w = new World(P);
  const sizes = [2, 0, 3];
  const opts = sizes.map(() => ({ sizes, timeoutMs: 1234 }));
  const got = await within(Promise.all(w.hosts.map((h, r) => allGatherv(h, rowsOf(r, sizes[r]), opts[r]))));
  for (const t of got) assert.equal([...t.data], [...rowsOf(0, 2).data, ...rowsOf(2, 3).data]);
  w.hosts.forEach((h, r) => assert.equal(h.calls, [['allGatherv', opts[r]]]));
  assert.equal([0, 1, 2].map((r) => w.headers(r)), [[1, 2], [0, 2], [0, 1]]);
  assert.equal([0, 1, 2].map((r) => w.payloads(r)), [[1, 2], [], [0, 1]], 'rank 1 has no rows: no payload');

  w = new World(P);
  const rs = [1, 0, 2];
  const sums = await within(Promise.all(w.hosts.map((h, r) => reduceScatterv(h, rowsOf(r, 3), { sizes: rs }))));
  w.hosts.forEach((h) => assert.equal(h.calls, [['reduceScatterv', { sizes: rs }]]));
  assert.equal(sums.map((t) => t.shape), [[1, 2], [0, 2], [2, 2]]);
  assert.equal([...sums[2].data], [303, -303, 306, -306]);
  assert.equal([0, 1, 2].map((r) => w.payloads(r)), [[2], [0, 2], [0]], 'no payload for rank 1 (no rows)');
  assert.equal([0, 1, 2].map((r) => w.headers(r)), [[1, 2], [0, 2], [0, 1]]);

  w = new World(P);
  const ins = [[1, 0, 2], [2, 1, 0], [0, 2, 1]];
  const outs = ins.map((_, r) => ins.map((row) => row[r]));
  await within(Promise.all(w.hosts.map((h, r) => allToAllv(h, rowsOf(r, 3), { inputSplits: ins[r], outputSplits: outs[r] }))));
  w.hosts.forEach((h, r) => assert.equal(h.calls, [['allToAll', { inputSplits: ins[r], outputSplits: outs[r] }]]));
  assert.equal([0, 1, 2].map((r) => w.payloads(r)), [[2], [0], [1]]);
  assert.equal([0, 1, 2].map((r) => w.headers(r)), [[1, 2], [0, 2], [0, 1]]);
});

test('headers: read from inside a larger buffer; a prefix of the expected one, an unknown dtype, a row of two dims are named', async () => {
  const P = 3;
  const x = (r: number, rows: number) => tensor(new Float32Array(rows * 6), { shape: [rows, 2, 3] });
  // Every header arrives at byte 8 of a larger buffer: the decoded views are still right.
  let w = new World(P);
  w.edit = (f, d) => {
    if (f.slot !== HEADER) return d;
    const big = new Uint8Array(d.byteLength + 24).fill(0x7f);
    big.set(d, 8);
    return big.subarray(8, 8 + d.byteLength);
  };
  const views = [[1, 1, 1], [1, 1, 1], [2, 0, 1]];
  let res = await settled(w.hosts.map((h, r) => allGatherv(h, x(r, views[r][r]), { sizes: views[r] })));
  const e0 = res[0] as GroupcommError;
  assert.ok(isGroupcommError(e0, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), String(e0));
  assert.equal([e0.rank, e0.peerRank], [0, 2]);
  assert.is(e0.message, 'allGatherv: ranks disagree: rank 2 has float32 rows of [2, 3], sizes [2, 0, 1], rank 0 expects float32 rows of [2, 3], sizes [1, 1, 1]');

  // Rank 2's header cut to the length of a prefix of ours (its last size dropped), then an unknown dtype.
  for (const [why, change, words] of [
    ['a prefix', (d: Uint8Array) => d.subarray(0, d.byteLength - 8), 'rank 2 has float32 rows of [2, 3], sizes [1, 1], rank 0 expects'],
    ['dtype 99', (d: Uint8Array) => { const f = new Float64Array(d.slice().buffer); f[0] = 99; return new Uint8Array(f.buffer); }, 'rank 2 has ? rows of [2, 3], sizes [1, 1, 1], rank 0 expects float32'],
  ] as const) {
    w = new World(P);
    w.edit = (f, d) => (f.from === 2 && f.slot === HEADER ? change(d) : d);
    res = await settled(w.hosts.map((h, r) => allGatherv(h, x(r, 1), { sizes: [1, 1, 1] })));
    for (const r of [0, 1]) {
      const e = res[r] as GroupcommError;
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), `${why} rank ${r}: ${e}`);
      assert.equal([e.rank, e.peerRank], [r, 2], why);
      assert.match(e.message, words.replace('rank 0', `rank ${r}`), why);
    }
    assert.ok(!(res[2] instanceof Error), `${why}: rank 2 itself agrees`);
  }
});

/** Rank 0 of a World of 3 refuses the call synchronously with INVALID_ARGUMENT, the message starting with `prefix`. */
async function refused(call: (h: Host) => Promise<unknown>, prefix: string, what: string): Promise<void> {
  const w = new World(3);
  const e = await call(w.hosts[0]).then(() => undefined, (x: unknown) => x);
  assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), `${what}: ${e}`);
  assert.ok((e as Error).message.startsWith(prefix), `${what}: '${(e as Error).message}'`);
  assert.is(w.frames.length, 0, `${what}: nothing sent`);
}

test('refusals: no options, null, the sizes\' and splits\' names, out not a tensor, out of a shorter shape, out being the input', async () => {
  const ok = rowsOf(0, 2);
  await refused((h) => allGatherv(h, ok, undefined as never), 'allGatherv sizes: expected 3 integers >= 0 (one per rank), got undefined', 'no options');
  await refused((h) => reduceScatterv(h, ok, undefined as never), 'reduceScatterv sizes: expected 3 integers', 'no options');
  await refused((h) => allGatherv(h, null as never, { sizes: [2, 0, 0] }), 'allGatherv: expected a CPU tensor', 'null');
  await refused((h) => allGatherv(h, 5 as never, { sizes: [2, 0, 0] }), 'allGatherv: expected a CPU tensor', 'a number');
  await refused((h) => reduceScatterv(h, ok, { sizes: [2, 0] }), 'reduceScatterv sizes: expected 3 integers >= 0', 'sizes');
  await refused((h) => allToAllv(h, ok, { inputSplits: [2, 0] }), 'allToAll inputSplits: expected 3 integers >= 0', 'inputSplits');
  await refused((h) => allGatherv(h, ok, { sizes: [2, 0, 0], out: {} as never }), 'allGatherv out: expected a CPU tensor', 'out not a tensor');
  await refused((h) => allGatherv(h, ok, { sizes: [2, 0, 0], out: tensor(new Float32Array(2), { shape: [2] }) }), 'allGatherv: out is float32[2], expected float32[2, 2]', 'out shape shorter');
  await refused((h) => allGatherv(h, ok, { sizes: [2, 0, 0], out: ok }), 'allGatherv', 'out is the input');
  await refused((h) => reduceScatterv(h, ok, { sizes: [2, 0, 0], out: ok }), 'reduceScatterv', 'out is the input');
});

test('bool: sum and max are "any", prod and min "all", over uneven blocks (only avg is refused)', async () => {
  const P = 3;
  const b = (r: number) => tensor(Uint8Array.from([r === 0 ? 1 : 0, 1, r === 2 ? 0 : 1]), { dtype: 'bool', shape: [3] });
  for (const [op, want] of [['sum', [1, 1, 1]], ['max', [1, 1, 1]], ['prod', [0, 1, 0]], ['min', [0, 1, 0]]] as const) {
    const w = new World(P);
    const got = await within(Promise.all(w.hosts.map((h, r) => reduceScatterv(h, b(r), { sizes: [3, 0, 0], op }))));
    assert.equal([...got[0].data], want, op);
  }
});

test.run();
