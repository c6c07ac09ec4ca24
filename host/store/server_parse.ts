/**
 * TcpStoreServer's request field parsing: each helper checks the limit on the declared length
 * before reading bytes (a Violation closes that one connection).
 */
import type { Cursor, StoreLimits } from './protocol.js';
import { Violation } from './table.js';
import { ServerReplies } from './server_reply.js';

export abstract class RequestParser extends ServerReplies {
  constructor(readonly limits: StoreLimits) {
    super();
  }

  // --- parsing helpers: each checks the limit on the declared length before reading bytes ---

  protected key(cur: Cursor): [number, number] {
    const at = this.keyAt(cur);
    return [at, cur.pos];
  }

  /** A key's start; it ends at `cur.pos` (no pair allocated: the hot requests use this). */
  protected keyAt(cur: Cursor): number {
    const n = cur.u64();
    if (n > this.limits.maxKeyBytes) throw new Violation(`key of ${n} bytes exceeds maxKeyBytes ${this.limits.maxKeyBytes}`);
    return cur.take(n);
  }

  protected value(cur: Cursor): [number, number] {
    const at = this.valueAt(cur);
    return [at, cur.pos];
  }

  /** A value's start; it ends at `cur.pos`. */
  protected valueAt(cur: Cursor): number {
    const n = cur.u64();
    if (n > this.limits.maxValueBytes) throw new Violation(`value of ${n} bytes exceeds maxValueBytes ${this.limits.maxValueBytes}`);
    return cur.take(n);
  }

  protected count(cur: Cursor): number {
    const n = cur.u64();
    if (n > this.limits.maxKeysPerRequest) {
      throw new Violation(`${n} keys in one request exceeds maxKeysPerRequest ${this.limits.maxKeysPerRequest}`);
    }
    return n;
  }

  protected keyList(cur: Cursor, buf: Buffer): string[] {
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
}
