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
 *
 * Files. This one is the public class: creation and the operations. It is built in layers:
 * client_base.ts (state, LIMITS and the checks against them, the main connection's call path,
 * liveness, lifecycle) ← client_wait.ts (waits and subscriptions, on connections of their own)
 * ← this file; client_frames.ts encodes the requests, client_subscription.ts is what
 * subscribe() hands out.
 */
import { effectiveTimeout, type OpOptions } from '../base/deadline.js';
import { destroyedError, invalidArgument, protocolError } from '../base/errors.js';
import { openConnection, type ConnectSpec } from './connect.js';
import { Connection, readBytes, readI64, readManyBytes, readQueuePop, readTryGet, readU32, readU8 } from './connection.js';
import { CheckReply, Frame, INIT_KEY, keyListFrame, Op, type StoreLimits } from './protocol.js';
import { TcpStoreServer } from './server.js';
import type { PublishOptions, Store, StoreValue } from './types.js';
import { logger as makeLogger, type Logger } from '../base/log.js';
import { checkFactory, factoryToken } from '../base/factory.js';
import { resolveSecret } from '../base/secret.js';
import { launchEnv } from '../base/launch_env.js';
import { keyFrame, keyValueFrame, multiSetFrame, safeNumber, u64, valueBytes } from './client_frames.js';
import { WaitingClient } from './client_wait.js';

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

export class TcpStore extends WaitingClient implements Store {
  private constructor(
    token: symbol,
    spec: ConnectSpec,
    main: Connection,
    extended: boolean,
    prefixKeys: boolean,
    server?: TcpStoreServer,
  ) {
    // torch's TCPStore(host, port, …) connects in its constructor, blocking; the JavaScript
    // equivalent of a blocking constructor is an awaited factory (a lazily connecting `new` would
    // leave port, server and connection errors unknown until some later call).
    checkFactory(token, MADE, 'TcpStore', 'const store = await TcpStore.create({ host, port })',
      'a store connects (and, with isServer, listens) before it is usable');
    super(spec, main, extended, prefixKeys, server);
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
   * this client are still on their way there (then it follows them over the link, in order);
   * with `handOver`, a big value goes on to a subscriber's socket without a copy.
   * The timeout is enforced by the connection's watchdog, not a timer per call.
   */
  publish(keys: string[], values: Uint8Array[], opts?: PublishOptions): Promise<void> {
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
        local.publishLocal(keys.map((k) => this.wireLatin1(k)), values, opts?.handOver === true);
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

  /** Store.publishesLocally: the server runs in this process and publish() reaches it in memory. */
  get publishesLocally(): boolean {
    return this.spec.local?.publishLocal !== undefined && this.extended && !this.closing;
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
}
