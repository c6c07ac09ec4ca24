/**
 * TcpStoreServer: a TCPStore-compatible server on one event loop (torch's libuv backend is the
 * model: incremental, transactional parsing; limits checked on declared lengths before any bytes
 * are buffered; a bad client loses its own connection and nothing else).
 *
 * Values are kept compactly: up to SMALL_VALUE_BYTES as one-byte (latin1) strings, one char per
 * byte, which costs a string header and the bytes; larger ones as unpooled Buffers so deleting a
 * key gives its memory back. Keys are latin1 strings too: an exact, reversible image of the wire
 * bytes, whatever encoding the client used.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { guard, type OpOptions } from '../deadline.js';
import { destroyedError, GroupcommError, invalidArgument, timeoutError } from '../errors.js';
import { logger as makeLogger, type Logger } from '../log.js';
import {
  AUTH_NONCE_BYTES, AUTH_REQUIRED_NONCE, CheckReply, Cursor, DEFAULT_LIMITS, EXT_PROBE_KEY,
  Frame, INCOMPLETE, INIT_KEY, Op, VALIDATE_MAGIC, WaitReply, type StoreLimits,
} from './protocol.js';
import { authProof, secretBytes } from './auth.js';

type Value = string | Buffer;
const SMALL_VALUE_BYTES = 256;
/** Pause reading from a client whose unread replies exceed this (it pipelines faster than it reads). */
const MAX_PENDING_REPLY_BYTES = 64 * 1024 * 1024;

const EXT_PROBE_LATIN1 = Buffer.from(EXT_PROBE_KEY, 'utf8').toString('latin1');
const STOP_WAITING = Buffer.from([WaitReply.STOP_WAITING]);
const WAIT_CANCELED = Buffer.from([WaitReply.WAIT_CANCELED]);
const READY = Buffer.from([CheckReply.READY]);
const NOT_READY = Buffer.from([CheckReply.NOT_READY]);

export interface TcpStoreServerOptions {
  /** Interface to bind (default 127.0.0.1; torch binds every interface, we do not by default). */
  host?: string;
  /** Port to bind; 0 picks a free one, readable as `.port` afterwards. */
  port?: number;
  /** Number of clients expected to join through the `init/` counter (see waitForWorkers). */
  worldSize?: number;
  limits?: Partial<StoreLimits>;
  /** When set, clients must prove they know it (HMAC handshake) before anything else. */
  secret?: string | Uint8Array;
  logger?: Logger;
  /**
   * A net.Server to serve on instead of binding host:port, e.g. one the caller bound itself to
   * restrict the interface or hold the port (torch's master_listen_fd). Listened on if it is not
   * listening yet; closed by close().
   */
  server?: net.Server;
}

/** A protocol violation by one client: its connection is closed, nothing else happens. */
class Violation extends Error {}

class Conn {
  readonly id: number;
  stage: 'validate' | 'auth-hello' | 'auth-proof' | 'ready';
  chunks: Buffer[] = [];
  buffered = 0;
  /** Bytes the next request needs at least; no parsing until that many are buffered. */
  needed = 0;
  out: Buffer[] = [];
  outBytes = 0;
  /** Keys this connection's current WAIT still misses (torch: one count per connection). */
  waitCount = 0;
  waitKeys: string[] | null = null;
  closed = false;
  clientNonce?: Buffer;
  serverNonce?: Buffer;
  constructor(readonly socket: net.Socket, id: number) {
    this.id = id;
    this.stage = 'validate';
  }
  get remote(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }
}

function strtoll(v: Value): bigint {
  const s = typeof v === 'string' ? v : v.toString('latin1');
  // C strtoll: leading white space, an optional sign, then decimal digits; the rest is ignored.
  const m = /^[ \t\n\v\f\r]*([+-]?\d+)/.exec(s);
  if (!m) throw new Violation(`ADD on a value that is not a decimal integer`);
  const n = BigInt(m[1]);
  if (n > 0x7fffffffffffffffn || n < -0x8000000000000000n) throw new Violation('ADD on a value out of int64 range');
  return n;
}

function valueLength(v: Value): number {
  return v.length;
}

function valueEquals(v: Value, buf: Buffer, start: number, end: number): boolean {
  if (v.length !== end - start) return false;
  if (typeof v === 'string') return buf.toString('latin1', start, end) === v;
  return buf.subarray(start, end).equals(v);
}

function toValueBytes(v: Value): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'latin1') : v;
}

export class TcpStoreServer {
  private readonly hostOption: string;
  readonly worldSize?: number;
  readonly limits: StoreLimits;
  private readonly kv = new Map<string, Value>();
  private readonly queues = new Map<string, Value[]>();
  private readonly waiters = new Map<string, Conn[]>();
  /** In-process observers of a key (waitForWorkers); called after every write to it. */
  private readonly watchers = new Map<string, Set<() => void>>();
  private readonly conns = new Set<Conn>();
  private readonly dirty = new Set<Conn>();
  private readonly cursor = new Cursor();
  private readonly secret?: Buffer;
  private readonly log: Logger;
  private nextId = 1;
  private closing?: Promise<void>;

  private constructor(private readonly server: net.Server, opts: TcpStoreServerOptions) {
    this.hostOption = opts.host ?? '127.0.0.1';
    this.worldSize = opts.worldSize;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.log = opts.logger ?? makeLogger('STORE');
    if (opts.secret !== undefined) {
      this.secret = secretBytes(opts.secret);
      if (this.secret.length === 0) throw invalidArgument('TcpStoreServer: secret must not be empty');
    }
    server.on('connection', (s) => this.accept(s));
  }

  /** Binds and starts serving. Rejects when the address cannot be bound (e.g. EADDRINUSE). */
  static async listen(opts: TcpStoreServerOptions = {}): Promise<TcpStoreServer> {
    const host = opts.host ?? '127.0.0.1';
    const port = opts.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalidArgument(`TcpStoreServer: bad port ${port}`);
    if (opts.worldSize !== undefined && !(Number.isInteger(opts.worldSize) && opts.worldSize > 0)) {
      throw invalidArgument(`TcpStoreServer: worldSize must be a positive integer, got ${opts.worldSize}`);
    }
    const server = opts.server ?? net.createServer({ noDelay: true });
    const store = new TcpStoreServer(server, opts);
    if (server.listening) {
      store.log.info(`serving on a listening server, port ${store.port}`);
      return store;
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => {
        reject(new GroupcommError('ERR_GROUPCOMM_INVALID_ARGUMENT',
          `TcpStoreServer: cannot listen on ${host}:${port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`, { cause: e }));
      };
      server.once('error', onError);
      server.listen({ host, port, backlog: 4096 }, () => {
        server.off('error', onError);
        server.on('error', (e) => store.log.warn(`listener error: ${e.message}`));
        resolve();
      });
    });
    store.log.info(`listening on ${host}:${store.port}`);
    return store;
  }

  /** The bound address (what host resolved to; the given host until bound). */
  get host(): string {
    const a = this.server.address();
    return a && typeof a === 'object' ? a.address : this.hostOption;
  }

  /** The bound port (the real one when listen was given port 0). */
  get port(): number {
    const a = this.server.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  get numConnections(): number {
    return this.conns.size;
  }

  /** Number of keys held (what GETNUMKEYS answers). */
  get numKeys(): number {
    return this.kv.size;
  }

  /**
   * Resolves once `worldSize` clients have joined (each client adds 1 to `init/`). The timeout
   * error says how many joined, like torch's "X/Y clients joined".
   */
  waitForWorkers(opts: { worldSize?: number } & OpOptions = {}): Promise<void> {
    const worldSize = opts.worldSize ?? this.worldSize;
    if (worldSize === undefined) return Promise.resolve();
    const timeoutMs = opts.timeoutMs ?? 300_000;
    const joined = () => {
      const v = this.kv.get(INIT_KEY);
      if (v === undefined) return 0;
      try { return Number(strtoll(v)); } catch { return 0; }
    };
    if (this.closing) return Promise.reject(destroyedError('waitForWorkers on a closed TcpStoreServer'));
    if (joined() >= worldSize) return Promise.resolve();
    let watcher: (() => void) | undefined;
    const p = new Promise<void>((resolve, reject) => {
      watcher = () => {
        if (this.closing) reject(destroyedError(`TcpStoreServer closed while waiting for clients (${joined()}/${worldSize} joined)`));
        else if (joined() >= worldSize) resolve();
      };
      this.watch(INIT_KEY, watcher);
    });
    const unwatch = () => watcher && this.watchers.get(INIT_KEY)?.delete(watcher);
    return guard(p, {
      timeoutMs,
      signal: opts.signal,
      what: 'waitForWorkers',
      fields: { key: INIT_KEY },
      onTimeout: (elapsedMs) => timeoutError(
        `Timed out after ${(timeoutMs / 1000).toFixed(1)} seconds waiting for clients. ` +
        `${joined()}/${worldSize} clients joined (${this.conns.size} connections open). ` +
        `Start the missing ranks or raise timeoutMs.`,
        { key: INIT_KEY, timeoutMs, elapsedMs }),
      cancel: unwatch,
    }).finally(unwatch);
  }

  /** Stops listening and closes every connection. Stored data is dropped with the server. Idempotent. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = new Promise((resolve) => {
        this.server.close(() => resolve());
        for (const c of [...this.conns]) this.drop(c);
      });
      // wake in-process waiters (waitForWorkers) so they fail now instead of at their timeout
      for (const set of this.watchers.values()) for (const fn of [...set]) fn();
    }
    return this.closing;
  }

  private watch(key: string, fn: () => void): void {
    let s = this.watchers.get(key);
    if (!s) this.watchers.set(key, (s = new Set()));
    s.add(fn);
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const conn = new Conn(socket, this.nextId++);
    this.conns.add(conn);
    this.log.debug(`connection ${conn.id} from ${conn.remote}`);
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('error', (e) => this.log.debug(`connection ${conn.id}: ${e.message}`));
    socket.on('close', () => this.drop(conn));
  }

  /** Forgets a connection: its wait registrations go, the data it stored stays. */
  private drop(conn: Conn, reason?: string): void {
    if (conn.closed) return;
    if (reason) this.log.warn(`closing connection ${conn.id} (${conn.remote}): ${reason}`);
    conn.closed = true;
    this.clearWait(conn);
    this.conns.delete(conn);
    this.dirty.delete(conn);
    conn.chunks = [];
    if (reason) {
      // end() lets replies already written (the auth-required answer) reach the client first;
      // the timer covers a peer that never closes its side.
      conn.socket.end();
      setTimeout(() => conn.socket.destroy(), 1000).unref();
    } else {
      conn.socket.destroy();
    }
  }

  private onData(conn: Conn, chunk: Buffer): void {
    if (conn.closed) return;
    conn.chunks.push(chunk);
    conn.buffered += chunk.length;
    if (conn.buffered < conn.needed) return;
    const buf = conn.chunks.length === 1 ? conn.chunks[0] : Buffer.concat(conn.chunks, conn.buffered);
    const cur = this.cursor;
    cur.reset(buf);
    let start = 0;
    try {
      while (cur.pos < buf.length && !conn.closed) {
        start = cur.pos;
        this.handle(conn, cur, buf);
      }
      start = cur.pos;
      conn.needed = 0;
    } catch (e) {
      if (e === INCOMPLETE) {
        conn.needed = cur.needed - start;
      } else {
        this.flush(conn);
        this.drop(conn, e instanceof Violation ? e.message : `internal error: ${(e as Error).stack}`);
        this.flushAll();
        return;
      }
    }
    if (!conn.closed) {
      const rest = buf.length - start;
      conn.chunks = rest === 0 ? [] : [buf.subarray(start)];
      conn.buffered = rest;
    }
    this.flushAll();
  }

  // --- parsing helpers: each checks the limit on the declared length before reading bytes ---

  private key(cur: Cursor): [number, number] {
    const n = cur.u64();
    if (n > this.limits.maxKeyBytes) throw new Violation(`key of ${n} bytes exceeds maxKeyBytes ${this.limits.maxKeyBytes}`);
    const at = cur.take(n);
    return [at, at + n];
  }

  private value(cur: Cursor): [number, number] {
    const n = cur.u64();
    if (n > this.limits.maxValueBytes) throw new Violation(`value of ${n} bytes exceeds maxValueBytes ${this.limits.maxValueBytes}`);
    const at = cur.take(n);
    return [at, at + n];
  }

  private count(cur: Cursor): number {
    const n = cur.u64();
    if (n > this.limits.maxKeysPerRequest) {
      throw new Violation(`${n} keys in one request exceeds maxKeysPerRequest ${this.limits.maxKeysPerRequest}`);
    }
    return n;
  }

  private keyList(cur: Cursor, buf: Buffer): string[] {
    const n = this.count(cur);
    const spans: number[] = [];
    for (let i = 0; i < n; i++) {
      const [a, b] = this.key(cur);
      spans.push(a, b);
    }
    const keys = new Array<string>(n);
    for (let i = 0; i < n; i++) keys[i] = buf.toString('latin1', spans[2 * i], spans[2 * i + 1]);
    return keys;
  }

  private static copyValue(buf: Buffer, a: number, b: number): Value {
    if (b - a <= SMALL_VALUE_BYTES) return buf.toString('latin1', a, b);
    const v = Buffer.allocUnsafeSlow(b - a);
    buf.copy(v, 0, a, b);
    return v;
  }

  /**
   * Parses one whole request, then acts on it. Nothing changes before the last field has
   * arrived (INCOMPLETE rewinds), so a request split across reads is applied exactly once.
   */
  private handle(conn: Conn, cur: Cursor, buf: Buffer): void {
    const op = cur.u8();
    if (conn.stage !== 'ready') {
      this.handshake(conn, cur, op);
      return;
    }
    switch (op) {
      case Op.VALIDATE: {
        if (cur.u32() !== VALIDATE_MAGIC) throw new Violation('bad VALIDATE magic');
        return;
      }
      case Op.PING: {
        const at = cur.take(4);
        this.send(conn, Buffer.from(buf.subarray(at, at + 4)));
        return;
      }
      case Op.SET: {
        const [ka, kb] = this.key(cur);
        const [va, vb] = this.value(cur);
        this.put(buf.toString('latin1', ka, kb), TcpStoreServer.copyValue(buf, va, vb));
        return;
      }
      case Op.GET:
      case Op.TRY_GET: {
        const [ka, kb] = this.key(cur);
        const v = this.kv.get(buf.toString('latin1', ka, kb));
        if (op === Op.TRY_GET) {
          if (v === undefined) this.send(conn, Buffer.from([0]));
          else this.sendValue(conn, v, 1);
        } else {
          // torch's libuv server answers a missing key with an empty value (legacy closes).
          this.sendValue(conn, v ?? '', -1);
        }
        return;
      }
      case Op.ADD: {
        const [ka, kb] = this.key(cur);
        const delta = cur.i64();
        const key = buf.toString('latin1', ka, kb);
        const old = this.kv.get(key);
        const n = (old === undefined ? 0n : strtoll(old)) + delta;
        if (n > 0x7fffffffffffffffn || n < -0x8000000000000000n) throw new Violation('ADD overflows int64');
        this.put(key, n.toString());
        this.send(conn, new Frame(8).i64(n).done());
        return;
      }
      case Op.COMPARE_SET: {
        const [ka, kb] = this.key(cur);
        const [ea, eb] = this.value(cur);
        const [da, db] = this.value(cur);
        const key = buf.toString('latin1', ka, kb);
        const cur0 = this.kv.get(key);
        if (cur0 === undefined ? ea === eb : valueEquals(cur0, buf, ea, eb)) {
          const v = TcpStoreServer.copyValue(buf, da, db);
          this.put(key, v);
          this.sendValue(conn, v, -1);
        } else if (cur0 === undefined) {
          // torch: a missing key with a non-empty expected value stores nothing and echoes expected.
          this.sendValue(conn, TcpStoreServer.copyValue(buf, ea, eb), -1);
        } else {
          this.sendValue(conn, cur0, -1);
        }
        return;
      }
      case Op.CHECK: {
        const keys = this.keyList(cur, buf);
        this.send(conn, keys.every((k) => this.exists(k)) ? READY : NOT_READY);
        return;
      }
      case Op.WAIT: {
        const keys = this.keyList(cur, buf);
        this.clearWait(conn);
        let missing = 0;
        for (const k of keys) {
          if (this.exists(k)) continue;
          missing++;
          let list = this.waiters.get(k);
          if (!list) this.waiters.set(k, (list = []));
          list.push(conn);
        }
        if (missing === 0) {
          this.send(conn, STOP_WAITING);
        } else {
          conn.waitCount = missing;
          conn.waitKeys = keys;
        }
        return;
      }
      case Op.CANCEL_WAIT: {
        this.clearWait(conn);
        this.send(conn, WAIT_CANCELED);
        return;
      }
      case Op.GETNUMKEYS: {
        this.send(conn, new Frame(8).i64(BigInt(this.kv.size)).done());
        return;
      }
      case Op.DELETE_KEY: {
        const [ka, kb] = this.key(cur);
        const existed = this.kv.delete(buf.toString('latin1', ka, kb));
        this.send(conn, new Frame(8).i64(existed ? 1n : 0n).done());
        return;
      }
      case Op.APPEND: {
        const [ka, kb] = this.key(cur);
        const [va, vb] = this.value(cur);
        const key = buf.toString('latin1', ka, kb);
        const old = this.kv.get(key);
        if (old === undefined) {
          this.put(key, TcpStoreServer.copyValue(buf, va, vb));
        } else {
          const total = valueLength(old) + (vb - va);
          if (total > this.limits.maxValueBytes) throw new Violation(`APPEND grows a value past maxValueBytes ${this.limits.maxValueBytes}`);
          if (total <= SMALL_VALUE_BYTES) {
            this.put(key, (old as string) + buf.toString('latin1', va, vb));
          } else {
            // A new buffer, never an in-place edit: replies already queued may still hold `old`.
            const v = Buffer.allocUnsafeSlow(total);
            toValueBytes(old).copy(v, 0);
            buf.copy(v, valueLength(old), va, vb);
            this.put(key, v);
          }
        }
        return;
      }
      case Op.MULTI_GET: {
        const keys = this.keyList(cur, buf);
        for (const k of keys) this.sendValue(conn, this.kv.get(k) ?? '', -1);
        return;
      }
      case Op.MULTI_SET: {
        const n = this.count(cur);
        const spans: number[] = [];
        for (let i = 0; i < n; i++) {
          const [ka, kb] = this.key(cur);
          const [va, vb] = this.value(cur);
          spans.push(ka, kb, va, vb);
        }
        for (let i = 0; i < spans.length; i += 4) {
          this.put(buf.toString('latin1', spans[i], spans[i + 1]), TcpStoreServer.copyValue(buf, spans[i + 2], spans[i + 3]));
        }
        return;
      }
      case Op.QUEUE_PUSH: {
        const [ka, kb] = this.key(cur);
        const [va, vb] = this.value(cur);
        const key = buf.toString('latin1', ka, kb);
        let q = this.queues.get(key);
        if (!q) this.queues.set(key, (q = []));
        q.push(TcpStoreServer.copyValue(buf, va, vb));
        this.wakeOne(key);
        return;
      }
      case Op.QUEUE_POP: {
        const [ka, kb] = this.key(cur);
        const key = buf.toString('latin1', ka, kb);
        const q = this.queues.get(key);
        const len = q?.length ?? 0;
        this.send(conn, new Frame(8).i64(BigInt(len)).done());
        if (q && len > 0) {
          this.sendValue(conn, q.shift()!, -1);
          if (q.length === 0) this.queues.delete(key);
        }
        return;
      }
      case Op.QUEUE_LEN: {
        const [ka, kb] = this.key(cur);
        const q = this.queues.get(buf.toString('latin1', ka, kb));
        this.send(conn, new Frame(8).i64(BigInt(q?.length ?? 0)).done());
        return;
      }
      case Op.AUTH_HELLO:
        throw new Violation(this.secret ? 'AUTH_HELLO after authentication' : 'client asked to authenticate but this server has no secret');
      default:
        throw new Violation(`unknown opcode ${op}`);
    }
  }

  /** VALIDATE first; then, on a server with a secret, the two-step HMAC exchange. */
  private handshake(conn: Conn, cur: Cursor, op: number): void {
    if (conn.stage === 'validate') {
      if (op !== Op.VALIDATE) throw new Violation(`first message has opcode ${op}, not VALIDATE`);
      const magic = cur.u32();
      if (magic !== VALIDATE_MAGIC) throw new Violation(`bad VALIDATE magic 0x${magic.toString(16)}`);
      conn.stage = this.secret ? 'auth-hello' : 'ready';
      return;
    }
    const secret = this.secret!;
    if (conn.stage === 'auth-hello') {
      if (op === Op.PING) {
        // Tell our client why instead of letting it guess; a torch client just sees a bad echo.
        cur.take(4);
        this.send(conn, new Frame(4).u32(AUTH_REQUIRED_NONCE).done());
        this.flush(conn);
        throw new Violation('client did not authenticate (this server requires a secret)');
      }
      if (op !== Op.AUTH_HELLO) throw new Violation(`opcode ${op} before authentication (this server requires a secret)`);
      const at = cur.take(AUTH_NONCE_BYTES);
      conn.clientNonce = Buffer.from(cur.buf.subarray(at, at + AUTH_NONCE_BYTES));
      conn.serverNonce = crypto.randomBytes(AUTH_NONCE_BYTES);
      this.send(conn, Buffer.concat([conn.serverNonce, authProof(secret, 'server', conn.clientNonce, conn.serverNonce)]));
      conn.stage = 'auth-proof';
      return;
    }
    if (op !== Op.AUTH_PROOF) throw new Violation(`opcode ${op} during authentication`);
    const at = cur.take(32);
    const got = cur.buf.subarray(at, at + 32);
    const want = authProof(secret, 'client', conn.serverNonce!, conn.clientNonce!);
    if (!crypto.timingSafeEqual(got, want)) throw new Violation('authentication failed: wrong secret');
    conn.stage = 'ready';
    this.send(conn, Buffer.from([0]));
  }

  private exists(key: string): boolean {
    if (this.kv.has(key)) return true;
    if (key === EXT_PROBE_LATIN1) return true;
    const q = this.queues.get(key);
    return q !== undefined && q.length > 0;
  }

  private put(key: string, v: Value): void {
    this.kv.set(key, v);
    const list = this.waiters.get(key);
    if (list) {
      this.waiters.delete(key);
      for (const c of list) {
        if (c.closed || c.waitCount === 0) continue;
        if (--c.waitCount === 0) {
          c.waitKeys = null;
          this.send(c, STOP_WAITING);
        }
      }
    }
    const w = this.watchers.get(key);
    if (w) for (const fn of [...w]) fn();
  }

  /** A queue push satisfies one waiter (the oldest), not all of them. */
  private wakeOne(key: string): void {
    const list = this.waiters.get(key);
    if (!list) return;
    while (list.length) {
      const c = list.shift()!;
      if (c.closed || c.waitCount === 0) continue;
      if (--c.waitCount === 0) {
        c.waitKeys = null;
        this.send(c, STOP_WAITING);
      }
      break;
    }
    if (list.length === 0) this.waiters.delete(key);
  }

  private clearWait(conn: Conn): void {
    if (!conn.waitKeys) return;
    for (const k of conn.waitKeys) {
      const list = this.waiters.get(k);
      if (!list) continue;
      const rest = list.filter((c) => c !== conn);
      if (rest.length) this.waiters.set(k, rest);
      else this.waiters.delete(k);
    }
    conn.waitKeys = null;
    conn.waitCount = 0;
  }

  /** Queues a value reply: optional 1-byte tag (TRY_GET), u64 length, bytes. */
  private sendValue(conn: Conn, v: Value, tag: number): void {
    const len = valueLength(v);
    const head = tag >= 0 ? 9 : 8;
    if (typeof v === 'string') {
      const f = Buffer.allocUnsafe(head + len);
      if (tag >= 0) f[0] = tag;
      f.writeUInt32LE(len, head - 8);
      f.writeUInt32LE(0, head - 4);
      f.write(v, head, 'latin1');
      this.send(conn, f);
    } else {
      const f = Buffer.allocUnsafe(head);
      if (tag >= 0) f[0] = tag;
      f.writeUInt32LE(len % 0x1_0000_0000, head - 8);
      f.writeUInt32LE(Math.floor(len / 0x1_0000_0000), head - 4);
      this.send(conn, f);
      this.send(conn, v);
    }
  }

  private send(conn: Conn, b: Buffer): void {
    if (conn.closed) return;
    conn.out.push(b);
    conn.outBytes += b.length;
    this.dirty.add(conn);
  }

  private flushAll(): void {
    for (const c of this.dirty) this.flush(c);
    this.dirty.clear();
  }

  /** One write per batch of small replies; big values go out as they are (no copy). */
  private flush(conn: Conn): void {
    const out = conn.out;
    if (out.length === 0 || conn.closed) return;
    conn.out = [];
    const total = conn.outBytes;
    conn.outBytes = 0;
    const s = conn.socket;
    if (out.length === 1) s.write(out[0]);
    else if (total <= 256 * 1024) s.write(Buffer.concat(out, total));
    else {
      let run: Buffer[] = [];
      let runBytes = 0;
      for (const b of out) {
        if (b.length >= 64 * 1024) {
          if (run.length) s.write(run.length === 1 ? run[0] : Buffer.concat(run, runBytes));
          run = [];
          runBytes = 0;
          s.write(b);
        } else {
          run.push(b);
          runBytes += b.length;
        }
      }
      if (run.length) s.write(run.length === 1 ? run[0] : Buffer.concat(run, runBytes));
    }
    if (s.writableLength > MAX_PENDING_REPLY_BYTES && !s.isPaused()) {
      s.pause();
      s.once('drain', () => { if (!conn.closed) s.resume(); });
    }
  }
}
