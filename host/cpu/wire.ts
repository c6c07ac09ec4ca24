/**
 * The CPU group's wire format (all little-endian; docs/cpu-group.md has the byte tables).
 *
 * Connection setup: the acceptor sends a CHALLENGE (a fresh nonce), the dialer answers HELLO
 * (who it is, which group/epoch and rank it wants, its nonce, and a MAC under the job secret
 * over all of it and the challenge), the acceptor answers ACK with a status and its own MAC over
 * the ACK and the HELLO's MAC; anything else is refused and the socket closed.
 * After that, data flows in frames: a fixed 24-byte header followed by `length` payload bytes.
 * The header's (kind, tag, seq) picks the operation a frame belongs to, `slot` the piece of it,
 * so several operations can be on the wire at once without mixing.
 */

export const MAGIC = 0x55504347; // 'GCPU' read as a little-endian u32
export const VERSION = 3;
export const HELLO_FIXED = 32;
/** CHALLENGE: u32 magic, u16 version, u16 0, 32 B nonce: the acceptor's first bytes. */
export const CHALLENGE_SIZE = 40;
export const NONCE_BYTES = 32;
export const MAC_BYTES = 32;
/** ACK: 12 bytes of status, the shared-memory offer (ring bytes, segment name), then its MAC. */
export const SHM_NAME_BYTES = 64;
export const ACK_BODY = 16 + SHM_NAME_BYTES;
export const ACK_SIZE = ACK_BODY + MAC_BYTES;
export const HEADER_SIZE = 24;
/** Longest accepted group name in a HELLO (bytes): bounds what a stranger can make us buffer. */
export const MAX_NAME_BYTES = 1024;
/** After the HELLO's host id: u32 toRank, f64 maxFrameBytes, dialer nonce, MAC. */
export const HELLO_TRAILER = 4 + 8 + NONCE_BYTES + MAC_BYTES;

/** Frame kinds: collective frames are matched by the group's op sequence, p2p by (tag, seq). */
export const KIND_COLL = 1;
export const KIND_P2P = 2;
/** Sent by destroy(): "I am leaving on purpose; everything I had to send precedes this". */
export const KIND_BYE = 3;
/**
 * A heartbeat on an idle TCP link (mesh.ts, liveness): no payload, belongs to no operation. Its
 * only use is that bytes arrive, so a silently cut link is told from a quiet one.
 */
export const KIND_PING = 4;
/**
 * A verdict (no payload): the sender of this frame received, for collective `seq`, a frame of
 * ours made for another call, and failed it with ERR_GROUPCOMM_MISMATCH; `tag` is its own call's
 * fingerprint. Tells a rank that only sent in that collective (and so compared nothing) that
 * its call differed: its pending or next operation fails too.
 */
export const KIND_VERDICT = 5;
/**
 * Or'ed into a frame's kind when its payload lies in the shared-memory ring: the frame then
 * carries DOORBELL_SIZE bytes (f64 ring position, f64 payload length) instead of the payload.
 */
export const KIND_SHM = 0x100;
export const DOORBELL_SIZE = 16;

/** What a rank asks for in its HELLO (the acceptor decides; both must agree for shm). */
export const WANT_TCP = 0;
export const WANT_SHM = 1;

/** ACK status codes (0 = accepted). */
export const Status = {
  OK: 0,
  BAD_MAGIC: 1,
  BAD_VERSION: 2,
  WRONG_GROUP: 3,
  WRONG_EPOCH: 4,
  BAD_RANK: 5,
  DUPLICATE: 6,
  WRONG_SIZE: 7,
  WRONG_TUNING: 8,
  BAD_AUTH: 9,
} as const;

const STATUS_TEXT: Record<number, string> = {
  0: 'ok', 1: 'bad magic', 2: 'unsupported version', 3: 'wrong group name', 4: 'wrong epoch',
  5: 'rank out of range', 6: 'rank already connected', 7: 'world size differs',
  8: 'chunkBytes / smallBytes differ', 9: 'authentication failed (different GROUPCOMM_SECRET?)',
};
export const statusText = (s: number) => STATUS_TEXT[s] ?? `status ${s}`;

export interface Hello {
  magic: number;
  version: number;
  rank: number;
  worldSize: number;
  epoch: number;
  name: string;
  /** The sender's framing settings (they must match on every rank). */
  chunkBytes: number;
  smallBytes: number;
  /** WANT_SHM when the dialer would take a shared-memory ring for this connection. */
  want: number;
  /** The dialer's host id (shm.hostId()); shm needs equal ids. */
  hostId: string;
  /** The rank the dialer meant to reach (the acceptor checks it is itself). */
  toRank: number;
  /** Largest frame payload the dialer accepts on this connection. */
  maxFrameBytes: number;
  nonce: Uint8Array;
}

/** The acceptor's challenge. */
export function encodeChallenge(nonce: Uint8Array): Buffer {
  const b = Buffer.alloc(CHALLENGE_SIZE);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt16LE(VERSION, 4);
  Buffer.from(nonce.buffer, nonce.byteOffset, NONCE_BYTES).copy(b, 8);
  return b;
}

/** The challenge's nonce, or a reason it is not one. */
export function decodeChallenge(b: Uint8Array): { nonce: Buffer } | { why: string } {
  const dv = new DataView(b.buffer, b.byteOffset, CHALLENGE_SIZE);
  if (dv.getUint32(0, true) !== MAGIC) return { why: 'not a groupcomm CPU group (bad magic in its challenge)' };
  if (dv.getUint16(4, true) !== VERSION) return { why: `it speaks protocol version ${dv.getUint16(4, true)}, this rank ${VERSION}` };
  return { nonce: Buffer.from(b.subarray(8, 8 + NONCE_BYTES)) };
}

// HELLO: u32 magic, u16 version, u16 nameLen, u32 rank, u32 worldSize, f64 epoch,
//        u32 chunkBytes, u32 smallBytes, name bytes, u8 want, u8 hostIdLen, hostId bytes,
//        u32 toRank, f64 maxFrameBytes, 32 B dialer nonce, 32 B MAC (link/handshake.ts).
/** A HELLO without its MAC (the last MAC_BYTES are zero: the caller signs it). */
export function encodeHello(h: Omit<Hello, 'magic' | 'version' | 'want' | 'hostId' | 'toRank' | 'maxFrameBytes' | 'nonce'> &
  { want?: number; hostId?: string; toRank?: number; maxFrameBytes?: number; nonce?: Uint8Array }): Buffer {
  const name = Buffer.from(h.name, 'utf8');
  const host = Buffer.from(h.hostId ?? '', 'utf8').subarray(0, 255);
  const b = Buffer.alloc(HELLO_FIXED + name.length + 2 + host.length + HELLO_TRAILER);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt16LE(VERSION, 4);
  b.writeUInt16LE(name.length, 6);
  b.writeUInt32LE(h.rank, 8);
  b.writeUInt32LE(h.worldSize, 12);
  b.writeDoubleLE(h.epoch, 16);
  b.writeUInt32LE(h.chunkBytes >>> 0, 24);
  b.writeUInt32LE(h.smallBytes >>> 0, 28);
  name.copy(b, HELLO_FIXED);
  let at = HELLO_FIXED + name.length;
  b[at++] = h.want ?? WANT_TCP;
  b[at++] = host.length;
  host.copy(b, at);
  at += host.length;
  b.writeUInt32LE((h.toRank ?? 0) >>> 0, at);
  b.writeDoubleLE(h.maxFrameBytes ?? 0, at + 4);
  if (h.nonce) Buffer.from(h.nonce.buffer, h.nonce.byteOffset, NONCE_BYTES).copy(b, at + 12);
  return b;
}

/** The fixed part of a HELLO; `nameLen` says how many more bytes to read (then the trailer). */
export function decodeHelloFixed(b: Buffer): Omit<Hello, 'name' | 'want' | 'hostId' | 'toRank' | 'maxFrameBytes' | 'nonce'> & { nameLen: number } {
  return {
    magic: b.readUInt32LE(0),
    version: b.readUInt16LE(4),
    nameLen: b.readUInt16LE(6),
    rank: b.readUInt32LE(8),
    worldSize: b.readUInt32LE(12),
    epoch: b.readDoubleLE(16),
    chunkBytes: b.readUInt32LE(24),
    smallBytes: b.readUInt32LE(28),
  };
}

// ACK: u32 magic, u16 version, u16 status, u32 rank of the acceptor, u32 ringBytes (0: TCP
//      only), 64 bytes shm segment name (UTF-8, zero-padded), 32 B MAC (zero on a refusal).
export function encodeAck(status: number, rank: number, shm?: { ringBytes: number; name: string }): Buffer {
  const b = Buffer.alloc(ACK_SIZE);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt16LE(VERSION, 4);
  b.writeUInt16LE(status, 6);
  b.writeUInt32LE(rank >>> 0, 8);
  if (shm) {
    const name = Buffer.from(shm.name, 'utf8');
    if (name.length > SHM_NAME_BYTES) throw new Error(`shm name '${shm.name}' is longer than ${SHM_NAME_BYTES} bytes`);
    b.writeUInt32LE(shm.ringBytes >>> 0, 12);
    name.copy(b, 16);
  }
  return b;
}

export function decodeAck(b: Uint8Array): { magic: number; version: number; status: number; rank: number; ringBytes: number; shmName: string } {
  const dv = new DataView(b.buffer, b.byteOffset, ACK_SIZE);
  const raw = Buffer.from(b.buffer, b.byteOffset + 16, SHM_NAME_BYTES);
  const end = raw.indexOf(0);
  return {
    magic: dv.getUint32(0, true), version: dv.getUint16(4, true), status: dv.getUint16(6, true), rank: dv.getUint32(8, true),
    ringBytes: dv.getUint32(12, true), shmName: raw.subarray(0, end < 0 ? SHM_NAME_BYTES : end).toString('utf8'),
  };
}

/** The header fields a sender chooses; the length is its payload's. */
export interface FrameHeader {
  kind: number;
  tag: number;
  seq: number;
  slot: number;
}

export interface Header extends FrameHeader {
  length: number;
}

// Frame header: u32 kind, u32 tag, u32 seq, u32 slot, f64 length.
// The length is a double so a frame may exceed 4 GiB without a 64-bit integer dance.
/** Writes `h` with `length`; `flags` is or'ed into the kind (KIND_SHM for a doorbell). */
export function writeHeader(b: Uint8Array, off: number, h: FrameHeader, length: number, flags = 0): void {
  const dv = new DataView(b.buffer, b.byteOffset + off, HEADER_SIZE);
  dv.setUint32(0, (h.kind | flags) >>> 0, true);
  dv.setUint32(4, h.tag >>> 0, true);
  dv.setUint32(8, h.seq >>> 0, true);
  dv.setUint32(12, h.slot >>> 0, true);
  dv.setFloat64(16, length, true);
}

export function readHeader(b: Uint8Array, off: number): Header {
  const dv = new DataView(b.buffer, b.byteOffset + off, HEADER_SIZE);
  return {
    kind: dv.getUint32(0, true),
    tag: dv.getUint32(4, true),
    seq: dv.getUint32(8, true),
    slot: dv.getUint32(12, true),
    length: dv.getFloat64(16, true),
  };
}
