/**
 * The process group's collectives (barrier, allGatherObj, allReduce): collective n exchanges
 * every rank's part, either through rank 0 (the hub) or all to all, and a rank about to time out
 * asks the hub whose parts are missing so that the error names them.
 */
import { GroupcommError, isGroupcommError, protocolError } from '../base/errors.js';
import type { OpOptions } from '../base/deadline.js';
import { traceOp } from '../base/log.js';
import { decodeObject, encodeObject, type Origin } from './codec.js';
import type { PushMailbox } from './mailbox.js';
import { EMPTY, type Messages } from './messages.js';

/**
 * With pushed messages, collectives of at least this many ranks go through rank 0 (the hub):
 * every rank sends its part to rank 0, which sends everyone the bundle. That is 2(n−1) messages
 * instead of n(n−1), and one wake-up per rank instead of n−1 (see CollectiveLane.run).
 */
export const HUB_MIN_RANKS = 3;

/**
 * A rank other than the hub whose collective is this close to its deadline asks rank 0 who is
 * missing (at most a quarter of its timeout before it), so that the answer is there when the
 * deadline comes — by then rank 0 may have given up and left too.
 */
const QUERY_LEAD_MS = 500;

export class CollectiveLane {
  /** Collectives go through rank 0 (pushed messages, at least HUB_MIN_RANKS ranks); set at create. */
  hub = false;
  #collSeq = 0;
  /**
   * On the hub (rank 0): the ranks whose parts it had when one of its collectives ended — all of
   * them when it completed, some when it failed. The parts are gone with the read, and a late
   * query still gets the answer: a rank whose bundle was lost on its way then names rank 0, not
   * ranks that had arrived. The last few only.
   */
  readonly #hubEnded = new Map<number, number[]>();

  #ended(n: number, arrived: number[]): void {
    this.#hubEnded.set(n, arrived);
    if (this.#hubEnded.size > 16) this.#hubEnded.delete(this.#hubEnded.keys().next().value!);
  }

  constructor(private readonly m: Messages) {}

  /**
   * Collective n. With a hub: every other rank sends its part to rank 0, and rank 0, once it has
   * them all, sends each rank the bundle of all parts. Without one (two ranks, or a store that
   * cannot push): every rank sends its part to every other rank. Either way every message is
   * consumed as it is read: nothing of collective n outlives it.
   */
  run(mine: Uint8Array, what: string, opts?: OpOptions): Promise<{ bytes: Uint8Array; origin: Origin }[]> {
    const p = this.#run(mine, what, opts);
    return this.m.tracer ? traceOp(this.m.tracer, what, mine.length, this.m.others, p) : p;
  }

  async #run(mine: Uint8Array, what: string, opts?: OpOptions): Promise<{ bytes: Uint8Array; origin: Origin }[]> {
    const m = this.m;
    const n = this.#collSeq++;
    const o = m.opts(opts);
    const label = `${what} (collective #${n})`;
    const others = m.others;
    const tagOf = (r: number) => `c/${n}/${r}`;
    const inbox = m.inbox(m.rank);
    const out: { bytes: Uint8Array; origin: Origin }[] = [];
    if (this.hub && m.rank !== 0) {
      const put = m.post([0], tagOf(m.rank), mine, label, o);
      put.catch(() => {}); // awaited below; a failed read must not leave it unhandled meanwhile
      const tag = `c/${n}/all`;
      let bundle: Uint8Array;
      const lead = Math.min(QUERY_LEAD_MS, o.timeoutMs / 4);
      let asked: Promise<number[]> | undefined;
      try {
        [bundle] = await m.mailbox!.take([tag], 'c', o, label, { leadMs: lead, fn: () => { asked = this.#askHub(n, label, lead); } });
      } catch (e) {
        const missing = isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT') ? await (asked ?? this.#askHub(n, label, lead)) : [0];
        throw m.fail(e, label, missing, inbox + tag, o.timeoutMs);
      }
      await put;
      const key = inbox + tag;
      const parts = unpackParts(bundle, m.worldSize, { key, src: 0 });
      for (let r = 0; r < m.worldSize; r++) out.push({ bytes: r === m.rank ? mine : parts[r], origin: { key, src: r } });
      return out;
    }
    let values: Uint8Array[];
    if (this.hub) {
      try {
        values = await m.take(others.map(tagOf), others, 'c', label, o);
      } catch (e) {
        const missing = (e as GroupcommError).peerRanks ?? others;
        this.#ended(n, others.filter((r) => !missing.includes(r)));
        throw e;
      }
      this.#ended(n, others);
      await m.post(others, `c/${n}/all`, packParts([mine, ...values]), label, o);
    } else {
      const put = m.post(others, tagOf(m.rank), mine, label, o);
      put.catch(() => {});
      values = await m.take(others.map(tagOf), others, 'c', label, o);
      await put;
    }
    for (let r = 0, i = 0; r < m.worldSize; r++) {
      if (r === m.rank) out.push({ bytes: mine, origin: { key: inbox + tagOf(r), src: r } });
      else out.push({ bytes: values[i++], origin: { key: inbox + tagOf(r), src: r } });
    }
    return out;
  }

  /**
   * Collective n is about to time out on a rank other than the hub: only rank 0 knows whose parts
   * it has, so ask it (a query message, answered by answerQueries) for the ranks it lacks —
   * itself included if it never entered n. Rank 0 not answering within `graceMs` names it.
   */
  async #askHub(n: number, label: string, graceMs: number): Promise<number[]> {
    const m = this.m;
    const o = { timeoutMs: Math.max(1, graceMs) };
    try {
      m.post([0], `q/${n}/${m.rank}`, EMPTY, label, o).catch(() => {});
      const [ans] = await m.mailbox!.take([`a/${n}`], 'a', o, label);
      const { entered, arrived } = decodeObject(ans, { key: m.inbox(m.rank) + `a/${n}`, src: 0 }) as { entered: boolean; arrived: number[] };
      const missing = m.others.filter((r) => (r === 0 ? !entered : !arrived.includes(r)));
      return missing.length ? missing : [0];
    } catch {
      return [0];
    }
  }

  /** Rank 0 (the hub) answers "whose parts of collective n do you have?" from its mailbox. */
  answerQueries(box: PushMailbox): void {
    const m = this.m;
    box.interceptPrefix = 'q/';
    box.onIntercept = (tag) => {
      const [, ns, rs] = tag.split('/');
      const n = Number(ns);
      const r = Number(rs);
      if (!Number.isInteger(n) || n < 0 || !Number.isInteger(r) || r <= 0 || r >= m.worldSize) return;
      const ranks = m.others; // this is rank 0: every other rank
      const got = box.arrived(ranks.map((s) => `c/${n}/${s}`));
      const ans = encodeObject({ entered: n < this.#collSeq, arrived: this.#hubEnded.get(n) ?? ranks.filter((_, i) => got[i]) });
      m.post([r], `a/${n}`, ans, 'collective query', { timeoutMs: m.timeoutMs }).catch(() => {});
    };
  }
}

/** The hub's bundle of every rank's part: u32 count, u32 length per part, then the parts. */
function packParts(parts: Uint8Array[]): Uint8Array {
  let size = 4 + 4 * parts.length;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, parts.length, true);
  let at = 4 + 4 * parts.length;
  parts.forEach((p, i) => {
    dv.setUint32(4 + 4 * i, p.length, true);
    out.set(p, at);
    at += p.length;
  });
  return out;
}

function unpackParts(b: Uint8Array, n: number, o: Origin): Uint8Array[] {
  const bad = () => protocolError(`malformed collective bundle under key '${o.key}' (written by rank ${o.src})`, { key: o.key, peerRank: o.src });
  if (b.length < 4 + 4 * n) throw bad();
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  if (dv.getUint32(0, true) !== n) throw bad();
  const out: Uint8Array[] = [];
  let at = 4 + 4 * n;
  for (let i = 0; i < n; i++) {
    const len = dv.getUint32(4 + 4 * i, true);
    if (len > b.length - at) throw bad();
    out.push(b.subarray(at, at + len));
    at += len;
  }
  if (at !== b.length) throw bad();
  return out;
}
