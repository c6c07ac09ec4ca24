/**
 * One client connection to a TCPStore server, pipelined: requests are written as soon as they
 * are made (batched per tick into one write) and each one leaves a reply reader in a FIFO.
 * Replies are untagged but ordered, so the reader at the head of the FIFO always owns the next
 * bytes. Requests without a reply (SET, APPEND, MULTI_SET, QUEUE_PUSH) resolve once their batch
 * has been handed to the kernel.
 *
 * A WAIT's reply can come arbitrarily late and would hold up every reply queued behind it, so
 * the store client never pipelines anything behind a WAIT: waits run on connections of their own
 * (see client.ts).
 */
import { constants as bufferConstants } from 'node:buffer';
import net from 'node:net';
import { destroyedError, GroupcommError, peerLostError, protocolError, timeoutError } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { Cursor, INCOMPLETE, Inbox } from './protocol.js';

export type Reader<T> = (cur: Cursor) => T;

/** The key, or keys, an operation is about: timeout errors name them. */
export type OpKeys = string | string[] | undefined;

export function keyFields(k: OpKeys): { key?: string; keys?: string[] } {
  return k === undefined ? {} : Array.isArray(k) ? { keys: k } : { key: k };
}

export function keySuffix(k: OpKeys): string {
  return k === undefined ? '' : Array.isArray(k) ? `, keys: ${k.join(', ')}` : `, key: ${k}`;
}

interface Pending {
  read: Reader<unknown> | null;
  resolve(v: unknown): void;
  reject(e: unknown): void;
  /** performance.now() after which the caller is told it timed out (the reader stays queued). */
  deadline: number;
  timeoutMs: number;
  /** What the request was, and its key(s) when it has any: for the timeout message. */
  what: string;
  key: OpKeys;
  settled: boolean;
  /** Position in this connection's request order. */
  seq: number;
}

/**
 * For a socket that hands its reads to one function instead of emitting 'data' (connect.ts sets
 * that up on Node): registers the function. A `transient` chunk is a view of the socket's read
 * buffer, valid only during the call (the inbox copies it).
 */
export type AttachReads = (sink: (c: Buffer, transient: boolean) => void) => void;

const BIG_WRITE = 64 * 1024;
const MAX_LENGTH = bufferConstants.MAX_LENGTH;

export class Connection {
  private readonly queue: Pending[] = [];
  private head = 0;
  private readonly cursor = new Cursor();
  private readonly inbox = new Inbox();
  private out: Buffer[] = [];
  private outBytes = 0;
  private noReply: Pending[] = [];
  /** Reply-less requests handed to socket.write whose callback has not fired yet. */
  private readonly writing = new Set<Pending>();
  private flushQueued = false;
  private nextSeq = 1;
  /** Sequence number of the newest request whose reply has been read. */
  private replied = 0;
  private watchdog?: NodeJS.Timeout;
  private failure?: GroupcommError;
  private readonly closeListeners: Array<(e: GroupcommError) => void> = [];
  /** Parses unsolicited messages once no reply is expected (a subscription's pushes). */
  private streamReader?: Reader<void>;

  constructor(
    readonly socket: net.Socket,
    readonly address: string,
    private readonly timeoutMs: number,
    private readonly log: Logger,
    attachReads?: AttachReads,
  ) {
    socket.setNoDelay(true);
    if (attachReads) attachReads((c, transient) => this.onData(c, transient));
    else socket.on('data', (c: Buffer) => this.onData(c));
    socket.on('error', (e) => this.fail(peerLostError(`store connection to ${address} failed: ${e.message}`, { cause: e })));
    socket.on('close', () => this.fail(peerLostError(`store server ${address} closed the connection`)));
  }

  get closed(): boolean {
    return this.failure !== undefined;
  }

  onClose(fn: (e: GroupcommError) => void): void {
    this.closeListeners.push(fn);
  }

  /**
   * Sends `frame` (one buffer, or header + big payload as several) and resolves with what `read`
   * parses from the reply; `read` null means the request has no reply (it resolves once written).
   * Either kind rejects with ERR_GROUPCOMM_TIMEOUT naming `what` and `key` after timeoutMs.
   */
  request<T>(frame: Buffer | Buffer[], read: Reader<T> | null, timeoutMs = this.timeoutMs, what = 'request', key?: OpKeys): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<T>((resolve, reject) => {
      const p: Pending = {
        read, resolve: resolve as (v: unknown) => void, reject, settled: false,
        deadline: performance.now() + timeoutMs, timeoutMs, what, key, seq: this.nextSeq++,
      };
      if (read) this.queue.push(p);
      else this.noReply.push(p);
      if (Array.isArray(frame)) for (const f of frame) this.queueWrite(f);
      else this.queueWrite(frame);
      this.armWatchdog();
    });
  }

  /** The sequence number the next request will get (see `applied`). */
  get seq(): number {
    return this.nextSeq;
  }

  /**
   * True when the server has certainly applied request `seq` of this connection: a later
   * request's reply has been read (the server handles one connection's requests in order).
   * Reply-less requests (SET) are known to be applied only that way.
   */
  applied(seq: number): boolean {
    return seq <= this.replied;
  }

  /**
   * Replaces the reader of the oldest request still waiting for its reply. Used by a WAIT that
   * is being cancelled: its reader must now also swallow the WAIT_CANCELED byte.
   */
  replaceHeadReader(read: Reader<unknown>): boolean {
    if (this.head >= this.queue.length) return false;
    this.queue[this.head].read = read;
    return true;
  }

  /**
   * From now on, bytes that arrive while no reply is expected are messages the server pushes
   * (SUBSCRIBE): each is parsed by `read`, which delivers it itself.
   */
  stream(read: Reader<void>): void {
    this.streamReader = read;
  }

  /** Requests made but not yet handed to the socket, or written and not yet delivered by it. */
  get unsent(): boolean {
    return this.out.length > 0 || this.socket.writableLength > 0;
  }

  /** Writes now, without waiting for the end of the tick (the handshake's VALIDATE). */
  writeNow(b: Buffer): void {
    this.queueWrite(b);
    this.flush();
  }

  /**
   * True while a request made on this connection has not settled (its reply not read, or its
   * write not done). Scans the queue: for close(), which polls it, never on the request path.
   */
  get inFlight(): boolean {
    if (this.out.length > 0 || this.noReply.length > 0) return true;
    for (const p of this.writing) if (!p.settled) return true;
    for (let i = this.head; i < this.queue.length; i++) if (!this.queue[i].settled) return true;
    return false;
  }

  close(err?: GroupcommError): void {
    this.fail(err ?? destroyedError(`store connection to ${this.address} was closed`));
  }

  private queueWrite(b: Buffer): void {
    this.out.push(b);
    this.outBytes += b.length;
    if (!this.flushQueued) {
      this.flushQueued = true;
      // A microtask, not a timer: requests made in the same synchronous run share one write,
      // and a lone request goes out without delay.
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushQueued = false;
    if (this.out.length === 0 || this.failure) return;
    const out = this.out;
    const total = this.outBytes;
    const done = this.noReply;
    this.out = [];
    this.outBytes = 0;
    this.noReply = [];
    const s = this.socket;
    for (const p of done) this.writing.add(p);
    const cb = done.length
      ? (err?: Error | null) => {
        for (const p of done) {
          this.writing.delete(p);
          if (p.settled) continue;
          p.settled = true;
          if (err) p.reject(peerLostError(`write to store ${this.address} failed: ${err.message}`, { cause: err }));
          else p.resolve(undefined);
        }
      }
      : undefined;
    if (out.length === 1) {
      s.write(out[0], cb);
    } else if (total < 4 * BIG_WRITE) {
      s.write(Buffer.concat(out, total), cb);
    } else {
      let run: Buffer[] = [];
      let runBytes = 0;
      const emit = () => {
        if (run.length) s.write(run.length === 1 ? run[0] : Buffer.concat(run, runBytes));
        run = [];
        runBytes = 0;
      };
      for (const b of out) {
        if (b.length >= BIG_WRITE) {
          emit();
          s.write(b);
        } else {
          run.push(b);
          runBytes += b.length;
        }
      }
      emit();
      // Writes complete in order, so an empty write's callback fires after all of them.
      s.write(Buffer.alloc(0), cb);
    }
  }

  private onData(chunk: Buffer, transient = false): void {
    if (this.failure) return;
    const inbox = this.inbox;
    try {
      if (!inbox.push(chunk, transient)) return;
    } catch (e) {
      // The buffer for a declared reply length could not be allocated (a hostile or broken
      // server announcing terabytes): this connection is unusable, the process must not die.
      this.fail(protocolError(`store ${this.address} sent a reply too large to buffer: ${(e as Error).message}`, { cause: e }));
      return;
    }
    const cur = this.cursor;
    cur.reset(inbox.buf, inbox.start, inbox.end);
    let need = 0;
    while (cur.pos < cur.end) {
      // The reply to the oldest request, or else (a subscription) a message the server pushed.
      const p = this.head < this.queue.length ? this.queue[this.head] : undefined;
      const read = p ? p.read! : this.streamReader;
      if (!read) {
        this.fail(protocolError(`store server ${this.address} sent ${cur.end - cur.pos} bytes nobody asked for`));
        return;
      }
      const start = cur.pos;
      let v: unknown;
      try {
        v = read(cur);
      } catch (e) {
        if (e === INCOMPLETE) {
          need = cur.needed - start;
          cur.pos = start;
          break;
        }
        this.fail(e instanceof GroupcommError ? e : protocolError(`bad ${p ? 'reply' : 'push'} from store ${this.address}: ${(e as Error).message}`, { cause: e }));
        return;
      }
      if (!p) continue;
      this.queue[this.head++] = undefined as unknown as Pending;
      this.replied = p.seq;
      if (!p.settled) {
        p.settled = true;
        p.resolve(v);
      }
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if (!this.failure) inbox.consume(cur.pos, need);
  }

  /**
   * One timer per connection enforces each request's timeout (a hung server, or one that stopped
   * reading so a write never completes). A timed out request's reader stays queued: its reply, if
   * it ever comes, must still be consumed.
   */
  private armWatchdog(): void {
    if (this.watchdog || this.failure) return;
    const every = Math.max(10, Math.min(1000, this.timeoutMs / 4));
    this.watchdog = setInterval(() => {
      const now = performance.now();
      let live = 0;
      const check = (p: Pending) => {
        if (p.settled) return;
        if (now <= p.deadline) {
          live++;
          return;
        }
        p.settled = true;
        p.reject(timeoutError(
          `store ${p.what} timed out after ${p.timeoutMs}ms${keySuffix(p.key)} ` +
          `(no ${p.read ? 'reply' : 'completed write'} from ${this.address})`,
          { ...keyFields(p.key), timeoutMs: p.timeoutMs, elapsedMs: now - (p.deadline - p.timeoutMs) }));
      };
      for (let i = this.head; i < this.queue.length; i++) check(this.queue[i]);
      for (const p of this.writing) check(p);
      for (const p of this.noReply) check(p);
      if (live === 0) {
        clearInterval(this.watchdog);
        this.watchdog = undefined;
      }
    }, every);
    this.watchdog.unref?.();
  }

  private fail(err: GroupcommError): void {
    if (this.failure) return;
    this.failure = err;
    this.log.debug(`connection to ${this.address} closed: ${err.message}`);
    if (this.watchdog) clearInterval(this.watchdog);
    this.socket.destroy();
    // Frames queued in this tick are never written now: not in flight, not unsent.
    this.out = [];
    this.outBytes = 0;
    const pending = [...this.queue.slice(this.head), ...this.noReply, ...this.writing];
    this.queue.length = 0;
    this.head = 0;
    this.noReply = [];
    this.writing.clear();
    for (const p of pending) {
      if (p.settled) continue;
      p.settled = true;
      p.reject(err);
    }
    for (const fn of this.closeListeners) fn(err);
  }
}

// --- reply readers ---

export const readU8: Reader<number> = (c) => c.u8();
export const readU32: Reader<number> = (c) => c.u32();
export const readI64: Reader<bigint> = (c) => c.i64();

function valueAt(c: Cursor, n: number): Uint8Array {
  const at = c.take(n);
  // A value filling most of its read buffer is handed out as a view (the Inbox never writes over
  // parsed bytes); smaller ones are copied so they do not pin a whole read buffer.
  return n >= 4096 && 2 * n >= c.buf.length ? c.buf.subarray(at, at + n) : new Uint8Array(c.buf.subarray(at, at + n));
}

export const readBytes: Reader<Uint8Array> = (c) => {
  const n = c.u64();
  if (n > MAX_LENGTH) throw protocolError(`store reply declares a value of ${n} bytes, more than a Buffer can hold`);
  return valueAt(c, n);
};

export function readManyBytes(count: number): Reader<Uint8Array[]> {
  return (c) => {
    const out: Uint8Array[] = [];
    for (let i = 0; i < count; i++) out.push(readBytes(c));
    return out;
  };
}

/** WAIT_GET: `u8 0` (STOP_WAITING) then `count` values. */
export function readWaitGet(count: number): Reader<Uint8Array[]> {
  return (c) => {
    const b = c.u8();
    if (b !== 0) throw protocolError(`unexpected WAIT_GET reply ${b}`);
    const out: Uint8Array[] = [];
    for (let i = 0; i < count; i++) out.push(readBytes(c));
    return out;
  };
}

/** TRY_GET: `u8 found` then the value when found; undefined when the key is missing. */
export const readTryGet: Reader<Uint8Array | undefined> = (c) => (c.u8() === 0 ? undefined : readBytes(c));

/** QUEUE_POP: `i64 length before the pop`, then the value when it was not empty. */
export const readQueuePop: Reader<Uint8Array | undefined> = (c) => (c.i64() === 0n ? undefined : readBytes(c));
