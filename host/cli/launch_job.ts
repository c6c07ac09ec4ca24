/**
 * The launchers of one job talking through node 0's store (torchrun's rendezvous and its
 * "one failure stops every agent", in a few keys under `groupcomm/launch/`):
 *
 * - `run_id`: node 0 writes the job's id (given or drawn); every node reads it.
 * - `node/R`: each launcher announces itself (host, pid, ranks, nodes); the ranks start only once
 *   every node is there, so no rank waits for a node that never comes. While some are missing,
 *   every launcher says which, every few seconds, until --join-timeout-ms.
 * - `failed`: the first failing rank's record (compare-and-set: the first writer wins). Every
 *   launcher waits on it and stops its ranks when it appears.
 * - `result/R`: each launcher's rows once its ranks are gone; node 0 keeps the store up until
 *   every node has reported (their ranks may still use the store), then prints the whole table.
 * - `alive/R`: a counter each other launcher bumps every GROUPCOMM_LIVENESS_MS/5; node 0 stops
 *   waiting for a node whose counter stood still for GROUPCOMM_LIVENESS_MS (its launcher died or
 *   its link was cut) and counts the job as failed.
 */
import os from 'node:os';
import crypto from 'node:crypto';
import { isGroupcommError, ErrorCode } from '../base/errors.js';
import { setting } from '../base/config.js';
import { TcpStore } from '../store/index.js';
import type { LaunchOptions } from './launch_args.js';

const K = {
  runId: 'groupcomm/launch/run_id',
  node: (r: number) => `groupcomm/launch/node/${r}`,
  failed: 'groupcomm/launch/failed',
  result: (r: number) => `groupcomm/launch/result/${r}`,
  alive: (r: number) => `groupcomm/launch/alive/${r}`,
};

/** A launcher bumps its `alive/R` counter this often; node 0 gives up on one that stopped. */
function heartbeatMs(): number {
  const bound = setting('GROUPCOMM_LIVENESS_MS') || 30_000;
  return Math.max(50, Math.floor(bound / 5));
}

/** How often a launcher that is waiting says so. */
const NAG_MS = 5000;

export interface NodeInfo { host: string; pid: number; nproc: number; nnodes: number }

/** One rank's end, as the summary table shows it. */
export interface RankResult {
  rank: number;
  localRank: number;
  node: number;
  host: string;
  code: number | null;
  signal: string | null;
  /** The first line of its stderr that looks like an error (failed ranks only). */
  error?: string;
}

export interface Failure { rank: number; node: number; host: string; how: string }

const say = (line: string) => process.stderr.write(`[launch] ${line}\n`);

function decode<T>(b: Uint8Array): T {
  return JSON.parse(Buffer.from(b).toString('utf8')) as T;
}

export class Job {
  private readonly stopWatch = new AbortController();
  private beat?: NodeJS.Timeout;
  /** Nodes node 0 gave up on (finish): they stopped bumping their counter. */
  readonly gone: number[] = [];
  private constructor(
    readonly o: LaunchOptions,
    readonly store: TcpStore,
    readonly runId: string,
    readonly port: number,
    readonly nodes: NodeInfo[],
  ) {}

  /** The global rank of this node's first rank, and the job's world size. */
  get rankOffset(): number {
    return this.nodes.slice(0, this.o.nodeRank).reduce((s, n) => s + n.nproc, 0);
  }

  get worldSize(): number {
    return this.nodes.reduce((s, n) => s + n.nproc, 0);
  }

  /** Node 0 hosts the store; every node connects, announces itself and waits for the others. */
  static async join(o: LaunchOptions, secret?: string): Promise<Job> {
    const t0 = Date.now();
    const left = () => Math.max(1, o.joinTimeoutMs - (Date.now() - t0));
    const where = `${o.masterAddr}:${o.masterPort}`;
    let store: TcpStore;
    if (o.nodeRank === 0) {
      store = await TcpStore.create({ host: o.masterAddr, port: o.masterPort, isServer: true, secret, timeoutMs: o.joinTimeoutMs });
    } else {
      const nag = setInterval(() => say(`node ${o.nodeRank}: waiting for node 0's store at ${where} (${Math.round(left() / 1000)} s left)`), NAG_MS);
      try {
        store = await TcpStore.create({ host: o.masterAddr, port: o.masterPort, secret, timeoutMs: o.joinTimeoutMs });
      } catch (e) {
        throw new Error(`node ${o.nodeRank}: node 0's store at ${where} did not answer within ${o.joinTimeoutMs} ms ` +
          `(${(e as Error).message}). Is node 0's launcher running with --master-addr ${o.masterAddr} --master-port ${o.masterPort}, ` +
          `and is ${o.masterAddr} reachable from this machine?`);
      } finally {
        clearInterval(nag);
      }
    }
    try {
      let runId: string;
      if (o.nodeRank === 0) {
        runId = o.runId ?? crypto.randomBytes(6).toString('hex');
        await store.set(K.runId, runId, { timeoutMs: left() });
      } else {
        runId = Buffer.from(await store.get(K.runId, { timeoutMs: left() })).toString('utf8');
        if (o.runId !== undefined && o.runId !== runId) {
          throw new Error(`node ${o.nodeRank}: --run-id ${o.runId} but node 0's job is ${runId}: this node joined another job's store`);
        }
      }
      const me: NodeInfo = { host: os.hostname(), pid: process.pid, nproc: o.nproc, nnodes: o.nnodes };
      await store.set(K.node(o.nodeRank), JSON.stringify(me), { timeoutMs: left() });
      const keys = Array.from({ length: o.nnodes }, (_, r) => K.node(r));
      for (;;) {
        try {
          await store.wait(keys, { timeoutMs: Math.min(NAG_MS, left()) });
          break;
        } catch (e) {
          if (!isGroupcommError(e, ErrorCode.TIMEOUT)) throw e;
          const missing: number[] = [];
          for (let r = 0; r < o.nnodes; r++) if (!(await store.check([K.node(r)]))) missing.push(r);
          const msg = `node ${o.nodeRank}: waiting for node(s) ${missing.join(', ')} of ${o.nnodes} to join at ${where}`;
          if (left() <= 1) throw new Error(`${msg}: gave up after ${o.joinTimeoutMs} ms (--join-timeout-ms). Start a launcher with --node-rank ${missing[0]} and the same --nnodes/--master-addr/--master-port.`);
          say(`${msg} (${Math.round(left() / 1000)} s left)`);
        }
      }
      const nodes = (await store.multiGet(keys, { timeoutMs: left() })).map((b) => decode<NodeInfo>(b));
      const odd = nodes.findIndex((n) => n.nnodes !== o.nnodes);
      if (odd >= 0) throw new Error(`node ${odd} was started with --nnodes ${nodes[odd].nnodes}, this node with ${o.nnodes}`);
      const job = new Job(o, store, runId, store.port, nodes);
      if (o.nodeRank !== 0) {
        job.beat = setInterval(() => { store.add(K.alive(o.nodeRank), 1, { timeoutMs: 10_000 }).catch(() => {}); }, heartbeatMs());
        job.beat.unref?.();
      }
      return job;
    } catch (e) {
      await store.abort(e);
      throw e;
    }
  }

  /**
   * Calls `onFailure` once when any node reports a failed rank, or `onLost` when the store is
   * gone (node 0's launcher died or its link did): either way this node's ranks must stop.
   */
  watch(onFailure: (f: Failure) => void, onLost: (e: Error) => void): void {
    const signal = this.stopWatch.signal;
    void (async () => {
      for (;;) {
        try {
          await this.store.wait([K.failed], { timeoutMs: 60_000, signal });
          onFailure(decode<Failure>(await this.store.get(K.failed, { timeoutMs: 10_000 })));
          return;
        } catch (e) {
          if (signal.aborted) return;
          if (isGroupcommError(e, ErrorCode.TIMEOUT)) continue;
          onLost(e as Error);
          return;
        }
      }
    })();
  }

  /** Records the job's failure unless another rank's is already there; returns the one that won. */
  async reportFailure(f: Failure): Promise<Failure> {
    const v = await this.store.compareSet(K.failed, '', JSON.stringify(f), { timeoutMs: 10_000 });
    return decode<Failure>(v);
  }

  /**
   * Publishes this node's rows. Node 0 then waits for every node's (up to `graceMs` + 15 s once
   * the job has failed; while it runs, as long as it takes) and returns them all.
   */
  async finish(rows: RankResult[], failed: () => boolean, patienceMs: number): Promise<RankResult[]> {
    this.stopWatch.abort();
    await this.store.set(K.result(this.o.nodeRank), JSON.stringify(rows), { timeoutMs: 10_000 });
    if (this.o.nodeRank !== 0) return rows;
    const keys = Array.from({ length: this.o.nnodes }, (_, r) => K.result(r));
    let failedSince: number | undefined;
    let lastSaid = Date.now();
    const beats = new Map<number, { n: number; at: number }>();
    const deadMs = Math.max(5 * heartbeatMs(), 2000);
    for (;;) {
      const have: boolean[] = [];
      for (const k of keys) have.push(await this.store.check([k]));
      const missing = have.flatMap((h, r) => (h || this.gone.includes(r) ? [] : [r]));
      if (missing.length === 0) break;
      for (const r of missing) {
        const n = await this.store.add(K.alive(r), 0, { timeoutMs: 10_000 });
        const b = beats.get(r);
        if (!b || b.n !== n) beats.set(r, { n, at: Date.now() });
        else if (Date.now() - b.at > deadMs) {
          this.gone.push(r);
          say(`node ${r} stopped answering for ${Date.now() - b.at} ms (its launcher died or its link is cut); its ranks are not in the table`);
        }
      }
      if (failed() || (await this.store.check([K.failed]))) failedSince ??= Date.now();
      if (failedSince !== undefined && Date.now() - failedSince > patienceMs) {
        say(`node(s) ${missing.join(', ')} did not report their ranks' end; the table lacks them`);
        break;
      }
      if (Date.now() - lastSaid > 30_000) {
        lastSaid = Date.now();
        say(`node 0's ranks are done; keeping the store up for node(s) ${missing.join(', ')}`);
      }
      try {
        await this.store.wait(keys.filter((_, r) => !have[r]), { timeoutMs: 1000 });
      } catch (e) {
        if (!isGroupcommError(e, ErrorCode.TIMEOUT)) throw e;
      }
    }
    const all: RankResult[] = [];
    for (const k of keys) {
      if (await this.store.check([k])) all.push(...decode<RankResult[]>(await this.store.get(k, { timeoutMs: 10_000 })));
    }
    return all.sort((a, b) => a.rank - b.rank);
  }

  async close(): Promise<void> {
    this.stopWatch.abort();
    if (this.beat) clearInterval(this.beat);
    await this.store.close({ timeoutMs: 2000 }).catch(() => this.store.abort());
  }
}

/** The summary table: widths from the content, like torchrun's ChildFailedError listing. */
export function summaryTable(rows: RankResult[]): string {
  const head = ['rank', 'node', 'local', 'host', 'exit', 'first error line'];
  const body = rows.map((r) => [
    String(r.rank), String(r.node), String(r.localRank), r.host,
    r.signal ? r.signal : `code ${r.code}`, r.error ?? '',
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => '  ' + cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(head), ...body.map(line)].join('\n');
}
