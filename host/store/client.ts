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
import { anySignal, effectiveTimeout, guard, sleep, type OpOptions } from '../base/deadline.js';
import { asyncDispose, type CloseOptions } from '../base/lifecycle.js';
import { abortedError, destroyedError, type GroupcommError, invalidArgument, isGroupcommError, peerLostError, protocolError, timeoutError } from '../base/errors.js';
import { setting } from '../base/config.js';
import { logger as makeLogger, type Logger } from '../base/log.js';
import { checkFactory, factoryToken } from '../base/factory.js';
import { resolveSecret } from '../base/secret.js';
import { launchEnv } from '../base/launch_env.js';
import { openConnection, type ConnectSpec } from './connect.js';
import {
  Connection, keyFields, keySuffix, readBytes, readI64, readManyBytes, readQueuePop, readTryGet, readU32,
  readU8, readWaitGet, type OpKeys, type Reader,
} from './connection.js';
import {
  CheckReply, Frame, INIT_KEY, isAscii, keyListFrame, Op, SubscribeReply, TORCH_LIMITS, WAIT_GET_DELETE, WaitReply, type StoreLimits,
} from './protocol.js';
import { TcpStoreServer } from './server.js';
import type { Store, StoreValue, Subscription } from './types.js';

export interface TcpStoreOptions {
  host?: string;
  port: number;
  /** Start a TcpStoreServer in this process on host:port first (torch's is_master). */
  isServer?: boolean;
  /** Clients expected in total, this one included; each adds 1 to the `init/` counter. */
  worldSize?: number;
  /** With isServer and worldSize: create() resolves only once worldSize clients joined. */
  waitForWorkers?: boolean;
  /**
   * This client's rank, 0 ≤ rank < worldSize. With a groupcomm server it is announced on join, so
   * the master's join timeout can say which ranks are missing (torch's only gives counts).
   */
  rank?: number;
  /** Connect deadline and default for every operation (default GROUPCOMM_TIMEOUT_MS or 300 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Shared secret for the groupcomm auth handshake (the server must have the same one). Default GROUPCOMM_SECRET. */
  secret?: string | Uint8Array;
  /** With isServer: allow a non-loopback host without a secret (see TcpStoreServerOptions.insecure). */
  insecure?: boolean;
  /** Put torch's '/' before every user key, so torch clients see the same keys (default true). */
  prefixKeys?: boolean;
  /**
   * The rank whose process hosts the server, named (peerRank) in the ERR_GROUPCOMM_PEER_LOST of
   * a store that stopped answering (liveness, GROUPCOMM_LIVENESS_MS).
   */
  hostRank?: number;
  /** Server limits, with isServer. */
  limits?: Partial<StoreLimits>;
  /** With isServer: which prefixes SUBSCRIBE may claim (TcpStoreServerOptions.subscribePrefixes). */
  subscribePrefixes?: 'mailboxes' | 'any';
  /**
   * Use groupcomm's extension opcodes (one-round-trip get) when the server has them (default
   * true). false sends exactly what a torch client sends: for comparisons and debugging.
   */
  extensions?: boolean;
  /**
   * With isServer: this client (and its clones) reach the in-process server in memory instead of
   * over loopback TCP (default true): same protocol, no syscalls. false forces TCP.
   */
  inProcess?: boolean;
  logger?: Logger;
}

/** Only create() and clone() construct a TcpStore (base/factory.ts). */
const MADE = factoryToken('TcpStore');

/** Idle wait connections kept for reuse; more are closed after use. */
const MAX_IDLE_WAIT_CONNECTIONS = 4;

/** Keys remembered as written-but-unconfirmed (TcpStore.unconfirmed) before the map is pruned. */
const MAX_TRACKED_WRITES = 4096;

const u64 = 8;

function keyFrame(op: number, key: Uint8Array): Buffer {
  return new Frame(1 + u64 + key.length).u8(op).bytes(key).done();
}

/** key + value; a big value travels as its own buffer (no copy into the frame). */
function keyValueFrame(op: number, key: Uint8Array, value: Uint8Array): Buffer | Buffer[] {
  if (value.length >= 64 * 1024) {
    const head = new Frame(1 + u64 + key.length + u64).u8(op).bytes(key).u64(value.length).done();
    return [head, Buffer.from(value.buffer, value.byteOffset, value.length)];
  }
  return new Frame(1 + 2 * u64 + key.length + value.length).u8(op).bytes(key).bytes(value).done();
}

/** WAIT_GET: flags, then the key list as WAIT has it. */
function waitGetFrame(keys: Uint8Array[], del: boolean): Buffer {
  let size = 2 + u64;
  for (const k of keys) size += u64 + k.length;
  const f = new Frame(size).u8(Op.WAIT_GET).u8(del ? WAIT_GET_DELETE : 0).u64(keys.length);
  for (const k of keys) f.bytes(k);
  return f.done();
}

/** MULTI_SET: count, then key and value of each. */
function multiSetFrame(wks: Uint8Array[], vs: Uint8Array[]): Buffer {
  let size = 1 + u64;
  for (let i = 0; i < wks.length; i++) size += 2 * u64 + wks[i].length + vs[i].length;
  const f = new Frame(size).u8(Op.MULTI_SET).u64(wks.length);
  for (let i = 0; i < wks.length; i++) f.bytes(wks[i]).bytes(vs[i]);
  return f.done();
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

/**
 * What subscribe() hands out, over TCP or in memory alike: close() once; onClose listeners hear
 * the reason the stream ended, or nothing when it was closed on purpose.
 */
class SubscriptionHandle implements Subscription {
  private closing = false;
  private ended = false;
  private reason?: Error;
  private readonly listeners: ((e?: Error) => void)[] = [];

  /** @param stop ends the stream (with the reason, when it is a failure) */
  constructor(private readonly stop: (e?: GroupcommError) => void) {}

  /** The stream ended (closed, lost, or its store closed). Idempotent. */
  end(e?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.reason = e;
    for (const fn of this.listeners) fn(this.closing ? undefined : e);
  }

  /** Ends the stream because of `e` (its TcpStore closed). */
  fail(e: GroupcommError): void {
    this.stop(e);
    this.end(e);
  }

  close(): void {
    this.closing = true;
    this.stop();
    this.end();
  }

  onClose(fn: (e?: Error) => void): void {
    if (this.ended) fn(this.closing ? undefined : this.reason ?? destroyedError('subscription closed'));
    else this.listeners.push(fn);
  }
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
  private readonly subscriptions = new Set<SubscriptionHandle>();
  /**
   * Keys this client changed on the main connection, with the request's sequence number there,
   * until a later reply proves the server applied the change. A get sent on a wait connection
   * (WAIT_GET) could overtake such a change; see mayBypass.
   */
  private readonly unconfirmed = new Map<string, number>();
  /** After the map overflowed: nothing is known to be applied until this request is. */
  private unconfirmedCutoff = 0;
  /** Connections closed (close() done draining, or abort()): nothing more can be sent. */
  private closed = false;
  /** The first close() or abort(): from then on new operations are refused. */
  private closing?: Promise<void>;
  private aborted = false;
  /** Aborted by abort(): connections being opened for a wait or a subscription give up too. */
  private readonly life = new AbortController();
  /** waitWire and subscribe calls in progress (with the main connection's requests: what close() waits for). */
  private waiting = 0;
  /** The liveness check's timer (startLiveness), and whether its ping is out. */
  private liveTimer?: NodeJS.Timeout;
  private pinging = false;
  /** TcpStoreOptions.hostRank. */
  private hostRank?: number;
  /** Set when liveness gave up on the server: every call fails with it from then on. */
  private lostErr?: GroupcommError;
  /**
   * The server's limits (its LIMITS answer; torch's for a server without extensions): requests
   * over them are refused here with INVALID_ARGUMENT, before anything is sent, so the
   * connection and the requests queued on it are not lost to a server-side violation.
   */
  limits: StoreLimits = TORCH_LIMITS;

  private constructor(
    token: symbol,
    private readonly spec: ConnectSpec,
    private readonly main: Connection,
    /** The server understands groupcomm's extension opcodes (TRY_GET). */
    readonly extended: boolean,
    prefixKeys: boolean,
    server?: TcpStoreServer,
  ) {
    // torch's TCPStore(host, port, …) connects in its constructor, blocking; the JavaScript
    // equivalent of a blocking constructor is an awaited factory (a lazily connecting `new` would
    // leave port, server and connection errors unknown until some later call).
    checkFactory(token, MADE, 'TcpStore', 'const store = await TcpStore.create({ host, port })',
      'a store connects (and, with isServer, listens) before it is usable');
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
    const timeoutMs = effectiveTimeout(opts);
    if (opts.worldSize !== undefined && !(Number.isInteger(opts.worldSize) && opts.worldSize > 0)) {
      throw invalidArgument(`TcpStore: worldSize must be a positive integer, got ${opts.worldSize}`);
    }
    if (opts.rank !== undefined && !(Number.isInteger(opts.rank) && opts.rank >= 0 && (opts.worldSize === undefined || opts.rank < opts.worldSize))) {
      throw invalidArgument(`TcpStore: rank must be an integer in [0, worldSize), got ${opts.rank}`);
    }
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
      throw invalidArgument(`TcpStore: bad port ${opts.port}`);
    }
    const log = opts.logger ?? makeLogger('STORE');
    let server: TcpStoreServer | undefined;
    let port = opts.port;
    if (opts.isServer) {
      server = await TcpStoreServer.listen({ host, port, worldSize: opts.worldSize, secret: opts.secret, insecure: opts.insecure, limits: opts.limits, subscribePrefixes: opts.subscribePrefixes, logger: log });
      port = server.port;
    } else if (port === 0) {
      throw invalidArgument('TcpStore: a client needs the server\'s port (0 only with isServer)');
    }
    const spec: ConnectSpec = {
      host, port, timeoutMs, signal: opts.signal, log, probe: opts.extensions ?? true,
      secret: resolveSecret(opts.secret, 'TcpStore'),
      local: server && (opts.inProcess ?? true) ? server : undefined,
    };
    let store: TcpStore | undefined;
    try {
      const { conn, ext } = await openConnection(spec);
      store = new TcpStore(MADE, spec, conn, ext, opts.prefixKeys ?? true, server);
      await store.learnLimits({ timeoutMs, signal: opts.signal });
      store.hostRank = opts.hostRank;
      store.startLiveness();
      if (opts.worldSize !== undefined) {
        const join = { timeoutMs, signal: opts.signal };
        if (opts.rank !== undefined && ext) {
          await store.call(new Frame(9).u8(Op.JOIN_RANK).i64(BigInt(opts.rank)).done(), null, 'join', join);
        }
        await store.addRaw(Buffer.from(INIT_KEY), 1n, join, INIT_KEY);
        if (server && (opts.waitForWorkers ?? true)) {
          await server.waitForWorkers({ worldSize: opts.worldSize, timeoutMs, signal: opts.signal });
        }
      }
      return store;
    } catch (e) {
      // The caller never gets this store, so nothing else could close its connection (or server).
      if (store) await store.abort(e);
      else await server?.abort(e);
      throw e;
    }
  }

  /**
   * env://: a client of the store at MASTER_ADDR:MASTER_PORT (the variables `groupcomm launch` and
   * torchrun set; ERR_GROUPCOMM_CONFIG names a missing or malformed one). Under a launcher
   * (GROUPCOMM_RUN_ID or TORCHELASTIC_RUN_ID set) the launcher hosts the store; otherwise RANK 0
   * hosts it in-process (torch's env:// rule), unless `isServer` says otherwise.
   */
  static async fromEnv(opts: Omit<TcpStoreOptions, 'host' | 'port'> = {}): Promise<TcpStore> {
    const env = launchEnv();
    const isServer = opts.isServer ?? (env.runId === undefined && env.rank === 0);
    return TcpStore.create({ rank: opts.worldSize !== undefined ? env.rank : undefined, ...opts, host: env.masterAddr, port: env.masterPort, isServer });
  }

  /** A second client of the same server (a new connection; torch's clone()). */
  async clone(): Promise<TcpStore> {
    this.ensureOpen();
    const { conn, ext } = await openConnection({ ...this.spec, signal: undefined });
    const c = new TcpStore(MADE, { ...this.spec, signal: undefined }, conn, ext, this.prefix);
    c.limits = this.limits;
    return c;
  }

  /** Asks a groupcomm server for its limits (one round trip, once per store). */
  private async learnLimits(opts: OpOptions): Promise<void> {
    if (!this.extended) return;
    const r = (c: import('./protocol.js').Cursor) => ({ maxKeyBytes: c.u64(), maxValueBytes: c.u64(), maxKeysPerRequest: c.u64(), maxRequestBytes: c.u64() });
    this.limits = await this.call(Buffer.from([Op.LIMITS]), r, 'negotiate limits', opts);
  }

  /** Refuses a value over the server's limit before it is sent. */
  private checkValue(v: Uint8Array, what: string, key: string): Uint8Array {
    if (v.length > this.limits.maxValueBytes) {
      throw invalidArgument(`${what}: a value of ${v.length} bytes exceeds the store's maxValueBytes ${this.limits.maxValueBytes}`, { key });
    }
    return v;
  }

  /** A MULTI_SET as a whole must fit the server's maxRequestBytes too. */
  private checkRequest(wks: Uint8Array[], vs: Uint8Array[], what: string): void {
    let n = 9;
    for (let i = 0; i < wks.length; i++) n += 16 + wks[i].length + vs[i].length;
    if (n > this.limits.maxRequestBytes) throw invalidArgument(`${what}: a request of ${n} bytes exceeds the store's maxRequestBytes ${this.limits.maxRequestBytes}`);
  }

  private checkCount(n: number, what: string): void {
    if (n > this.limits.maxKeysPerRequest) throw invalidArgument(`${what}: ${n} keys exceed the store's maxKeysPerRequest ${this.limits.maxKeysPerRequest}`);
  }

  private wireKey(key: string): Buffer {
    if (typeof key !== 'string') throw invalidArgument(`store keys are strings, got ${typeof key}`);
    const b = Buffer.from(this.prefix ? '/' + key : key, 'utf8');
    if (b.length > this.limits.maxKeyBytes) throw invalidArgument(`a key of ${b.length} bytes exceeds the store's maxKeyBytes ${this.limits.maxKeyBytes}`, { key: key.slice(0, 200) });
    return b;
  }

  /** wireKey as a latin1 string (how the server holds keys), without a Buffer for ASCII keys. */
  private wireLatin1(key: string): string {
    if (typeof key !== 'string') throw invalidArgument(`store keys are strings, got ${typeof key}`);
    const k = this.prefix ? '/' + key : key;
    const w = isAscii(k) ? k : Buffer.from(k, 'utf8').toString('latin1');
    if (w.length > this.limits.maxKeyBytes) throw invalidArgument(`a key of ${w.length} bytes exceeds the store's maxKeyBytes ${this.limits.maxKeyBytes}`, { key: key.slice(0, 200) });
    return w;
  }

  /** At the start of an operation: none are taken once close() or abort() was called. */
  private ensureOpen(): void {
    if (this.lostErr) throw this.lostErr;
    if (this.closing) throw destroyedError('this TcpStore was closed');
  }

  /** At a later step of an operation (close() lets those finish): only once the connections are gone. */
  private ensureLive(): void {
    if (this.lostErr) throw this.lostErr;
    if (this.closed) throw this.aborted ? this.life.signal.reason : destroyedError('this TcpStore was closed');
  }

  /**
   * Every request on the pipelined connection goes through here: per-call timeout and signal.
   * `step`: a later request of an operation already under way (see ensureLive).
   */
  private call<T>(frame: Buffer | Buffer[], read: Reader<T> | null, what: string, opts?: OpOptions, key?: OpKeys, step = false): Promise<T> {
    if (step) this.ensureLive();
    else this.ensureOpen();
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    const p = this.main.request(frame, read, timeoutMs, what, key);
    if (!opts?.signal && opts?.timeoutMs === undefined) return p;
    return guard(p, {
      timeoutMs, signal: opts?.signal, what,
      fields: keyFields(key),
      onTimeout: (elapsedMs) => timeoutError(`store ${what} timed out after ${timeoutMs}ms${keySuffix(key)}`, { ...keyFields(key), timeoutMs, elapsedMs }),
    });
  }

  async set(key: string, value: StoreValue, opts?: OpOptions): Promise<void> {
    this.wrote(key);
    await this.call(keyValueFrame(Op.SET, this.wireKey(key), this.checkValue(valueBytes(value), 'set', key)), null, 'set', opts, key);
  }

  async get(key: string, opts?: OpOptions): Promise<Uint8Array> {
    this.ensureOpen();
    const wk = this.wireKey(key);
    if (this.extended) {
      // With an idle wait connection at hand, WAIT_GET there: one round trip whether or not the
      // key exists yet, and the value is pushed the moment it is written. Without one, TRY_GET on
      // the pipelined connection (no connection to open when the key is there), and WAIT_GET only
      // when it is missing.
      if (!(this.idle.length > 0 && this.mayBypass(key))) {
        const v = await this.call(keyFrame(Op.TRY_GET, wk), readTryGet, 'get', opts, key, true);
        if (v !== undefined) return v;
      }
      return (await this.waitWire([wk], [key], opts, undefined, true, 'get'))![0];
    }
    const ready = await this.call(keyListFrame(Op.CHECK, [wk]), readU8, 'get', opts, key, true);
    if (ready !== CheckReply.READY) await this.waitWire([wk], [key], opts, undefined, true);
    return this.call(keyFrame(Op.GET, wk), readBytes, 'get', opts, key, true);
  }

  /**
   * get, then delete the key: a consuming read, for keys written once and read once. Against a
   * groupcomm server this is one WAIT_GET that deletes what it returns (no second request, no
   * reply to wait for); elsewhere a get followed by an unawaited deleteKey.
   */
  async take(key: string, opts?: OpOptions): Promise<Uint8Array> {
    this.ensureOpen();
    if (this.extended) {
      const wk = this.wireKey(key);
      if (!(this.idle.length > 0 && this.mayBypass(key))) {
        const v = await this.call(keyFrame(Op.TRY_GET, wk), readTryGet, 'get', opts, key, true);
        if (v !== undefined) {
          this.deleteKey(key).catch(() => {});
          return v;
        }
      }
      return (await this.waitWire([wk], [key], opts, undefined, true, 'take'))![0];
    }
    const v = await this.get(key, opts);
    this.deleteKey(key).catch(() => {});
    return v;
  }

  /**
   * Store.subscribe: against a groupcomm server, a connection of its own that receives every
   * key written under `prefix` as the server applies the write (SUBSCRIBE). undefined against a
   * torch server. `onMessage` runs inside the socket's data handler: it must not throw.
   */
  async subscribe(prefix: string, onMessage: (key: string, value: Uint8Array) => void, opts?: OpOptions): Promise<Subscription | undefined> {
    this.ensureOpen();
    if (typeof prefix !== 'string' || !prefix.endsWith('/')) throw invalidArgument(`subscribe: prefix must end in '/', got '${prefix}'`);
    if (!this.extended) return undefined;
    const cut = this.prefix ? 1 : 0;
    const local = this.spec.local?.subscribeLocal ? this.subscribeLocal(prefix, (k, v) => onMessage(k.slice(cut), v)) : undefined;
    if (local) return local;
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    this.waiting++;
    let conn: Connection;
    try {
      ({ conn } = await openConnection({ ...this.spec, timeoutMs, signal: anySignal([opts?.signal, this.life.signal]) }));
    } catch (e) {
      throw this.lostErr ?? e;
    } finally {
      this.waiting--;
    }
    if (this.closed) {
      conn.close();
      this.ensureLive();
    }
    const sub = this.track(new SubscriptionHandle((e) => conn.close(e)));
    conn.onClose((e) => sub.end(e));
    // Set before the request: pushes may arrive in the same read as the reply.
    conn.stream((cur) => {
      const kn = cur.u64();
      if (kn > 1 << 20) throw protocolError(`store pushed a key of ${kn} bytes`);
      const at = cur.take(kn);
      const v = readBytes(cur);
      onMessage(cur.buf.toString('utf8', at + cut, at + kn), v);
    });
    let status: number;
    try {
      status = await guard(conn.request(keyFrame(Op.SUBSCRIBE, this.wireKey(prefix)), readU8, timeoutMs, 'subscribe', prefix), {
        timeoutMs, signal: opts?.signal, what: `subscribe to ${prefix}`, fields: { key: prefix },
        onTimeout: (elapsedMs) => timeoutError(`store subscribe timed out after ${timeoutMs}ms, key: ${prefix}`, { key: prefix, timeoutMs, elapsedMs }),
      });
    } catch (e) {
      sub.close();
      throw e;
    }
    if (status !== SubscribeReply.OK) {
      sub.close();
      throw invalidArgument(status === SubscribeReply.REFUSED
        ? `subscribe: the store lets clients subscribe only to mailboxes (<namespace>/to/<rank>/), not '${prefix}'`
        : `subscribe: another client already subscribed to '${prefix}'`, { key: prefix });
    }
    return sub;
  }

  /**
   * subscribe() against the server in this process: pushes are calls (TcpStoreServer.subscribeLocal).
   * undefined when that server is closing (the caller then goes the TCP way, and fails as it would).
   */
  private subscribeLocal(prefix: string, onMessage: (key: string, value: Uint8Array) => void): Subscription | undefined {
    let sub: SubscriptionHandle | undefined;
    let handle: { close(): void } | null;
    try {
      handle = this.spec.local!.subscribeLocal!(this.wireLatin1(prefix), onMessage, (e) => sub!.end(e));
    } catch {
      return undefined;
    }
    if (handle === null) throw invalidArgument(`subscribe: another client already subscribed to '${prefix}'`, { key: prefix });
    const h = handle;
    sub = this.track(new SubscriptionHandle(() => h.close()));
    return sub;
  }

  /** Keeps `sub` until it ends, so that close() can end it. */
  private track(sub: SubscriptionHandle): SubscriptionHandle {
    this.subscriptions.add(sub);
    sub.onClose(() => this.subscriptions.delete(sub));
    return sub;
  }

  async add(key: string, delta: number | bigint, opts?: OpOptions): Promise<number> {
    if (typeof delta === 'number' && !Number.isSafeInteger(delta)) throw invalidArgument(`add: delta must be an integer, got ${delta}`);
    this.wrote(key);
    return this.addRaw(this.wireKey(key), BigInt(delta), opts, key);
  }

  private async addRaw(wk: Buffer, delta: bigint, opts?: OpOptions, key?: string): Promise<number> {
    const f = new Frame(1 + u64 + wk.length + 8).u8(Op.ADD).bytes(wk).i64(delta).done();
    return safeNumber(await this.call(f, readI64, 'add', opts, key), 'add');
  }

  async compareSet(key: string, expected: StoreValue, desired: StoreValue, opts?: OpOptions): Promise<Uint8Array> {
    const wk = this.wireKey(key);
    const e = this.checkValue(valueBytes(expected), 'compareSet', key);
    const d = this.checkValue(valueBytes(desired), 'compareSet', key);
    this.wrote(key);
    const f = new Frame(1 + 3 * u64 + wk.length + e.length + d.length).u8(Op.COMPARE_SET).bytes(wk).bytes(e).bytes(d).done();
    return this.call(f, readBytes, 'compareSet', opts, key);
  }

  async check(keys: string[], opts?: OpOptions): Promise<boolean> {
    this.checkCount(keys.length, 'check');
    const r = await this.call(keyListFrame(Op.CHECK, keys.map((k) => this.wireKey(k))), readU8, 'check', opts, keys);
    return r === CheckReply.READY;
  }

  async wait(keys: string[], opts?: OpOptions): Promise<void> {
    this.ensureOpen();
    this.checkCount(keys.length, 'wait');
    await this.waitWire(keys.map((k) => this.wireKey(k)), keys, opts);
  }

  async deleteKey(key: string, opts?: OpOptions): Promise<boolean> {
    this.wrote(key);
    return (await this.call(keyFrame(Op.DELETE_KEY, this.wireKey(key)), readI64, 'deleteKey', opts, key)) > 0n;
  }

  /**
   * Deletes the keys without an answer: against a groupcomm server one reply-less request
   * (resolves once sent, like set); elsewhere one deleteKey per key.
   */
  async discard(keys: string[], opts?: OpOptions): Promise<void> {
    if (keys.length === 0) return;
    if (!this.extended) {
      await Promise.all(keys.map((k) => this.deleteKey(k, opts)));
      return;
    }
    for (const k of keys) this.wrote(k);
    await this.call(keyListFrame(Op.DELETE_QUIET, keys.map((k) => this.wireKey(k))), null, 'discard', opts, keys);
  }

  async numKeys(opts?: OpOptions): Promise<number> {
    return safeNumber(await this.call(Buffer.from([Op.GETNUMKEYS]), readI64, 'numKeys', opts), 'numKeys');
  }

  async append(key: string, value: StoreValue, opts?: OpOptions): Promise<void> {
    this.wrote(key);
    const wk = this.wireKey(key);
    const v = this.checkValue(valueBytes(value), 'append', key);
    if (!this.extended) {
      await this.call(keyValueFrame(Op.APPEND, wk, v), null, 'append', opts, key);
      return;
    }
    // A groupcomm server answers: a value that would outgrow the limit is an error here, and the
    // connection (with everything queued behind the append) stays.
    const status = await this.call(keyValueFrame(Op.APPEND_CHECKED, wk, v), readU8, 'append', opts, key);
    if (status !== 0) {
      throw invalidArgument(`append: '${key}' would grow past the store's maxValueBytes ${this.limits.maxValueBytes}; nothing was appended`, { key });
    }
  }

  async multiGet(keys: string[], opts?: OpOptions): Promise<Uint8Array[]> {
    // No keys, no reply bytes: a reader that consumes nothing would never be reached.
    this.ensureOpen();
    if (keys.length === 0) return [];
    this.checkCount(keys.length, 'multiGet');
    const wks = keys.map((k) => this.wireKey(k));
    if (this.extended && this.idle.length > 0 && keys.every((k) => this.mayBypass(k))) {
      return (await this.waitWire(wks, keys, opts, undefined, true, 'get'))!;
    }
    const frame = keyListFrame(Op.MULTI_GET, wks);
    if (this.extended) {
      // CHECK and MULTI_GET back to back: one round trip when every key is there (a groupcomm
      // server answers a missing key with an empty value, it does not drop the connection).
      const ready = this.call(keyListFrame(Op.CHECK, wks), readU8, 'multiGet', opts, keys, true);
      const values = this.call(frame, readManyBytes(keys.length), 'multiGet', opts, keys, true);
      values.catch(() => {});
      if ((await ready) === CheckReply.READY) return values;
      return (await this.waitWire(wks, keys, opts, undefined, true, 'get'))!;
    }
    await this.waitWire(wks, keys, opts);
    return this.call(frame, readManyBytes(keys.length), 'multiGet', opts, keys, true);
  }

  async multiSet(keys: string[], values: StoreValue[], opts?: OpOptions): Promise<void> {
    if (keys.length !== values.length) throw invalidArgument(`multiSet: ${keys.length} keys but ${values.length} values`);
    this.checkCount(keys.length, 'multiSet');
    const vs = values.map((v, i) => this.checkValue(valueBytes(v), 'multiSet', keys[i]));
    const wks = keys.map((k) => this.wireKey(k));
    this.checkRequest(wks, vs, 'multiSet');
    for (const k of keys) this.wrote(k);
    await this.call(multiSetFrame(wks, vs), null, 'multiSet', opts, keys);
  }

  /**
   * Store.publish: keys for a subscriber, written like set (one key) or multiSet. Unlike those,
   * the client keeps no record of the write (see mayBypass: a read of these keys through this
   * client could overtake it, so do not read them back), and with the server in this process
   * the write is applied at once, in memory (TcpStoreServer.publishLocal), unless requests of
   * this client are still on their way there (then it follows them over the link, in order).
   * The timeout is enforced by the connection's watchdog, not a timer per call.
   */
  publish(keys: string[], values: Uint8Array[], opts?: OpOptions): Promise<void> {
    if (this.closing) return Promise.reject(destroyedError('this TcpStore was closed'));
    if (keys.length !== values.length) return Promise.reject(invalidArgument(`publish: ${keys.length} keys but ${values.length} values`));
    if (keys.length === 0) return Promise.resolve();
    for (const v of values) if (!(v instanceof Uint8Array)) return Promise.reject(invalidArgument(`publish: values are Uint8Array, got ${typeof v}`));
    let wks: Buffer[];
    try {
      this.checkCount(keys.length, 'publish');
      values.forEach((v, i) => this.checkValue(v, 'publish', keys[i]));
      wks = keys.map((k) => this.wireKey(k));
      this.checkRequest(wks, values, 'publish');
    } catch (e) {
      return Promise.reject(e);
    }
    const local = this.spec.local;
    if (local?.publishLocal && this.extended && !this.main.closed && !this.main.unsent) {
      try {
        local.publishLocal(keys.map((k) => this.wireLatin1(k)), values);
        return Promise.resolve();
      } catch (e) {
        return Promise.reject(e);
      }
    }
    const frame = keys.length === 1
      ? keyValueFrame(Op.SET, wks[0], values[0])
      : multiSetFrame(wks, values);
    if (opts?.signal) return this.call(frame, null, 'publish', opts, keys);
    return this.main.request(frame, null, effectiveTimeout(opts, this.timeoutMs), 'publish', keys);
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
    await this.call(keyValueFrame(Op.QUEUE_PUSH, this.wireKey(key), this.checkValue(valueBytes(value), 'queuePush', key)), null, 'queuePush', opts, key);
  }

  /** Pops the oldest value; with block (default) waits for one, else undefined when empty. */
  async queuePop(key: string, opts: OpOptions & { block?: boolean } = {}): Promise<Uint8Array | undefined> {
    this.ensureOpen();
    const wk = this.wireKey(key);
    const t0 = performance.now();
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    for (;;) {
      const v = await this.call(keyFrame(Op.QUEUE_POP, wk), readQueuePop, 'queuePop', opts, key, true);
      if (v !== undefined || opts.block === false) return v;
      const left = timeoutMs - (performance.now() - t0);
      await this.waitWire([wk], [key], { timeoutMs: Math.max(1, left), signal: opts.signal }, timeoutMs);
    }
  }

  async queueLen(key: string, opts?: OpOptions): Promise<number> {
    return safeNumber(await this.call(keyFrame(Op.QUEUE_LEN, this.wireKey(key)), readI64, 'queueLen', opts, key), 'queueLen');
  }

  /** Notes that `key` is changed by the request about to be sent on the main connection (see mayBypass). */
  private wrote(key: string): void {
    const u = this.unconfirmed;
    u.set(key, this.main.seq);
    if (u.size <= MAX_TRACKED_WRITES) return;
    for (const [k, seq] of u) if (this.main.applied(seq)) u.delete(k);
    if (u.size > MAX_TRACKED_WRITES / 2) {
      // Mostly reply-less writes (nothing confirms them): forget them all, and bypass nothing
      // until the newest of them is confirmed.
      u.clear();
      this.unconfirmedCutoff = this.main.seq;
    }
  }

  /**
   * May a read of `key` go on a wait connection instead of the main one? Only if no change of
   * the key made by this client could still be on its way: the server applies each connection's
   * requests in order, but nothing orders two connections, so a WAIT_GET could otherwise overtake
   * this client's own SET or DELETE and read the older value.
   */
  private mayBypass(key: string): boolean {
    if (!this.main.applied(this.unconfirmedCutoff)) return false;
    const seq = this.unconfirmed.get(key);
    if (seq === undefined) return true;
    if (!this.main.applied(seq)) return false;
    this.unconfirmed.delete(key);
    return true;
  }

  /**
   * WAIT (or, with `get`, WAIT_GET, which also returns the values) on a connection of its own.
   * On timeout or abort: CANCEL_WAIT, and the reply reader accepts either WAIT_CANCELED alone or
   * a STOP_WAITING (with the values) that raced it followed by WAIT_CANCELED; after that the
   * connection is in step again and goes back to the pool.
   */
  private async waitWire(
    wks: Buffer[], keys: string[], opts?: OpOptions, reportMs?: number, knownMissing = false, mode: 'wait' | 'get' | 'take' = 'wait',
  ): Promise<Uint8Array[] | undefined> {
    this.waiting++;
    try {
      const get = mode !== 'wait';
      this.ensureLive();
      const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
      const t0 = performance.now();
      let conn = this.idle.pop();
      if (!conn) {
        // Often the keys are there already: one pipelined CHECK saves opening a connection.
        if (!knownMissing && await this.call(keyListFrame(Op.CHECK, wks), readU8, 'wait', opts, keys, true) === CheckReply.READY) return undefined;
        let c: Connection;
        try {
          ({ conn: c } = await openConnection({
            ...this.spec,
            timeoutMs: Math.max(1, timeoutMs - (performance.now() - t0)),
            signal: anySignal([opts?.signal, this.life.signal]),
          }));
        } catch (e) {
          if (this.lostErr) throw this.lostErr;
          // Out of time (or aborted) before the wait could even be sent: still a wait that gave up
          // on these keys, and the error says so.
          const shown = reportMs ?? timeoutMs;
          if (isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) {
            throw timeoutError(`wait timeout after ${shown}ms, keys: ${keys.join(', ')} (opening a wait connection: ${e.message})`,
              { keys, timeoutMs: shown, elapsedMs: performance.now() - t0, cause: e });
          }
          if (isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED')) {
            throw abortedError(`wait for ${keys.join(', ')} aborted`, { keys, cause: e });
          }
          throw e;
        }
        if (this.closed) {
          c.close();
          this.ensureLive();
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
      let cancelTimer: NodeJS.Timeout | undefined;
      const reply: Promise<unknown> = get
        ? c.request(waitGetFrame(wks, mode === 'take'), readWaitGet(wks.length), Infinity)
        : c.request(keyListFrame(Op.WAIT, wks), readU8, Infinity);
      reply.then(
        () => { clearTimeout(cancelTimer); this.release(c); },
        () => { clearTimeout(cancelTimer); c.close(); },
      );
      const shown = reportMs ?? timeoutMs;
      const left = Math.max(1, timeoutMs - (performance.now() - t0));
      const got = await guard(reply, {
        timeoutMs: left,
        signal: opts?.signal,
        what: `wait for ${keys.join(', ')}`,
        fields: { keys },
        onTimeout: (elapsedMs) => timeoutError(`wait timeout after ${shown}ms, keys: ${keys.join(', ')}`, { keys, timeoutMs: shown, elapsedMs }),
        cancel: () => {
          if (cancelled || c.closed) return;
          cancelled = true;
          // The WAIT's reply may already have been read in this very tick (an abort fired by a
          // 'data' listener, before the reply's promise callbacks ran). Then there is nothing to
          // cancel, and a CANCEL_WAIT now would leave a WAIT_CANCELED byte that the next WAIT on
          // this pooled connection would take for its own reply.
          const swapped = c.replaceHeadReader((cur) => {
            const b = cur.u8();
            if (b === WaitReply.STOP_WAITING) {
              if (get) for (let i = 0; i < wks.length; i++) readBytes(cur);
              if (cur.u8() !== WaitReply.WAIT_CANCELED) throw protocolError('expected WAIT_CANCELED after STOP_WAITING');
            } else if (b !== WaitReply.WAIT_CANCELED) {
              throw protocolError(`unexpected wait reply ${b}`);
            }
            return b;
          });
          if (!swapped) return;
          c.writeNow(Buffer.from([Op.CANCEL_WAIT]));
          // A server that never answers the cancel would keep this connection (and its socket)
          // forever: the WAIT itself has no deadline. Give the answer the store's timeout.
          cancelTimer = setTimeout(() => c.close(timeoutError(
            `store ${this.host}:${this.port} did not answer CANCEL_WAIT within ${this.timeoutMs}ms (keys: ${keys.join(', ')})`,
            { keys, timeoutMs: this.timeoutMs })), this.timeoutMs);
          cancelTimer.unref?.();
        },
      });
      return get ? got as Uint8Array[] : undefined;
    } finally {
      this.waiting--;
    }
  }

  private release(c: Connection): void {
    if (this.closed || c.closed) return c.close();
    if (this.idle.length >= MAX_IDLE_WAIT_CONNECTIONS) {
      this.waitConns.delete(c);
      return c.close();
    }
    this.idle.push(c);
  }

  // ---- lifecycle (base/lifecycle.ts) ----------------------------------------------------------

  /**
   * Graceful: refuses new operations, lets the ones under way finish (within `timeoutMs`, default
   * the store's timeout, and until `signal` fires; then they are aborted), then closes the
   * connections and subscriptions, and the server too when this store started it (graceful as
   * well). Idempotent.
   */
  close(opts: CloseOptions = {}): Promise<void> {
    this.closing ??= (async () => {
      const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
      const until = performance.now() + timeoutMs;
      if (!await this.drained(until, opts.signal)) {
        this.shut(this.abortError(opts.signal?.aborted ? opts.signal.reason : `close() waited ${timeoutMs}ms for the operations in flight`));
      }
      this.shut(destroyedError('this TcpStore was closed'));
      await this.server?.close({ timeoutMs: Math.max(1, until - performance.now()), signal: opts.signal });
    })();
    return this.closing;
  }

  /**
   * Immediate and local: operations in flight reject with ERR_GROUPCOMM_ABORTED (`cause`: the
   * reason), connections and subscriptions close now, and a server this store started is
   * aborted. Idempotent.
   */
  abort(reason?: unknown): Promise<void> {
    if (!this.aborted) {
      this.shut(this.abortError(reason));
      const server = this.server?.abort(reason) ?? Promise.resolve();
      this.closing ??= server;
    }
    return this.closing!;
  }

  async [asyncDispose](): Promise<void> {
    await this.close();
  }

  private abortError(reason: unknown): GroupcommError {
    this.aborted = true;
    const why = reason === undefined ? '' : `: ${reason instanceof Error ? reason.message : String(reason)}`;
    const err = abortedError(`this TcpStore was aborted${why}`, { cause: reason });
    this.life.abort(err);
    return err;
  }

  /**
   * Resolves true once nothing is in flight (no request awaiting its reply or write, no wait or
   * subscribe under way), false at `until` or when `signal` fires. Polled: keeping a count on
   * every request would cost the request path, and close() is rare. A check from a timer never
   * falls between two steps of one operation: the next step starts in the same microtask run
   * that delivered the previous one's reply.
   */
  private async drained(until: number, signal?: AbortSignal): Promise<boolean> {
    while (this.main.inFlight || this.waiting > 0) {
      if (this.aborted || signal?.aborted || performance.now() >= until) return false;
      await sleep(Math.min(2, Math.max(1, until - performance.now()))).catch(() => {});
    }
    return true;
  }

  /**
   * Liveness (GROUPCOMM_LIVENESS_MS, L): while a call waits on the server (a wait, a blocking get,
   * a subscription, a request in flight), every L/5 a PING goes on the main connection; one not
   * answered within L means the link is cut or the server is gone, and every connection fails
   * with ERR_GROUPCOMM_PEER_LOST (peerRank: hostRank) instead of waiting out the call's timeout.
   * A blocked WAIT cannot tell: its connection carries nothing until the key comes. Not for a
   * client reaching its own in-process server (nothing to cut).
   */
  private startLiveness(): void {
    const bound = setting('GROUPCOMM_LIVENESS_MS');
    if (!bound || this.spec.local) return;
    this.liveTimer = setInterval(() => {
      if (this.closed) {
        clearInterval(this.liveTimer);
        return;
      }
      if (this.pinging || (this.waiting === 0 && this.subscriptions.size === 0 && !this.main.inFlight)) return;
      this.pinging = true;
      this.ping({ timeoutMs: bound }).then(() => {}, (e) => {
        if (this.closed || !isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) return;
        const by = this.hostRank === undefined ? '' : ` (hosted by rank ${this.hostRank})`;
        const err = peerLostError(`store ${this.host}:${this.port}${by} did not answer a ping within ${bound} ms ` +
          `(GROUPCOMM_LIVENESS_MS): the link is cut or the server is gone`, { peerRank: this.hostRank, cause: e });
        // Connections being opened (a wait's, a subscription's) give up too, with this error.
        this.lostErr = err;
        this.shut(err);
        this.life.abort(err);
      }).finally(() => { this.pinging = false; });
    }, Math.max(10, Math.floor(bound / 5)));
    this.liveTimer.unref?.();
  }

  /** Closes every connection and subscription with `err` (pending requests reject with it). */
  private shut(err: GroupcommError): void {
    if (this.closed) return;
    this.closed = true;
    if (this.liveTimer) clearInterval(this.liveTimer);
    this.main.close(err);
    for (const c of [...this.waitConns]) c.close(err);
    for (const sub of [...this.subscriptions]) sub.fail(err);
    this.idle.length = 0;
  }
}
