/**
 * One rank of the chaos test (test/integration/chaos.ts drives it). It stays up across rounds:
 * each round is a JSON line on stdin naming the victim, the point and the mode; every rank runs
 * the same program (create, allReduce, tensor-dict broadcast, p2p exchange, barrier, destroy),
 * and the victim SIGKILLs itself at that point (mode 'kill') or simply stops calling there (mode
 * 'stop'). The survivors report the first error they got, then form a new group without the
 * victim and check a result there. Replies are `@@CHAOS {json}` lines on stdout.
 */
import readline from 'node:readline';
import { StatelessGroupCoordinator } from '../../../host/coordinator/coordinator.js';
import { TcpStore } from '../../../host/store/index.js';
import { tensor, type CpuTensor } from '../../../host/core/tensor.js';
import { isGroupcommError } from '../../../host/base/errors.js';
import { rankEnv } from '../../helpers/ranks.js';

export interface RoundCommand {
  type: 'round';
  round: number;
  victim: number;
  point: 'create' | 'allReduce' | 'dict' | 'p2p' | 'destroy';
  mode: 'kill' | 'stop';
  /** ms into the point's operation at which the victim dies. */
  delayMs: number;
  timeoutMs: number;
  worldSize: number;
}

export interface RoundReport {
  type: 'result';
  round: number;
  rank: number;
  /** Date.now() when the first operation that failed rejected, and what it said. */
  errAt?: number;
  error?: { code: string; message: string; peerRank?: number; peerRanks?: number[] };
  /** The survivors' new group: its result was right. */
  regrouped?: boolean;
  regroupError?: string;
  wrong?: string;
  /** Date.now() when this rank's last operation before destroy (the barrier) resolved. */
  workDoneAt?: number;
  /** Date.now() when this rank's round ended without an error (its destroy resolved). */
  doneAt?: number;
  /** The victim in 'stop' mode: when it stopped calling. */
  stoppedAt?: number;
}

const { rank } = rankEnv();
const port = Number(process.env.COORD_STORE_PORT);
const store = await TcpStore.create({ host: '127.0.0.1', port, timeoutMs: 60_000 });
const say = (m: object) => process.stdout.write(`@@CHAOS ${JSON.stringify(m)}\n`);
/** The timeout of a create that is not the round's point (see round()). */
const CREATE_TIMEOUT_MS = 10_000;

async function round(c: RoundCommand): Promise<void> {
  const ws = c.worldSize;
  const all = [...Array(ws).keys()];
  const victim = rank === c.victim;
  const rep: RoundReport = { type: 'result', round: c.round, rank };
  let g: StatelessGroupCoordinator | undefined;
  // The victim, at its point: dies `delayMs` into the operation, or never calls it.
  const at = async <T>(point: RoundCommand['point'], fn: () => Promise<T>): Promise<T> => {
    if (victim && c.point === point) {
      if (c.mode === 'kill') {
        setTimeout(() => process.kill(process.pid, 'SIGKILL'), c.delayMs);
      } else {
        rep.stoppedAt = Date.now();
        // Alive, connections open, event loop free: only the calls stop.
        await new Promise((r) => setTimeout(r, c.timeoutMs + 2_500));
        throw new Error('stopped');
      }
    }
    return fn();
  };
  const opts = { timeoutMs: c.timeoutMs };
  try {
    // The short timeout is for the calls a rank dies in. A create that is not this round's point
    // gets a long one: 4 mixed-runtime ranks on a loaded 2-CPU machine have overrun 1.5 s (the
    // round then had no victim to name). Every call below passes the short one itself, and no
    // rank goes on before all have created (through the store, not the group), so a victim
    // cannot die while the others are still in that long create.
    g = await at('create', () => StatelessGroupCoordinator.create({
      groupRanks: [all], globalRank: rank, groupName: `chaos${c.round}`, rendezvous: store,
      timeoutMs: c.point === 'create' ? c.timeoutMs : Math.max(c.timeoutMs, CREATE_TIMEOUT_MS),
    }));
    if (c.point !== 'create') {
      await store.set(`chaos/${c.round}/created/${rank}`, '1');
      await store.wait(all.map((r) => `chaos/${c.round}/created/${r}`), { timeoutMs: 2 * CREATE_TIMEOUT_MS });
    }
    for (let i = 0; i < 2; i++) {
      const s = (await at('allReduce', () => g!.allReduce(tensor(new Float32Array(256).fill(rank + 1)), opts))) as CpuTensor;
      if (s.data[0] !== (ws * (ws + 1)) / 2) rep.wrong = `allReduce gave ${s.data[0]}`;
    }
    const d = await at('dict', () => g!.broadcastTensorDict(rank === 0 ? { round: c.round, t: tensor(new Float32Array(1 << 18).fill(7)) } : undefined, 0, opts));
    if ((d.t as CpuTensor).data[(1 << 18) - 1] !== 7) rep.wrong = 'tensor dict';
    await at('p2p', async () => {
      const sent = g!.sendTensorDict({ from: rank, t: tensor(new Int32Array(1024).fill(rank)) }, (rank + 1) % ws, opts);
      const got = await g!.recvTensorDict((rank - 1 + ws) % ws, opts);
      await sent;
      if (got.from !== (rank - 1 + ws) % ws) rep.wrong = 'p2p';
    });
    // The victim has contributed to the last collective: a survivor whose barrier then resolves
    // and whose destroy never needs the victim rightly sees no error (lazily connected pairs:
    // it may never have talked to the victim at all). Said before the call, so before any kill.
    if (victim && c.mode === 'kill') say({ type: 'barrier', round: c.round, rank });
    await g.barrier(opts);
    rep.workDoneAt = Date.now();
    await at('destroy', () => g!.destroy({ lingerMs: 300, timeoutMs: c.timeoutMs }));
    rep.doneAt = Date.now();
  } catch (e) {
    if (victim && c.mode === 'stop') {
      await g?.abort('stopped');
      say(rep);
      return;
    }
    rep.errAt = Date.now();
    rep.error = isGroupcommError(e)
      ? { code: e.code, message: e.message, peerRank: e.peerRank, peerRanks: e.peerRanks }
      : { code: 'NOT_GROUPCOMM', message: String((e as Error)?.stack ?? e) };
    await g?.destroy({ lingerMs: 300, timeoutMs: c.timeoutMs }).catch(() => {});
  }
  if (victim) {
    // A victim whose own round failed before its point (a spurious timeout on a loaded machine)
    // dies now, so the round still has its death; one whose kill is still pending waits for it.
    if (c.mode === 'kill') {
      if (rep.error) process.kill(process.pid, 'SIGKILL');
      await new Promise(() => {});
    }
    say(rep);
    return;
  }
  // The survivors form a group without the victim and check a result there.
  try {
    const survivors = all.filter((r) => r !== c.victim);
    const s = await StatelessGroupCoordinator.create({
      groupRanks: [survivors], globalRank: rank, groupName: `chaos${c.round}s`, rendezvous: store, timeoutMs: 20_000,
    });
    const sum = (await s.allReduce(tensor(new Float64Array([rank + 1])))) as CpuTensor;
    const want = survivors.reduce((a, r) => a + r + 1, 0);
    rep.regrouped = sum.data[0] === want;
    if (!rep.regrouped) rep.regroupError = `sum ${sum.data[0]}, expected ${want}`;
    await s.destroy({ lingerMs: 1_000 });
  } catch (e) {
    rep.regrouped = false;
    rep.regroupError = String((e as Error)?.message ?? e);
  }
  say(rep);
}

say({ type: 'ready', rank });
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const c = JSON.parse(line) as RoundCommand | { type: 'quit' };
  if (c.type === 'quit') break;
  await round(c);
}
await store.close();
process.exit(0);
