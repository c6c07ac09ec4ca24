/**
 * TcpStoreServer's reply writing: replies are queued per connection and written once per read
 * (flush), small ones gathered into one buffer, big values handed on without a copy.
 */
import { Frame } from './protocol.js';
import type { Value } from './table.js';
import { type Conn, FLUSH_ALONE_BYTES, MAX_PENDING_REPLY_BYTES } from './server_conn.js';

export abstract class ServerReplies {
  /**
   * Connections with replies queued since the last flushAll, each once (Conn.queued says it is
   * here): an array and a flag, not a Set, so queuing a reply allocates and hashes nothing.
   */
  protected dirty: Conn[] = [];

  /** Pushes a stored key (a subscription's backlog). */
  protected pushValue(conn: Conn, key: string, v: Value): void {
    this.send(conn, new Frame(8 + key.length).bytes(Buffer.from(key, 'latin1')).done());
    this.sendValue(conn, v, -1);
  }

  /** Queues a value reply: optional 1-byte tag (TRY_GET), u64 length, bytes. */
  protected sendValue(conn: Conn, v: Value, tag: number): void {
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
  protected sendI64(conn: Conn, n: bigint): void {
    const f = Buffer.allocUnsafe(8);
    f.writeBigInt64LE(n, 0);
    this.send(conn, f);
  }

  protected send(conn: Conn, b: Buffer): void {
    if (conn.closed) return;
    conn.out.push(b);
    conn.outBytes += b.length;
    if (!conn.queued) {
      conn.queued = true;
      this.dirty.push(conn);
    }
  }

  protected flushAll(): void {
    const dirty = this.dirty;
    // Indexed, the length read each time: a reply queued while flushing goes out in this pass too.
    for (let i = 0; i < dirty.length; i++) {
      const c = dirty[i];
      c.queued = false;
      this.flush(c);
    }
    dirty.length = 0;
  }

  /**
   * One write per connection and read (replies go out at the end of each onData; deferring them
   * to setImmediate to gather several reads measured as more server CPU per op at depth 1 and
   * no gain at depth 16, whose clients already send their requests in one write): small replies
   * are gathered into one buffer; a big one
   * (a value of FLUSH_ALONE_BYTES or more) goes out as it is, next to the gathered ones in the
   * same corked batch (one writev, no copy of the value).
   */
  protected flush(conn: Conn): void {
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
