/**
 * The CPU group's shared-memory transport (same-host peers): ranks of a group live in this
 * process (each maps the others' rings as another process would), over real sockets and a
 * real TcpStore. Cross-process and mixed-runtime runs are the integration suite with
 * GROUPCOMM_CPU_TRANSPORT=shm.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import { CpuGroup, type CpuGroupOptions } from '../../host/cpu/group.js';
import { creditStep, hostId, RecvRing, Segment, SendRing } from '../../host/cpu/shm.js';
import { TcpStore } from '../../host/store/client.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { tensor } from '../../host/core/tensor.js';

let store: TcpStore;
let groupNo = 0;

async function groupOf(n: number, extra: Partial<CpuGroupOptions> = {}): Promise<CpuGroup[]> {
  const groupName = `shm-${groupNo++}`;
  return Promise.all([...Array(n).keys()].map((rank) =>
    CpuGroup.create({ store, rank, worldSize: n, groupName, timeoutMs: 20_000, transport: 'shm', ...extra })));
}

const destroyAll = (gs: CpuGroup[]) => Promise.all(gs.map((g) => g.destroy()));

/** This process's segments still named in /dev/shm. */
const ourSegments = () => fs.readdirSync('/dev/shm').filter((f) => f.startsWith(`gcpu-${process.pid}-`));

test.before(async () => {
  store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
});

test.after(async () => {
  await store.close();
});

test('host id: hostname and boot id, the same on every call', () => {
  const id = hostId();
  assert.ok(id.includes('/'), id);
  assert.is(hostId(), id);
});

test('a ring carries payloads in order across the wrap and refuses what does not fit until freed', () => {
  const a = Segment.create(65536);
  const b = Segment.open(a.name, 65536);
  try {
    assert.is(fs.existsSync(`/dev/shm${a.name}`), false, 'the name is gone once both sides mapped it');
    const tx = new SendRing(a);
    const rx = new RecvRing(b);
    const msg = (len: number, v: number) => new Uint8Array(len).fill(v);
    const p1 = tx.put(msg(40000, 1));
    assert.is(p1, 0);
    assert.is(tx.put(msg(30000, 2)), -1, 'no room before the first is freed');
    assert.equal(rx.at(p1, 40000)!.every((x) => x === 1), true);
    rx.release(p1, 40000);
    const p2 = tx.put(msg(30000, 2)); // does not fit before the end: wraps to offset 0
    assert.is(p2, 65536);
    assert.equal(rx.at(p2, 30000)!.every((x) => x === 2), true);
    assert.is(rx.at(p2 + 40000, 30000), undefined, 'a doorbell past the ring is refused');
  } finally {
    a.close();
    b.close();
  }
});

test('after the last wake-up, a largest frame fits wherever the head is (no deadlock on a full ring)', () => {
  const R = 65536;
  const a = Segment.create(R);
  const b = Segment.open(a.name, R);
  try {
    const tx = new SendRing(a);
    const rx = new RecvRing(b);
    const T = creditStep(R);
    for (let target = 0; target < R; target += 1021) {
      // Move the head to `target`, everything consumed but up to T - 1 bytes (what the last
      // wake-up may leave unaccounted), then the largest frame must fit.
      let off = tx.put(new Uint8Array(0)) % R;
      while (off !== target) {
        const k = Math.min(4096, off < target ? target - off : R - off); // never wraps
        const p = tx.put(new Uint8Array(k));
        rx.release(p, k);
        off = (p + k) % R;
      }
      const p0 = tx.put(new Uint8Array(T - 1));
      assert.ok(p0 >= 0);
      const p1 = tx.put(new Uint8Array(tx.maxFrame));
      assert.ok(p1 >= 0, `a ${tx.maxFrame}-byte frame did not fit with the head at ${target}`);
      rx.release(p0, T - 1);
      rx.release(p1, tx.maxFrame);
    }
  } finally {
    a.close();
    b.close();
  }
});

test('same-host ranks use shm both ways, collectives are exact, and no segment name is left', async () => {
  const gs = await groupOf(3);
  try {
    for (const g of gs) for (let p = 0; p < 3; p++) assert.is(g.transportTo(p), p === g.rank ? 'self' : 'shm');
    assert.equal(ourSegments(), []);
    const n = 3 << 20; // 12 MiB of float32: many segments, the 4 MiB rings wrap many times
    const ts = gs.map((g) => tensor(Float32Array.from({ length: n }, (_, i) => (i % 13) + g.rank)));
    await Promise.all(gs.map((g, r) => g.allReduce(ts[r], { out: ts[r] })));
    for (const t of ts) {
      let bad = 0;
      for (let i = 0; i < n; i++) if (t.data[i] !== 3 * (i % 13) + 3) bad++;
      assert.is(bad, 0);
    }
    const b = gs.map((g) => tensor(new Int32Array(1 << 20).fill(g.rank === 2 ? 7 : 0)));
    await Promise.all(gs.map((g, r) => g.broadcast(b[r], { src: 2, out: b[r] })));
    for (const t of b) assert.ok((t.data as Int32Array).every((x) => x === 7));
    // A frame larger than the ring goes over TCP, in order with the ring's frames.
    // allToAll's blocks of 4 MiB are frames above 7/16 of the 4 MiB rings.
    const big = gs.map((g) => tensor(new Uint8Array(12 << 20).fill(g.rank + 1)));
    const got = await Promise.all(gs.map((g, r) => g.allToAll(big[r])));
    for (const [r, t] of got.entries()) {
      const blk = (12 << 20) / 3;
      for (let p = 0; p < 3; p++) assert.is(t.data[p * blk + 5], p + 1, `rank ${r} block ${p}`);
    }
  } finally {
    await destroyAll(gs);
  }
  assert.equal(ourSegments(), []);
});

test("transport 'tcp' uses no shared memory; a tcp rank and an shm rank settle on tcp", async () => {
  const gs = await groupOf(2, { transport: 'tcp' });
  try {
    assert.is(gs[0].transportTo(1), 'tcp');
  } finally {
    await destroyAll(gs);
  }
  const name = `shm-${groupNo++}`;
  const mixed = await Promise.all([
    CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: name, timeoutMs: 20_000, transport: 'tcp' }),
    CpuGroup.create({ store, rank: 1, worldSize: 2, groupName: name, timeoutMs: 20_000, transport: 'shm' }),
  ]);
  try {
    assert.is(mixed[0].transportTo(1), 'tcp');
    assert.is(mixed[1].transportTo(0), 'tcp');
    const ts = mixed.map((g) => tensor(new Float32Array(100_000).fill(g.rank + 1)));
    await Promise.all(mixed.map((g, r) => g.allReduce(ts[r], { out: ts[r] })));
    assert.ok((ts[1].data as Float32Array).every((x) => x === 3));
  } finally {
    await destroyAll(mixed);
  }
});

test('a bad transport or ring size is refused', async () => {
  for (const extra of [{ transport: 'udp' as never }, { shmRingBytes: 100_000 }]) {
    try {
      await CpuGroup.create({ store, rank: 0, worldSize: 1, groupName: 'x', ...extra });
      assert.unreachable('should have thrown');
    } catch (e) {
      assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), String(e));
    }
  }
});

test('destroy over shm: the peer sees PEER_LEFT (not PEER_LOST) naming the rank, nothing hangs', async () => {
  const gs = await groupOf(2);
  const t = tensor(new Float32Array(1 << 20));
  const pending = gs[1].allReduce(t);
  await gs[0].destroy();
  try {
    await pending;
    assert.unreachable('should have failed');
  } catch (e) {
    assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LEFT'), String(e));
    assert.is((e as { peerRank?: number }).peerRank, 0);
  }
  await gs[1].destroy();
});

test.run();
