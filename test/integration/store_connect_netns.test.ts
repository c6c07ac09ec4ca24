// A store client whose server cannot be reached, on a network of its own (test/helpers/netns.ts:
// one node namespace on a bridge, addresses 10.77.<s>.x only, nothing leaves it): what a store
// on another machine gives that 127.0.0.1 cannot — a SYN nobody answers, a host that does not
// answer ARP, no route at all. Each is retried until the deadline (host/store/connect.ts:
// RETRYABLE, the connect timer) and ends as TIMEOUT naming the last errno, never as a PEER_LOST
// on the first failure. Skips, saying why, where namespaces cannot be made.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { commandFor, currentRuntime, scriptFile } from '../helpers/ranks.js';
import { NetLab } from '../helpers/netns.js';

const WORKER = 'test/integration/workers/store_connect_worker';
const made = NetLab.create(1);
const lab = typeof made === 'string' ? undefined : made;
if (!lab) console.log(`# store_connect_netns: skipped: ${made}`);
process.on('exit', () => lab?.destroy());

interface Outcome { code?: string; cause?: string; message?: string; elapsedMs: number }

/** Runs the client in the node's namespace against host:port; resolves with what it printed. */
function connect(host: string, timeoutMs: number): Promise<Outcome> {
  const [cmd] = commandFor(WORKER, currentRuntime());
  const child = lab!.spawn(0, cmd, [scriptFile(WORKER, currentRuntime()), host, '29500', String(timeoutMs)]);
  let out = '', err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 15_000);
  return new Promise((resolve, reject) => child.on('close', (status) => {
    clearTimeout(killer);
    const line = out.trim().split('\n').pop() ?? '';
    try {
      resolve(JSON.parse(line) as Outcome);
    } catch {
      reject(new Error(`client exited ${status} without a result:\n${out}\n${err}`));
    }
  }));
}

const ns = (...args: string[]) => execFileSync('ip', ['netns', 'exec', lab!.nodes[0].ns, ...args], { stdio: 'ignore' });
const subnet = () => lab!.nodes[0].ip4.split('.').slice(0, 3).join('.');

const maybe = lab ? test : test.skip;
/**
 * The errno a try ended with, as the runtime names it: Bun (1.x) reports a connect that failed
 * for no route or no ARP answer as ECONNREFUSED, which is retried the same way.
 */
const errno = (code: string) => (currentRuntime() === 'bun' ? 'ECONNREFUSED' : code);

maybe('an unanswered SYN: the connect timer ends the try; TIMEOUT at the deadline with ETIMEDOUT, not before', async () => {
  // A neighbour entry for a MAC no port has: the SYN goes to the bridge and vanishes, and no
  // ARP failure or RST ever comes back; only the client's own timer ends the try.
  const host = `${subnet()}.98`;
  ns('ip', 'neigh', 'replace', host, 'lladdr', '02:77:00:00:00:98', 'dev', 'eth0', 'nud', 'permanent');
  const r = await connect(host, 800);
  assert.is(r.code, 'ERR_GROUPCOMM_TIMEOUT', JSON.stringify(r));
  assert.is(r.cause, 'ETIMEDOUT', JSON.stringify(r));
  assert.ok(r.elapsedMs >= 750 && r.elapsedMs < 5000, `ended after ${r.elapsedMs} ms`);
});

maybe('a host that does not answer ARP (EHOSTUNREACH) is retried until the deadline', async () => {
  // ARP gives up after one probe of 100 ms here, so each try fails fast and several fit.
  ns('sysctl', '-q', '-w', 'net.ipv4.neigh.eth0.mcast_solicit=1', 'net.ipv4.neigh.eth0.retrans_time_ms=100');
  const r = await connect(`${subnet()}.99`, 2000);
  assert.is(r.code, 'ERR_GROUPCOMM_TIMEOUT', JSON.stringify(r));
  assert.ok(r.cause === errno('EHOSTUNREACH') || r.cause === 'ETIMEDOUT', JSON.stringify(r));
  assert.ok(r.elapsedMs >= 1950, `ended after ${r.elapsedMs} ms: before the deadline`);
});

maybe('no route to the store (ENETUNREACH: nothing is sent) is retried until the deadline', async () => {
  // Another /24 of 10.77: the node has no route there, so connect fails locally.
  const [a, b, s] = subnet().split('.');
  const host = `${a}.${b}.${(Number(s) + 1) % 256}.1`;
  const r = await connect(host, 1000);
  assert.is(r.code, 'ERR_GROUPCOMM_TIMEOUT', JSON.stringify(r));
  assert.is(r.cause, errno('ENETUNREACH'), JSON.stringify(r));
  assert.ok(r.elapsedMs >= 950, `ended after ${r.elapsedMs} ms: before the deadline`);
});

test.run();
