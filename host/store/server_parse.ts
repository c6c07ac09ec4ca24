/**
 * TcpStoreServer's request field parsing: each helper checks the limit on the declared length
 * before reading bytes (a Violation closes that one connection).
 */
import type { Cursor, StoreLimits } from './protocol.js';
import { Violation } from './table.js';
import { ServerReplies } from './server_reply.js';

/** A u64 length at buf[at] (Cursor.u64 without the cursor): ≥ 2^53 reads as Infinity. */
function u64At(buf: Buffer, at: number): number {
  const hi = buf.readUInt32LE(at + 4);
  return hi >= 0x200000 ? Infinity : hi * 0x1_0000_0000 + buf.readUInt32LE(at);
}

export abstract class RequestParser extends ServerReplies {
  constructor(readonly limits: StoreLimits) {
    super();
  }

  /**
   * The whole length of the SET request at buf[pos] (opcode, key, value) once its header is
   * here: a value arriving over several reads (on Node every 64 KiB SET: its reads are 64 KiB)
   * is then waited for by length, instead of being parsed up to the missing bytes and abandoned
   * with a thrown INCOMPLETE, which costs a stack unwind and deoptimizes the parser. 0 when the
   * header is not complete or a length is over its limit: handle() parses it then and reports
   * which.
   */
  protected setLength(buf: Buffer, pos: number, end: number): number {
    const at = pos + 1;
    if (at + 8 > end) return 0;
    const kl = u64At(buf, at);
    if (kl > this.limits.maxKeyBytes) return 0;
    const vat = at + 8 + kl;
    if (vat + 8 > end) return 0;
    const vl = u64At(buf, vat);
    if (vl > this.limits.maxValueBytes) return 0;
    return vat + 8 + vl - pos;
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
