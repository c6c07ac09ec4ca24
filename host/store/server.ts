/**
 * TcpStoreServer: a TCPStore-compatible server on one event loop (torch's libuv backend is the
 * model: incremental, transactional parsing; limits checked on declared lengths before any bytes
 * are buffered; a bad client loses its own connection and nothing else).
 *
 * This module is the network side: listening, connections and their limits, the read loop, the
 * in-process entry points and the lifecycle. The class is built in layers, one file each:
 * server_reply.ts (reply writing) ← server_parse.ts (request fields) ← server_ops.ts (the
 * handshake, each opcode, waits, subscriptions) ← this file; server_options.ts holds its
 * options (re-exported here), server_conn.ts the per-connection state. The data and the wait
 * bookkeeping live in table.ts.
 */
import net from 'node:net';
import { effectiveTimeout, guard, type OpOptions } from '../base/deadline.js';
import { asyncDispose, type CloseOptions } from '../base/lifecycle.js';
import { bindError, destroyedError, type GroupcommError, invalidArgument, peerLostError, timeoutError } from '../base/errors.js';
import { logger as makeLogger } from '../base/log.js';
import { checkFactory, factoryToken } from '../base/factory.js';
import { Cursor, INCOMPLETE, INIT_KEY, Op, resolveLimits } from './protocol.js';
import { checkExposure, resolveSecret } from '../base/secret.js';
import { setting } from '../base/config.js';
import { bytesOf, strtoll, valueOf, Violation } from './table.js';
import { LocalSocket } from './local.js';
import { Conn, LocalSub, utf8Key } from './server_conn.js';
import { StoreOps } from './server_ops.js';
import type { TcpStoreServerOptions } from './server_options.js';

export type { TcpStoreServerOptions } from './server_options.js';

/** Only listen() constructs a server (base/factory.ts). */
const MADE = factoryToken('TcpStoreServer');

export class TcpStoreServer extends StoreOps {
  private readonly hostOption: string;
  readonly worldSize?: number;
  private readonly conns = new Set<Conn>();
  private readonly cursor = new Cursor();
  /**
   * Requests (onData) and publishLocal calls being handled. A subscriber called from inside one
   * may publish in turn; only the outermost applies the consuming reads (`takes`).
   */
  private depth = 0;
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
    super(resolveLimits(opts.limits), opts.logger ?? makeLogger('STORE'), resolveSecret(opts.secret, 'TcpStoreServer'), opts.subscribePrefixes === 'any');
    this.hostOption = opts.host ?? '127.0.0.1';
    this.worldSize = opts.worldSize;
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
   * copied, so the caller may reuse its buffers at once — except, with `handOver` (the caller
   * never changes them again), a big value pushed to a subscriber's socket, which is written as
   * it is. Subscribers get their keys as with any write; other keys are stored.
   */
  publishLocal(keys: string[], values: Uint8Array[], handOver = false): void {
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
        if (this.subs.size && this.push(k, values[i], false, handOver)) continue;
        const v = Buffer.from(values[i]);
        this.table.set(k, valueOf(v, 0, v.length));
      }
    } finally {
      if (--this.depth === 0 && this.takes.length) this.applyTakes();
    }
    this.flushAll();
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
      // A signal aborted already fires no 'abort' event: cut now.
      if (opts.signal?.aborted) cut();
      else opts.signal?.addEventListener('abort', cut, { once: true });
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
    // Still listed in `dirty` if replies were queued: flush() skips a closed connection.
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
        if (buf[start] === Op.SET && conn.stage === 'ready' && conn.subscribed === null) {
          // A SET not all here yet (a big value): wait for its length (server_parse.ts).
          const n = this.setLength(buf, start, cur.end);
          if (n > cur.end - start) {
            need = n;
            break;
          }
        }
        this.handle(conn, cur, buf);
        if (this.takes.length) this.applyTakes();
      }
      start = cur.pos; // where the loop stopped: the end, or the SET waited for (not parsed)
    } catch (e) {
      if (this.takes.length) this.applyTakes();
      if (e !== INCOMPLETE) {
        this.flush(conn);
        this.drop(conn, e instanceof Violation ? e.message : `internal error: ${(e as Error).stack}`);
        this.flushAll();
        return;
      }
      need = cur.needed - start;
    } finally {
      this.depth--;
    }
    if (need > this.limits.maxRequestBytes) {
      this.flush(conn);
      this.drop(conn, `request of at least ${need} bytes exceeds maxRequestBytes ${this.limits.maxRequestBytes}`);
      this.flushAll();
      return;
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

}
