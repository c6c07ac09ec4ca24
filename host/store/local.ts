/**
 * An in-process link between a TcpStore and the TcpStoreServer running in the same process
 * (torch's master: rank 0 hosts the server and is also a client). Over loopback TCP every request
 * and reply of that client costs a write syscall and a wake-up on each side; through this link the
 * bytes are handed over in memory. Both ends speak exactly the same protocol as over TCP (the
 * handshake included), so the client and the server code do not know the difference.
 *
 * Only the small part of net.Socket that Connection and the server use is here. Delivery is
 * asynchronous, on setImmediate: a client polling in a loop (CHECK until a key appears) still
 * yields to the event loop between requests, as it would over a socket, so other connections are
 * served. Writes made in one tick arrive as one chunk, copied at delivery: the receiver may keep
 * views into what it was given, and the writer may reuse its buffers once its callback ran.
 */
import { EventEmitter } from 'node:events';

type WriteCallback = (err?: Error | null) => void;

export class LocalSocket extends EventEmitter {
  peer!: LocalSocket;
  readonly remoteAddress = 'in-process';
  readonly remotePort = 0;
  destroyed = false;
  /**
   * Deliver in a microtask instead of on setImmediate. Safe only for a direction that cannot
   * drive a request/reply loop on its own: requests (client → server; the replies, which stay on
   * setImmediate, still yield to the event loop). In-process subscribers need no link at all
   * (TcpStoreServer.subscribeLocal).
   */
  urgent = false;
  private pending: Uint8Array[] = [];
  private callbacks: WriteCallback[] = [];
  private scheduled = false;
  private corked = 0;
  private ending = false;

  /** A connected pair: what one end writes, the other receives. */
  static pair(): [LocalSocket, LocalSocket] {
    const a = new LocalSocket();
    const b = new LocalSocket();
    a.peer = b;
    b.peer = a;
    return [a, b];
  }

  /** Bytes written and not delivered yet. */
  get writableLength(): number {
    let n = 0;
    for (const b of this.pending) n += b.length;
    return n;
  }

  setNoDelay(): this {
    return this;
  }

  /** Flow control is not needed in memory: the reader always takes everything at once. */
  pause(): this {
    return this;
  }

  resume(): this {
    return this;
  }

  isPaused(): boolean {
    return false;
  }

  cork(): void {
    this.corked++;
  }

  uncork(): void {
    if (this.corked > 0 && --this.corked === 0) this.schedule();
  }

  write(b: Uint8Array, cb?: WriteCallback): boolean {
    if (this.destroyed || this.ending) {
      const err = Object.assign(new Error('write after the in-process store link was closed'), { code: 'EPIPE' });
      if (cb) setImmediate(() => cb(err));
      return false;
    }
    if (b.length) this.pending.push(b);
    if (cb) this.callbacks.push(cb);
    this.schedule();
    return true;
  }

  /** Delivers what is pending, then closes both ends. */
  end(): this {
    if (this.destroyed || this.ending) return this;
    this.ending = true;
    this.corked = 0;
    if (this.scheduled) return this;
    this.scheduled = true;
    setImmediate(() => this.deliver());
    return this;
  }

  /** Closes both ends now; undelivered bytes are dropped, as a reset connection drops them. */
  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.pending = [];
    const cbs = this.callbacks;
    this.callbacks = [];
    setImmediate(() => {
      const err = new Error('the in-process store link was closed');
      for (const cb of cbs) cb(err);
      this.emit('close', false);
    });
    this.peer.destroy();
    return this;
  }

  private schedule(): void {
    if (this.scheduled || this.corked > 0 || this.destroyed) return;
    this.scheduled = true;
    if (this.urgent) queueMicrotask(() => this.deliver());
    else setImmediate(() => this.deliver());
  }

  private deliver(): void {
    this.scheduled = false;
    if (this.destroyed) return;
    if (this.corked > 0 && !this.ending) return;
    const chunks = this.pending;
    const cbs = this.callbacks;
    this.pending = [];
    this.callbacks = [];
    if (chunks.length && !this.peer.destroyed) {
      const data = Buffer.allocUnsafe(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) {
        data.set(c, at);
        at += c.length;
      }
      this.peer.emit('data', data);
    }
    for (const cb of cbs) cb();
    if (this.ending) this.destroy();
  }
}
