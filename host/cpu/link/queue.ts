/**
 * Frames for peers whose send side is not ready yet (mesh.ts: pairs connect on demand). They
 * wait per peer and go out in call order once it is; with the mesh closed or lost, or the peer
 * gone, each one's `done` gets the error.
 */
import type { FrameHeader, SendOptions, WriteDone } from './link.js';

type Send = (frame: FrameHeader, payload: Uint8Array, opts: SendOptions, done: WriteDone) => void;

export class SendQueues {
  private q: ((err?: Error) => void)[][];

  constructor(worldSize: number) {
    this.q = Array.from({ length: worldSize }, () => []);
  }

  /** Frames to `peer` are waiting (a new one must wait behind them). */
  waiting(peer: number): boolean {
    return this.q[peer].length > 0;
  }

  /** Queues one frame; `send` sends it once flushed. Keeps what Link.send lets the caller change. */
  push(peer: number, frame: FrameHeader, payload: Uint8Array, opts: SendOptions, done: WriteDone, send: Send): void {
    // The header is read during the call only, a copied payload may change at once: keep both.
    const f = { ...frame };
    const p = opts.copy ? payload.slice() : payload;
    this.q[peer].push((err) => (err ? done(err) : send(f, p, { copy: false }, done)));
  }

  /** Sends `peer`'s frames, in order. */
  flush(peer: number): void {
    const q = this.q[peer];
    this.q[peer] = [];
    for (const f of q) f();
  }

  /** Fails the frames of `peers` (default: all). */
  fail(why: string, peers: Iterable<number> = this.q.keys()): void {
    for (const p of peers) {
      const q = this.q[p];
      this.q[p] = [];
      for (const f of q) f(new Error(why));
    }
  }
}
