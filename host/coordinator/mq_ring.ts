/**
 * The shared-memory ring of the message-queue broadcaster (mq.ts; vLLM's ShmRingBuffer): one
 * writer, several same-host readers, no socket on the way.
 *
 * Layout: the segment's 4 KiB control page holds int32 counters — [0] chunks written, [1] the
 * writer's "closed" flag, [16 + i] chunks read by reader i, [16 + MAX_READERS + i] reader i is
 * asleep — then `slots` slots of `slotBytes`,
 * each an 8-byte header (u32 payload bytes, u32 1 when the chunk ends its message) and the
 * payload. Counters run free as u32; slot k is `k mod slots` (slots is a power of two, so the
 * wrap at 2^32 keeps the order). The writer may fill slot k once every reader has read chunk
 * k − slots; a reader may read chunk k once the writer has written k + 1 chunks.
 *
 * Nobody can sleep on shared memory from JavaScript without blocking its event loop
 * (Atomics.wait needs a SharedArrayBuffer and blocks), so a waiting side polls without pause for
 * GROUPCOMM_MQ_SPIN_US (yielding to its event loop between polls). Then a reader goes to sleep
 * on a doorbell: it sets its "asleep" flag, looks once more, and waits for a one-byte frame the
 * writer sends when it finds the flag set after publishing (it clears it first, so exactly one
 * bell per sleep; both sides' store-then-load through Atomics cannot both miss). A writer
 * waiting for room (rare: all slots unread) polls once a millisecond after its spin. Spinning
 * readers cost CPU: on machines with fewer cores than ranks keep the spin short.
 */
import { guard } from '../base/deadline.js';
import type { GroupcommError } from '../base/errors.js';
import type { Segment } from '../cpu/shm.js';

const CONTROL_INTS = 1024;
const WRITTEN = 0;
const CLOSED = 1;
const READ0 = 16;
const SLOT_HEADER = 8;
/** Readers one control page can count. */
export const MAX_READERS = (CONTROL_INTS - READ0) >> 1;
const ASLEEP0 = READ0 + MAX_READERS;

export interface PollSpec {
  timeoutMs: number;
  signal?: AbortSignal;
  spinUs: number;
  what: string;
  onTimeout: (elapsedMs: number) => GroupcommError;
}

/** Resolves once `ready()` is true; polls as the header says, under the deadline and signal. */
export function poll(ready: () => boolean, o: PollSpec): Promise<void> {
  if (ready()) return Promise.resolve();
  let stopped = false;
  const t0 = performance.now();
  const waiting = new Promise<void>((resolve, reject) => {
    const tick = () => {
      if (stopped) return;
      try {
        if (ready()) { resolve(); return; }
      } catch (e) {
        reject(e);
        return;
      }
      if ((performance.now() - t0) * 1000 < o.spinUs) setImmediate(tick);
      else setTimeout(tick, 1);
    };
    setImmediate(tick);
  });
  return guard(waiting, { timeoutMs: o.timeoutMs, signal: o.signal, what: o.what, onTimeout: o.onTimeout, cancel: () => { stopped = true; } });
}

export class MqRing {
  private readonly ctl: Int32Array;
  private readonly ring: Uint8Array;
  private readonly view: DataView;
  /** Set by close(): the mapping is gone, nothing may touch it (every access checks). */
  unmapped = false;

  constructor(readonly seg: Segment, readonly slots: number, readonly slotBytes: number) {
    this.ctl = new Int32Array(seg.control.buffer, seg.control.byteOffset, CONTROL_INTS);
    this.ring = seg.ring;
    this.view = new DataView(seg.ring.buffer, seg.ring.byteOffset, seg.ring.byteLength);
  }

  /** The segment's ring size: the slots, at least the 64 KiB every shared-memory segment has (shm.ts). */
  static bytesFor(slots: number, slotBytes: number): number {
    return Math.max(slots * slotBytes, 64 * 1024);
  }

  get chunkBytes(): number { return this.slotBytes - SLOT_HEADER; }
  get written(): number { return Atomics.load(this.ctl, WRITTEN) >>> 0; }
  get writerClosed(): boolean { return Atomics.load(this.ctl, CLOSED) !== 0; }
  readCount(i: number): number { return Atomics.load(this.ctl, READ0 + i) >>> 0; }

  /** Writer: chunk k (its payload `part`, `last` when it ends a message) into its slot, then published. */
  put(k: number, part: Uint8Array, last: boolean): void {
    const at = (k & (this.slots - 1)) * this.slotBytes;
    this.view.setUint32(at, part.byteLength, true);
    this.view.setUint32(at + 4, last ? 1 : 0, true);
    this.ring.set(part, at + SLOT_HEADER);
    Atomics.store(this.ctl, WRITTEN, ((k + 1) >>> 0) | 0);
  }

  /** Reader i: chunk k's payload (a view: copy it before `ack`) and whether it ends its message. */
  get(k: number): { part: Uint8Array; last: boolean } {
    const at = (k & (this.slots - 1)) * this.slotBytes;
    const n = this.view.getUint32(at, true);
    const last = this.view.getUint32(at + 4, true) === 1;
    if (n > this.chunkBytes) throw new Error(`message queue slot ${k & (this.slots - 1)} claims ${n} bytes (at most ${this.chunkBytes})`);
    return { part: this.ring.subarray(at + SLOT_HEADER, at + SLOT_HEADER + n), last };
  }

  /** Reader i has read `count` chunks: their slots are free again. */
  ack(i: number, count: number): void {
    Atomics.store(this.ctl, READ0 + i, count | 0);
  }

  /** Reader i is about to sleep on its doorbell. */
  sleep(i: number): void {
    Atomics.store(this.ctl, ASLEEP0 + i, 1);
  }

  /** Clears reader i's asleep flag; true if it was set (writer: then ring its bell; reader: then no bell comes). */
  wake(i: number): boolean {
    return Atomics.compareExchange(this.ctl, ASLEEP0 + i, 1, 0) === 1;
  }

  /** Writer: readers still waiting see the queue closed instead of timing out. */
  markClosed(): void {
    if (!this.unmapped) Atomics.store(this.ctl, CLOSED, 1);
  }

  close(): void {
    if (this.unmapped) return;
    this.unmapped = true;
    this.seg.close();
  }
}
