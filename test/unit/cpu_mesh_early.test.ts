/**
 * The mesh (host/cpu/mesh.ts) while setup is still under way: a peer that dials us before we
 * have read the addresses is dialed back once we have (connectTo's `wanted`), and a peer lost
 * during setup fails it at once with PEER_LOST instead of waiting for the timeout. Meshes
 * without a group, over loopback, with a real file.store.
 */
import { test } from 'uvu';
import net from 'node:net';
import * as assert from 'uvu/assert';
import { Mesh, type MeshOptions } from '../../host/cpu/mesh.js';
import { meshFile, addrKey, until } from '../helpers/mesh_file.js';
import type { Store } from '../../host/store/types.js';
import { ErrorCode, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

const file = meshFile();
let groups = 0;
const opts = file.opts;
const addr = addrKey;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type Inner = { inbound: ({ acked: boolean } | undefined)[]; dialed: (net.Socket | undefined)[]; links: ({ destroy(): void } | undefined)[] };
const inner = (m: Mesh) => m as unknown as Inner;

test('a peer that dials us before we have read the addresses is dialed back once we have', async () => {
  groups++;
  const g = `meshe-wanted-${groups}`;
  // Rank 2 reads the addresses late (its store answers the read a second late); rank 0 does not
  // need it for its setup (ring neighbours 1 and 3), so it is done first and dials rank 2.
  const slow = new Proxy(file.store, {
    get: (t, k) => {
      if (k === 'multiGet') return async (...a: Parameters<Store['multiGet']>) => { await sleep(1000); return t.multiGet(...a); };
      const v = (t as unknown as Record<string | symbol, unknown>)[k];
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
  const ps = [0, 1, 2, 3].map((r) => Mesh.connect(opts(g, r, 4, r === 2 ? { store: slow } : {})));
  const m0 = await ps[0];
  m0.register(2, '2:1:0', { dest: () => null, done: () => {}, fail: () => {} });
  const ms = await Promise.all(ps);
  try {
    await until(() => m0.transportOf(2) === 'tcp' && ms[2].transportOf(0) === 'tcp');
    assert.is(m0.transportOf(2), 'tcp', 'rank 2 dialed rank 0 back');
    assert.is(ms[2].transportOf(0), 'tcp');
  } finally {
    await Promise.all(ms.map((m) => m.close()));
  }
});

test('a peer lost during setup fails it at once: PEER_LOST naming it, not the timeout', async () => {
  groups++;
  const g = `meshe-setup-${groups}`;
  // Rank 2 never answers (its "address" is a silent listener): neither setup completes. Rank 1
  // "crashes" once its pair with rank 0 is made; its mesh is caught as its setup starts.
  const silent = net.createServer((s) => { s.on('error', () => {}); });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  await file.store.set(addr(g, 2), `127.0.0.1:${(silent.address() as net.AddressInfo).port}`);
  const proto = Mesh.prototype as unknown as { setup(this: Mesh): Promise<void> };
  const setup = proto.setup;
  const seen: Mesh[] = [];
  proto.setup = function (this: Mesh) { seen.push(this); return setup.call(this); };
  const ac = new AbortController();
  try {
    const p1 = Mesh.connect(opts(g, 1, 3, { signal: ac.signal, timeoutMs: 20_000, helloTimeoutMs: 20_000 })).then(() => undefined, (x) => x as GroupcommError);
    const p0 = Mesh.connect(opts(g, 0, 3, { timeoutMs: 10_000, helloTimeoutMs: 20_000 })).then(() => undefined, (x) => x as GroupcommError);
    await until(() => seen.length === 2);
    const [m1, m0] = seen;
    await until(() => !!inner(m0).inbound[1]?.acked && !!inner(m1).inbound[0]?.acked);
    assert.ok(inner(m0).inbound[1]?.acked, 'the pair 0–1 is made');
    const t0 = Date.now();
    for (const s of inner(m1).dialed) s?.destroy();
    for (const l of inner(m1).links) l?.destroy();
    const e = await p0;
    assert.ok(isGroupcommError(e, ErrorCode.PEER_LOST), String(e));
    assert.equal([e!.rank, e!.peerRank], [0, 1]);
    assert.ok(Date.now() - t0 < 5000, 'at once, not at the 10 s timeout');
    ac.abort();
    await p1;
  } finally {
    proto.setup = setup;
    ac.abort();
    silent.close();
    await file.store.deleteKey(addr(g, 2));
  }
});

test.run();
