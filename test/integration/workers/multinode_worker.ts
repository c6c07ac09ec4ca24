// A rank of multinode_netns.test.ts, started by `groupcomm launch` inside a node's namespace.
// Everything comes from the launcher's variables (env://). Modes (argv[2]):
//   groups     world, cross-node and pair groups (a pair's rank 0 on another node than MASTER);
//              every collective and tensor-dict op checked against a reference; "done <rank>"
//   cut        the world group allReduces in a loop; prints "looping" once, then on the error
//              "lost <rank> <epoch ms> <code> <message>"; survivors (ranks < argv[3]) then form a
//              new group over themselves and allReduce: "after <rank> <sum>"
//   storecut   a group whose rank 0 (its store's host) is global rank argv[3]: every other rank
//              waits in recvObject from argv[3]+1, which never sends; same reports as cut
//   addr       prints "addr <rank> <address chosen>" (GROUPCOMM_SOCKET_IFNAME / route)
import { StatelessGroupCoordinator } from '../../../host/coordinator/coordinator.js';
import { launchEnv } from '../../../host/base/launch_env.js';
import { chooseAddress, masterAddr } from '../../../host/base/netaddr.js';
import { tensor } from '../../../host/core/tensor.js';
import { isGroupcommError } from '../../../host/base/errors.js';

const env = launchEnv();
const { rank, worldSize: W, localWorldSize: P } = env;
const mode = process.argv[2];
const arg = Number(process.argv[3] ?? 0);
const T = 60_000;

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`rank ${rank}: ${what}`);
}

async function exercise(g: StatelessGroupCoordinator): Promise<void> {
  const members = g.ranks;
  const n = members.length;
  const sum = (f: (r: number) => number) => members.reduce((s, r) => s + f(r), 0);
  const a = await g.allReduce(tensor(new Float32Array([rank + 1, rank * 2])));
  check(a.data[0] === sum((r) => r + 1) && a.data[1] === sum((r) => r * 2), `${g.uniqueName} allReduce sum ${a.data}`);
  const m = await g.allReduce(tensor(new Int32Array([rank])), { op: 'max' });
  check(m.data[0] === Math.max(...members), `${g.uniqueName} allReduce max`);
  const big = new Float32Array(1 << 16).fill(rank + 1);
  const b = await g.allReduce(tensor(big));
  check(b.data.every((v) => v === sum((r) => r + 1)), `${g.uniqueName} big allReduce`);
  const ag = await g.allGather(tensor(new Int32Array([rank, rank * 10])), 0);
  check(JSON.stringify([...ag.data]) === JSON.stringify(members.flatMap((r) => [r, r * 10])), `${g.uniqueName} allGather ${ag.data}`);
  const src = n - 1;
  const bc = await g.broadcast(tensor(new Int32Array([rank, 5])), src);
  check(bc.data[0] === members[src] && bc.data[1] === 5, `${g.uniqueName} broadcast`);
  const rs = await g.reduceScatter(tensor(new Float64Array(2 * n).fill(rank)), 0);
  check(rs.data.length === 2 && rs.data.every((v) => v === sum((r) => r)), `${g.uniqueName} reduceScatter ${rs.data}`);
  const gathered = await g.gather(tensor(new Int32Array([rank])), 0, 0);
  if (g.rankInGroup === 0) check(JSON.stringify([...gathered!.data]) === JSON.stringify(members), `${g.uniqueName} gather`);
  const o = await g.broadcastObject(g.rankInGroup === src ? { from: rank, list: [1, 'x'] } : undefined, src);
  check(o.from === members[src] && o.list[1] === 'x', `${g.uniqueName} broadcastObject`);
  const d = await g.broadcastTensorDict(g.rankInGroup === 0 ? { k: rank, t: tensor(new Int32Array([rank, 7])), big: tensor(new Float32Array(70_000).fill(3)) } : undefined);
  check(d.k === members[0] && d.t.data[0] === members[0] && d.t.data[1] === 7 && d.big.data.every((v: number) => v === 3), `${g.uniqueName} broadcastTensorDict`);
  if (n > 1) {
    const next = (g.rankInGroup + 1) % n, prev = (g.rankInGroup + n - 1) % n;
    const [, got] = await Promise.all([g.sendTensorDict({ from: rank, t: tensor(new Int32Array([rank])) }, next), g.recvTensorDict(prev)]);
    check(got.from === members[prev] && (got.t as { data: Int32Array }).data[0] === members[prev], `${g.uniqueName} send/recvTensorDict`);
  }
  await g.barrier();
  console.log(`ok ${rank} ${g.uniqueName} [${members}]`);
}

// The old group stays open until the new one has formed: aborting it at once could make a
// slower survivor see this rank leave before it saw node 2 go.
async function reportLoss(e: unknown, old: StatelessGroupCoordinator): Promise<void> {
  const code = isGroupcommError(e) ? e.code : 'other';
  console.log(`lost ${rank} ${Date.now()} ${code} ${(e as Error).message.replace(/\n/g, ' ')}`);
  if (rank >= arg) process.exit(0);
  // The survivors: a new group over themselves, once the link is back (the test restores it).
  const survivors = [...Array(arg).keys()];
  const g = await StatelessGroupCoordinator.fromEnv({ groupRanks: [survivors], groupName: 'after', timeoutMs: T });
  const s = await g.allReduce(tensor(new Int32Array([rank + 1])));
  console.log(`after ${rank} ${s.data[0]}`);
  await g.destroy();
  await old.abort(e);
}

if (mode === 'groups') {
  const all = [...Array(W).keys()];
  const cross = [...Array(P).keys()].map((l) => all.filter((r) => r % P === l));
  const pairs = [...Array(Math.floor(W / 2)).keys()].map((k) => [(2 * k + 1) % W, (2 * k + 2) % W]);
  if (W % 2 === 1) pairs.push([0]);
  const groups = await Promise.all([
    StatelessGroupCoordinator.fromEnv({ groupRanks: [all], groupName: 'world', timeoutMs: T }),
    StatelessGroupCoordinator.fromEnv({ groupRanks: cross, groupName: 'cross', timeoutMs: T }),
    StatelessGroupCoordinator.fromEnv({ groupRanks: pairs, groupName: 'pairs', timeoutMs: T }),
  ]);
  for (const g of groups) await exercise(g);
  for (const g of groups) await g.destroy();
  console.log(`done ${rank}`);
} else if (mode === 'cut') {
  const g = await StatelessGroupCoordinator.fromEnv({ groupRanks: [[...Array(W).keys()]], groupName: 'world', timeoutMs: T });
  try {
    for (let i = 0; ; i++) {
      await g.allReduce(tensor(new Float32Array(1024).fill(1)));
      if (i === 5) console.log(`looping ${rank}`);
    }
  } catch (e) {
    await reportLoss(e, g);
  }
} else if (mode === 'storecut') {
  const order = [arg, arg + 1, ...[...Array(W).keys()].filter((r) => r !== arg && r !== arg + 1)];
  const g = await StatelessGroupCoordinator.fromEnv({ groupRanks: [order], groupName: 'sc', timeoutMs: T });
  await g.barrier();
  try {
    if (rank === order[1]) await new Promise((r) => setTimeout(r, 2 ** 31 - 1)); // never sends
    console.log(`looping ${rank}`);
    await g.recvObject(1);
  } catch (e) {
    await reportLoss(e, g);
  }
} else if (mode === 'elastic') {
  // 2 nodes → 3 → 2, as `groupcomm demo` does on one: A = nodes 0-1 serves; B = all three nodes
  // is created while A serves; everyone moves to B at the step A's rank 0 picks; then C = nodes
  // 0-1 again is created while B serves, and node 2's ranks leave with B.
  const nodeOf = (r: number) => Math.floor(r / P);
  const ranksOn = (nodes: number[]) => [...Array(W).keys()].filter((r) => nodes.includes(nodeOf(r)));
  const [aRanks, bRanks] = [ranksOn([0, 1]), [...Array(W).keys()]];
  const sumOf = (rs: number[]) => rs.reduce((s, r) => s + r + 1, 0);
  /** Steps on `g` until `ready` is true at its rank 0 (one agreed flag per step), then `extra` more. */
  async function serve(g: StatelessGroupCoordinator, ready: () => boolean, extra: number): Promise<number> {
    let steps = 0;
    for (let left = -1; left !== 0; steps++) {
      const r = await g.allReduce(tensor(new Int32Array([rank + 1])));
      check(r.data[0] === sumOf(g.ranks as number[]), `${g.uniqueName} step ${steps}: ${r.data[0]}`);
      const go = await g.broadcastObject(g.rankInGroup === 0 ? ready() : undefined, 0);
      if (go && left < 0) left = extra;
      if (left > 0) left--;
    }
    return steps;
  }
  let a: StatelessGroupCoordinator | undefined;
  if (aRanks.includes(rank)) a = await StatelessGroupCoordinator.fromEnv({ groupRanks: [aRanks], groupName: 'A', timeoutMs: T });
  let b: StatelessGroupCoordinator | undefined;
  const bUp = StatelessGroupCoordinator.fromEnv({ groupRanks: [bRanks], groupName: 'B', timeoutMs: T }).then((g) => (b = g));
  if (a) {
    const steps = await serve(a, () => b !== undefined, 3);
    console.log(`A ${rank} served ${steps} steps`);
    await bUp;
    await a.destroy();
  } else {
    await bUp;
  }
  let c: StatelessGroupCoordinator | undefined;
  const cUp = aRanks.includes(rank)
    ? StatelessGroupCoordinator.fromEnv({ groupRanks: [aRanks], groupName: 'C', timeoutMs: T }).then((g) => (c = g))
    : Promise.resolve(undefined);
  // B's rank 0 is on node 0 and also in C: B ends once C is up there.
  const bSteps = await serve(b!, () => c !== undefined, 3);
  console.log(`B ${rank} served ${bSteps} steps`);
  await b!.destroy();
  await cUp;
  if (c) {
    const cSteps = await serve(c, () => true, 3);
    console.log(`C ${rank} served ${cSteps} steps`);
    await c.destroy();
  }
  console.log(`done ${rank}`);
} else if (mode === 'addr') {
  console.log(`addr ${rank} ${await chooseAddress({ toward: masterAddr() })}`);
}
