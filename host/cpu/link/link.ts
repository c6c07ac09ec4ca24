/**
 * The send side of one peer's connection, whatever carries the payloads. Every transport is one
 * file with the same shape (gloo's identical file set per transport): `tcp.ts` writes frames on
 * the socket; `shm.ts` copies payloads into a shared-memory ring and writes doorbells on the
 * socket. The receive side is the same for both: the parser in `inbound.ts`, reading the
 * connection this rank dialed (with a `RingSource` for doorbells when the peer sends through a
 * ring). The handshake that decides which link a pair gets is `handshake.ts`.
 */
import type { FrameHeader } from '../wire.js';

export type { FrameHeader };

/** Called once a frame's bytes are taken by the kernel (or with the error that lost them). */
export type WriteDone = (err?: Error | null) => void;

export interface SendOptions {
  /**
   * Copy the payload during the call: the caller may change its memory at once. Without it,
   * payloads above COPY_BELOW are written from the caller's memory, which must stay unchanged
   * until `done` runs.
   */
  copy?: boolean;
}

/** What a link tells the mesh about its connection. */
export interface LinkEvents {
  /** The connection broke or closed. */
  lost(why: string): void;
  /** The peer sent what it must not send on this connection. */
  malformed(why: string): void;
}

export interface Link {
  /** How frames travel: 'shm' once the peer has mapped the ring, else 'tcp'. */
  readonly transport: 'tcp' | 'shm';
  /**
   * Sends one frame. `frame` is read during the call only (callers may reuse one header object
   * for every frame); frames to one peer arrive in call order.
   */
  send(frame: FrameHeader, payload: Uint8Array, opts: SendOptions, done: WriteDone): void;
  /**
   * Sends a goodbye behind everything already written and ends the connection (destroyed if it
   * has not drained within a second); later sends fail. Idempotent.
   */
  close(): void;
  /** Drops the connection at once (a protocol failure); queued frames are not sent. */
  destroy(): void;
}
