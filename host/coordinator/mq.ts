/**
 * The message-queue broadcaster (vLLM's MessageQueue behind `use_message_queue_broadcaster`):
 * group rank 0 writes each broadcast object once into a shared-memory ring (mq_ring.ts) that
 * the ranks on its host read directly — no socket, no store server on the way; ranks on other
 * hosts (or where shared memory is unavailable) get it over the CPU group, on a tag of its own.
 * A coordinator created with `useMessageQueueBroadcaster: true` uses it for broadcastObject,
 * broadcastObjectList and the metadata of broadcastTensorDict when the source is group rank 0
 * (as vLLM does); other sources use the store channel as before.
 *
 * Setup (collective, in create()): every rank says which host it is on; rank 0 creates the
 * segment when some peer shares its host and names it; those peers map it (and say whether
 * they could); then the name is unlinked, so a crash later leaves nothing in /dev/shm. A rank
 * that could not map it reads over the CPU group instead. close() marks the ring closed
 * (readers inside a broadcast fail at once, naming rank 0) and unmaps it.
 *
 * Flow control: the writer waits while any same-host reader is `slots` chunks behind, bounded
 * by the operation's deadline; the timeout names the readers it waited for (a dead reader
 * shows up there). A reader waits for the writer under the same rules.
 */
import { Deadline, type OpOptions } from '../base/deadline.js';
import { setting } from '../base/config.js';
import { isGroupcommError, peerLeftError, peerLostError, protocolError, timeoutError } from '../base/errors.js';
import { logger } from '../base/log.js';
import { tensor } from '../core/tensor.js';
import { hostId, Segment } from '../cpu/shm.js';
import type { CpuGroup } from '../cpu/group.js';
import { decodeObject, encodeObject } from '../pg/codec.js';
import type { StatelessProcessGroup } from '../pg/group.js';
import { MAX_READERS, MqRing, poll } from './mq_ring.js';

/** The CPU-group tags of the broadcaster's frames to remote readers and of doorbells (apart from user sends, tag 0). */
const MQ_TAG = 0x4d51;
const BELL_TAG = 0x4d52;

interface Plan {
  /** The segment's name; absent when no peer shares rank 0's host or it could not be made. */
  name?: string;
  slots: number;
  slotBytes: number;
  /** Group ranks asked to map it; reader i is local[i]. */
  local: number[];
}

export interface MqOptions {
  pg: StatelessProcessGroup;
  cpu: CpuGroup;
  rank: number;
  worldSize: number;
  /** The group's name in logs and errors. */
  label: string;
}

export class MessageQueue {
  /** Same-host readers that mapped the ring (group ranks), with their reader index. */
  readonly shmReaders: readonly number[];
  /** Readers served over the CPU group. */
  readonly socketReaders: readonly number[];
  private written = 0;
  private readCount = 0;
  /** Chunks of the message being read (a message spans chunks; see mq_ring.ts). */
  private parts: Uint8Array[] = [];
  private closed = false;

  private constructor(private readonly o: MqOptions, private readonly ring: MqRing | undefined, private readonly index: Map<number, number>,
    shm: number[], private readonly spinUs: number) {
    this.shmReaders = shm;
    this.socketReaders = [...Array(o.worldSize).keys()].filter((r) => r !== 0 && !shm.includes(r));
  }

  /** Collective over the group (see the header); `opts` bounds the whole setup. */
  static async create(o: MqOptions, opts: OpOptions & { timeoutMs: number }): Promise<MessageQueue> {
    const b = new Deadline(opts.timeoutMs, opts.signal, `${o.label}: message queue setup`);
    const log = logger('COORD', `${o.label} rank ${o.rank}/${o.worldSize}`);
    const slots = setting('GROUPCOMM_MQ_SLOTS');
    const slotBytes = setting('GROUPCOMM_MQ_SLOT_BYTES');
    const spinUs = setting('GROUPCOMM_MQ_SPIN_US');
    const useShm = setting('GROUPCOMM_MQ_TRANSPORT') === 'auto';
    const hosts = await o.pg.allGatherObj(hostId(), b.next());
    let seg: Segment | undefined;
    let plan: Plan | undefined;
    if (o.rank === 0) {
      const local = hosts[0] ? [...hosts.keys()].filter((r) => r !== 0 && hosts[r] === hosts[0]).slice(0, MAX_READERS) : [];
      if (local.length > 0 && useShm) {
        try {
          seg = Segment.create(MqRing.bytesFor(slots, slotBytes));
        } catch (e) {
          log.warn(`message queue: same-host readers get broadcasts over the CPU group (${(e as Error).message})`);
        }
      }
      plan = seg ? { name: seg.name, slots, slotBytes, local } : { slots, slotBytes, local: [] };
    }
    plan = await o.pg.broadcastObj(plan, 0, b.next()) as Plan;
    if (o.rank !== 0 && plan.name && plan.local.includes(o.rank) && useShm) {
      try {
        seg = Segment.open(plan.name, MqRing.bytesFor(plan.slots, plan.slotBytes), false);
      } catch (e) {
        log.warn(`message queue: reading broadcasts over the CPU group (${(e as Error).message})`);
      }
    }
    let mapped: boolean[];
    try {
      mapped = await o.pg.allGatherObj(seg !== undefined, b.next());
    } catch (e) {
      seg?.close();
      throw e;
    }
    // Everyone who will map it has: nothing is left behind in /dev/shm from here on. (A reader's
    // unlink marks its own copy of the name done; the writer's removes it.)
    seg?.unlink();
    const shm = plan.local.filter((r) => mapped[r]);
    const ring = seg && (o.rank !== 0 || shm.length > 0) ? new MqRing(seg, plan.slots, plan.slotBytes) : undefined;
    if (seg && !ring) seg.close();
    const index = new Map(plan.local.map((r, i) => [r, i]));
    const q = new MessageQueue(o, ring, index, shm, spinUs);
    log.debug(`message queue: shared memory to [${shm.join(', ')}], CPU group to [${q.socketReaders.join(', ')}]`);
    return q;
  }

  /** Group rank 0 passes `obj`; every rank resolves with it (rank 0: the object itself, others: a copy). */
  async broadcastObj<T>(obj: T, b: Deadline): Promise<T> {
    this.checkOpen();
    if (this.o.rank === 0) {
      const bytes = encodeObject(obj);
      await Promise.all([
        this.ring ? this.write(bytes, b) : undefined,
        ...this.socketReaders.map(async (r) => {
          await this.o.cpu.send(tensor(Float64Array.of(bytes.byteLength)), r, { tag: MQ_TAG, ...b.next() });
          await this.o.cpu.send(tensor(bytes, { dtype: 'uint8' }), r, { tag: MQ_TAG, ...b.next() });
        }),
      ]);
      return obj;
    }
    let bytes: Uint8Array;
    if (this.ring) bytes = await this.read(b);
    else {
      const len = tensor(new Float64Array(1));
      await this.o.cpu.recv(len, 0, { tag: MQ_TAG, ...b.next() });
      const body = tensor(new Uint8Array((len.data as Float64Array)[0]), { dtype: 'uint8' });
      await this.o.cpu.recv(body, 0, { tag: MQ_TAG, ...b.next() });
      bytes = body.data as Uint8Array;
    }
    return decodeObject(bytes, { key: `${this.o.label}/mq`, src: 0 }) as T;
  }

  /** Marks the ring closed for readers still waiting (writer) and unmaps it. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.o.rank === 0) this.ring?.markClosed();
    this.ring?.close();
  }

  private checkOpen(): void {
    if (this.closed) throw peerLostError(`${this.o.label}: the message queue is closed`, { rank: this.o.rank });
  }

  private async write(bytes: Uint8Array, b: Deadline): Promise<void> {
    const ring = this.ring!;
    const slots = ring.slots;
    const readers = this.shmReaders.map((r) => ({ r, i: this.index.get(r)! }));
    const behind = () => readers.filter(({ i }) => ((this.written - ring.readCount(i)) >>> 0) >= slots).map(({ r }) => r);
    for (let off = 0; ;) {
      const n = Math.min(ring.chunkBytes, bytes.byteLength - off);
      await poll(() => { this.checkOpen(); return behind().length === 0; }, {
        ...b.next(), spinUs: this.spinUs, what: `${this.o.label}: message queue write`,
        onTimeout: (elapsedMs) => {
          const late = behind();
          return timeoutError(`${this.o.label}: message queue: group rank${late.length > 1 ? 's' : ''} ${late.join(', ')} did not read ` +
            `(all ${slots} slots of the ring are full) within ${b.timeoutMs}ms`, { rank: 0, peerRanks: late, elapsedMs });
        },
      });
      this.checkOpen();
      const last = off + n >= bytes.byteLength;
      ring.put(this.written, bytes.subarray(off, off + n), last);
      this.written = (this.written + 1) >>> 0;
      const bells = readers.filter(({ i }) => ring.wake(i));
      if (bells.length) await Promise.all(bells.map(({ r }) => this.o.cpu.send(tensor(new Uint8Array(1)), r, { tag: BELL_TAG, ...b.next() })));
      off += n;
      if (last) return;
    }
  }

  /** Polls `ready` for up to spinUs; false when it is still not ready. */
  private async spin(ready: () => boolean, b: Deadline): Promise<boolean> {
    if (ready()) return true;
    const t0 = performance.now();
    while ((performance.now() - t0) * 1000 < this.spinUs) {
      await new Promise((r) => setImmediate(r));
      if (b.signal?.aborted || b.remainingMs() <= 0) return false; // the bell wait reports it
      if (ready()) return true;
    }
    return false;
  }

  /** Sleeps on the doorbell until `ready` (see mq_ring.ts for the handshake with the writer). */
  private async sleep(ring: MqRing, i: number, ready: () => boolean, b: Deadline): Promise<void> {
    for (;;) {
      ring.sleep(i);
      // Looked once more after the flag is up: the writer either sees the flag or published first.
      if (ready() && ring.wake(i)) return; // the flag was still ours: no bell is coming
      await this.o.cpu.recv(tensor(new Uint8Array(1)), 0, { tag: BELL_TAG, ...b.next() }).catch((e) => {
        // A writer that died right after publishing: what it published is still read first.
        if (ready()) return;
        throw isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')
          ? timeoutError(`${this.o.label}: message queue: nothing from group rank 0 within ${b.timeoutMs}ms`, { rank: this.o.rank, peerRank: 0, cause: e })
          : e;
      });
      if (ready()) return;
    }
  }

  /**
   * A message group rank 0 finished publishing into the ring and this reader has not read yet,
   * taken without waiting; undefined when there is none (or this rank does not read the ring).
   * What a reader still gets after the group failed: a writer that died right after publishing
   * loses nothing it published (docs/coordinator.md, "Message queue").
   */
  takePublished(): Uint8Array | undefined {
    const ring = this.ring;
    if (!ring || this.o.rank === 0 || this.closed) return undefined;
    const written = ring.written;
    for (let k = this.readCount; k !== written; k = (k + 1) >>> 0) {
      if (!ring.get(k).last) continue;
      for (;;) {
        const last = this.take(ring);
        if (last) return this.joined();
      }
    }
    return undefined;
  }

  /** Reads the next chunk into `parts` and acknowledges it; true when it ended a message. */
  private take(ring: MqRing): boolean {
    const { part, last } = ring.get(this.readCount);
    this.parts.push(part.slice());
    this.readCount = (this.readCount + 1) >>> 0;
    ring.ack(this.index.get(this.o.rank)!, this.readCount);
    if (!last && this.parts.length > 1 << 20) throw protocolError(`${this.o.label}: message queue message without an end`, { peerRank: 0 });
    return last;
  }

  /** The chunks read so far as one message; `parts` starts over. */
  private joined(): Uint8Array {
    const parts = this.parts;
    this.parts = [];
    if (parts.length === 1) return parts[0];
    const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.byteLength; }
    return out;
  }

  private async read(b: Deadline): Promise<Uint8Array> {
    const ring = this.ring!;
    const i = this.index.get(this.o.rank)!;
    const ready = () => {
      this.checkOpen();
      if (ring.written !== this.readCount) return true;
      if (ring.writerClosed) throw peerLeftError(`${this.o.label}: group rank 0 closed the message queue (it left the group)`, { rank: this.o.rank, peerRank: 0 });
      return false;
    };
    // Chunks of a message read before a failed call stay in `parts` (takePublished may finish it).
    for (;;) {
      if (!await this.spin(ready, b)) await this.sleep(ring, i, ready, b);
      this.checkOpen();
      if (this.take(ring)) return this.joined();
    }
  }
}
