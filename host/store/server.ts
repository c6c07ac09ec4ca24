/**
 * TcpStoreServer: a TCPStore-compatible server on one event loop (torch's libuv backend is the
 * model: incremental, transactional parsing; limits checked on declared lengths before any bytes
 * are buffered; a bad client loses its own connection and nothing else).
 *
 * This module is the network side: connections, the handshake, parsing, replies. The data and
 * the wait bookkeeping live in table.ts.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { effectiveTimeout, guard, type OpOptions } from '../base/deadline.js';
import { asyncDispose, type CloseOptions } from '../base/lifecycle.js';
import { bindError, destroyedError, type GroupcommError, invalidArgument, peerLostError, timeoutError } from '../base/errors.js';
import { logger as makeLogger, type Logger } from '../base/log.js';
import { checkFactory, factoryToken } from '../base/factory.js';
import {
  AUTH_NONCE_BYTES, AUTH_REQUIRED_NONCE, CheckReply, Cursor, EXT_PROBE_KEY, isAscii, resolveLimits,
  Frame, INCOMPLETE, Inbox, INIT_KEY, Op, SubscribeReply, VALIDATE_MAGIC, WAIT_GET_DELETE, WaitReply, type StoreLimits,
} from './protocol.js';
import { authProof } from './auth.js';
import { checkExposure, resolveSecret } from '../base/secret.js';
import { setting } from '../base/config.js';
import { bytesOf, KeyTable, strtoll, valueOf, Violation, type Value } from './table.js';
import { LocalSocket } from './local.js';
/** Pause reading from a client whose unread replies exceed this (it pipelines faster than it reads). */
const MAX_PENDING_REPLY_BYTES = 64 * 1024 * 1024;
/** A reply buffer this big is written as it is (its own iovec) rather than copied into a batch. */
const FLUSH_ALONE_BYTES = 16 * 1024;

const EXT_PROBE_LATIN1 = Buffer.from(EXT_PROBE_KEY, 'utf8').toString('latin1');
/**
 * A mailbox prefix: `<ns>/to/<rank>/` with a non-empty namespace — a process group's
 * (pg/messages.ts: `<group>/<epoch>/to/<rank>/`) or the coordinator's fault inbox
 * (`groupcomm/faults/<label>/to/<rank>/`). One rank's messages, never a whole namespace.
 */
const MAILBOX_PREFIX = /^[^]*[^/][^]*\/to\/\d+\/$/;
const STOP_WAITING = Buffer.from([WaitReply.STOP_WAITING]);
const WAIT_CANCELED = Buffer.from([WaitReply.WAIT_CANCELED]);
const READY = Buffer.from([CheckReply.READY]);
const NOT_READY = Buffer.from([CheckReply.NOT_READY]);

/** A u64 length field, little-endian (lengths here stay far below 2^53). */
function putU64(f: Buffer, at: number, n: number): void {
  f.writeUInt32LE(n % 0x1_0000_0000, at);
  f.writeUInt32LE(Math.floor(n / 0x1_0000_0000), at + 4);
}

/** Writes a latin1 string (a wire key); short ones in a loop, cheaper than the native call. */
function putLatin1(f: Buffer, at: number, s: string): void {
  if (s.length > 64) {
    f.write(s, at, 'latin1');
    return;
  }
  for (let i = 0; i < s.length; i++) f[at + i] = s.charCodeAt(i);
}

/** A wire key (latin1, one char per byte) as the text it encodes (UTF-8). */
function utf8Key(key: string): string {
  return isAscii(key) ? key : Buffer.from(key, 'latin1').toString('utf8');
}

export interface TcpStoreServerOptions {
  /** Interface to bind (default 127.0.0.1; torch binds every interface, we do not by default). */
  host?: string;
  /** Port to bind; 0 picks a free one, readable as `.port` afterwards. */
  port?: number;
  /** Number of clients expected to join through the `init/` counter (see waitForWorkers). */
  worldSize?: number;
  limits?: Partial<StoreLimits>;
  /**
   * When set, clients must prove they know it (HMAC handshake) before anything else. Default
   * GROUPCOMM_SECRET. Without one, listening on a non-loopback address is refused unless `insecure`.
   */
  secret?: string | Uint8Array;
  /** Allow a non-loopback `host` without a secret (logged as a warning). Default GROUPCOMM_INSECURE. */
  insecure?: boolean;
  /**
   * Which prefixes SUBSCRIBE may claim. 'mailboxes' (default): only one rank's mailbox
   * (`<namespace>/to/<rank>/`), and only by a groupcomm client (one that sent the extension probe;
   * with a secret, authenticated). 'any': any prefix ending in '/' (tests, trusted setups).
   */
  subscribePrefixes?: 'mailboxes' | 'any';
  /** Close a connection that has not finished the handshake (and authentication) by then. Default GROUPCOMM_STORE_HANDSHAKE_TIMEOUT_MS (10 s). */
  handshakeTimeoutMs?: number;
  /** Connections held at once; more are closed at accept. Default GROUPCOMM_STORE_MAX_CONNECTIONS (4096). */
  maxConnections?: number;
  /** Server-wide bytes held in partially received requests. Default GROUPCOMM_STORE_MAX_BUFFERED_BYTES (1 GiB). */
  maxBufferedBytes?: number;
  logger?: Logger;
  /**
   * A net.Server to serve on instead of binding host:port, e.g. one the caller bound itself to
   * restrict the interface or hold the port (torch's master_listen_fd). Listened on if it is not
   * listening yet; closed by close().
   */
  server?: net.Server;
}

class Conn {
  readonly id: number;
  stage: 'validate' | 'auth-hello' | 'auth-proof' | 'ready';
  readonly inbox = new Inbox(true);
  out: Buffer[] = [];
  /** The array `out` was last flushed from (flush swaps the two). */
  spare: Buffer[] = [];
  outBytes = 0;
  /** Keys this connection's current WAIT still misses (torch: one count per connection). */
  waitCount = 0;
  waitKeys: string[] | null = null;
  /** The keys of a pending WAIT_GET (answered with their values), null for a plain WAIT. */
  waitGet: string[] | null = null;
  /** The pending WAIT_GET deletes its keys once answered. */
  waitTake = false;
  closed = false;
  /** The prefix this connection subscribed to (it is a push stream from then on). */
  subscribed: string | null = null;
  clientNonce?: Buffer;
  serverNonce?: Buffer;
  /** Sent the extension probe: a groupcomm client (SUBSCRIBE needs it). */
  groupcomm = false;
  /** Bytes this connection's inbox holds toward the server-wide budget. */
  held = 0;
  /** Closes the connection if the handshake is not done in time. */
  deadline?: NodeJS.Timeout;
  constructor(readonly socket: net.Socket, id: number) {
    this.id = id;
    this.stage = 'validate';
  }
  get remote(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }
}

/** A subscriber in this process (subscribeLocal): its pushes are calls, not bytes on a link. */
class LocalSub {
  closed = false;
  constructor(readonly fn: (key: string, value: Uint8Array) => void, readonly onEnd: (e: GroupcommError) => void) {}
}

/** Only listen() constructs a server (base/factory.ts). */
const MADE = factoryToken('TcpStoreServer');

export class TcpStoreServer {
  private readonly hostOption: string;
  readonly worldSize?: number;
  readonly limits: StoreLimits;
  private readonly table = new KeyTable<Conn>((c) => this.wake(c), new Set([EXT_PROBE_LATIN1]));
  private readonly conns = new Set<Conn>();
  /** Ranks announced with JOIN_RANK (a groupcomm client given a rank); kept after they leave. */
  private readonly joinedRanks = new Set<number>();
  private readonly dirty = new Set<Conn>();
  /** Subscriptions by prefix (latin1, as keys are): writes under a prefix are pushed, not stored. */
  private readonly subs = new Map<string, Conn | LocalSub>();
  /** The lengths of those prefixes, shortest first: a key is looked up once per length, not per '/'. */
  private subLengths: number[] = [];
  /** Keys answered to a consuming WAIT_GET, deleted at the end of the current request. */
  private takes: string[] = [];
  private readonly cursor = new Cursor();
  /**
   * Requests (onData) and publishLocal calls being handled. A subscriber called from inside one
   * may publish in turn; only the outermost applies the consuming reads (`takes`).
   */
  private depth = 0;
  private readonly secret?: Buffer;
  private readonly log: Logger;
  private readonly subscribeAny: boolean;
  private readonly handshakeTimeoutMs: number;
  private readonly maxConnections: number;
  private readonly maxBufferedBytes: number;
  /** Bytes held in partial requests, all connections together. */
  private buffered = 0;
  /** Connections refused at the cap since the last warning (the log is rate limited). */
  private refusedAtCap = 0;
  private nextId = 1;
  private closing?: Promise<void>;
  /** Sockets ended by a graceful close() and not closed yet (abort() or the deadline destroys them). */
  private readonly ending = new Set<net.Socket>();
  private aborted = false;

  private constructor(token: symbol, private readonly server: net.Server, opts: TcpStoreServerOptions) {
    checkFactory(token, MADE, 'TcpStoreServer', 'const server = await TcpStoreServer.listen({ host, port })', 'a server listens before it is usable');
    this.hostOption = opts.host ?? '127.0.0.1';
    this.worldSize = opts.worldSize;
    this.limits = resolveLimits(opts.limits);
    this.log = opts.logger ?? makeLogger('STORE');
    this.secret = resolveSecret(opts.secret, 'TcpStoreServer');
    this.subscribeAny = opts.subscribePrefixes === 'any';
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? setting('GROUPCOMM_STORE_HANDSHAKE_TIMEOUT_MS');
    this.maxConnections = opts.maxConnections ?? setting('GROUPCOMM_STORE_MAX_CONNECTIONS');
    this.maxBufferedBytes = opts.maxBufferedBytes ?? setting('GROUPCOMM_STORE_MAX_BUFFERED_BYTES');
    server.on('connection', (s) => this.accept(s));
  }

  /** Binds and starts serving. Rejects with ERR_GROUPCOMM_BIND when the address cannot be bound (e.g. EADDRINUSE). */
  static async listen(opts: TcpStoreServerOptions = {}): Promise<TcpStoreServer> {
    const host = opts.host ?? '127.0.0.1';
    const port = opts.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalidArgument(`TcpStoreServer: bad port ${port}`);
    if (opts.worldSize !== undefined && !(Number.isInteger(opts.worldSize) && opts.worldSize > 0)) {
      throw invalidArgument(`TcpStoreServer: worldSize must be a positive integer, got ${opts.worldSize}`);
    }
    const server = opts.server ?? net.createServer({ noDelay: true });
    const store = new TcpStoreServer(MADE, server, opts);
    const bound = server.listening ? server.address() : undefined;
    checkExposure('TcpStoreServer', bound && typeof bound === 'object' ? bound.address : host, store.secret, opts.insecure, store.log);
    // An 'error' on a listening server (EMFILE on accept, say) with no listener would be thrown
    // and take the process down; the store logs it and keeps serving the clients it has.
    const onListenerError = (e: Error) => store.log.warn(`listener error: ${e.message}`);
    if (server.listening) {
      server.on('error', onListenerError);
      store.log.info(`serving on a listening server, port ${store.port}`);
      return store;
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => {
        reject(bindError('TcpStoreServer', host, port, e));
      };
      server.once('error', onError);
      server.listen({ host, port, backlog: 4096 }, () => {
        server.off('error', onError);
        server.on('error', onListenerError);
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

  /** Bytes held in partially received requests, all connections together (see maxBufferedBytes). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Number of keys held (what GETNUMKEYS answers). */
  get numKeys(): number {
    return this.table.size;
  }

  /**
   * Resolves once `worldSize` clients have joined (each client adds 1 to `init/`). The timeout
   * error says how many joined, like torch's "X/Y clients joined", and which ranks are missing
   * when the clients said who they are (TcpStore's `rank` option; `peerRanks` on the error).
   */
  waitForWorkers(opts: { worldSize?: number } & OpOptions = {}): Promise<void> {
    const worldSize = opts.worldSize ?? this.worldSize;
    if (worldSize === undefined) return Promise.resolve();
    const timeoutMs = effectiveTimeout(opts);
    const joined = () => {
      const v = this.table.get(INIT_KEY);
      if (v === undefined) return 0;
      try { return Number(strtoll(v)); } catch { return 0; }
    };
    if (this.closing) return Promise.reject(destroyedError('waitForWorkers on a closed TcpStoreServer'));
    if (joined() >= worldSize) return Promise.resolve();
    let unwatch = () => {};
    const p = new Promise<void>((resolve, reject) => {
      unwatch = this.table.watch(INIT_KEY, () => {
        if (this.closing) reject(destroyedError(`TcpStoreServer closed while waiting for clients (${joined()}/${worldSize} joined)`));
        else if (joined() >= worldSize) resolve();
      });
    });
    return guard(p, {
      timeoutMs,
      signal: opts.signal,
      what: 'waitForWorkers',
      fields: { key: INIT_KEY },
      onTimeout: (elapsedMs) => {
        const missing = this.joinedRanks.size === 0 ? undefined
          : Array.from({ length: worldSize }, (_, r) => r).filter((r) => !this.joinedRanks.has(r));
        return timeoutError(
          `Timed out after ${(timeoutMs / 1000).toFixed(1)} seconds waiting for clients. ` +
          `${joined()}/${worldSize} clients joined` +
          (missing ? `; missing ranks: [${missing.join(', ')}]` : '') +
          ` (${this.conns.size} connections open). Start the missing ranks or raise timeoutMs.`,
          { key: INIT_KEY, timeoutMs, elapsedMs, peerRanks: missing });
      },
      cancel: unwatch,
    }).finally(unwatch);
  }

  /**
   * The client end of an in-process link to this server (see local.ts), for a TcpStore in the
   * same process; undefined once the server is closing.
   */
  connectLocal(): LocalSocket | undefined {
    if (this.closing) return undefined;
    const [client, server] = LocalSocket.pair();
    client.urgent = true; // requests: see LocalSocket.urgent
    this.accept(server as unknown as net.Socket);
    return client;
  }

  /**
   * SUBSCRIBE for a client in this process (TcpStore over the in-process link): the same
   * semantics, but each push is a call of `fn` inside the write that caused it — no frame, no
   * link, no parsing on the other side. `prefix` is in wire form (latin1, like stored keys).
   * null when another live subscriber holds the prefix. `onEnd` is called if the server closes.
   */
  subscribeLocal(prefix: string, fn: (key: string, value: Uint8Array) => void, onEnd: (e: GroupcommError) => void): { close(): void } | null {
    if (this.closing) throw destroyedError('subscribe on a closed TcpStoreServer');
    if (!prefix.endsWith('/')) throw invalidArgument(`subscribe: prefix must end in '/', got '${prefix}'`);
    try {
      this.checkPrefix(prefix);
    } catch (e) {
      throw invalidArgument(`subscribe: ${(e as Error).message}`, { key: prefix });
    }
    const sub = new LocalSub(fn, onEnd);
    const backlog = this.claim(prefix, sub);
    if (!backlog) return null;
    for (const [k, v] of backlog) {
      this.callLocal(sub, utf8Key(k), bytesOf(v));
    }
    return {
      close: () => {
        sub.closed = true;
        if (this.subs.get(prefix) === sub) this.unsub(prefix);
      },
    };
  }

  /**
   * SET (one key) or MULTI_SET for a client in this process, applied now: no frame, no link, no
   * parsing (TcpStore.publish). Keys are in wire form (latin1, like stored keys); values are
   * copied, so the caller may reuse its buffers at once. Subscribers get their keys as with any
   * write; other keys are stored.
   */
  publishLocal(keys: string[], values: Uint8Array[]): void {
    if (this.closing) throw destroyedError('publish on a closed TcpStoreServer');
    for (let i = 0; i < keys.length; i++) {
      const v = values[i];
      if (keys[i].length > this.limits.maxKeyBytes) throw invalidArgument(`publish: key of ${keys[i].length} bytes exceeds maxKeyBytes ${this.limits.maxKeyBytes}`);
      if (v.length > this.limits.maxValueBytes) throw invalidArgument(`publish: value of ${v.length} bytes exceeds maxValueBytes ${this.limits.maxValueBytes}`);
    }
    // A subscriber called from here may publish in turn (a hub answering a query); the consuming
    // reads of a request being handled are applied when it is done (see onData).
    this.depth++;
    try {
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i];
        if (this.subs.size && this.push(k, values[i], false)) continue;
        const v = Buffer.from(values[i]);
        this.table.set(k, valueOf(v, 0, v.length));
      }
    } finally {
      if (--this.depth === 0 && this.takes.length) this.applyTakes();
    }
    this.flushAll();
  }

  /**
   * A subscription takes every key under its prefix away from the store, so only one rank's
   * mailbox (`<namespace>/to/<rank>/`) may be claimed, unless the server was told 'any'.
   */
  private checkPrefix(prefix: string): void {
    if (this.subscribeAny || MAILBOX_PREFIX.test(prefix)) return;
    throw new Violation(`SUBSCRIBE prefix '${prefix.slice(0, 100)}' is not a mailbox (…/to/<rank>/)`);
  }

  /**
   * Makes `sub` the subscriber of `prefix` unless a live one holds it (then null); returns the
   * keys stored under the prefix, now removed, for `sub` to be handed first.
   */
  private claim(prefix: string, sub: Conn | LocalSub): [string, Value][] | null {
    const holder = this.subs.get(prefix);
    if (holder && !holder.closed) return null;
    this.subs.set(prefix, sub);
    this.measureSubs();
    return this.table.takePrefix(prefix);
  }

  private unsub(prefix: string): void {
    this.subs.delete(prefix);
    this.measureSubs();
  }

  private measureSubs(): void {
    this.subLengths = [...new Set([...this.subs.keys()].map((p) => p.length))].sort((a, b) => a - b);
  }

  /** A throwing subscriber must not take the writer's connection down with it. */
  private callLocal(sub: LocalSub, key: string, value: Uint8Array): void {
    try {
      sub.fn(key, value);
    } catch (e) {
      this.log.warn(`in-process subscriber threw on '${key}': ${(e as Error).message}`);
    }
  }

  // ---- lifecycle (base/lifecycle.ts) ----------------------------------------------------------

  /**
   * Graceful: stops listening, sends the replies already made, then ends every connection (the
   * clients see the server close; their pending waits fail with ERR_GROUPCOMM_PEER_LOST).
   * Resolves once every connection has closed; those still open after `timeoutMs` (default
   * GROUPCOMM_TIMEOUT_MS) or when `signal` fires are destroyed. Stored data is dropped with the
   * server. Idempotent.
   */
  close(opts: CloseOptions = {}): Promise<void> {
    if (!this.closing) {
      this.flushAll();
      this.stop(true);
      const timeoutMs = effectiveTimeout(opts);
      const cut = () => { for (const s of this.ending) s.destroy(); };
      const timer = setTimeout(cut, timeoutMs);
      timer.unref?.();
      opts.signal?.addEventListener('abort', cut, { once: true });
      void this.closing!.finally(() => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', cut);
      });
    }
    return this.closing!;
  }

  /**
   * Immediate: stops listening and destroys every connection now (nothing more is sent). Also
   * cuts short a close() in progress. Idempotent.
   */
  abort(_reason?: unknown): Promise<void> {
    if (!this.aborted) {
      this.aborted = true;
      if (!this.closing) this.stop(false);
      for (const s of this.ending) s.destroy();
    }
    return this.closing!;
  }

  async [asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Stops listening and drops every connection: ended (graceful) or destroyed. */
  private stop(graceful: boolean): void {
    for (const [prefix, sub] of this.subs) {
      if (!(sub instanceof LocalSub) || sub.closed) continue;
      sub.closed = true;
      this.unsub(prefix);
      sub.onEnd(peerLostError(`the in-process store server ${this.host}:${this.port} closed`));
    }
    this.closing = new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const c of [...this.conns]) this.drop(c, undefined, graceful);
    });
    // wake in-process waiters (waitForWorkers) so they fail now instead of at their timeout
    this.table.notify();
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.conns.size >= this.maxConnections) {
      // At the cap: refuse at once (a flood must not take descriptors from the job's ranks).
      if (this.refusedAtCap++ === 0) {
        this.log.warn(`connection cap of ${this.maxConnections} reached (GROUPCOMM_STORE_MAX_CONNECTIONS): refusing new connections`);
        setTimeout(() => { this.refusedAtCap = 0; }, 10_000).unref();
      }
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const conn = new Conn(socket, this.nextId++);
    this.conns.add(conn);
    conn.deadline = setTimeout(() => {
      if (conn.stage !== 'ready') this.drop(conn, `no completed handshake within ${this.handshakeTimeoutMs} ms`);
    }, this.handshakeTimeoutMs);
    conn.deadline.unref?.();
    this.log.debug(`connection ${conn.id} from ${conn.remote}`);
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('error', (e) => this.log.debug(`connection ${conn.id}: ${e.message}`));
    socket.on('close', () => this.drop(conn));
  }

  /**
   * Forgets a connection: its wait registrations go, the data it stored stays. With a reason
   * (a misbehaving client) or `graceful` (close()), the socket is ended, so replies already
   * written reach the client first; otherwise it is destroyed.
   */
  private drop(conn: Conn, reason?: string, graceful = false): void {
    if (conn.closed) return;
    if (reason) this.log.warn(`closing connection ${conn.id} (${conn.remote}): ${reason}`);
    conn.closed = true;
    if (conn.deadline) clearTimeout(conn.deadline);
    this.buffered -= conn.held;
    conn.held = 0;
    if (conn.subscribed !== null && this.subs.get(conn.subscribed) === conn) this.unsub(conn.subscribed);
    this.table.cancelWait(conn);
    this.conns.delete(conn);
    this.dirty.delete(conn);
    conn.inbox.clear();
    if (graceful) {
      const s = conn.socket;
      this.ending.add(s);
      s.once('close', () => this.ending.delete(s));
      s.end();
    } else if (reason) {
      // The timer covers a peer that never closes its side.
      conn.socket.end();
      setTimeout(() => conn.socket.destroy(), 1000).unref();
    } else {
      conn.socket.destroy();
    }
  }

  private onData(conn: Conn, chunk: Buffer): void {
    if (conn.closed) return;
    const inbox = conn.inbox;
    let ready: boolean;
    try {
      ready = inbox.push(chunk);
    } catch (e) {
      // Buffering a request of a declared (within-limits) size failed: out of memory. Only this
      // connection goes; an exception escaping a 'data' handler would take the server down.
      this.drop(conn, `cannot buffer its request: ${(e as Error).message}`);
      return;
    }
    if (this.account(conn)) return;
    if (!ready) return;
    const buf = inbox.buf;
    const cur = this.cursor;
    cur.reset(buf, inbox.start, inbox.end);
    let start = cur.pos;
    let need = 0;
    // Subscribers called from here may publish in turn (publishLocal): depth tells them a request
    // is being handled, whose consuming reads are applied here, when it is done.
    this.depth++;
    try {
      while (cur.pos < cur.end && !conn.closed) {
        start = cur.pos;
        this.handle(conn, cur, buf);
        if (this.takes.length) this.applyTakes();
      }
      start = cur.pos;
    } catch (e) {
      if (this.takes.length) this.applyTakes();
      if (e !== INCOMPLETE) {
        this.flush(conn);
        this.drop(conn, e instanceof Violation ? e.message : `internal error: ${(e as Error).stack}`);
        this.flushAll();
        return;
      }
      need = cur.needed - start;
      if (need > this.limits.maxRequestBytes) {
        this.flush(conn);
        this.drop(conn, `request of at least ${need} bytes exceeds maxRequestBytes ${this.limits.maxRequestBytes}`);
        this.flushAll();
        return;
      }
    } finally {
      this.depth--;
    }
    if (!conn.closed) {
      inbox.consume(start, need);
      this.account(conn);
    }
    this.flushAll();
  }

  /**
   * Charges what `conn`'s inbox holds to the server-wide budget; over it, the connection is
   * closed (true). Inbox buffers grow with the bytes received, not with declared lengths, so a
   * client claiming huge requests and sending little holds little.
   */
  private account(conn: Conn): boolean {
    const now = conn.inbox.held;
    this.buffered += now - conn.held;
    conn.held = now;
    if (this.buffered <= this.maxBufferedBytes) return false;
    this.drop(conn, `partial requests of all clients exceed ${this.maxBufferedBytes} bytes (GROUPCOMM_STORE_MAX_BUFFERED_BYTES)`);
    this.flushAll();
    return true;
  }

  // --- parsing helpers: each checks the limit on the declared length before reading bytes ---

  private key(cur: Cursor): [number, number] {
    const at = this.keyAt(cur);
    return [at, cur.pos];
  }

  /** A key's start; it ends at `cur.pos` (no pair allocated: the hot requests use this). */
  private keyAt(cur: Cursor): number {
    const n = cur.u64();
    if (n > this.limits.maxKeyBytes) throw new Violation(`key of ${n} bytes exceeds maxKeyBytes ${this.limits.maxKeyBytes}`);
    return cur.take(n);
  }

  private value(cur: Cursor): [number, number] {
    const at = this.valueAt(cur);
    return [at, cur.pos];
  }

  /** A value's start; it ends at `cur.pos`. */
  private valueAt(cur: Cursor): number {
    const n = cur.u64();
    if (n > this.limits.maxValueBytes) throw new Violation(`value of ${n} bytes exceeds maxValueBytes ${this.limits.maxValueBytes}`);
    return cur.take(n);
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
    if (conn.subscribed !== null) throw new Violation(`opcode ${op} on a subscription connection`);
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
        const ka = this.keyAt(cur);
        const kb = cur.pos;
        const va = this.valueAt(cur);
        this.write(buf.toString('latin1', ka, kb), buf, va, cur.pos);
        return;
      }
      case Op.SUBSCRIBE: {
        const [ka, kb] = this.key(cur);
        const prefix = buf.toString('latin1', ka, kb);
        if (!prefix.endsWith('/')) throw new Violation('SUBSCRIBE prefix must be non-empty and end in \'/\'');
        if (!this.subscribeAny && !conn.groupcomm) throw new Violation('SUBSCRIBE from a client that did not negotiate groupcomm\'s extensions');
        if (!this.subscribeAny && !MAILBOX_PREFIX.test(prefix)) {
          this.log.warn(`connection ${conn.id} (${conn.remote}): SUBSCRIBE '${prefix.slice(0, 100)}' refused: not a mailbox prefix`);
          this.send(conn, Buffer.from([SubscribeReply.REFUSED]));
          return;
        }
        const backlog = this.claim(prefix, conn);
        if (!backlog) {
          this.send(conn, Buffer.from([SubscribeReply.TAKEN]));
          return;
        }
        this.send(conn, Buffer.from([SubscribeReply.OK]));
        conn.subscribed = prefix;
        for (const [k, v] of backlog) this.pushValue(conn, k, v);
        return;
      }
      case Op.GET:
      case Op.TRY_GET: {
        const ka = this.keyAt(cur);
        const v = this.table.get(buf.toString('latin1', ka, cur.pos));
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
        const ka = this.keyAt(cur);
        const kb = cur.pos;
        const delta = cur.i64();
        this.sendI64(conn, this.table.add(buf.toString('latin1', ka, kb), delta));
        return;
      }
      case Op.COMPARE_SET: {
        const [ka, kb] = this.key(cur);
        const [ea, eb] = this.value(cur);
        const [da, db] = this.value(cur);
        this.sendValue(conn, this.table.compareSet(buf.toString('latin1', ka, kb), buf, ea, eb, da, db), -1);
        return;
      }
      case Op.CHECK: {
        const keys = this.keyList(cur, buf);
        if (keys.length === 1 && keys[0] === EXT_PROBE_LATIN1) conn.groupcomm = true;
        this.send(conn, keys.every((k) => this.table.exists(k)) ? READY : NOT_READY);
        return;
      }
      case Op.WAIT: {
        conn.waitGet = null;
        if (this.table.wait(conn, this.keyList(cur, buf))) this.send(conn, STOP_WAITING);
        return;
      }
      case Op.WAIT_GET: {
        const flags = cur.u8();
        if (flags & ~WAIT_GET_DELETE) throw new Violation(`WAIT_GET with unknown flags ${flags}`);
        const keys = this.keyList(cur, buf);
        conn.waitGet = keys;
        conn.waitTake = flags === WAIT_GET_DELETE;
        if (this.table.wait(conn, keys)) this.wake(conn);
        return;
      }
      case Op.DELETE_QUIET: {
        for (const k of this.keyList(cur, buf)) this.table.delete(k);
        return;
      }
      case Op.CANCEL_WAIT: {
        this.table.cancelWait(conn);
        conn.waitGet = null;
        this.send(conn, WAIT_CANCELED);
        return;
      }
      case Op.GETNUMKEYS: {
        this.sendI64(conn, BigInt(this.table.size));
        return;
      }
      case Op.DELETE_KEY: {
        const [ka, kb] = this.key(cur);
        const existed = this.table.delete(buf.toString('latin1', ka, kb));
        this.sendI64(conn, existed ? 1n : 0n);
        return;
      }
      case Op.APPEND: {
        const [ka, kb] = this.key(cur);
        const [va, vb] = this.value(cur);
        this.table.append(buf.toString('latin1', ka, kb), buf, va, vb, this.limits.maxValueBytes);
        return;
      }
      case Op.APPEND_CHECKED: {
        const [ka, kb] = this.key(cur);
        const [va, vb] = this.value(cur);
        let status = 0;
        try {
          this.table.append(buf.toString('latin1', ka, kb), buf, va, vb, this.limits.maxValueBytes);
        } catch (e) {
          if (!(e instanceof Violation)) throw e;
          status = 1;
        }
        this.send(conn, Buffer.from([status]));
        return;
      }
      case Op.MULTI_GET: {
        const keys = this.keyList(cur, buf);
        for (const k of keys) this.sendValue(conn, this.table.get(k) ?? '', -1);
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
          this.write(buf.toString('latin1', spans[i], spans[i + 1]), buf, spans[i + 2], spans[i + 3]);
        }
        return;
      }
      case Op.QUEUE_PUSH: {
        const [ka, kb] = this.key(cur);
        const [va, vb] = this.value(cur);
        this.table.queuePush(buf.toString('latin1', ka, kb), valueOf(buf, va, vb));
        return;
      }
      case Op.QUEUE_POP: {
        const [ka, kb] = this.key(cur);
        const [len, v] = this.table.queuePop(buf.toString('latin1', ka, kb));
        this.sendI64(conn, BigInt(len));
        if (v !== undefined) this.sendValue(conn, v, -1);
        return;
      }
      case Op.QUEUE_LEN: {
        const [ka, kb] = this.key(cur);
        this.sendI64(conn, BigInt(this.table.queueLen(buf.toString('latin1', ka, kb))));
        return;
      }
      case Op.LIMITS: {
        const l = this.limits;
        this.send(conn, new Frame(32).u64(l.maxKeyBytes).u64(l.maxValueBytes).u64(l.maxKeysPerRequest).u64(l.maxRequestBytes).done());
        return;
      }
      case Op.JOIN_RANK: {
        const rank = cur.i64();
        if (rank < 0n || rank > 0xffffffffn) throw new Violation(`JOIN_RANK with rank ${rank}`);
        this.joinedRanks.add(Number(rank));
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

  private applyTakes(): void {
    const keys = this.takes;
    this.takes = [];
    for (const k of keys) this.table.delete(k);
  }

  /** A WAIT (STOP_WAITING) or WAIT_GET (STOP_WAITING, then the values) is satisfied. */
  private wake(conn: Conn): void {
    const keys = conn.waitGet;
    if (!keys) {
      this.send(conn, STOP_WAITING);
      return;
    }
    conn.waitGet = null;
    // Called from inside the write that completed the wait: every key has its value now (a key
    // that exists only as a non-empty queue reads as empty, as GET answers it).
    if (keys.length === 1) {
      this.sendValue(conn, this.table.get(keys[0]) ?? '', WaitReply.STOP_WAITING);
    } else {
      this.send(conn, STOP_WAITING);
      for (const k of keys) this.sendValue(conn, this.table.get(k) ?? '', -1);
    }
    // Deleted once the request that completed the wait is done: other waiters of the same write
    // are still being woken and must see the value too.
    if (conn.waitTake) for (const k of keys) this.takes.push(k);
  }

  /**
   * A write of `key` (wire form, latin1) with `value`: when a live subscription's prefix covers
   * the key, sends it there and returns true (the key is then not stored); the shortest such
   * prefix wins. `inReadBuffer`: the value is a view
   * of a connection's read buffer (nobody writes over it, so a big one may be handed on as it is);
   * otherwise it belongs to an in-process caller and is copied.
   */
  private push(key: string, value: Uint8Array, inReadBuffer: boolean): boolean {
    for (const n of this.subLengths) {
      if (n > key.length || key.charCodeAt(n - 1) !== 0x2f /* '/' */) continue;
      const c = this.subs.get(key.slice(0, n));
      if (!c || c.closed) continue;
      const vl = value.length;
      // Copied: a small value (a view would pin the whole read buffer) and a caller's value. A
      // big view of a read buffer is handed on as it is.
      const copy = vl <= 4096 || !inReadBuffer;
      if (c instanceof LocalSub) {
        this.callLocal(c, utf8Key(key), copy ? new Uint8Array(value) : value);
        return true;
      }
      const kl = key.length;
      const f = Buffer.allocUnsafe(16 + kl + (copy ? vl : 0));
      putU64(f, 0, kl);
      putLatin1(f, 8, key);
      putU64(f, 8 + kl, vl);
      if (copy) f.set(value, 16 + kl);
      this.send(c, f);
      if (!copy) this.send(c, value as Buffer);
      return true;
    }
    return false;
  }

  /** SET of `key` to buf[a, b) from a connection: pushed to its subscriber, else stored. */
  private write(key: string, buf: Buffer, a: number, b: number): void {
    if (this.subs.size && this.push(key, buf.subarray(a, b), true)) return;
    this.table.set(key, valueOf(buf, a, b));
  }

  /** Pushes a stored key (a subscription's backlog). */
  private pushValue(conn: Conn, key: string, v: Value): void {
    this.send(conn, new Frame(8 + key.length).bytes(Buffer.from(key, 'latin1')).done());
    this.sendValue(conn, v, -1);
  }

  /** Queues a value reply: optional 1-byte tag (TRY_GET), u64 length, bytes. */
  private sendValue(conn: Conn, v: Value, tag: number): void {
    const len = v.length;
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

  /** An i64 reply (ADD, GETNUMKEYS, DELETE_KEY, queue lengths). */
  private sendI64(conn: Conn, n: bigint): void {
    const f = Buffer.allocUnsafe(8);
    f.writeBigInt64LE(n, 0);
    this.send(conn, f);
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

  /**
   * One write per connection and read (replies go out at the end of each onData; deferring them
   * to setImmediate to gather several reads measured as more server CPU per op at depth 1 and
   * no gain at depth 16, whose clients already send their requests in one write): small replies
   * are gathered into one buffer; a big one
   * (a value of FLUSH_ALONE_BYTES or more) goes out as it is, next to the gathered ones in the
   * same corked batch (one writev, no copy of the value).
   */
  private flush(conn: Conn): void {
    const out = conn.out;
    if (out.length === 0 || conn.closed) return;
    // Two arrays taking turns: no new array per flush.
    conn.out = conn.spare;
    conn.spare = out;
    const total = conn.outBytes;
    conn.outBytes = 0;
    const s = conn.socket;
    if (out.length === 1) s.write(out[0]);
    else if (total < FLUSH_ALONE_BYTES) s.write(Buffer.concat(out, total));
    else {
      s.cork();
      let from = 0;
      let runBytes = 0;
      for (let i = 0; i < out.length; i++) {
        const b = out[i];
        if (b.length < FLUSH_ALONE_BYTES) {
          runBytes += b.length;
          continue;
        }
        if (i > from) s.write(i - from === 1 ? out[from] : Buffer.concat(out.slice(from, i), runBytes));
        s.write(b);
        from = i + 1;
        runBytes = 0;
      }
      if (out.length > from) s.write(out.length - from === 1 ? out[from] : Buffer.concat(out.slice(from), runBytes));
      s.uncork();
    }
    out.length = 0;
    if (s.writableLength > MAX_PENDING_REPLY_BYTES && !s.isPaused()) {
      s.pause();
      s.once('drain', () => { if (!conn.closed) s.resume(); });
    }
  }
}
