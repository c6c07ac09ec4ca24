/**
 * The chaos driver (issue 13): 4 ranks as processes, Node and Bun alternating, kept up across
 * rounds; each seeded round picks a victim and a point (create, allReduce, tensor-dict
 * broadcast, p2p exchange, destroy) and has the victim SIGKILL itself there, or stop calling
 * there. Every survivor must reject (no hang) naming the victim, then the survivors form a new
 * group and check its result. A killed rank is replaced by a fresh process for the next round.
 * Used by chaos.test.ts (a short slice in `npm test`) and chaos_main.ts (`npm run chaos`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { TcpStoreServer } from '../../host/store/index.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { commandFor } from '../helpers/ranks.js';
import { prng } from '../helpers/prng.js';
import type { RoundCommand, RoundReport } from './workers/chaos_worker.js';

export interface ChaosOptions {
  rounds: number;
  seed: number;
  /** The group's timeoutMs (short: a rank that stops calling costs one). */
  timeoutMs?: number;
  /** Runtime per rank: Node for even ranks, Bun for odd ones ('mixed'), or one for all. */
  runtime?: 'mixed' | 'node' | 'bun';
  log?: (line: string) => void;
}

export interface ChaosStats {
  rounds: number;
  /** Survivor reports (rounds × survivors) and how many named exactly the victim. */
  reports: number;
  named: number;
  /** Survivors that rejected later than timeoutMs + 1 s after the kill or stop. */
  late: number;
  /** Worst time from the kill (or stop) to a survivor's rejection, ms. */
  worstMs: number;
  regroupFailures: number;
  wrongResults: number;
  /** Survivor reports of rounds whose kill came after that survivor's work was done (not counted). */
  afterWork: number;
  /** One line per survivor report that did not name the victim (or failed otherwise). */
  problems: string[];
  byPoint: Record<string, { rounds: number; named: number; reports: number }>;
}

const POINTS: RoundCommand['point'][] = ['create', 'allReduce', 'dict', 'p2p', 'destroy'];
const WS = 4;
const SCRIPT = 'test/integration/workers/chaos_worker';

interface Worker {
  rank: number;
  child: ChildProcess;
  exited: Promise<{ signal: NodeJS.Signals | null; at: number }>;
  next(type: string): Promise<RoundReport & { type: string }>;
  stderr: string[];
}

function start(rank: number, port: number, runtime: 'node' | 'bun'): Worker {
  const [cmd, args] = commandFor(SCRIPT, runtime);
  const child = spawn(cmd, args, {
    cwd: packageRoot(), stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(WS), COORD_STORE_PORT: String(port), NO_COLOR: '1' },
  });
  const queue: (RoundReport & { type: string })[] = [];
  let wake: (() => void) | undefined;
  const stderr: string[] = [];
  child.stderr!.on('data', (d) => {
    stderr.push(String(d));
    if (stderr.length > 50) stderr.shift();
    if (process.env.CHAOS_STDERR) process.stderr.write(d);
  });
  readline.createInterface({ input: child.stdout! }).on('line', (l) => {
    if (!l.startsWith('@@CHAOS ')) return;
    queue.push(JSON.parse(l.slice(8)));
    wake?.();
  });
  const exited = new Promise<{ signal: NodeJS.Signals | null; at: number }>((resolve) => {
    child.on('exit', (_code, signal) => { resolve({ signal, at: Date.now() }); wake?.(); });
  });
  let gone = false;
  void exited.then(() => { gone = true; });
  return {
    rank, child, exited, stderr,
    async next(type) {
      for (;;) {
        const i = queue.findIndex((m) => m.type === type);
        if (i >= 0) return queue.splice(i, 1)[0];
        if (gone) throw new Error(`rank ${rank} exited while the driver waited for '${type}'`);
        await new Promise<void>((r) => { wake = r; });
      }
    },
  };
}

function runtimeOf(rank: number, r: ChaosOptions['runtime']): 'node' | 'bun' {
  return r === 'node' || r === 'bun' ? r : rank % 2 === 0 ? 'node' : 'bun';
}

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> => Promise.race([
  p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`chaos: ${what} after ${ms}ms (a hang)`)), ms).unref()),
]);

export async function runChaos(o: ChaosOptions): Promise<ChaosStats> {
  const timeoutMs = o.timeoutMs ?? 1_500;
  const log = o.log ?? (() => {});
  const rand = prng(o.seed);
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  const workers: Worker[] = [];
  const stats: ChaosStats = { rounds: 0, reports: 0, named: 0, late: 0, worstMs: 0, afterWork: 0, regroupFailures: 0, wrongResults: 0, problems: [], byPoint: {} };
  try {
    for (let r = 0; r < WS; r++) workers[r] = start(r, server.port, runtimeOf(r, o.runtime));
    await Promise.all(workers.map((w) => within(w.next('ready'), 60_000, `rank ${w.rank} ready`)));
    for (let round = 0; round < o.rounds; round++) {
      const victim = Math.floor(rand() * WS);
      const stop = rand() < 0.2;
      const point = POINTS[Math.floor(rand() * POINTS.length)];
      const cmd: RoundCommand = {
        type: 'round', round, victim, point: stop && point === 'destroy' ? 'p2p' : point, mode: stop ? 'stop' : 'kill',
        delayMs: Math.floor(rand() * 4), timeoutMs, worldSize: WS,
      };
      for (const w of workers) w.child.stdin!.write(JSON.stringify(cmd) + '\n');
      const survivors = workers.filter((w) => w.rank !== victim);
      const bound = timeoutMs * 3 + 30_000;
      const reports = await within(Promise.all(survivors.map((w) => w.next('result'))), bound, `round ${round}: survivors' reports`);
      let eventAt: number;
      if (cmd.mode === 'kill') {
        const ex = await within(workers[victim].exited, bound, `round ${round}: the victim's death`);
        eventAt = ex.at;
      } else {
        const v = await within(workers[victim].next('result'), bound, `round ${round}: the stopped victim`);
        eventAt = v.stoppedAt ?? Date.now();
      }
      const key = cmd.mode === 'stop' ? 'stop' : cmd.point;
      const bp = (stats.byPoint[key] ??= { rounds: 0, named: 0, reports: 0 });
      bp.rounds++;
      stats.rounds++;
      for (const rep of reports) {
        if (rep.wrong) stats.wrongResults++;
        if (!rep.regrouped) { stats.regroupFailures++; stats.problems.push(`round ${round} rank ${rep.rank}: regroup: ${rep.regroupError}`); }
        const e = rep.error;
        // The victim died after this survivor's round was over (its destroy had resolved): there
        // was nothing to fail, so nothing to name.
        if (e === undefined && cmd.mode === 'kill' && rep.doneAt !== undefined && rep.doneAt <= eventAt) {
          stats.afterWork++;
          continue;
        }
        stats.reports++;
        bp.reports++;
        // A kill during destroy (the point, or a later kill that landed there: this survivor's
        // barrier had resolved) may leave its own destroy unaffected: no error is right.
        const inDestroy = cmd.point === 'destroy' || (rep.workDoneAt !== undefined && rep.workDoneAt <= eventAt);
        // A killed rank never says goodbye: a report that it left (PEER_LEFT) is wrong even when it names it.
        const fine = e === undefined ? cmd.mode === 'kill' && inDestroy
          : nameSet(e).join() === String(victim) && !(cmd.mode === 'kill' && e.code === 'ERR_GROUPCOMM_PEER_LEFT');
        if (fine) { stats.named++; bp.named++; }
        else stats.problems.push(`round ${round} (${cmd.mode} ${cmd.point}, victim ${victim}, delay ${cmd.delayMs}) rank ${rep.rank}: ${e ? `${e.code} naming [${nameSet(e)}]: ${e.message}` : 'no error'}`);
        if (rep.errAt !== undefined) {
          const ms = Math.max(0, rep.errAt - eventAt);
          stats.worstMs = Math.max(stats.worstMs, ms);
          if (ms > timeoutMs + 1_000) stats.late++;
        }
      }
      log(`round ${round}: ${cmd.mode} rank ${victim} at ${cmd.point}: ${reports.map((x) => x.error ? `${x.rank}→[${nameSet(x.error)}]` : `${x.rank}→ok`).join(' ')}`);
      if (cmd.mode === 'kill') {
        workers[victim] = start(victim, server.port, runtimeOf(victim, o.runtime));
        await within(workers[victim].next('ready'), 60_000, `rank ${victim} restarted`);
      }
    }
  } catch (e) {
    const tails = workers.map((w) => `--- rank ${w.rank}\n${w.stderr.join('').slice(-2000)}`).join('\n');
    throw new Error(`${(e as Error).message}\n${tails}`);
  } finally {
    for (const w of workers) {
      if (w.child.exitCode === null && w.child.signalCode === null) w.child.stdin!.write(JSON.stringify({ type: 'quit' }) + '\n');
    }
    await Promise.all(workers.map((w) => within(w.exited, 10_000, 'exit').catch(() => w.child.kill('SIGKILL'))));
    await server.close();
  }
  return stats;
}

function nameSet(e: { peerRank?: number; peerRanks?: number[] }): number[] {
  return [...new Set(e.peerRanks ?? (e.peerRank !== undefined ? [e.peerRank] : []))].sort((a, b) => a - b);
}

export function summary(s: ChaosStats, timeoutMs: number): string {
  const pct = s.reports ? (100 * s.named / s.reports).toFixed(1) : '-';
  const points = Object.entries(s.byPoint).map(([k, v]) => `${k} ${v.named}/${v.reports}`).join(', ');
  return `chaos: ${s.rounds} rounds, ${s.named}/${s.reports} survivor reports named the victim (${pct}%); ` +
    `worst kill→error ${s.worstMs} ms, ${s.late} later than timeoutMs+1s (timeoutMs ${timeoutMs}); ` +
    `regroup failures ${s.regroupFailures}, wrong results ${s.wrongResults}; ${s.afterWork} reports of kills after the work was done not counted; by point: ${points}`;
}
