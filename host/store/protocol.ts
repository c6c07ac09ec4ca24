/**
 * The TCPStore wire format (torch ≥ 2.2, see docs/store.md): little-endian, a 1-byte opcode, then
 * fields in a fixed order per opcode. Strings and values are a u64 length and raw bytes; key lists
 * are a u64 count and that many strings. No outer frame, no request id: replies come back in
 * request order, and each side knows a message's shape from its opcode alone.
 *
 * Opcodes 0..16 are torch's. 0xE0.. are groupcomm extensions; a client only sends them once the
 * server has proved it understands them (see EXT_PROBE_KEY), so a torch server never sees one —
 * except AUTH_HELLO/AUTH_PROOF, which a client given a secret sends right after VALIDATE.
 */

export const Op = {
  VALIDATE: 0,
  SET: 1,
  COMPARE_SET: 2,
  GET: 3,
  ADD: 4,
  CHECK: 5,
  WAIT: 6,
  GETNUMKEYS: 7,
  DELETE_KEY: 8,
  APPEND: 9,
  MULTI_GET: 10,
  MULTI_SET: 11,
  CANCEL_WAIT: 12,
  PING: 13,
  QUEUE_PUSH: 14,
  QUEUE_POP: 15,
  QUEUE_LEN: 16,
  /** groupcomm: `str key` → `u8 found` then `bytes value` when found. Never blocks. */
  TRY_GET: 0xe0,
  /** groupcomm: `32 B client nonce` → `32 B server nonce` + `32 B server proof`. */
  AUTH_HELLO: 0xe1,
  /** groupcomm: `32 B client proof` → `u8 0` (accepted); anything wrong closes the connection. */
  AUTH_PROOF: 0xe2,
  /** groupcomm: `i64 rank`, no reply. Says which rank this client is, so a join timeout can name the missing ones. */
  JOIN_RANK: 0xe3,
  /**
   * groupcomm: a blocking multi-get, `u8 flags`, `u64 count` + keys (as WAIT) → once every key
   * exists, `u8 0` then each value as `bytes` in request order: WAIT and MULTI_GET in one round
   * trip, the values pushed the moment the last key is written. Flag WAIT_GET_DELETE deletes the
   * keys as their values are sent (a consuming read). It blocks its connection like WAIT, and
   * CANCEL_WAIT cancels it the same way (answer `01`, after the values if they won the race).
   */
  WAIT_GET: 0xe4,
  /** groupcomm: `u64 count` + keys → no reply. Deletes the keys (cleanup nobody waits for). */
  DELETE_QUIET: 0xe5,
  /**
   * groupcomm: `str prefix` (non-empty, ending in '/') → `u8 status` (0 subscribed, 1 another
   * live connection holds the prefix). On 0 the connection becomes a one-way push stream: every
   * key under the prefix that is stored now, and every key SET or MULTI_SET under it from then
   * on, is sent as `str key` `bytes value` and not kept by the server (a consuming delivery, in
   * the order the writes were applied). Nothing else may be sent on that connection.
   */
  SUBSCRIBE: 0xe6,
  /**
   * groupcomm: no fields → `u64 maxKeyBytes`, `u64 maxValueBytes`, `u64 maxKeysPerRequest`,
   * `u64 maxRequestBytes`: the server's limits, so the client can refuse an oversized request
   * itself (INVALID_ARGUMENT) instead of sending something that costs it the connection.
   */
  LIMITS: 0xe7,
  /**
   * groupcomm: APPEND's fields → `u8 status`: 0 appended, 1 refused because the value would grow
   * past maxValueBytes (nothing changed, the connection stays). torch's APPEND has no reply, so
   * a limit could only be reported by closing the connection.
   */
  APPEND_CHECKED: 0xe8,
} as const;

/** SUBSCRIBE's answer: 2 = the prefix is not one this server lets clients claim (not a mailbox). */
export const SubscribeReply = { OK: 0, TAKEN: 1, REFUSED: 2 } as const;

/** WAIT_GET flag: delete the keys once their values are sent. */
export const WAIT_GET_DELETE = 1;

export const VALIDATE_MAGIC = 0x3c85f7ce;

export const CheckReply = { READY: 0, NOT_READY: 1 } as const;
export const WaitReply = { STOP_WAITING: 0, WAIT_CANCELED: 1 } as const;

/**
 * CHECK on this key answers READY on a groupcomm server without the key existing (it is never
 * stored); a torch server answers NOT_READY. That is how a client learns, in the handshake's
 * one round trip, that the extension opcodes are safe to send.
 */
export const EXT_PROBE_KEY = '\u0000groupcomm/ext/1';

/**
 * What a groupcomm server with a secret answers to PING when the client skipped authentication.
 * A torch client sees a wrong echo and fails its handshake; our client reports ERR_GROUPCOMM_AUTH.
 * Our clients never pick this value as their nonce.
 */
export const AUTH_REQUIRED_NONCE = 0x41555448; // "HTUA" on the wire

/** torch's internal worker-join counter; it has no '/' prefix, unlike user keys. */
export const INIT_KEY = 'init/';

export const AUTH_NONCE_BYTES = 32;

export interface StoreLimits {
  /** Longest key accepted, in bytes (declared length; checked before the bytes are read). */
  maxKeyBytes: number;
  /** Largest value accepted, in bytes. */
  maxValueBytes: number;
  /** Most keys in one CHECK, WAIT, MULTI_GET or MULTI_SET. */
  maxKeysPerRequest: number;
  /**
   * Largest whole request, in bytes: bounds what one connection can make the server buffer
   * (a MULTI_SET of many maximal values would otherwise be limited only by count × value size).
   * Default: 256 MiB, or 2 × maxValueBytes + 1 MiB when that is larger (COMPARE_SET carries two).
   */
  maxRequestBytes: number;
}

/** Defaults: torch libuv's key and key-count limits; values up to 64 MiB (torch: 8 MiB). */
export const DEFAULT_LIMITS: StoreLimits = {
  maxKeyBytes: 8192,
  maxValueBytes: 64 * 1024 * 1024,
  maxKeysPerRequest: 131072,
  maxRequestBytes: 256 * 1024 * 1024,
};

/**
 * What a client assumes of a server that has no LIMITS opcode (torch's): torch libuv's limits
 * (TCPStoreLibUvBackend.cpp: 8 KiB keys, 8 MiB values, 131072 keys per request; the default
 * backend since torch 2.4, which drops the connection on any of them) and no whole-request limit
 * (it has none). torch's legacy backend has no limits at all; 8 MiB is the one both accept.
 */
export const TORCH_LIMITS: StoreLimits = {
  maxKeyBytes: 8192,
  maxValueBytes: 8 * 1024 * 1024,
  maxKeysPerRequest: 131072,
  maxRequestBytes: Number.MAX_SAFE_INTEGER,
};

/** Fills in defaults; maxRequestBytes follows a raised maxValueBytes unless given. */
export function resolveLimits(l: Partial<StoreLimits> = {}): StoreLimits {
  const maxValueBytes = l.maxValueBytes ?? DEFAULT_LIMITS.maxValueBytes;
  return {
    maxKeyBytes: l.maxKeyBytes ?? DEFAULT_LIMITS.maxKeyBytes,
    maxValueBytes,
    maxKeysPerRequest: l.maxKeysPerRequest ?? DEFAULT_LIMITS.maxKeysPerRequest,
    maxRequestBytes: l.maxRequestBytes ?? Math.max(DEFAULT_LIMITS.maxRequestBytes, 2 * maxValueBytes + 1024 * 1024),
  };
}

/**
 * Builds one request (or reply) into a single buffer. Sizes are computed first so each message is
 * one allocation and one copy of each field.
 */
export class Frame {
  readonly buf: Buffer;
  private pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  u8(v: number): this {
    this.buf[this.pos++] = v;
    return this;
  }
  u32(v: number): this {
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }
  /** u64 length/count; our lengths are always below 2^32 times a small factor, so a Number. */
  u64(v: number): this {
    this.buf.writeUInt32LE(v % 0x1_0000_0000, this.pos);
    this.buf.writeUInt32LE(Math.floor(v / 0x1_0000_0000), this.pos + 4);
    this.pos += 8;
    return this;
  }
  i64(v: bigint): this {
    this.buf.writeBigInt64LE(v, this.pos);
    this.pos += 8;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.u64(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }
  raw(b: Uint8Array): this {
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }
  done(): Buffer {
    if (this.pos !== this.buf.length) throw new Error(`frame size mismatch: ${this.pos} != ${this.buf.length}`);
    return this.buf;
  }
}

/** opcode, u64 count, then each key as a u64 length and bytes (CHECK, WAIT, MULTI_GET). */
export function keyListFrame(op: number, keys: Uint8Array[]): Buffer {
  let size = 9;
  for (const k of keys) size += 8 + k.length;
  const f = new Frame(size).u8(op).u64(keys.length);
  for (const k of keys) f.bytes(k);
  return f.done();
}

/** Thrown (never as an Error, so no stack is captured) when a message is not complete yet. */
export const INCOMPLETE = Symbol('incomplete');

/**
 * Reads fields from `buf` between `pos` and `end`, where the data may stop mid-message. `need`
 * throws INCOMPLETE and records how many bytes (from the message's start, which the caller
 * remembers) the message needs at least, so the caller can wait for that many instead of
 * re-parsing on every read.
 */
export class Cursor {
  buf: Buffer = Buffer.alloc(0);
  pos = 0;
  end = 0;
  /** After INCOMPLETE: the smallest `end` that could complete the message. */
  needed = 0;

  reset(buf: Buffer, pos: number, end: number): void {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }
  need(n: number): void {
    if (this.pos + n > this.end) {
      this.needed = this.pos + n;
      throw INCOMPLETE;
    }
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  /** A u64 length or count; values ≥ 2^53 come back as Infinity (always over any limit). */
  u64(): number {
    this.need(8);
    const lo = this.buf.readUInt32LE(this.pos);
    const hi = this.buf.readUInt32LE(this.pos + 4);
    this.pos += 8;
    return hi >= 0x200000 ? Infinity : hi * 0x1_0000_0000 + lo;
  }
  i64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  /** Skips `n` bytes and returns their start offset (the bytes stay in `buf`). */
  take(n: number): number {
    this.need(n);
    const at = this.pos;
    this.pos += n;
    return at;
  }
}

const EMPTY = Buffer.alloc(0);

/** See Inbox's growWithReceived. */
const GROW_FACTOR = 4;

/** A copy of `b` of exactly its length: small ones from Buffer's pool (cheap, and they share a slab). */
function copyOf(b: Uint8Array): Buffer {
  const c = b.length <= 4096 ? Buffer.allocUnsafe(b.length) : Buffer.allocUnsafeSlow(b.length);
  c.set(b);
  return c;
}

/**
 * The bytes received and not parsed yet, copied at most once. A read that arrives when nothing
 * is pending is used as it is; otherwise pending bytes and the new read go into a buffer of our
 * own, sized for the whole message when its length is known (`need`), so a 64 MiB value arriving
 * in 64 KiB reads is copied once, not once per read. Bytes before `end` are never written again
 * (a new buffer is allocated instead), so parsed values may keep views into the buffer.
 */
export class Inbox {
  buf: Buffer = EMPTY;
  start = 0;
  end = 0;
  /** Bytes from `start` the parser needs before it can make progress. */
  need = 0;
  private owned = false;

  /**
   * `growWithReceived`: never allocate more than GROW_FACTOR times what has arrived (a peer's
   * declared length is not trusted). 4, not 2: a 1 MiB value arriving in 64 KiB reads is then
   * copied into two buffers on its way (512 KiB, then its own size) instead of four.
   */
  constructor(private readonly growWithReceived = false) {}

  /** Bytes this inbox keeps alive: its own buffer, or the pending part of a read it borrowed. */
  get held(): number {
    return this.owned ? this.buf.length : this.end - this.start;
  }

  /**
   * Adds a read; true when enough is buffered to try parsing. `transient`: `chunk` is a view of
   * a read buffer the socket reuses for its next read (connect.ts), so it is copied — straight
   * into this inbox's buffer when a message is partly here (one copy of a big value, not two),
   * else into a buffer of its own.
   */
  push(chunk: Buffer, transient = false): boolean {
    const have = this.end - this.start;
    if (have === 0) {
      if (transient) chunk = copyOf(chunk);
      this.buf = chunk;
      this.start = 0;
      this.end = chunk.length;
      this.owned = false;
    } else if (this.owned && this.end + chunk.length <= this.buf.length) {
      chunk.copy(this.buf, this.end);
      this.end += chunk.length;
    } else {
      const total = have + chunk.length;
      const size = this.growWithReceived ? Math.max(total, Math.min(this.need, Math.max(GROW_FACTOR * total, 64 * 1024))) : Math.max(total, this.need);
      const nb = Buffer.allocUnsafeSlow(size);
      this.buf.copy(nb, 0, this.start, this.end);
      chunk.copy(nb, have);
      this.buf = nb;
      this.start = 0;
      this.end = total;
      this.owned = true;
    }
    return this.end - this.start >= this.need;
  }

  /** Marks everything before `pos` parsed; `need` is what the next message needs (0 if unknown). */
  consume(pos: number, need: number): void {
    this.start = pos;
    this.need = need;
    if (this.start === this.end) {
      this.buf = EMPTY;
      this.start = this.end = 0;
      this.owned = false;
    }
  }

  clear(): void {
    this.consume(this.end, 0);
  }
}

/** True for a string of 7-bit characters only (its UTF-8 and latin1 bytes are the same). */
export function isAscii(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(s);
}

const enc = new TextEncoder();

/** Keys and values from callers: strings are UTF-8, bytes are used as they are. */
export function toBytes(v: Uint8Array | string): Uint8Array {
  return typeof v === 'string' ? enc.encode(v) : v;
}
