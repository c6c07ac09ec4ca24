// dialPeer's test doubles (unit/cpu_dial, unit/cpu_dial_more): a loopback listener, a freed
// port, and a DialSpec over a scripted store and inbound that records every callback. What a
// case opened goes into `opened`; each file closes it after each case.
import net from 'node:net';
import type { DialSpec } from '../../host/cpu/link/dial.js';
import type { Inbound } from '../../host/cpu/link/inbound.js';
import type { Store } from '../../host/store/types.js';
import { sleep } from '../../host/base/deadline.js';

/** Closed after each case (test.after.each in each file), even when an assertion failed. */
export const opened: { close(): void }[] = [];

/** A listener that holds or ends what connects, as `onConn` says. */
export function server(onConn: (c: net.Socket) => void = () => {}): Promise<{ srv: net.Server; addr: string }> {
  return new Promise((resolve) => {
    const srv = net.createServer((c) => { opened.push({ close: () => c.destroy() }); c.on('error', () => {}); onConn(c); });
    srv.listen(0, '127.0.0.1', () => { opened.push({ close: () => srv.close() }); resolve({ srv, addr: `127.0.0.1:${(srv.address() as net.AddressInfo).port}` }); });
  });
}

/** An address nothing listens on (a port just freed). */
export async function deadAddr(): Promise<string> {
  const { srv, addr } = await server();
  await new Promise((r) => srv.close(r));
  return addr;
}

export interface Ev { ev: string; arg?: unknown }

export function spec(addr: string, o: { afterSetup?: boolean; deadlineMs?: number; key?: () => string | undefined; acked?: boolean }) {
  const events: Ev[] = [];
  const storeCalls: { op: string; key: string; timeoutMs?: number }[] = [];
  let active = true;
  const inbound = {
    acked: o.acked ?? true,
    restarts: 0,
    nextBuffer: () => Buffer.alloc(1024),
    feed() {},
    restartHandshake() { inbound.restarts++; },
  };
  const store = {
    async check(keys: string[], opts?: { timeoutMs?: number }) { storeCalls.push({ op: 'check', key: keys[0], timeoutMs: opts?.timeoutMs }); return o.key?.() !== undefined; },
    async get(key: string, opts?: { timeoutMs?: number }) {
      storeCalls.push({ op: 'get', key, timeoutMs: opts?.timeoutMs });
      const v = o.key?.();
      if (v === undefined) throw new Error('no key');
      return Buffer.from(v);
    },
  };
  const sockets: net.Socket[] = [];
  const d: DialSpec = {
    peer: 1, addr, key: 'k/1', store: store as unknown as Store, inbound: inbound as unknown as Inbound,
    deadline: performance.now() + (o.deadlineMs ?? 5000),
    afterSetup: () => o.afterSetup ?? false,
    active: () => active,
    connected: (s) => { sockets.push(s); opened.push({ close: () => s.destroy() }); events.push({ ev: 'connected' }); },
    lost: (why) => events.push({ ev: 'lost', arg: why }),
    refused: (yes) => events.push({ ev: 'refused', arg: yes }),
    failed: (e, at) => events.push({ ev: 'failed', arg: [(e as NodeJS.ErrnoException).code ?? e.message, at] }),
    left: () => events.push({ ev: 'left' }),
  };
  // After each case the mesh goes inactive: a dial still retrying stops (else its timers keep the file alive).
  opened.push({ close: () => { active = false; } });
  return { d, events, storeCalls, inbound, sockets, stop: () => { active = false; } };
}

export async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error('condition not reached');
    await sleep(5);
  }
}
export const has = (events: Ev[], ev: string) => events.some((e) => e.ev === ev);
