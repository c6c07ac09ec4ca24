/**
 * What a tensor dict puts on its channels (host/coordinator/dict.ts), seen through a recording
 * DictIo instead of real groups: which CPU tensors ride in the frame (GROUPCOMM_INLINE_CPU_BYTES,
 * at and past the limit), the one packed buffer (its size, its 8-aligned offsets, which tensors
 * it holds: 2 or more of 1..PACK_CPU_MAX_BYTES bytes each) and the tensors moved alone, in dict
 * order. The pack layout is part of the protocol: sender and receiver derive it independently,
 * so a change on one side only would make builds disagree. Also: a device tensor landing on the
 * receiver's device of the same type (and refused, naming its key, for another type), and the
 * tensors of a receive that fails handed back to `free`.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PACK_CPU_MAX_BYTES, receiveDict, sendDict, type DictIo, type Direction } from '../../host/coordinator/dict.js';
import { Deadline } from '../../host/base/deadline.js';
import { setting } from '../../host/base/config.js';
import { bytesOf, empty, isCpu, tensor, type CpuTensor, type Tensor } from '../../host/core/tensor.js';

interface Op { op: string; peer: number; bytes: Uint8Array }
interface FakeData { nbytes: number; bytes: Uint8Array }

/** A device tensor of a made-up type: its "memory" is a byte array the channel reads and fills. */
const dev = (device: string, vals: number[]): Tensor =>
  ({ dtype: 'uint8', shape: [vals.length], device, data: { nbytes: vals.length, bytes: Uint8Array.from(vals) } as FakeData }) as unknown as Tensor;
const raw = (t: Tensor): Uint8Array => (isCpu(t) ? bytesOf(t) : (t.data as unknown as FakeData).bytes);
const deadline = () => new Deadline(10_000, undefined, 'test');
const ramp = (n: number, k: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + k) % 251);
/** Byte-for-byte equality (large arrays: uvu's deep diff of a million elements is slow). */
const same = (a: Uint8Array, b: Uint8Array, msg?: string) => assert.ok(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b), msg ?? `bytes differ (${a.byteLength} vs ${b.byteLength})`);

/** The sending side: records the frame, every channel operation (a copy of its bytes) and the labels asked for. */
function sender() {
  const frames: unknown[] = [];
  const ops: Op[] = [];
  const labels: string[] = [];
  const ch = {
    broadcast: async (t: Tensor, o: { src: number }) => { ops.push({ op: 'broadcast', peer: o.src, bytes: raw(t).slice() }); return t; },
    send: async (t: Tensor, peer: number) => { ops.push({ op: 'send', peer, bytes: raw(t).slice() }); },
  };
  const io: DictIo = {
    pg: { sendObj: async (obj: unknown) => { frames.push(obj); } } as never,
    broadcastObj: async (obj: unknown) => { frames.push(obj); return obj; },
    device: 'hpu:0',
    channel: (_t, what) => { labels.push(what); return ch as never; },
    empty: () => { throw new Error('the sender allocates nothing'); },
    free: () => { throw new Error('the sender frees nothing'); },
  };
  return { io, frames, ops, labels };
}

/** The receiving side: hands out `frame`, fills each received tensor from `ops` in order (sizes must match). */
function receiver(frame: unknown, ops: Op[], device: string, failAt = -1) {
  const queue = [...ops];
  const got: Op[] = [];
  const labels: string[] = [];
  const freed: Tensor[] = [];
  const allocated: { device: string; shape: number[] }[] = [];
  const fill = async (t: Tensor, op: string, peer: number) => {
    if (got.length === failAt) throw new Error('link down');
    const next = queue.shift();
    if (!next) throw new Error('nothing more was sent');
    const dst = raw(t);
    assert.is(dst.byteLength, next.bytes.byteLength, 'receive size = send size');
    dst.set(next.bytes);
    got.push({ op, peer, bytes: dst.slice() });
  };
  const ch = {
    broadcast: async (t: Tensor, o: { src: number; out: Tensor }) => { assert.is(o.out, t); await fill(t, 'broadcast', o.src); return t; },
    recv: async (t: Tensor, peer: number) => { await fill(t, 'recv', peer); },
  };
  const io: DictIo = {
    pg: { recvObj: async () => frame } as never,
    broadcastObj: async (obj: unknown) => { assert.is(obj, undefined); return frame; },
    device,
    channel: (_t, what) => { labels.push(what); return ch as never; },
    empty: (shape, dtype, d) => {
      allocated.push({ device: d, shape });
      if (d === 'cpu') return empty(shape, dtype);
      const n = shape.reduce((a, b) => a * b, 1);
      return { dtype, shape, device: d, data: { nbytes: n, bytes: new Uint8Array(n) } } as unknown as Tensor;
    },
    free: (t) => { freed.push(t); },
  };
  return { io, got, labels, freed, allocated, left: () => queue.length };
}

const directions: Direction[] = [{ kind: 'broadcast', peer: 1 }, { kind: 'p2p', peer: 1 }];
const sizes = (ops: Op[]) => ops.map((o) => o.bytes.byteLength);

async function roundTrip(dict: Record<string, unknown>, dir: Direction, recvDevice = 'hpu:3') {
  const s = sender();
  await sendDict(s.io, dict, dir, deadline());
  assert.is(s.frames.length, 1, 'one metadata frame');
  const r = receiver(s.frames[0], s.ops, recvDevice);
  const out = await receiveDict(r.io, dir, deadline());
  assert.is(r.left(), 0, 'the receiver took every operation the sender made');
  for (const [i, o] of s.ops.entries()) {
    assert.is(o.op, dir.kind === 'broadcast' ? 'broadcast' : 'send');
    assert.is(o.peer, 1);
    assert.is(r.got[i].op, dir.kind === 'broadcast' ? 'broadcast' : 'recv');
  }
  // Every tensor's channel is asked for under the dict's label (a refusal names it).
  for (const l of [...s.labels, ...r.labels]) assert.is(l, 'tensor dict');
  return { s, r, out };
}

for (const dir of directions) {
  test(`${dir.kind}: small CPU tensors ride in the frame; a device tensor and other values do not count toward it`, async () => {
    const dict = { a: tensor(Float32Array.of(1, 2)), n: null, s: 'hi', b: tensor(Int32Array.of(3)), d: dev('hpu:0', [9, 8]) };
    const { s, out, r } = await roundTrip(dict, dir);
    assert.equal(sizes(s.ops), [2], 'only the device tensor moves on a channel');
    assert.is(s.labels.length, 4, 'each of the 3 tensors checked once up front, the moved one again');
    assert.equal([...(out.a as CpuTensor).data], [1, 2]);
    assert.equal([...(out.b as CpuTensor).data], [3]);
    assert.is(out.n, null);
    assert.is(out.s, 'hi');
    assert.is((out.d as Tensor).device, 'hpu:3', 'a device tensor lands on the receiver\'s device of that type');
    assert.equal([...raw(out.d as Tensor)], [9, 8]);
    assert.equal(r.allocated, [{ device: 'hpu:3', shape: [2] }]);
  });

  test(`${dir.kind}: CPU tensors of exactly the inline limit ride in the frame; one byte more are packed`, async () => {
    const limit = setting('GROUPCOMM_INLINE_CPU_BYTES');
    assert.ok(limit > 8, `GROUPCOMM_INLINE_CPU_BYTES=${limit}`);
    const at = await roundTrip({ a: tensor(ramp(limit, 1)) }, dir);
    assert.equal(sizes(at.s.ops), [], 'at the limit: inline');
    same(raw(at.out.a as Tensor), ramp(limit, 1));
    const past = await roundTrip({ a: tensor(ramp(limit, 1)), b: tensor(ramp(1, 2)) }, dir);
    // Two packable tensors: one pack, the second at the 8-aligned offset after the first.
    const packed = Math.ceil(limit / 8) * 8 + 8;
    assert.equal(sizes(past.s.ops), [packed]);
    same(past.s.ops[0].bytes.subarray(0, limit), ramp(limit, 1));
    assert.is(past.s.ops[0].bytes[Math.ceil(limit / 8) * 8], ramp(1, 2)[0]);
    same(raw(past.out.a as Tensor), ramp(limit, 1));
    same(raw(past.out.b as Tensor), ramp(1, 2));
  });

  test(`${dir.kind}: the pack holds CPU tensors of 1..PACK_CPU_MAX_BYTES bytes at 8-aligned offsets; larger and device tensors move alone, in dict order`, async () => {
    const dict = {
      i8: tensor(Int8Array.of(-1, 2, -3)),
      f64: tensor(Float64Array.of(1.5, 2.5, 3.5, 4.5, 5.5)),
      u8: tensor(ramp(40_001, 3)),
      none: tensor(new Float32Array(0), { shape: [0, 3] }),
      exact: tensor(ramp(PACK_CPU_MAX_BYTES, 4)),
      big: tensor(ramp(PACK_CPU_MAX_BYTES + 1, 5)),
      d: dev('hpu:0', [7, 6, 5]),
    };
    const { s, out } = await roundTrip(dict, dir);
    const offsets = [0, 8, 48, 48 + 40_008];
    assert.equal(sizes(s.ops), [offsets[3] + PACK_CPU_MAX_BYTES, PACK_CPU_MAX_BYTES + 1, 3]);
    const pack = s.ops[0].bytes;
    assert.equal([...pack.subarray(0, 8)], [255, 2, 253, 0, 0, 0, 0, 0], 'i8 at 0, zero padding to 8');
    assert.equal([...new Float64Array(pack.slice(8, 48).buffer)], [1.5, 2.5, 3.5, 4.5, 5.5]);
    same(pack.subarray(48, 48 + 40_001), ramp(40_001, 3));
    same(pack.subarray(offsets[3]), ramp(PACK_CPU_MAX_BYTES, 4));
    assert.equal([...(out.i8 as CpuTensor).data], [-1, 2, -3]);
    assert.equal([...(out.f64 as CpuTensor).data], [1.5, 2.5, 3.5, 4.5, 5.5]);
    same(raw(out.u8 as Tensor), ramp(40_001, 3));
    assert.equal((out.none as Tensor).shape, [0, 3]);
    same(raw(out.exact as Tensor), ramp(PACK_CPU_MAX_BYTES, 4));
    same(raw(out.big as Tensor), ramp(PACK_CPU_MAX_BYTES + 1, 5));
    assert.equal([...raw(out.d as Tensor)], [7, 6, 5]);
  });

  test(`${dir.kind}: one packable tensor (next to an empty one) moves alone, unpadded`, async () => {
    const limit = setting('GROUPCOMM_INLINE_CPU_BYTES');
    const { s, out } = await roundTrip({ e: tensor(new Int16Array(0)), a: tensor(ramp(limit + 3, 6)) }, dir);
    assert.equal(sizes(s.ops), [limit + 3]);
    same(raw(out.a as Tensor), ramp(limit + 3, 6));
    assert.equal((out.e as Tensor).shape, [0]);
  });
}

test('a device tensor of another device type is refused, naming its key; one of the same type lands on this rank\'s index', async () => {
  for (const dir of directions) {
    const s = sender();
    await sendDict(s.io, { w: dev('hpu:1', [1, 2]) }, dir, deadline());
    // 'hpu' vs 'host': the type is everything before ':', not a prefix.
    const r = receiver(s.frames[0], s.ops, 'host:0');
    const e = await receiveDict(r.io, dir, deadline()).then(() => undefined, (x) => x);
    assert.is(e?.code, 'ERR_GROUPCOMM_INVALID_ARGUMENT', String(e));
    assert.is(e.key, 'w');
    assert.match(e.message, /hpu:1/);
    assert.equal(r.got, [], 'refused before anything is received');
    const ok = receiver(s.frames[0], s.ops, 'hpu:0');
    const d = await receiveDict(ok.io, dir, deadline());
    assert.is((d.w as Tensor).device, 'hpu:0');
  }
});

test('a receive that fails part way hands the tensors it allocated back to free', async () => {
  const s = sender();
  const dir: Direction = { kind: 'p2p', peer: 1 };
  await sendDict(s.io, { a: dev('hpu:0', [1]), b: dev('hpu:0', [2, 3]), c: dev('hpu:0', [4]) }, dir, deadline());
  const r = receiver(s.frames[0], s.ops, 'hpu:0', 1);
  const e = await receiveDict(r.io, dir, deadline()).then(() => undefined, (x) => x);
  assert.match(String(e), /link down/);
  assert.equal(r.freed.map((t) => t.shape), [[1], [2]], 'both allocated tensors freed');
});

test.run();
