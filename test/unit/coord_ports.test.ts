/**
 * Where a group's rank 0 listens (host/coordinator/ports.ts): port reservations, explicit ports,
 * the rendezvous record (ports and rank 0's address) through a real store, cleanup when
 * publishing fails, and the addresses a rank binds and advertises (loopback, wildcard, and a
 * remote rank 0 — 10.77.0.1, only routed toward, with GROUPCOMM_SOCKET_IFNAME=lo choosing here).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { groupAddresses, reservePort, resolvePorts, type PortPlan } from '../../host/coordinator/ports.js';
import { decodePortRecord, encodePortRecord } from '../../host/core/layout.js';
import { TcpStore } from '../../host/store/index.js';
import { isGroupcommError } from '../../host/base/errors.js';
import type { Store } from '../../host/store/types.js';

/** Whether `port` on 127.0.0.1 can be bound now. */
function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

test('reservePort: holds a port until released; release is idempotent; connections are closed', async () => {
  const r = await reservePort('127.0.0.1');
  assert.ok(r.port > 0 && r.port < 65536, String(r.port));
  assert.is(await free(r.port), false);
  const closed = await new Promise<boolean>((resolve) => {
    const c = net.connect(r.port, '127.0.0.1');
    const timer = setTimeout(() => { c.destroy(); resolve(false); }, 2000);
    c.on('close', () => { clearTimeout(timer); resolve(true); });
    c.on('error', () => {});
  });
  assert.ok(closed, 'the reservation closes what connects to it');
  const p1 = r.release();
  assert.is(r.release(), p1);
  await p1;
  assert.is(await free(r.port), true);
});

test('reservePort: an address not on this machine fails with ERR_GROUPCOMM_BIND', async () => {
  const e = await reservePort('10.77.255.254').then(() => undefined, (x) => x);
  assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_BIND'), String(e));
  assert.match(e.message, 'reserving a port');
});

const plan = (over: Partial<PortPlan>): PortPlan => ({
  key: 'g_0', index: 0, numGroups: 1, isHost: false, host: '127.0.0.1', opts: { timeoutMs: 5000 },
  listenStore: async () => { throw new Error('not the host'); }, ...over,
});

test('explicit ports: the triple of this group; rank 0 starts its store on the store port', async () => {
  const calls: number[] = [];
  const groupPorts: [number, number, number][] = [[1001, 1002, 1003], [2001, 2002, 2003]];
  const listenStore = async (p: number) => { calls.push(p); return p; };
  const host = await resolvePorts(plan({ groupPorts, index: 1, numGroups: 2, isHost: true, host: '10.77.0.1', listenStore }));
  assert.equal(host, { ports: [2001, 2002, 2003], host: '10.77.0.1' });
  assert.equal(calls, [2003]);
  const other = await resolvePorts(plan({ groupPorts, index: 0, numGroups: 2, listenStore }));
  assert.equal(other, { ports: [1001, 1002, 1003], host: '127.0.0.1' });
  assert.equal(calls, [2003], 'only rank 0 listens');
});

test('neither explicit ports nor a rendezvous store: refused', async () => {
  const e = await resolvePorts(plan({})).then(() => undefined, (x) => x);
  assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_INVALID_ARGUMENT'), String(e));
});

test('rendezvous: rank 0 listens and publishes its ports and address; the others read them', async () => {
  const store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  const held: { port: number; release(): Promise<void> }[] = [];
  try {
    const listenStore = async (p: number) => { assert.is(p, 0); const r = await reservePort('127.0.0.1'); held.push(r); return r.port; };
    const r0 = await resolvePorts(plan({ key: 'rv_1', isHost: true, rendezvous: store, advertise: '127.0.0.7', listenStore }));
    assert.is(r0.host, '127.0.0.7');
    assert.ok(r0.cpu && r0.device);
    assert.equal(r0.ports, [r0.device!.port, r0.cpu!.port, (held[0] as { port: number }).port]);
    assert.is(await free(r0.cpu!.port), false, 'the CPU port is held');
    assert.is(await free(r0.device!.port), false, 'the device port is held');
    const rec = await store.get('rv_1');
    assert.equal(decodePortRecord(rec.subarray(0, 12)), r0.ports);
    assert.is(Buffer.from(rec.subarray(12)).toString('utf8'), '127.0.0.7');
    const r1 = await resolvePorts(plan({ key: 'rv_1', rendezvous: store, host: '127.0.0.1' }));
    assert.equal(r1, { ports: r0.ports, host: '127.0.0.7' });
    // Without an advertised address rank 0 publishes (and is found at) its own host.
    const h0 = await resolvePorts(plan({ key: 'rv_2', isHost: true, rendezvous: store, listenStore }));
    assert.is(h0.host, '127.0.0.1');
    assert.is(Buffer.from((await store.get('rv_2')).subarray(12)).toString(), '127.0.0.1');
    // A bare 12-byte record (an older rank 0): rank 0 is at `host`.
    await store.set('rv_3', encodePortRecord([3001, 3002, 3003]));
    assert.equal(await resolvePorts(plan({ key: 'rv_3', rendezvous: store, host: '127.0.0.9' })), { ports: [3001, 3002, 3003], host: '127.0.0.9' });
    for (const r of [r0, h0]) { await r.cpu!.release(); await r.device!.release(); }
  } finally {
    for (const r of held) await r.release();
    await store.close();
  }
});

test('rendezvous: when publishing fails, rank 0 releases both reservations', async () => {
  let record: Uint8Array | undefined;
  const down = { set: async (_k: string, v: Uint8Array) => { record = v; throw new Error('store down'); } } as unknown as Store;
  const held = await reservePort('127.0.0.1');
  try {
    const e = await resolvePorts(plan({ isHost: true, rendezvous: down, listenStore: async () => held.port })).then(() => undefined, (x) => x);
    assert.match(String(e), 'store down');
    const [device, cpu] = decodePortRecord(record!.subarray(0, 12));
    assert.is(await free(device), true, 'device port released');
    assert.is(await free(cpu), true, 'cpu port released');
  } finally {
    await held.release();
  }
});

test('groupAddresses: explicit ports or no store — rank 0 at host (default 127.0.0.1); others bind toward it', async () => {
  const env = { MASTER_ADDR: process.env.MASTER_ADDR, IF: process.env.GROUPCOMM_SOCKET_IFNAME };
  try {
    delete process.env.GROUPCOMM_SOCKET_IFNAME;
    process.env.MASTER_ADDR = '127.0.0.5';
    assert.equal(await groupAddresses({}), { host: '127.0.0.1', localHost: '127.0.0.1', advertise: '127.0.0.1' });
    assert.equal(await groupAddresses({ host: '127.0.0.3', groupPorts: [] }), { host: '127.0.0.3', localHost: '127.0.0.3', advertise: '127.0.0.3' });
    // A wildcard host: bound as given; the others' own address is chosen toward MASTER_ADDR.
    assert.equal(await groupAddresses({ host: '0.0.0.0', groupPorts: [] }), { host: '0.0.0.0', localHost: '127.0.0.5', advertise: '0.0.0.0' });
    // Rank 0 on another node: this rank binds the address of its route there (here: lo's, by GROUPCOMM_SOCKET_IFNAME).
    process.env.GROUPCOMM_SOCKET_IFNAME = 'lo';
    assert.equal(await groupAddresses({ host: '10.77.0.1', groupPorts: [] }), { host: '10.77.0.1', localHost: '127.0.0.1', advertise: '10.77.0.1' });
  } finally {
    if (env.MASTER_ADDR === undefined) delete process.env.MASTER_ADDR; else process.env.MASTER_ADDR = env.MASTER_ADDR;
    if (env.IF === undefined) delete process.env.GROUPCOMM_SOCKET_IFNAME; else process.env.GROUPCOMM_SOCKET_IFNAME = env.IF;
  }
});

test('groupAddresses: rendezvous — host as given, else chosen toward the store; a wildcard advertises the chosen address', async () => {
  const env = { MASTER_ADDR: process.env.MASTER_ADDR, IF: process.env.GROUPCOMM_SOCKET_IFNAME };
  const store = await TcpStore.create({ host: '127.0.0.2', port: 0, isServer: true, timeoutMs: 5000 });
  try {
    delete process.env.GROUPCOMM_SOCKET_IFNAME;
    process.env.MASTER_ADDR = '127.0.0.5';
    assert.equal(await groupAddresses({ rendezvous: store }), { host: '127.0.0.2', localHost: '127.0.0.2', advertise: '127.0.0.2' });
    assert.equal(await groupAddresses({ rendezvous: store, host: '127.0.0.4' }), { host: '127.0.0.4', localHost: '127.0.0.4', advertise: '127.0.0.4' });
    assert.equal(await groupAddresses({ rendezvous: store, host: '0.0.0.0' }), { host: '0.0.0.0', localHost: '0.0.0.0', advertise: '127.0.0.2' });
    // A store without a host (not a TcpStore): MASTER_ADDR decides.
    const hostless = { get: store.get.bind(store) } as unknown as Store;
    assert.equal(await groupAddresses({ rendezvous: hostless }), { host: '127.0.0.5', localHost: '127.0.0.5', advertise: '127.0.0.5' });
  } finally {
    await store.close();
    if (env.MASTER_ADDR === undefined) delete process.env.MASTER_ADDR; else process.env.MASTER_ADDR = env.MASTER_ADDR;
    if (env.IF === undefined) delete process.env.GROUPCOMM_SOCKET_IFNAME; else process.env.GROUPCOMM_SOCKET_IFNAME = env.IF;
  }
});

test.run();
