/**
 * One failure state per coordinator group (docs/coordinator.md, "Failures"): which rank failed
 * and why, the same on every member, whichever channel saw it first.
 *
 * - The first peer loss or fatal error (a rank gone without its goodbye, a protocol error, a
 *   mismatch) from any channel marks the group failed: every pending operation rejects with it
 *   at once (their lower-layer calls are aborted) and so does every later one.
 * - The rank that saw it tells the others over the group's store (a push message to each one's
 *   fault inbox), so a rank that was waiting on another channel, or on a rank that then left
 *   cleanly, names the rank that actually failed instead of the one it happened to wait on.
 * - A rank that closed its end on purpose is reported as having left, never as lost.
 * - A collective's timeout names the ranks that never called it: the timed-out rank asks every
 *   other member how many collectives it has called (each answers from its fault inbox, which
 *   needs only its event loop, not the operation), and names those that had not reached this one
 *   or did not answer.
 *
 * The inbox is one store subscription per rank and group, opened at create in the background:
 * nothing here costs anything per operation but a counter.
 */
import {
  ErrorCode, isGroupcommError, mismatchError, peerLeftError, peerLostError, protocolError, timeoutError, type GroupcommError,
} from '../base/errors.js';
import { logger } from '../base/log.js';
import type { Store, Subscription } from '../store/types.js';
import type { CpuGroup } from '../cpu/group.js';

/** Bound on each store exchange made while explaining a failure (asks, answers, causes). */
const ASK_MS = 500;
/** Non-fatal causes (collective timeouts) kept for late readers: the last few only. */
const MAX_CAUSES = 16;
/** Collectives whose names a rank keeps to answer "which call was #n?". */
const MAX_CALLED = 64;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** How far another rank is: collectives called, inside one now, and which call its #n was. */
interface Answer { calls: number; busy: boolean; what?: string }

/** A cause as it travels to the other members. */
interface Cause { code: string; message: string; peerRanks: number[]; n: number; fatal: boolean }

export interface FaultsOptions {
  /** The group's wire name (`${groupName}_${index}`, equal on every member). */
  label: string;
  rankInGroup: number;
  worldSize: number;
  /** The group's own store (group rank 0 hosts it); none in a group of one. */
  store?: Store;
  cpu?: CpuGroup;
  /**
   * Called once with the group's failure: aborts what the pending operations wait on (the
   * coordinator's own operations signal, so no operation pays for one more signal).
   */
  onFail(e: GroupcommError): void;
}

export class GroupFaults {
  /** The group's failure, once one happened: every operation from then on rejects with it. */
  failure: GroupcommError | undefined;
  /** Collectives called on this rank so far: the index of the next one. */
  calls = 0;
  private sub: Subscription | undefined;
  /** Settles once the inbox is open (or could not be). */
  private opening: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Non-fatal causes by collective index (a timeout that named who never arrived). */
  private readonly causes = new Map<number, GroupcommError>();
  /**
   * The latest timeout another member (or this one) explained — who stalled the group — and
   * when: a later timeout or departure here adopts it while it is fresh.
   */
  private stall: { e: GroupcommError; at: number } | undefined;
  /** Operations of this rank in flight (an answer says whether this rank is busy in one). */
  busy = 0;
  /** The last few collectives this rank called, by index: an answer says which one it called. */
  private readonly called = new Map<number, string>();
  /** Answers to this rank's survey, by survey number: rank → how far it is. */
  private readonly answers = new Map<number, Map<number, Answer>>();
  private surveys = 0;
  private told = 0;
  private wake = new Set<() => void>();
  private readonly log;

  constructor(private readonly o: FaultsOptions) {
    this.log = logger('COORD', `${o.label} rank ${o.rankInGroup}/${o.worldSize}`);
    o.cpu?.onLost((e) => this.fail(e, -1, true));
  }

  /** Shaped like a process-group mailbox (`…/<epoch>/to/<rank>/`): the only prefixes the store lets clients subscribe to. */
  private inbox(r: number): string {
    return `groupcomm/faults/${this.o.label}/0/to/${r}/`;
  }

  /** Collective `n` of this rank is `what` (kept for answers: the last MAX_CALLED only). */
  record(n: number, what: string): void {
    this.called.set(n, what);
    if (this.called.size > MAX_CALLED) this.called.delete(n - MAX_CALLED);
  }

  /** Which call collective `n` was on each rank that answers within ASK_MS, this one included. */
  async callsAt(n: number): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    const mine = this.called.get(n);
    if (mine) out.set(this.o.rankInGroup, mine);
    const s = await this.survey(n);
    for (const [r, a] of s ?? []) if (a.what) out.set(r, a.what);
    return new Map([...out].sort(([a], [b]) => a - b));
  }

  /** Opens this rank's fault inbox (in the background: create does not wait for it). */
  listen(): void {
    const store = this.o.store;
    if (!store?.subscribe || this.o.worldSize < 2) return;
    const prefix = this.inbox(this.o.rankInGroup);
    this.opening = store.subscribe(prefix, (key, value) => {
      const at = key.indexOf(prefix);
      this.onMessage(at < 0 ? key : key.slice(at + prefix.length), value);
    }, { timeoutMs: 30_000 }).then((sub) => {
      if (this.closed) sub?.close();
      else this.sub = sub;
    }, (e) => this.log.debug(`fault inbox not opened: ${(e as Error).message}`));
  }

  close(): void {
    this.closed = true;
    this.sub?.close();
    this.sub = undefined;
  }

  /**
   * Records `e`: fatal, the group's failure (first one wins); else the cause of collective `n`.
   * With `tell`, the other members get it too.
   */
  fail(e: GroupcommError, n: number, fatal: boolean, tell = true): void {
    if (fatal) {
      if (this.failure) return;
      this.failure = e;
      this.log.debug(`group failed: ${e.message}`);
      this.o.onFail(e);
    } else {
      this.stall = { e, at: performance.now() };
      if (n >= 0 && !this.causes.has(n)) {
        this.causes.set(n, e);
        if (this.causes.size > MAX_CAUSES) this.causes.delete(this.causes.keys().next().value!);
      }
    }
    for (const w of this.wake) w();
    if (tell) this.tell({ code: e.code, message: e.message, peerRanks: namedRanks(e), n, fatal });
  }

  private tell(c: Cause): void {
    const store = this.o.store;
    if (!store?.publish) return;
    const me = this.o.rankInGroup;
    const others = [...Array(this.o.worldSize).keys()].filter((r) => r !== me);
    const value = enc.encode(JSON.stringify(c));
    const k = this.told++;
    store.publish(others.map((r) => `${this.inbox(r)}fail/${me}/${k}`), others.map(() => value), { timeoutMs: ASK_MS })
      .catch(() => {});
  }

  private onMessage(tag: string, value: Uint8Array): void {
    const [kind, a, b] = tag.split('/');
    if (kind === 'ask') {
      // "How far are you, and are you inside an operation?" — answered from here, whatever
      // this rank is doing (only its event loop has to turn).
      const q = Number(b);
      if (!Number.isInteger(q) || q < 0 || q >= this.o.worldSize) return;
      // The asker's collective index, when it asks about one: say which call this rank made there.
      let n = -1;
      try {
        n = value.length ? Number(JSON.parse(dec.decode(value))?.n) : -1;
      } catch { /* an ask without an index */ }
      const what = Number.isInteger(n) && n >= 0 ? this.called.get(n) : undefined;
      const ans = enc.encode(JSON.stringify({ calls: this.calls, busy: this.busy > 0, what }));
      this.o.store?.publish?.([`${this.inbox(q)}ans/${a}/${this.o.rankInGroup}`], [ans], { timeoutMs: ASK_MS })
        .catch(() => {});
    } else if (kind === 'ans') {
      const m = this.answers.get(Number(a));
      const r = Number(b);
      let v: { calls: number; busy: boolean; what?: unknown };
      try {
        v = JSON.parse(dec.decode(value));
      } catch {
        return;
      }
      if (m && Number.isInteger(r) && Number.isFinite(v?.calls)) {
        m.set(r, { calls: v.calls, busy: v.busy === true, what: typeof v.what === 'string' ? v.what : undefined });
        for (const w of this.wake) w();
      }
    } else if (kind === 'fail') {
      const by = Number(a);
      let c: Cause;
      try {
        c = JSON.parse(dec.decode(value)) as Cause;
      } catch {
        return;
      }
      if (!Number.isInteger(by) || typeof c?.message !== 'string' || !Array.isArray(c.peerRanks)) return;
      let peerRanks = c.peerRanks.filter((r) => Number.isInteger(r) && r >= 0 && r < this.o.worldSize);
      // A mismatch is between the teller and the ranks it names: from here, the others of those.
      if (c.code === ErrorCode.MISMATCH) peerRanks = [...new Set([...peerRanks, by])].filter((r) => r !== this.o.rankInGroup);
      const f = { rank: this.o.rankInGroup, peerRanks, peerRank: peerRanks.length === 1 ? peerRanks[0] : undefined };
      const msg = `${c.message} (seen by group rank ${by})`;
      const e = c.code === ErrorCode.PEER_LOST ? peerLostError(msg, f) : c.code === ErrorCode.PEER_LEFT ? peerLeftError(msg, f)
        : c.code === ErrorCode.TIMEOUT ? timeoutError(msg, f)
          : c.code === ErrorCode.MISMATCH ? mismatchError(msg, f) : protocolError(msg, f);
      this.fail(e, Number.isInteger(c.n) ? c.n : -1, c.fatal === true, false);
    }
  }

  /** Waits up to `ms` until `done()` holds (woken by every message). */
  private async until(ms: number, done: () => boolean): Promise<void> {
    if (done()) return;
    await new Promise<void>((resolve) => {
      const w = () => { if (done()) finish(); };
      const finish = () => { clearTimeout(t); this.wake.delete(w); resolve(); };
      const t = setTimeout(finish, ms);
      this.wake.add(w);
    });
  }

  /** The cause that explains a failure of collective `n` (-1: not a collective), if known within `ms`. */
  private async causeOf(n: number, ms: number, freshMs: number): Promise<GroupcommError | undefined> {
    const known = () => this.failure ?? (n >= 0 ? this.causes.get(n) : undefined) ?? this.freshStall(freshMs);
    const t0 = performance.now();
    // Right after create the inbox may still be opening; what was sent meanwhile is handed over first.
    if (!this.sub && ms > 0) await Promise.race([this.opening, new Promise((r) => setTimeout(r, ms))]);
    await this.until(this.sub ? Math.max(0, ms - (performance.now() - t0)) : 0, () => known() !== undefined);
    return known();
  }

  private freshStall(freshMs: number): GroupcommError | undefined {
    return this.stall && performance.now() - this.stall.at <= freshMs ? this.stall.e : undefined;
  }

  /** How far every other rank is (a rank missing from the answer did not answer within ASK_MS). */
  private async survey(n = -1): Promise<Map<number, Answer> | undefined> {
    const store = this.o.store;
    if (!this.sub) await Promise.race([this.opening, new Promise((r) => setTimeout(r, ASK_MS))]);
    if (!store?.publish || !this.sub) {
      this.log.debug(`cannot ask the other members: ${this.sub ? 'the store cannot push' : 'the fault inbox is not open'}`);
      return undefined;
    }
    const me = this.o.rankInGroup;
    const others = [...Array(this.o.worldSize).keys()].filter((r) => r !== me);
    const k = this.surveys++;
    const got = new Map<number, Answer>();
    this.answers.set(k, got);
    try {
      const q = n >= 0 ? enc.encode(JSON.stringify({ n })) : new Uint8Array(0);
      await store.publish(others.map((r) => `${this.inbox(r)}ask/${k}/${me}`), others.map(() => q), { timeoutMs: ASK_MS });
      // Done early when everyone answered, or when another member explains the stall meanwhile.
      await this.until(ASK_MS, () => got.size === others.length || this.failure !== undefined);
    } catch (e) {
      this.log.debug(`asking the other members failed: ${(e as Error).message}`);
      return undefined;
    } finally {
      this.answers.delete(k);
    }
    this.log.debug(`survey ${k}: ${[...got].map(([r, v]) => `${r}:${v.calls}${v.busy ? 'b' : ''}`).join(' ')}`);
    return got;
  }

  /**
   * Who stalled an operation that timed out: for collective `n`, the ranks that never called it;
   * for point to point, the peer waited on. In either case a rank that is alive but in no
   * operation (it stopped calling) is the cause rather than one that is itself stuck waiting,
   * and a rank that did not answer counts as in none.
   */
  private culprits(s: Map<number, Answer>, n: number, peer: number | undefined): number[] {
    const others = [...Array(this.o.worldSize).keys()].filter((r) => r !== this.o.rankInGroup);
    const idle = (r: number) => !s.get(r)?.busy;
    if (n >= 0) {
      const missing = others.filter((r) => !((s.get(r)?.calls ?? 0) > n));
      const stopped = missing.filter(idle);
      return stopped.length ? stopped : missing;
    }
    if (peer === undefined) return others.filter(idle);
    if (idle(peer)) return [peer];
    const stopped = others.filter(idle);
    return stopped.length ? stopped : [peer];
  }

  /**
   * What an operation that failed with `e` reports: the group's failure when there is one; a peer
   * lost without its goodbye becomes the group's failure; a peer that left cleanly is reported as
   * having left, unless another member explains why (it failed first and told us); a
   * collective's timeout names the ranks that never called it.
   */
  async judge(e: unknown, n: number, what: string, timeoutMs: number): Promise<unknown> {
    const fresh = 2 * timeoutMs + 2 * ASK_MS;
    if (this.failure) return this.failure;
    if (!isGroupcommError(e)) return e;
    const me = this.o.rankInGroup;
    if (e.code === ErrorCode.PEER_LOST || e.code === ErrorCode.PEER_LEFT) {
      let peer = e.peerRank ?? (e.peerRanks?.length === 1 ? e.peerRanks[0] : undefined);
      let err = e;
      if (peer === undefined && me !== 0 && e.code === ErrorCode.PEER_LOST) {
        // No rank named: the group's store connection closed, and group rank 0 hosts the store.
        peer = 0;
        err = peerLostError(`lost group rank 0, which hosts the group's store: ${e.message}`, { rank: me, peerRank: 0, cause: e });
      }
      if (e.code === ErrorCode.PEER_LEFT || (peer !== undefined && this.o.cpu?.hasLeft(peer))) {
        const why = await this.causeOf(n, ASK_MS, fresh);
        if (why) return why;
        return peerLeftError(`group rank ${peer ?? '?'} left the group (closed it) while this ${what} still needed it; ` +
          'it was not lost: did every rank issue the same operations?', { rank: me, peerRank: peer, cause: e });
      }
      // A peer gone without a goodbye may be a symptom (of a rank another member lost first):
      // a cause from elsewhere, already on its way, wins; otherwise this loss is the failure.
      const why = await this.causeOf(n, 0, fresh);
      if (why) return why;
      this.fail(err, -1, true);
      return this.failure;
    }
    if (e.code === ErrorCode.TIMEOUT) {
      // Another member that timed out first may have explained it already (and left since).
      const told = (n >= 0 ? this.causes.get(n) : undefined) ?? this.freshStall(fresh);
      if (told) return told;
      const s = await this.survey(n);
      const known = this.failure ?? (n >= 0 ? this.causes.get(n) : undefined) ?? this.freshStall(fresh);
      if (known) return known;
      if (!s) return e;
      // Ranks whose collective #n was another call (a barrier against a broadcastObject): no
      // message of one can answer the other, so both wait; that is a mismatch, not a stall.
      const other = n >= 0 ? [...s].filter(([, a]) => a.what !== undefined && a.what !== what) : [];
      if (other.length) {
        const ranks = other.map(([r]) => r).sort((a, b) => a - b);
        const m = mismatchError(`${what} (collective #${n}): the ranks called different collectives: ` +
          `${other.map(([r, a]) => `group rank ${r} called ${a.what}`).join(', ')}, this rank (group rank ${me}) ${what}; here: ${e.message}`,
        { rank: me, peerRanks: ranks, peerRank: ranks.length === 1 ? ranks[0] : undefined, cause: e });
        this.fail(m, -1, true);
        return this.failure;
      }
      const peer = e.peerRanks?.length === 1 ? e.peerRanks[0] : e.peerRank;
      const missing = this.culprits(s, n, n >= 0 ? undefined : peer);
      if (missing.length === 0) return e;
      const plural = missing.length > 1 ? 's' : '';
      // The lower layer's own words (what this rank was waiting on) follow, as detail.
      const t = timeoutError(`${what}${n >= 0 ? ` (collective #${n})` : ''} timed out: group rank${plural} ${missing.join(', ')} ` +
        `${n >= 0 ? 'never called it' : `${plural ? 'are' : 'is'} in no operation (stopped calling?)`} (or did not answer); here: ${e.message}`,
      { rank: me, peerRanks: missing, peerRank: missing.length === 1 ? missing[0] : undefined, timeoutMs: e.timeoutMs, elapsedMs: e.elapsedMs, cause: e });
      this.fail(t, n, false);
      return t;
    }
    if (e.code === ErrorCode.PROTOCOL || e.code === ErrorCode.MISMATCH) {
      this.fail(e, -1, true);
      return this.failure;
    }
    return e;
  }
}

/** The ranks an error names. */
function namedRanks(e: GroupcommError): number[] {
  return e.peerRanks ?? (e.peerRank !== undefined ? [e.peerRank] : []);
}
