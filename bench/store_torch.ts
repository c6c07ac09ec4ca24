/**
 * `groupcomm bench store --torch-clients`: the same clients against both servers. torch's own
 * TCPStore clients (K processes of the python given by --python, depth 1: one request in flight
 * per client, torch's loop) run get 16 B, set+get 16 B and set+get 64 KiB against a groupcomm
 * server and then against torch's legacy TCPStore server (use_libuv=False: Debian's torch has no
 * libuv), so the server is measured apart from the client. Besides ops/s, each row carries the
 * CPU time per op of the server process (from /proc/PID/stat over the timed seconds) and of the
 * clients (their own process time), and the server's user-space part alone: with K clients on few CPUs, the clients' CPU can set the
 * pace whatever the server does, and these columns show whether it does.
 *
 * The driver is the python program below, fed on stdin (`<python> - server|clients …`), so it
 * also runs inside a chroot that cannot see this package's files.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import readline from 'node:readline';
import type { Report } from './report.js';

export const DRIVER = String.raw`
import ctypes, json, multiprocessing as mp, os, signal, sys, time
from datetime import timedelta

def die_with_parent():
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass

def open_store(port, master):
    import torch, torch.distributed as d
    kw = {"use_libuv": False} if int(torch.__version__.split(".")[0]) >= 2 else {}
    return d.TCPStore("127.0.0.1", port, None, master, timedelta(seconds=60), wait_for_workers=False, **kw)

CASES = [("get", 16), ("set+get", 16), ("set+get", 65536)]

def client(cid, port, seconds, bar, q):
    die_with_parent()
    s = open_store(port, False)
    out = []
    for op, size in CASES:
        val = os.urandom(size)
        key = "tc%d/k" % cid
        s.set(key, val)
        s.get(key)
        if op == "get":
            fn = lambda: s.get(key)
        else:
            def fn():
                s.set(key, val)
                s.get(key)
        for _ in range(50):
            fn()
        bar.wait(120)
        n = 0
        c0 = time.process_time()
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            fn()
            n += 1
            t = time.perf_counter()
            if t >= end:
                break
        out.append((n * (1 if op == "get" else 2), t - t0, time.process_time() - c0))
        bar.wait(120)
    q.put((cid, out))

def main():
    die_with_parent()
    import torch
    if sys.argv[1] == "server":
        s = open_store(0, True)
        print(json.dumps({"port": s.port, "pid": os.getpid(), "torch": torch.__version__}), flush=True)
        time.sleep(float(sys.argv[2]))
        return
    port, k, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    ctx = mp.get_context("fork")
    bar = ctx.Barrier(k + 1)
    q = ctx.Queue()
    ps = [ctx.Process(target=client, args=(i, port, seconds, bar, q), daemon=True) for i in range(k)]
    for p in ps:
        p.start()
    for _ in CASES:
        bar.wait(120)
        print("@@start", flush=True)
        bar.wait(120 + seconds)
        print("@@end", flush=True)
    res = dict(q.get(timeout=120) for _ in range(k))
    for i, (op, size) in enumerate(CASES):
        ops = sum(res[c][i][0] / res[c][i][1] for c in res)
        cpu = sum(res[c][i][2] for c in res) / max(1, sum(res[c][i][0] for c in res))
        print(json.dumps({"op": op, "size": size, "ops_s": ops, "client_cpu_us": cpu * 1e6, "torch": torch.__version__}), flush=True)
    for p in ps:
        p.join(10)

main()
`;

interface DriverRow { op: string; size: number; ops_s: number; client_cpu_us: number; torch: string }

/** CPU seconds of process `pid` so far, user-space and kernel apart, from /proc; undefined where there is none. */
export function cpuTimes(pid: number): { user: number; system: number } | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces) start after its closing parenthesis.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]) / CLOCK_TICKS, system: Number(f[12]) / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) of process `pid` so far, from /proc; undefined where there is none. */
export function cpuSeconds(pid: number): number | undefined {
  const t = cpuTimes(pid);
  return t && t.user + t.system;
}
/** USER_HZ: 100 on every Linux build that matters here. */
const CLOCK_TICKS = 100;

/** Starts the driver with `args` under `python` (a shell command), the program on its stdin. */
function driver(python: string, args: string[]): ChildProcess {
  const child = spawn(`${python} - ${args.join(' ')}`, { shell: true, stdio: ['pipe', 'pipe', 'inherit'], detached: false });
  child.stdin!.end(DRIVER);
  return child;
}

function firstJson<T>(child: ChildProcess, what: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error(`bench store: ${what} said nothing within ${timeoutMs} ms`)), timeoutMs);
    rl.once('line', (l) => {
      clearTimeout(timer);
      rl.close();
      try { resolve(JSON.parse(l) as T); } catch { reject(new Error(`bench store: ${what} printed '${l.slice(0, 200)}'`)); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`bench store: ${what} exited with ${code}`)); });
  });
}

/** Runs the K torch clients against the server on `port` whose process is `serverPid`. */
async function clientsAgainst(python: string, port: number, serverPid: number, k: number, seconds: number): Promise<(DriverRow & { server_cpu_us?: number; server_user_us?: number })[]> {
  const child = driver(python, ['clients', String(port), String(k), String(seconds)]);
  const rl = readline.createInterface({ input: child.stdout! });
  const serverCpu: number[] = [];
  const serverUser: number[] = [];
  const rows: DriverRow[] = [];
  let cpu0: { user: number; system: number } | undefined;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const timer = setTimeout(() => child.kill('SIGKILL'), (3 * (seconds + 10) + 120) * 1000);
  try {
    for await (const l of rl) {
      if (l === '@@start') cpu0 = cpuTimes(serverPid);
      else if (l === '@@end') {
        const c1 = cpuTimes(serverPid);
        serverCpu.push(cpu0 && c1 ? c1.user + c1.system - cpu0.user - cpu0.system : NaN);
        serverUser.push(cpu0 && c1 ? c1.user - cpu0.user : NaN);
      } else if (l.startsWith('{')) rows.push(JSON.parse(l) as DriverRow);
    }
  } finally {
    clearTimeout(timer);
  }
  const code = await exited;
  if (code !== 0 || rows.length !== serverCpu.length) throw new Error(`bench store: the torch clients exited with ${code} after ${rows.length} case(s)`);
  const perOp = (cpu: number, r: DriverRow) => (Number.isFinite(cpu) ? cpu / (r.ops_s * seconds) * 1e6 : undefined);
  return rows.map((r, i) => ({ ...r, server_cpu_us: perOp(serverCpu[i], r), server_user_us: perOp(serverUser[i], r) }));
}

/**
 * One round of the same-client comparison: for each K, torch's clients against our server (a
 * child started by `startOurs`, which resolves with its port and pid and a stop function), then
 * against torch's. Rows: name 'torch clients <op>', impl 'groupcomm-server' / 'torch-X.Y-server'.
 */
export async function runSameClients(
  report: Report, python: string, clients: number[], seconds: number, round: number,
  startOurs: () => Promise<{ port: number; pid: number; stop(): void }>, samples: Record<string, unknown>[],
): Promise<void> {
  for (const k of clients) {
    const ours = await startOurs();
    let oursRows;
    try {
      oursRows = await clientsAgainst(python, ours.port, ours.pid, k, seconds);
    } finally {
      ours.stop();
    }
    const torch = driver(python, ['server', String(3 * (seconds + 10) + 300)]);
    let torchRows;
    try {
      const t = await firstJson<{ port: number; pid: number; torch: string }>(torch, 'the torch server', 120_000);
      try {
        torchRows = await clientsAgainst(python, t.port, t.pid, k, seconds);
      } finally {
        try { process.kill(t.pid, 'SIGKILL'); } catch { /* gone already */ }
      }
    } finally {
      torch.kill('SIGKILL');
    }
    const version = /^(\d+\.\d+)/.exec(torchRows[0]?.torch ?? '')?.[1] ?? '?';
    for (const [impl, rows] of [['groupcomm-server', oursRows], [`torch-${version}-server`, torchRows]] as const) {
      for (const r of rows) {
        report.add({
          name: `torch clients ${r.op}`, impl, round, op: r.op, clients: k, size_bytes: r.size, depth: 1,
          ops_s: Math.round(r.ops_s),
          server_cpu_us_op: r.server_cpu_us === undefined ? undefined : +r.server_cpu_us.toFixed(1),
          // the server's user-space share: what a faster server could cut (the rest is the kernel's)
          server_user_us_op: r.server_user_us === undefined ? undefined : +r.server_user_us.toFixed(1),
          client_cpu_us_op: +r.client_cpu_us.toFixed(1),
        }, samples);
      }
    }
  }
}

/** The load average, for the note that goes with these rows (they depend on what else runs). */
export function loadNote(): string {
  return `load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} on ${os.availableParallelism()} CPUs`;
}
