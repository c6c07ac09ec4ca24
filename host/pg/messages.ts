/**
 * The process group's messages: each is one store key `ns to/{dst}/{tag}` (ns =
 * `${groupName}/${epoch}/`), written by its sender and consumed by dst through its Mailbox
 * (mailbox.ts). This file builds the keys, keeps the per-peer sequence numbers, writes and takes
 * messages, and turns a store failure into an error that names the ranks waited for. The tags
 * are listed in group.ts's header and docs/process-group.md.
 */
import {
  GroupcommError, isGroupcommError, peerLostError, protocolError, timeoutError,
} from '../base/errors.js';
import { effectiveTimeout, type OpOptions, type TimedOptions } from '../base/deadline.js';
import { logger, traceOp, type Logger } from '../base/log.js';
import type { Store } from '../store/types.js';
import type { Origin } from './codec.js';
import type { Mailbox } from './mailbox.js';
import type { OpTracker } from './tracker.js';

export const EMPTY = new Uint8Array(0);

/**
 * Broadcast values up to this size are copied to one key per reader (see bcastSend): 64 KiB
 * times worldSize−1 is still one modest write for the root, and every reader saves a round trip.
 */
const FANOUT_MAX_BYTES = 64 * 1024;

const log = logger('PG');

/** Stored broadcast keys remembered for reclaim (see Messages.stored). */
const STORED_KEPT = 1024;

export interface MessagesOptions {
  rank: number;
  worldSize: number;
  groupName: string;
  epoch: number;
  store: Store;
  timeoutMs: number;
  /** The group opened the store: a lost store on rank ≠ 0 is then rank 0's server gone. */
  ownsStore: boolean;
  tracker: OpTracker;
}

export class Messages {
  readonly rank: number;
  readonly worldSize: number;
  readonly groupName: string;
  readonly store: Store;
  readonly timeoutMs: number;
  /** `${groupName}/${epoch}/`: the prefix of every key of this incarnation. */
  readonly ns: string;
  /** Every rank but this one, in order. */
  readonly others: number[];
  /** This rank's incoming messages (undefined with worldSize 1); set by create. */
  mailbox?: Mailbox;
  /** Set when GROUPCOMM_DEBUG=trace: every operation logs one line (base/log.ts traceOp). */
  readonly tracer: Logger | undefined;
  readonly #ownsStore: boolean;
  readonly #tracker: OpTracker;
  /** Each rank's mailbox prefix `{ns}to/{rank}/`. */
  readonly #inboxes: string[];
  readonly #sendSeq: number[];
  readonly #recvSeq: number[];
  #bcastSendSeq = 0;
  readonly #bcastRecvSeq: number[];
  /**
   * Stored broadcast values (`ns b/{src}/{n}`) this rank wrote, or read without being the last
   * reader: if a reader dies they are never deleted by the ack protocol, so a close after
   * reclaim() deletes them (group.ts). Only the latest STORED_KEPT: a value that many large
   * broadcasts old was read by every reader that was alive, or the group would have failed.
   */
  readonly stored: string[] = [];

  #remember(key: string): void {
    if (this.stored.push(key) > 2 * STORED_KEPT) this.stored.splice(0, STORED_KEPT);
  }

  constructor(o: MessagesOptions) {
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    this.groupName = o.groupName;
    this.store = o.store;
    this.timeoutMs = o.timeoutMs;
    this.#ownsStore = o.ownsStore;
    this.#tracker = o.tracker;
    this.ns = `${o.groupName}/${o.epoch}/`;
    this.others = [...Array(o.worldSize).keys()].filter((r) => r !== o.rank);
    this.#inboxes = [...Array(o.worldSize).keys()].map((r) => `${this.ns}to/${r}/`);
    this.#sendSeq = new Array(o.worldSize).fill(0);
    this.#recvSeq = new Array(o.worldSize).fill(0);
    this.#bcastRecvSeq = new Array(o.worldSize).fill(0);
    this.tracer = log.tracing ? log.child(`${o.groupName} rank ${o.rank}/${o.worldSize}`) : undefined;
  }

  /** Deletes keys nobody waits on: without a reply where the store can (Store.discard). */
  discard(keys: string[]): Promise<unknown> {
    if (this.store.discard) return this.store.discard(keys);
    return Promise.all(keys.map((k) => this.store.deleteKey(k)));
  }

  opts(opts: OpOptions | undefined): TimedOptions {
    return { timeoutMs: effectiveTimeout(opts, this.timeoutMs), signal: opts?.signal };
  }

  /** Re-labels a store failure with who we were waiting for. */
  fail(e: unknown, what: string, peers: number[], key: string, timeoutMs: number): GroupcommError {
    if (isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) {
      return timeoutError(
        `${what} timed out after ${timeoutMs}ms on rank ${this.rank} of group '${this.groupName}': ` +
        `waiting for rank${peers.length > 1 ? 's' : ''} [${peers.join(', ')}] (key '${key}'). ` +
        'Did every rank issue the same operations? Raise timeoutMs or GROUPCOMM_TIMEOUT_MS.',
        { rank: this.rank, peerRank: peers.length === 1 ? peers[0] : undefined, peerRanks: peers, key, timeoutMs, cause: e },
      );
    }
    if (isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST') && this.#ownsStore && this.rank !== 0) {
      return peerLostError(`${what} on rank ${this.rank}: lost the store hosted by rank 0 (${(e as Error).message})`,
        { rank: this.rank, peerRank: 0, peerRanks: [0], key, cause: e });
    }
    if (isGroupcommError(e)) return e;
    return protocolError(`${what}: ${(e as Error)?.message ?? e}`, { rank: this.rank, key, cause: e });
  }

  /** The key prefix of `rank`'s mailbox. */
  inbox(rank: number): string {
    return this.#inboxes[rank];
  }

  /**
   * Writes message `tag` to each of `dsts` (one request); a failure names them. The values are
   * handed over to the store (Store.publish): every caller passes bytes it encoded for this
   * message and never changes afterwards, so a store may write them out without a copy.
   */
  post(dsts: number[], tag: string, bytes: Uint8Array, what: string, o: TimedOptions, extra?: [string, Uint8Array]): Promise<void> {
    const keys = dsts.map((d) => this.inbox(d) + tag);
    const values: Uint8Array[] = keys.map(() => bytes);
    // The stored payload first: a reader that gets its marker finds the payload already there.
    if (extra) keys.unshift(extra[0]), values.unshift(extra[1]);
    const s = this.store;
    const p = s.publish
      ? s.publish(keys, values, { timeoutMs: o.timeoutMs, signal: o.signal, handOver: true })
      : keys.length === 1 ? s.set(keys[0], values[0], o) : s.multiSet(keys, values, o);
    this.#tracker.drain();
    return p.catch((e) => { throw this.fail(e, what, dsts, keys[0], o.timeoutMs); });
  }

  /** Takes this rank's messages `tags` from `peers` (tags[i] comes from peers[i]). */
  async take(tags: string[], peers: number[], lane: string, what: string, o: TimedOptions): Promise<Uint8Array[]> {
    try {
      return await this.mailbox!.take(tags, lane, o, what);
    } catch (e) {
      // A timeout's `keys` are the tags still missing: name their senders.
      const missing = (e as { keys?: string[] }).keys;
      let at = peers.map((_, i) => i).filter((i) => missing?.includes(tags[i]));
      if (at.length === 0) at = peers.map((_, i) => i);
      throw this.fail(e, what, at.map((i) => peers[i]), this.inbox(this.rank) + tags[at[0]], o.timeoutMs);
    }
  }

  send(bytes: Uint8Array, dst: number, what: string, opts?: OpOptions): Promise<void> {
    const p = this.post([dst], `p/${this.rank}/${this.#sendSeq[dst]++}`, bytes, what, this.opts(opts));
    return this.tracer ? traceOp(this.tracer, what, bytes.length, [dst], p) : p;
  }

  recv(src: number, what: string, opts?: OpOptions): Promise<[Uint8Array, Origin]> {
    const p = this.#recv(src, what, opts);
    return this.tracer ? traceOp(this.tracer, what, (v) => v[0].length, [src], p) : p;
  }

  async #recv(src: number, what: string, opts?: OpOptions): Promise<[Uint8Array, Origin]> {
    const tag = `p/${src}/${this.#recvSeq[src]++}`;
    const [bytes] = await this.take([tag], [src], `p/${src}`, what, this.opts(opts));
    return [bytes, { key: this.inbox(this.rank) + tag, src }];
  }

  /**
   * Writes broadcast n. A value up to FANOUT_MAX_BYTES goes to every reader's mailbox: one store
   * hop, no acknowledgement traffic. So does any value with one reader, or from the rank whose
   * process hosts the store (Store.publishesLocally): this process writes the value to every
   * reader's socket either way, as a push or as the reply to its read, and a push saves each
   * reader the read's round trip and its acknowledgement (the value is handed over, not copied
   * per reader). Otherwise a larger value is stored once (copies would multiply the root's
   * upload) and each reader gets an empty marker sending it there.
   */
  bcastSend(bytes: Uint8Array, what: string, opts?: OpOptions): Promise<void> {
    const p = this.#bcastSend(bytes, what, opts);
    return this.tracer ? traceOp(this.tracer, what, bytes.length, this.others, p) : p;
  }

  #bcastSend(bytes: Uint8Array, what: string, opts?: OpOptions): Promise<void> {
    const n = this.#bcastSendSeq++;
    const tag = `b/${this.rank}/${n}`;
    const others = this.others;
    const o = this.opts(opts);
    if (others.length === 1 || bytes.length <= FANOUT_MAX_BYTES || this.store.publishesLocally) return this.post(others, tag, bytes, what, o);
    this.#remember(this.ns + tag);
    return this.post(others, tag, EMPTY, what, o, [this.ns + tag, bytes]);
  }

  /**
   * Reads broadcast n from src. An empty message is the marker of a stored value: read it, then
   * bump its ack counter; whoever brings it to worldSize−1 deletes payload and counter.
   */
  bcastRecv(src: number, what: string, opts?: OpOptions): Promise<[Uint8Array, Origin]> {
    const p = this.#bcastRecv(src, what, opts);
    return this.tracer ? traceOp(this.tracer, what, (v) => v[0].length, [src], p) : p;
  }

  async #bcastRecv(src: number, what: string, opts?: OpOptions): Promise<[Uint8Array, Origin]> {
    const tag = `b/${src}/${this.#bcastRecvSeq[src]++}`;
    const o = this.opts(opts);
    const t0 = performance.now();
    let [bytes] = await this.take([tag], [src], `b/${src}`, what, o);
    if (bytes.length > 0) return [bytes, { key: this.inbox(this.rank) + tag, src }];
    const key = this.ns + tag;
    try {
      bytes = await this.store.get(key, { timeoutMs: Math.max(1, o.timeoutMs - (performance.now() - t0)), signal: o.signal });
    } catch (e) {
      throw this.fail(e, what, [src], key, o.timeoutMs);
    }
    const ack = key + '/ack';
    this.#tracker.later(`ack ${key}`, () => this.store.add(ack, 1).then((k) => {
      if (k === this.worldSize - 1) return this.discard([key, ack]);
      this.#remember(key);
    }));
    return [bytes, { key, src }];
  }
}
