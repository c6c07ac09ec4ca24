/**
 * A small key-value store over TCP for the device tests (test-only; the real store lives in
 * host/store/). It implements the part of the Store contract that storeBootstrap uses — set,
 * get (waits for the key), add, check, wait, deleteKey — with one JSON line per request and
 * reply, so the conformance suite runs real processes over real sockets without depending on
 * another layer's progress.
 */
import net from 'node:net';
import { guard, DEFAULT_TIMEOUT_MS, type OpOptions } from '../../host/deadline.js';
import { timeoutError } from '../../host/errors.js';
import type { BootstrapStore } from '../../host/device/bootstrap.js';

type Req = { id: number; op: string; key?: string; keys?: string[]; value?: string; delta?: number };

function lines(sock: net.Socket, onLine: (l: string) => void): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (l) onLine(l);
    }
  });
}

export interface TestStoreServer { port: number; close(): Promise<void> }

export function startTestStore(): Promise<TestStoreServer> {
  const data = new Map<string, string>();
  const waiters = new Set<{ keys: string[]; fire: () => void }>();
  const wake = () => {
    for (const w of [...waiters]) if (w.keys.every((k) => data.has(k))) { waiters.delete(w); w.fire(); }
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    const reply = (id: number, body: object) => { if (!sock.destroyed) sock.write(JSON.stringify({ id, ...body }) + '\n'); };
    lines(sock, (l) => {
      let r: Req;
      try { r = JSON.parse(l); } catch { sock.destroy(); return; }
      const k = r.key ?? '';
      switch (r.op) {
        case 'set': data.set(k, r.value ?? ''); reply(r.id, {}); wake(); break;
        case 'add': {
          const v = Number(Buffer.from(data.get(k) ?? '', 'base64').toString() || '0') + (r.delta ?? 0);
          data.set(k, Buffer.from(String(v)).toString('base64'));
          reply(r.id, { n: v });
          wake();
          break;
        }
        case 'delete': reply(r.id, { ok: data.delete(k) }); break;
        case 'check': reply(r.id, { ok: (r.keys ?? []).every((x) => data.has(x)) }); break;
        case 'wait': case 'get': {
          const keys = r.op === 'get' ? [k] : r.keys ?? [];
          const fire = () => reply(r.id, r.op === 'get' ? { value: data.get(k) } : {});
          if (keys.every((x) => data.has(x))) fire(); else waiters.add({ keys, fire });
          break;
        }
        default: sock.destroy();
      }
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise((res) => { for (const s of sockets) s.destroy(); server.close(() => res()); }),
  })));
}

export class TestStoreClient implements BootstrapStore {
  private nextId = 1;
  private readonly pending = new Map<number, (v: any) => void>();
  private constructor(private readonly sock: net.Socket) {
    lines(sock, (l) => {
      const m = JSON.parse(l);
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      p?.(m); // replies to requests we gave up on are dropped
    });
  }

  static connect(port: number): Promise<TestStoreClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new TestStoreClient(s)));
      s.once('error', reject);
    });
  }

  private req(op: string, body: Omit<Req, 'id' | 'op'>, what: string, opts?: OpOptions): Promise<any> {
    const id = this.nextId++;
    const p = new Promise((resolve) => this.pending.set(id, resolve));
    this.sock.write(JSON.stringify({ id, op, ...body }) + '\n');
    const timeoutMs = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return guard(p, {
      timeoutMs, signal: opts?.signal, what,
      onTimeout: (ms) => timeoutError(`${what} timed out after ${timeoutMs}ms`, { key: body.key, keys: body.keys, timeoutMs, elapsedMs: ms }),
      cancel: () => this.pending.delete(id),
    });
  }

  async set(key: string, value: Uint8Array | string, opts?: OpOptions): Promise<void> {
    const b = typeof value === 'string' ? Buffer.from(value) : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    await this.req('set', { key, value: b.toString('base64') }, `set(${key})`, opts);
  }
  async get(key: string, opts?: OpOptions): Promise<Uint8Array> {
    const m = await this.req('get', { key }, `get(${key})`, opts);
    return new Uint8Array(Buffer.from(m.value, 'base64'));
  }
  async add(key: string, delta: number, opts?: OpOptions): Promise<number> {
    return (await this.req('add', { key, delta }, `add(${key})`, opts)).n;
  }
  async check(keys: string[], opts?: OpOptions): Promise<boolean> {
    return (await this.req('check', { keys }, 'check', opts)).ok;
  }
  async wait(keys: string[], opts?: OpOptions): Promise<void> {
    await this.req('wait', { keys }, `wait(${keys.join(', ')})`, opts);
  }
  async deleteKey(key: string, opts?: OpOptions): Promise<boolean> {
    return (await this.req('delete', { key }, `deleteKey(${key})`, opts)).ok;
  }
  close(): void {
    this.sock.destroy();
  }
}

