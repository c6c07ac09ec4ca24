/**
 * TcpStore's connection side: its state, the limits negotiated with the server (LIMITS) and the
 * checks against them, the pipelined main connection's call path, the liveness ping, and the
 * lifecycle (close, abort). The operations are in client.ts, waits and subscriptions in
 * client_wait.ts.
 */
import { effectiveTimeout, guard, sleep, type OpOptions } from '../base/deadline.js';
import { asyncDispose, type CloseOptions, lifeController, reasonSuffix } from '../base/lifecycle.js';
import {
  abortedError, destroyedError, type GroupcommError, invalidArgument, isGroupcommError, peerLostError,
  timeoutError,
} from '../base/errors.js';
import { setting } from '../base/config.js';
import type { ConnectSpec } from './connect.js';
import { Connection, keyFields, keySuffix, type OpKeys, type Reader } from './connection.js';
import { isAscii, Op, TORCH_LIMITS, type StoreLimits } from './protocol.js';
import type { TcpStoreServer } from './server.js';
import { SubscriptionHandle } from './client_subscription.js';

export abstract class StoreClientBase {
  readonly host: string;
  readonly port: number;
  /** The in-process server when created with isServer, else undefined. */
  readonly server?: TcpStoreServer;
  readonly timeoutMs: number;
  protected readonly prefix: boolean;
  protected readonly idle: Connection[] = [];
  protected readonly waitConns = new Set<Connection>();
  protected readonly subscriptions = new Set<SubscriptionHandle>();
  /**
   * Keys this client changed on the main connection, with the request's sequence number there,
   * until a later reply proves the server applied the change. A get sent on a wait connection
   * (WAIT_GET) could overtake such a change; see mayBypass.
   */
  protected readonly unconfirmed = new Map<string, number>();
  /** After the map overflowed: nothing is known to be applied until this request is. */
  protected unconfirmedCutoff = 0;
  /** Connections closed (close() done draining, or abort()): nothing more can be sent. */
  protected closed = false;
  /** The first close() or abort(): from then on new operations are refused. */
  protected closing?: Promise<void>;
  protected aborted = false;
  /** Aborted by abort(): connections being opened for a wait or a subscription give up too. */
  protected readonly life = lifeController();
  /** waitWire and subscribe calls in progress (with the main connection's requests: what close() waits for). */
  protected waiting = 0;
  /** The liveness check's timer (startLiveness), and whether its ping is out. */
  protected liveTimer?: NodeJS.Timeout;
  protected pinging = false;
  /** TcpStoreOptions.hostRank. */
  protected hostRank?: number;
  /** Set when liveness gave up on the server: every call fails with it from then on. */
  protected lostErr?: GroupcommError;
  /**
   * The server's limits (its LIMITS answer; torch's for a server without extensions): requests
   * over them are refused here with INVALID_ARGUMENT, before anything is sent, so the
   * connection and the requests queued on it are not lost to a server-side violation.
   */
  limits: StoreLimits = TORCH_LIMITS;

  protected constructor(
    protected readonly spec: ConnectSpec,
    protected readonly main: Connection,
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

  /** A PING round trip (TcpStore.ping); the liveness check sends it. */
  abstract ping(opts?: OpOptions): Promise<number>;

  /** Asks a groupcomm server for its limits (one round trip, once per store). */
  protected async learnLimits(opts: OpOptions): Promise<void> {
    if (!this.extended) return;
    const r = (c: import('./protocol.js').Cursor) => ({ maxKeyBytes: c.u64(), maxValueBytes: c.u64(), maxKeysPerRequest: c.u64(), maxRequestBytes: c.u64() });
    this.limits = await this.call(Buffer.from([Op.LIMITS]), r, 'negotiate limits', opts);
  }

  /** Refuses a value over the server's limit before it is sent. */
  protected checkValue(v: Uint8Array, what: string, key: string): Uint8Array {
    if (v.length > this.limits.maxValueBytes) {
      throw invalidArgument(`${what}: a value of ${v.length} bytes exceeds the store's maxValueBytes ${this.limits.maxValueBytes}`, { key });
    }
    return v;
  }

  /** A MULTI_SET as a whole must fit the server's maxRequestBytes too. */
  protected checkRequest(wks: Uint8Array[], vs: Uint8Array[], what: string): void {
    let n = 9;
    for (let i = 0; i < wks.length; i++) n += 16 + wks[i].length + vs[i].length;
    if (n > this.limits.maxRequestBytes) throw invalidArgument(`${what}: a request of ${n} bytes exceeds the store's maxRequestBytes ${this.limits.maxRequestBytes}`);
  }

  protected checkCount(n: number, what: string): void {
    if (n > this.limits.maxKeysPerRequest) throw invalidArgument(`${what}: ${n} keys exceed the store's maxKeysPerRequest ${this.limits.maxKeysPerRequest}`);
  }

  protected wireKey(key: string): Buffer {
    if (typeof key !== 'string') throw invalidArgument(`store keys are strings, got ${typeof key}`);
    const b = Buffer.from(this.prefix ? '/' + key : key, 'utf8');
    if (b.length > this.limits.maxKeyBytes) throw invalidArgument(`a key of ${b.length} bytes exceeds the store's maxKeyBytes ${this.limits.maxKeyBytes}`, { key: key.slice(0, 200) });
    return b;
  }

  /** wireKey as a latin1 string (how the server holds keys), without a Buffer for ASCII keys. */
  protected wireLatin1(key: string): string {
    if (typeof key !== 'string') throw invalidArgument(`store keys are strings, got ${typeof key}`);
    const k = this.prefix ? '/' + key : key;
    const w = isAscii(k) ? k : Buffer.from(k, 'utf8').toString('latin1');
    if (w.length > this.limits.maxKeyBytes) throw invalidArgument(`a key of ${w.length} bytes exceeds the store's maxKeyBytes ${this.limits.maxKeyBytes}`, { key: key.slice(0, 200) });
    return w;
  }

  /** At the start of an operation: none are taken once close() or abort() was called. */
  protected ensureOpen(): void {
    if (this.lostErr) throw this.lostErr;
    if (this.closing) throw destroyedError('this TcpStore was closed');
  }

  /** At a later step of an operation (close() lets those finish): only once the connections are gone. */
  protected ensureLive(): void {
    if (this.lostErr) throw this.lostErr;
    if (this.closed) throw this.aborted ? this.life.signal.reason : destroyedError('this TcpStore was closed');
  }

  /**
   * Every request on the pipelined connection goes through here: per-call timeout and signal.
   * `step`: a later request of an operation already under way (see ensureLive).
   */
  protected call<T>(frame: Buffer | Buffer[], read: Reader<T> | null, what: string, opts?: OpOptions, key?: OpKeys, step = false): Promise<T> {
    if (step) this.ensureLive();
    else this.ensureOpen();
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    // Aborted already: send nothing. A reply-less request (set, publish) would otherwise be
    // written and applied while its caller is told it was aborted.
    if (opts?.signal?.aborted) return Promise.reject(abortedError(`${what} aborted`, { ...keyFields(key), cause: opts.signal.reason }));
    const p = this.main.request(frame, read, timeoutMs, what, key);
    if (!opts?.signal && opts?.timeoutMs === undefined) return p;
    return guard(p, {
      timeoutMs, signal: opts?.signal, what,
      fields: keyFields(key),
      onTimeout: (elapsedMs) => timeoutError(`store ${what} timed out after ${timeoutMs}ms${keySuffix(key)}`, { ...keyFields(key), timeoutMs, elapsedMs }),
    });
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

  protected abortError(reason: unknown): GroupcommError {
    this.aborted = true;
    const why = reasonSuffix(reason);
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
  protected async drained(until: number, signal?: AbortSignal): Promise<boolean> {
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
  protected startLiveness(): void {
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
  protected shut(err: GroupcommError): void {
    if (this.closed) return;
    this.closed = true;
    if (this.liveTimer) clearInterval(this.liveTimer);
    this.main.close(err);
    for (const c of [...this.waitConns]) c.close(err);
    for (const sub of [...this.subscriptions]) sub.fail(err);
    this.idle.length = 0;
  }
}
