/**
 * TcpStore: a TCPStore-compatible client (and, with isServer, the in-process server torch calls
 * the master). Talks to a groupcomm server or to a PyTorch ≥ 2.2 one.
 *
 * Connections. Every request except WAIT goes on one pipelined connection, so concurrent callers
 * never wait for each other's round trips. A WAIT blocks its connection until it is answered, so
 * waits run on a small pool of extra connections, opened on first need and reused; torch's rule
 * "nothing but CANCEL_WAIT behind a WAIT" then holds by construction.
 *
 * get. torch does WAIT then GET: two round trips. Against a groupcomm server (detected in the
 * handshake) we send TRY_GET, which answers in one round trip when the key exists and only then
 * fall back to a wait. Against a torch server: CHECK then GET on the pipelined connection, and a
 * wait only when the key is missing.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { DEFAULT_TIMEOUT_MS, effectiveTimeout, guard, sleep, type OpOptions } from '../deadline.js';
import {
  authError, GroupcommError, invalidArgument, isGroupcommError, peerLostError, protocolError,
  timeoutError,
} from '../errors.js';
import { logger as makeLogger, type Logger } from '../log.js';
import { authProof, secretBytes } from './auth.js';
import {
  Connection, readBytes, readI64, readManyBytes, readQueuePop, readTryGet, readU32,
  readU8, type Reader,
} from './connection.js';
import {
  AUTH_NONCE_BYTES, AUTH_REQUIRED_NONCE, CheckReply, EXT_PROBE_KEY, Frame, INIT_KEY, Op,
  VALIDATE_MAGIC, WaitReply, type StoreLimits,
} from './protocol.js';
import { TcpStoreServer } from './server.js';
import type { Store, StoreValue } from './types.js';

export interface TcpStoreOptions {
  host?: string;
  port: number;
  /** Start a TcpStoreServer in this process on host:port first (torch's is_master). */
  isServer?: boolean;
  /** Clients expected in total, this one included; each adds 1 to the `init/` counter. */
  worldSize?: number;
  /** With isServer and worldSize: create() resolves only once worldSize clients joined. */
  waitForWorkers?: boolean;
  /** Connect deadline and default for every operation (default GROUPCOMM_TIMEOUT_MS or 300 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Shared secret for the groupcomm auth handshake (the server must have the same one). */
  secret?: string | Uint8Array;
  /** Put torch's '/' before every user key, so torch clients see the same keys (default true). */
  prefixKeys?: boolean;
  /** Server limits, with isServer. */
  limits?: Partial<StoreLimits>;
  logger?: Logger;
}

/** Connect retry: first pause, growth, cap. torch starts at 500 ms; local ranks start in ms. */
const BACKOFF_FIRST_MS = 20;
const BACKOFF_FACTOR = 1.5;
const BACKOFF_MAX_MS = 1000;
/** Idle wait connections kept for reuse; more are closed after use. */
const MAX_IDLE_WAIT_CONNECTIONS = 4;

const u64 = 8;

function keyFrame(op: number, key: Uint8Array): Buffer {
  return new Frame(1 + u64 + key.length).u8(op).bytes(key).done();
}

function keyListFrame(op: number, keys: Uint8Array[]): Buffer {
  let size = 1 + u64;
  for (const k of keys) size += u64 + k.length;
  const f = new Frame(size).u8(op).u64(keys.length);
  for (const k of keys) f.bytes(k);
  return f.done();
}

/** key + value; a big value travels as its own buffer (no copy into the frame). */
function keyValueFrame(op: number, key: Uint8Array, value: Uint8Array): Buffer | Buffer[] {
  if (value.length >= 64 * 1024) {
    const head = new Frame(1 + u64 + key.length + u64).u8(op).bytes(key).u64(value.length).done();
    return [head, Buffer.from(value.buffer, value.byteOffset, value.length)];
  }
  return new Frame(1 + 2 * u64 + key.length + value.length).u8(op).bytes(key).bytes(value).done();
}

function valueBytes(v: StoreValue): Uint8Array {
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  if (v instanceof Uint8Array) return v;
  throw invalidArgument(`store values are Uint8Array or string, got ${typeof v}`);
}

function safeNumber(v: bigint, what: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw protocolError(`${what} returned ${v}, beyond Number's exact range`);
  return n;
}

interface ConnectSpec {
  host: string;
  port: number;
  timeoutMs: number;
  signal?: AbortSignal;
  secret?: Buffer;
  log: Logger;
}

function connectSocket(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    });
  });
}

/** VALIDATE, the optional auth exchange, then PING and the extension probe in one round trip. */
async function handshake(conn: Connection, spec: ConnectSpec): Promise<boolean> {
  conn.writeNow(new Frame(5).u8(Op.VALIDATE).u32(VALIDATE_MAGIC).done());
  if (spec.secret) {
    const clientNonce = crypto.randomBytes(AUTH_NONCE_BYTES);
    let reply: Uint8Array;
    try {
      reply = await conn.request(new Frame(1 + AUTH_NONCE_BYTES).u8(Op.AUTH_HELLO).raw(clientNonce).done(),
        (c) => { const at = c.take(2 * AUTH_NONCE_BYTES); return c.buf.subarray(at, at + 2 * AUTH_NONCE_BYTES); });
    } catch (e) {
      if (isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST')) {
        throw authError(`store ${conn.address} refused authentication: it has no secret (or is not a groupcomm server)`, { cause: e });
      }
      throw e;
    }
    const serverNonce = Buffer.from(reply.subarray(0, AUTH_NONCE_BYTES));
    const proof = reply.subarray(AUTH_NONCE_BYTES);
    if (!crypto.timingSafeEqual(proof, authProof(spec.secret, 'server', clientNonce, serverNonce))) {
      throw authError(`store ${conn.address} failed to prove it knows the secret (different secret?)`);
    }
    try {
      await conn.request(new Frame(1 + 32).u8(Op.AUTH_PROOF).raw(authProof(spec.secret, 'client', serverNonce, clientNonce)).done(), readU8);
    } catch (e) {
      if (isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST')) throw authError(`store ${conn.address} rejected our secret`, { cause: e });
      throw e;
    }
  }
  let nonce = (process.pid ^ crypto.randomBytes(4).readUInt32LE(0)) >>> 0;
  if (nonce === AUTH_REQUIRED_NONCE) nonce ^= 1;
  const probeKey = Buffer.from(EXT_PROBE_KEY, 'utf8');
  const echo = conn.request(new Frame(5).u8(Op.PING).u32(nonce).done(), readU32);
  const probe = conn.request(keyListFrame(Op.CHECK, [probeKey]), readU8);
  probe.catch(() => {});
  const got = await echo;
  if (got === AUTH_REQUIRED_NONCE) {
    conn.close();
    throw authError(`store ${conn.address} requires a secret; pass { secret } (or GROUPCOMM_STORE_SECRET to the CLI)`);
  }
  if (got !== nonce) throw protocolError(`store ${conn.address} answered PING with ${got}, expected ${nonce}`);
  return (await probe) === CheckReply.READY;
}

const RETRYABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/**
 * Connects with exponential backoff and jitter until the deadline, like torch's client: a server
 * that is not up yet, or a reset from an overflowing listen backlog, is retried, not reported.
 */
async function openConnection(spec: ConnectSpec): Promise<{ conn: Connection; ext: boolean }> {
  const address = `${spec.host}:${spec.port}`;
  const t0 = performance.now();
  let delay = BACKOFF_FIRST_MS;
  let attempts = 0;
  let last: unknown;
  for (;;) {
    if (spec.signal?.aborted) {
      throw new GroupcommError('ERR_GROUPCOMM_ABORTED', `connect to store ${address} aborted`, { cause: spec.signal.reason });
    }
    const left = spec.timeoutMs - (performance.now() - t0);
    if (left <= 0) break;
    attempts++;
    let conn: Connection | undefined;
    try {
      const socket = await connectSocket(spec.host, spec.port, left);
      conn = new Connection(socket, address, spec.timeoutMs, spec.log);
      const ext = await guard(handshake(conn, spec), {
        timeoutMs: Math.max(1, spec.timeoutMs - (performance.now() - t0)),
        signal: spec.signal,
        what: `handshake with store ${address}`,
        onTimeout: () => timeoutError(`handshake with store ${address} timed out`),
      });
      return { conn, ext };
    } catch (e) {
      conn?.close();
      if (isGroupcommError(e, 'ERR_GROUPCOMM_AUTH') || isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED')) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      if (!(isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST') || isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT') || (code && RETRYABLE.has(code)))) {
        throw e instanceof GroupcommError ? e : peerLostError(`cannot connect to store ${address}: ${(e as Error).message}`, { cause: e });
      }
      last = e;
      spec.log.debug(`connect to ${address} failed (try ${attempts}): ${(e as Error).message}; retrying in ~${Math.round(delay)}ms`);
    }
    const left2 = spec.timeoutMs - (performance.now() - t0);
    if (left2 <= 0) break;
    const pause = Math.min(left2, delay * (0.5 + Math.random()));
    await sleep(pause, spec.signal);
    delay = Math.min(BACKOFF_MAX_MS, delay * BACKOFF_FACTOR);
  }
  const why = (last as Error | undefined)?.message ?? 'no attempt';
  throw timeoutError(
    `the client timed out after ${spec.timeoutMs}ms trying to connect to store ${address} ` +
    `(${attempts} attempts, last error: ${(last as NodeJS.ErrnoException)?.code ?? why}). Is the server up? Raise timeoutMs?`,
    { timeoutMs: spec.timeoutMs, cause: last },
  );
}

export class TcpStore implements Store {
  readonly host: string;
  readonly port: number;
  /** The in-process server when created with isServer, else undefined. */
  readonly server?: TcpStoreServer;
  readonly timeoutMs: number;
  private readonly prefix: boolean;
  private readonly idle: Connection[] = [];
  private readonly waitConns = new Set<Connection>();
  private closed = false;

  private constructor(
    private readonly spec: ConnectSpec,
    private readonly main: Connection,
    /** The server understands groupcomm's extension opcodes (TRY_GET). */
    readonly extended: boolean,
    prefixKeys: boolean,
    server?: TcpStoreServer,
  ) {
    this.host = spec.host;
    this.port = spec.port;
    this.timeoutMs = spec.timeoutMs;
    this.prefix = prefixKeys;
    this.server = server;
  }

  /**
   * Connects (retrying until timeoutMs), optionally after starting the server in-process. With
   * worldSize, joins the `init/` counter; with isServer and waitForWorkers (default), resolves
   * only once worldSize clients joined or fails with "X/Y clients joined".
   */
  static async create(opts: TcpStoreOptions): Promise<TcpStore> {
    const host = opts.host ?? '127.0.0.1';
    const timeoutMs = effectiveTimeout(opts, DEFAULT_TIMEOUT_MS);
    if (opts.worldSize !== undefined && !(Number.isInteger(opts.worldSize) && opts.worldSize > 0)) {
      throw invalidArgument(`TcpStore: worldSize must be a positive integer, got ${opts.worldSize}`);
    }
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
      throw invalidArgument(`TcpStore: bad port ${opts.port}`);
    }
    const log = opts.logger ?? makeLogger('STORE');
    let server: TcpStoreServer | undefined;
    let port = opts.port;
    if (opts.isServer) {
      server = await TcpStoreServer.listen({ host, port, worldSize: opts.worldSize, secret: opts.secret, limits: opts.limits, logger: log });
      port = server.port;
    } else if (port === 0) {
      throw invalidArgument('TcpStore: a client needs the server\'s port (0 only with isServer)');
    }
    const spec: ConnectSpec = {
      host, port, timeoutMs, signal: opts.signal, log,
      secret: opts.secret === undefined ? undefined : secretBytes(opts.secret),
    };
    try {
      const { conn, ext } = await openConnection(spec);
      const store = new TcpStore(spec, conn, ext, opts.prefixKeys ?? true, server);
      if (opts.worldSize !== undefined) {
        await store.addRaw(Buffer.from(INIT_KEY), 1n, { timeoutMs });
        if (server && (opts.waitForWorkers ?? true)) {
          await server.waitForWorkers({ worldSize: opts.worldSize, timeoutMs, signal: opts.signal });
        }
      }
      return store;
    } catch (e) {
      await server?.close();
      throw e;
    }
  }

  /** A second client of the same server (a new connection; torch's clone()). */
  async clone(): Promise<TcpStore> {
    this.ensureOpen();
    const { conn, ext } = await openConnection({ ...this.spec, signal: undefined });
    return new TcpStore({ ...this.spec, signal: undefined }, conn, ext, this.prefix);
  }

  private wireKey(key: string): Buffer {
    if (typeof key !== 'string') throw invalidArgument(`store keys are strings, got ${typeof key}`);
    return Buffer.from(this.prefix ? '/' + key : key, 'utf8');
  }

  private ensureOpen(): void {
    if (this.closed) throw new GroupcommError('ERR_GROUPCOMM_DESTROYED', 'this TcpStore was closed');
  }

  /** Every request on the pipelined connection goes through here: per-call timeout and signal. */
  private call<T>(frame: Buffer | Buffer[], read: Reader<T> | null, what: string, opts?: OpOptions, key?: string): Promise<T> {
    this.ensureOpen();
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    const p = this.main.request(frame, read, timeoutMs);
    if (!opts?.signal && opts?.timeoutMs === undefined) return p;
    return guard(p, {
      timeoutMs, signal: opts?.signal, what,
      fields: key === undefined ? {} : { key },
      onTimeout: (elapsedMs) => timeoutError(`store ${what} timed out after ${timeoutMs}ms${key === undefined ? '' : `, key: ${key}`}`, { key, timeoutMs, elapsedMs }),
    });
  }

  async set(key: string, value: StoreValue, opts?: OpOptions): Promise<void> {
    await this.call(keyValueFrame(Op.SET, this.wireKey(key), valueBytes(value)), null, 'set', opts, key);
  }

  async get(key: string, opts?: OpOptions): Promise<Uint8Array> {
    const wk = this.wireKey(key);
    if (this.extended) {
      const v = await this.call(keyFrame(Op.TRY_GET, wk), readTryGet, 'get', opts, key);
      if (v !== undefined) return v;
      // Missing: wait for it, then read it. A delete between the two is waited out again.
      const t0 = performance.now();
      const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
      for (;;) {
        const left = timeoutMs - (performance.now() - t0);
        await this.waitWire([wk], [key], { timeoutMs: Math.max(1, left), signal: opts?.signal }, timeoutMs, true);
        const again = await this.call(keyFrame(Op.TRY_GET, wk), readTryGet, 'get', opts, key);
        if (again !== undefined) return again;
      }
    }
    const ready = await this.call(keyListFrame(Op.CHECK, [wk]), readU8, 'get', opts, key);
    if (ready !== CheckReply.READY) await this.waitWire([wk], [key], opts, undefined, true);
    return this.call(keyFrame(Op.GET, wk), readBytes, 'get', opts, key);
  }

  add(key: string, delta: number | bigint, opts?: OpOptions): Promise<number> {
    if (typeof delta === 'number' && !Number.isSafeInteger(delta)) throw invalidArgument(`add: delta must be an integer, got ${delta}`);
    return this.addRaw(this.wireKey(key), BigInt(delta), opts, key);
  }

  private async addRaw(wk: Buffer, delta: bigint, opts?: OpOptions, key?: string): Promise<number> {
    const f = new Frame(1 + u64 + wk.length + 8).u8(Op.ADD).bytes(wk).i64(delta).done();
    return safeNumber(await this.call(f, readI64, 'add', opts, key), 'add');
  }

  compareSet(key: string, expected: StoreValue, desired: StoreValue, opts?: OpOptions): Promise<Uint8Array> {
    const wk = this.wireKey(key);
    const e = valueBytes(expected);
    const d = valueBytes(desired);
    const f = new Frame(1 + 3 * u64 + wk.length + e.length + d.length).u8(Op.COMPARE_SET).bytes(wk).bytes(e).bytes(d).done();
    return this.call(f, readBytes, 'compareSet', opts, key);
  }

  async check(keys: string[], opts?: OpOptions): Promise<boolean> {
    const r = await this.call(keyListFrame(Op.CHECK, keys.map((k) => this.wireKey(k))), readU8, 'check', opts);
    return r === CheckReply.READY;
  }

  wait(keys: string[], opts?: OpOptions): Promise<void> {
    return this.waitWire(keys.map((k) => this.wireKey(k)), keys, opts);
  }

  async deleteKey(key: string, opts?: OpOptions): Promise<boolean> {
    return (await this.call(keyFrame(Op.DELETE_KEY, this.wireKey(key)), readI64, 'deleteKey', opts, key)) > 0n;
  }

  async numKeys(opts?: OpOptions): Promise<number> {
    return safeNumber(await this.call(Buffer.from([Op.GETNUMKEYS]), readI64, 'numKeys', opts), 'numKeys');
  }

  async append(key: string, value: StoreValue, opts?: OpOptions): Promise<void> {
    await this.call(keyValueFrame(Op.APPEND, this.wireKey(key), valueBytes(value)), null, 'append', opts, key);
  }

  async multiGet(keys: string[], opts?: OpOptions): Promise<Uint8Array[]> {
    const wks = keys.map((k) => this.wireKey(k));
    const frame = keyListFrame(Op.MULTI_GET, wks);
    if (this.extended) {
      // CHECK and MULTI_GET back to back: one round trip when every key is there (a groupcomm
      // server answers a missing key with an empty value, it does not drop the connection).
      const ready = this.call(keyListFrame(Op.CHECK, wks), readU8, 'multiGet', opts);
      const values = this.call(frame, readManyBytes(keys.length), 'multiGet', opts);
      values.catch(() => {});
      if ((await ready) === CheckReply.READY) return values;
    }
    await this.waitWire(wks, keys, opts, undefined, this.extended);
    return this.call(frame, readManyBytes(keys.length), 'multiGet', opts);
  }

  async multiSet(keys: string[], values: StoreValue[], opts?: OpOptions): Promise<void> {
    if (keys.length !== values.length) throw invalidArgument(`multiSet: ${keys.length} keys but ${values.length} values`);
    const wks = keys.map((k) => this.wireKey(k));
    const vs = values.map(valueBytes);
    let size = 1 + u64;
    for (let i = 0; i < wks.length; i++) size += 2 * u64 + wks[i].length + vs[i].length;
    const f = new Frame(size).u8(Op.MULTI_SET).u64(wks.length);
    for (let i = 0; i < wks.length; i++) f.bytes(wks[i]).bytes(vs[i]);
    await this.call(f.done(), null, 'multiSet', opts);
  }

  async ping(opts?: OpOptions): Promise<number> {
    const nonce = (Math.random() * 0xffffffff) >>> 0;
    const t0 = performance.now();
    const got = await this.call(new Frame(5).u8(Op.PING).u32(nonce).done(), readU32, 'ping', opts);
    if (got !== nonce) throw protocolError(`store ${this.spec.host}:${this.port} answered PING with ${got}, expected ${nonce}`);
    return performance.now() - t0;
  }

  /** Appends `value` to the FIFO queue `key` (queues are separate from keys; torch ≥ 2.8). */
  async queuePush(key: string, value: StoreValue, opts?: OpOptions): Promise<void> {
    await this.call(keyValueFrame(Op.QUEUE_PUSH, this.wireKey(key), valueBytes(value)), null, 'queuePush', opts, key);
  }

  /** Pops the oldest value; with block (default) waits for one, else undefined when empty. */
  async queuePop(key: string, opts: OpOptions & { block?: boolean } = {}): Promise<Uint8Array | undefined> {
    const wk = this.wireKey(key);
    const t0 = performance.now();
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    for (;;) {
      const v = await this.call(keyFrame(Op.QUEUE_POP, wk), readQueuePop, 'queuePop', opts, key);
      if (v !== undefined || opts.block === false) return v;
      const left = timeoutMs - (performance.now() - t0);
      await this.waitWire([wk], [key], { timeoutMs: Math.max(1, left), signal: opts.signal }, timeoutMs);
    }
  }

  async queueLen(key: string, opts?: OpOptions): Promise<number> {
    return safeNumber(await this.call(keyFrame(Op.QUEUE_LEN, this.wireKey(key)), readI64, 'queueLen', opts, key), 'queueLen');
  }

  /**
   * WAIT on a connection of its own. On timeout or abort: CANCEL_WAIT, and the reply reader
   * accepts either WAIT_CANCELED alone or a STOP_WAITING that raced it followed by WAIT_CANCELED;
   * after that the connection is in step again and goes back to the pool.
   */
  private async waitWire(wks: Buffer[], keys: string[], opts?: OpOptions, reportMs?: number, knownMissing = false): Promise<void> {
    this.ensureOpen();
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    const t0 = performance.now();
    let conn = this.idle.pop();
    if (!conn) {
      // Often the keys are there already: one pipelined CHECK saves opening a connection.
      if (!knownMissing && await this.call(keyListFrame(Op.CHECK, wks), readU8, 'wait', opts) === CheckReply.READY) return;
      const { conn: c } = await openConnection({
        ...this.spec,
        timeoutMs: Math.max(1, timeoutMs - (performance.now() - t0)),
        signal: opts?.signal,
      });
      if (this.closed) {
        c.close();
        this.ensureOpen();
      }
      conn = c;
      this.waitConns.add(c);
      c.onClose(() => {
        this.waitConns.delete(c);
        const i = this.idle.indexOf(c);
        if (i >= 0) this.idle.splice(i, 1);
      });
    }
    const c = conn;
    let cancelled = false;
    const reply = c.request(keyListFrame(Op.WAIT, wks), readU8, Infinity);
    reply.then(
      () => this.release(c),
      () => c.close(),
    );
    const shown = reportMs ?? timeoutMs;
    const left = Math.max(1, timeoutMs - (performance.now() - t0));
    await guard(reply, {
      timeoutMs: left,
      signal: opts?.signal,
      what: `wait for ${keys.join(', ')}`,
      fields: { keys },
      onTimeout: (elapsedMs) => timeoutError(`wait timeout after ${shown}ms, keys: ${keys.join(', ')}`, { keys, timeoutMs: shown, elapsedMs }),
      cancel: () => {
        if (cancelled || c.closed) return;
        cancelled = true;
        c.replaceHeadReader((cur) => {
          const b = cur.u8();
          if (b === WaitReply.STOP_WAITING) {
            if (cur.u8() !== WaitReply.WAIT_CANCELED) throw protocolError('expected WAIT_CANCELED after STOP_WAITING');
          } else if (b !== WaitReply.WAIT_CANCELED) {
            throw protocolError(`unexpected wait reply ${b}`);
          }
          return b;
        });
        c.writeNow(Buffer.from([Op.CANCEL_WAIT]));
      },
    });
  }

  private release(c: Connection): void {
    if (this.closed || c.closed) return c.close();
    if (this.idle.length >= MAX_IDLE_WAIT_CONNECTIONS) {
      this.waitConns.delete(c);
      return c.close();
    }
    this.idle.push(c);
  }

  /** Closes this client's connections, and the server too when this store started it. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new GroupcommError('ERR_GROUPCOMM_DESTROYED', 'this TcpStore was closed');
    this.main.close(err);
    for (const c of [...this.waitConns]) c.close(err);
    this.idle.length = 0;
    await this.server?.close();
  }
}
