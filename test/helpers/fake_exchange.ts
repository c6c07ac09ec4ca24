// A scripted Exchange for P ranks in one process (cpu_algorithms_steps, cpu_bodies): each rank's
// FakeEx has the part of Exchange the algorithms use; frames are delivered on a timer. A payload
// sent without `copy` is read when it is delivered (as a queued write would be), one sent with
// `copy` when it is sent; a frame to a rank outside the group, or one beyond a stream's count, is
// recorded in `bad`.
import type { Exchange } from '../../host/cpu/exchange.js';
import type { Sink } from '../../host/cpu/mesh.js';
import type { GroupcommError } from '../../host/base/errors.js';

export class World {
  readonly ranks: FakeEx[];
  /** Anything a correct algorithm never does: a frame outside the group, or one not expected. */
  readonly bad: string[] = [];
  /** Deliveries are kept (not scheduled) while `hold` is set: counts what is in flight. */
  hold = false;
  private held: (() => void)[] = [];
  /** Offer every streamed frame to the sink's `consume` first (the shared-memory path). */
  shm = false;
  consumed = 0;
  constructor(readonly P: number) {
    this.ranks = [...Array(P).keys()].map((r) => new FakeEx(this, r));
  }
  deliver(fn: () => void): void {
    if (this.hold) this.held.push(fn);
    else setTimeout(fn, 0);
  }
  release(): void {
    this.hold = false;
    for (const f of this.held.splice(0)) setTimeout(f, 0);
  }
  sends(from: number): number {
    return this.ranks[from].sent;
  }
}

/** The part of Exchange the algorithms use. */
export class FakeEx {
  sent = 0;
  private streams = new Map<number, { count: number; sink: Sink; seen: Set<number> }>();
  private posted = new Map<string, { dest?: Uint8Array; resolve: (b: Uint8Array) => void }>();
  private early = new Map<number, [number, Uint8Array][]>();
  private failure: GroupcommError | undefined;
  private failWaiters: ((e: GroupcommError) => void)[] = [];
  constructor(readonly world: World, readonly rank: number) {}
  get size(): number { return this.world.P; }

  send(peer: number, slot: number, payload: Uint8Array, copy = false): void {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.size || peer === this.rank) {
      this.world.bad.push(`rank ${this.rank} sent slot ${slot} to rank ${peer}`);
      return;
    }
    this.sent++;
    const data = copy ? payload.slice() : payload;
    this.world.deliver(() => this.world.ranks[peer].arrive(this.rank, slot, data.slice()));
  }

  arrive(from: number, slot: number, data: Uint8Array): void {
    const st = this.streams.get(from);
    if (!st) {
      const key = `${from}:${slot}`;
      const p = this.posted.get(key);
      if (!p) {
        let l = this.early.get(from);
        if (!l) this.early.set(from, (l = []));
        l.push([slot, data]);
        return;
      }
      this.posted.delete(key);
      const d = p.dest ?? new Uint8Array(data.byteLength);
      d.set(data);
      p.resolve(d);
      return;
    }
    // Noted, then handed over all the same, as the real Exchange does (it counts no slots).
    if (slot >= st.count || st.seen.has(slot)) this.world.bad.push(`rank ${this.rank} got slot ${slot} of ${st.count} from rank ${from}`);
    st.seen.add(slot);
    // As the real Exchange's sink: whatever a stream's hooks throw fails the operation.
    try {
      if (this.world.shm && st.sink.consume?.(slot, data)) {
        this.world.consumed++;
        return;
      }
      const d = st.sink.dest(slot, data.byteLength)!;
      d.set(data.subarray(0, d.byteLength));
      st.sink.done(slot, d.byteLength === data.byteLength ? d : data);
    } catch (e) {
      this.fail(e as GroupcommError);
    }
  }

  stream(peer: number, count: number, sink: Sink): void {
    this.streams.set(peer, { count, sink, seen: new Set() });
    for (const [slot, data] of this.early.get(peer)?.splice(0) ?? []) this.arrive(peer, slot, data);
  }

  recv(peer: number, slot: number, dest?: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve) => {
      this.posted.set(`${peer}:${slot}`, { dest, resolve });
      const l = this.early.get(peer) ?? [];
      const i = l.findIndex(([s]) => s === slot);
      if (i >= 0) this.arrive(peer, ...l.splice(i, 1)[0]);
    });
  }

  failed(): Promise<never> {
    return new Promise((_, reject) => {
      if (this.failure) reject(this.failure);
      else this.failWaiters.push(reject);
    });
  }

  fail(e: GroupcommError): void {
    if (this.failure) return;
    this.failure = e;
    for (const w of this.failWaiters.splice(0)) w(e);
  }

  get ex(): Exchange { return this as unknown as Exchange; }
}
