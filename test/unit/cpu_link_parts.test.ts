// Small parts of the CPU group's links on their own: SendQueues (host/cpu/link/queue.ts), the
// frames waiting for a peer's send side; the address rendezvous (host/cpu/link/addresses.ts)
// against a scripted store (a test double of the few Store methods it calls); and the reachability
// probe of host/cpu/link/dial.ts over loopback.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SendQueues } from '../../host/cpu/link/queue.js';
import { addrKey, exchangeAddresses, type AddressSpec } from '../../host/cpu/link/addresses.js';
import type { FrameHeader, SendOptions } from '../../host/cpu/link/link.js';
import { ErrorCode, invalidArgument, timeoutError } from '../../host/base/errors.js';
import type { Store } from '../../host/store/types.js';
import { reachable, unreachableWith } from '../../host/cpu/link/dial.js';
import { failure } from '../helpers/rejects.js';
import net from 'node:net';

const frame = (tag: number): FrameHeader => ({ kind: 1, tag, seq: tag, slot: 0 });

function sender() {
  const sent: { frame: FrameHeader; payload: Uint8Array; opts: SendOptions }[] = [];
  const send = (f: FrameHeader, p: Uint8Array, opts: SendOptions, done: (e?: Error | null) => void) => { sent.push({ frame: f, payload: p, opts }); done(); };
  return { sent, send };
}

test('SendQueues: frames wait per peer and go out in call order on flush, as uncopied sends', () => {
  const q = new SendQueues(3);
  const { sent, send } = sender();
  const done: string[] = [];
  assert.not.ok(q.waiting(1));
  q.push(1, frame(1), new Uint8Array([1]), {}, () => done.push('a'), send);
  q.push(2, frame(9), new Uint8Array([9]), {}, () => done.push('x'), send);
  q.push(1, frame(2), new Uint8Array([2]), {}, () => done.push('b'), send);
  assert.ok(q.waiting(1));
  assert.ok(q.waiting(2));
  assert.not.ok(q.waiting(0));
  assert.is(sent.length, 0, 'nothing sent before the flush');
  q.flush(1);
  assert.equal(sent.map((s) => s.frame.tag), [1, 2]);
  assert.equal(sent.map((s) => s.opts), [{ copy: false }, { copy: false }]);
  assert.equal(done, ['a', 'b']);
  assert.not.ok(q.waiting(1));
  assert.ok(q.waiting(2), 'another peer still waits');
  q.flush(1);
  assert.is(sent.length, 2, 'a flushed frame is not sent twice');
});

test('SendQueues: the header is copied at push; the payload only when asked to', () => {
  const q = new SendQueues(2);
  const { sent, send } = sender();
  const h = frame(5);
  const kept = new Uint8Array([1, 2, 3]);
  const copied = new Uint8Array([4, 5, 6]);
  q.push(1, h, kept, {}, () => {}, send);
  q.push(1, h, copied, { copy: true }, () => {}, send);
  h.tag = 77;
  kept[0] = 9;
  copied[0] = 9;
  q.flush(1);
  assert.equal(sent.map((s) => s.frame.tag), [5, 5]);
  assert.is(sent[0].payload, kept, 'not copied: the caller keeps it unchanged until done');
  assert.equal([...sent[1].payload], [4, 5, 6]);
  assert.is.not(sent[1].payload, copied);
});

test('SendQueues: a frame pushed while flushing waits for the next flush', () => {
  const q = new SendQueues(2);
  const sent: number[] = [];
  const send = (f: FrameHeader, _p: Uint8Array, _o: SendOptions, done: () => void) => {
    sent.push(f.tag);
    if (f.tag === 1) q.push(1, frame(3), new Uint8Array(0), {}, () => {}, send);
    done();
  };
  q.push(1, frame(1), new Uint8Array(0), {}, () => {}, send);
  q.push(1, frame(2), new Uint8Array(0), {}, () => {}, send);
  q.flush(1);
  assert.equal(sent, [1, 2]);
  assert.ok(q.waiting(1));
  q.flush(1);
  assert.equal(sent, [1, 2, 3]);
});

test('SendQueues: fail gives each frame of the peers named (default: all) the error, and sends none', () => {
  const q = new SendQueues(3);
  const { sent, send } = sender();
  const errs: [string, string][] = [];
  const onDone = (name: string) => (e?: Error | null) => errs.push([name, e ? e.message : 'ok']);
  q.push(0, frame(1), new Uint8Array(0), {}, onDone('a'), send);
  q.push(1, frame(2), new Uint8Array(0), {}, onDone('b'), send);
  q.push(1, frame(3), new Uint8Array(0), {}, onDone('c'), send);
  q.push(2, frame(4), new Uint8Array(0), {}, onDone('d'), send);
  q.fail('peer 1 gone', [1]);
  assert.equal(errs, [['b', 'peer 1 gone'], ['c', 'peer 1 gone']]);
  assert.not.ok(q.waiting(1));
  assert.ok(q.waiting(0));
  q.flush(1);
  q.fail('mesh lost');
  assert.equal(errs.slice(2), [['a', 'mesh lost'], ['d', 'mesh lost']]);
  assert.not.ok(q.waiting(0));
  assert.not.ok(q.waiting(2));
  q.flush(0);
  q.flush(2);
  assert.is(sent.length, 0);
});

// ---- addresses.ts ----

interface Call { op: string; keys: string[]; opts?: { timeoutMs?: number; signal?: AbortSignal } }

/** A store that holds `held` and answers multiGet as `multiGet` says. */
function scripted(held: Map<string, string>, multiGet: (keys: string[]) => Promise<Uint8Array[]>, check?: (key: string) => Promise<boolean>) {
  const calls: Call[] = [];
  const store = {
    async set(key: string, v: string, opts?: Call['opts']) { calls.push({ op: 'set', keys: [key], opts }); held.set(key, v); },
    multiGet(keys: string[], opts?: Call['opts']) { calls.push({ op: 'multiGet', keys, opts }); return multiGet(keys); },
    check(keys: string[], opts?: Call['opts']) {
      calls.push({ op: 'check', keys, opts });
      return check ? check(keys[0]) : Promise.resolve(held.has(keys[0]));
    },
  };
  return { store: store as unknown as Store, calls };
}

const spec = (store: Store, rank: number, worldSize: number, signal?: AbortSignal): AddressSpec => ({ store, groupName: 'g', epoch: 3, rank, worldSize, signal });

test('addrKey names the group, its epoch and the rank', () => {
  assert.is(addrKey({ groupName: 'train', epoch: 7 }, 2), 'groupcomm/cpu/train/7/addr/2');
});

test('exchangeAddresses publishes first, reads every other key at once, and maps ranks to addresses', async () => {
  const held = new Map<string, string>();
  const { store, calls } = scripted(held, async (keys) => keys.map((k) => Buffer.from(`h${k.slice(-1)}é:${k.slice(-1)}`)));
  const signal = new AbortController().signal;
  const published: string[] = [];
  let budget = 1000;
  const addrOf = await exchangeAddresses(spec(store, 1, 4, signal), 'mine:1', () => budget--, (k) => { published.push(k); assert.is(calls.length, 1, 'published once set'); });
  assert.equal(published, ['groupcomm/cpu/g/3/addr/1']);
  assert.is(held.get('groupcomm/cpu/g/3/addr/1'), 'mine:1');
  assert.equal(calls.map((c) => c.op), ['set', 'multiGet']);
  assert.equal(calls[1].keys, [0, 2, 3].map((r) => `groupcomm/cpu/g/3/addr/${r}`));
  assert.equal(calls.map((c) => c.opts), [{ timeoutMs: 1000, signal }, { timeoutMs: 999, signal }]);
  assert.is(addrOf(0), 'h0é:0');
  assert.is(addrOf(2), 'h2é:2');
  assert.is(addrOf(3), 'h3é:3');
  assert.is(addrOf(1), undefined, 'its own');
  assert.is(addrOf(-1), undefined);
  assert.is(addrOf(4), undefined);
});

test('exchangeAddresses: a wait that times out names the ranks that never published, asking briefly', async () => {
  const held = new Map([['groupcomm/cpu/g/3/addr/1', 'b:1']]);
  const waitErr = timeoutError('multiGet timed out', { timeoutMs: 250 });
  const { store, calls } = scripted(held, () => Promise.reject(waitErr));
  const e = await failure(exchangeAddresses(spec(store, 0, 4), 'a:0', () => 250, () => {}));
  assert.is(e.code, ErrorCode.TIMEOUT);
  assert.equal(e.peerRanks, [2, 3]);
  assert.is(e.peerRank, undefined);
  assert.is(e.rank, 0);
  assert.is(e.timeoutMs, 250);
  assert.is(e.cause, waitErr);
  const checks = calls.filter((c) => c.op === 'check');
  assert.equal(checks.map((c) => c.keys[0]).sort(), [1, 2, 3].map((r) => `groupcomm/cpu/g/3/addr/${r}`));
  for (const c of checks) assert.equal(c.opts, { timeoutMs: 300 });

  const one = scripted(new Map([['groupcomm/cpu/g/3/addr/0', 'a:0']]), () => Promise.reject(waitErr));
  const e1 = await failure(exchangeAddresses(spec(one.store, 2, 3), 'c:2', () => 250, () => {}));
  assert.equal(e1.peerRanks, [1]);
  assert.is(e1.peerRank, 1);
  assert.is(e1.rank, 2);
});

test('exchangeAddresses: the wait\'s own error when no rank can be named, or when it was not a timeout', async () => {
  const waitErr = timeoutError('multiGet timed out', { timeoutMs: 250 });
  // Every key there (published meanwhile): nobody to name.
  const all = new Map([0, 1, 2].map((r) => [`groupcomm/cpu/g/3/addr/${r}`, 'x:1']));
  assert.is(await failure(exchangeAddresses(spec(scripted(all, () => Promise.reject(waitErr)).store, 0, 3), 'x:1', () => 250, () => {})), waitErr);
  // The checks fail (store gone): unknown is not "missing".
  const failing = scripted(new Map(), () => Promise.reject(waitErr), () => Promise.reject(new Error('closed')));
  assert.is(await failure(exchangeAddresses(spec(failing.store, 0, 3), 'x:1', () => 250, () => {})), waitErr);
  // Not a timeout: passed through without asking.
  const other = invalidArgument('bad key');
  const s = scripted(new Map(), () => Promise.reject(other));
  assert.is(await failure(exchangeAddresses(spec(s.store, 0, 3), 'x:1', () => 250, () => {})), other);
  assert.not.ok(s.calls.some((c) => c.op === 'check'));
});

// ---- dial.ts: reachable, unreachableWith ----

function server(): Promise<net.Server> {
  return new Promise((resolve) => { const srv = net.createServer((c) => c.destroy()); srv.listen(0, '127.0.0.1', () => resolve(srv)); });
}
const portOf = (srv: net.Server) => (srv.address() as net.AddressInfo).port;

test('reachable: true for a listening port, false for a closed one (then the socket is gone)', async () => {
  const live = await server();
  const dead = await server();
  const deadPort = portOf(dead);
  await new Promise((r) => dead.close(r));
  let accepted = 0;
  live.on('connection', () => accepted++);
  try {
    assert.is(await reachable(`127.0.0.1:${portOf(live)}`, 2000), true);
    // A refusal answers at once, not at the timeout.
    const t0 = performance.now();
    assert.is(await reachable(`127.0.0.1:${deadPort}`, 5000), false);
    assert.ok(performance.now() - t0 < 2500, 'refused: false without waiting for the timeout');
    assert.is(accepted, 1);
  } finally {
    live.close();
  }
});

test('unreachableWith: of the candidates at a silent peer\'s host, those whose listener is gone', async () => {
  const live = await server();
  const dead = await server();
  const dead2 = await server();
  const deadPort = portOf(dead);
  const deadPort2 = portOf(dead2);
  await new Promise((r) => dead.close(r));
  await new Promise((r) => dead2.close(r));
  const addrs: Record<number, string | undefined> = {
    1: `127.0.0.1:${deadPort}`, // silent
    2: `127.0.0.1:${portOf(live)}`, // same host, answers: a stuck process is not a cut host
    3: `127.0.0.1:${deadPort2}`, // same host (another port), gone
    4: `127.0.0.2:${deadPort}`, // another host: not probed
    5: undefined, // no address known
  };
  const probed: string[] = [];
  const addrOf = (r: number) => { if (addrs[r]) probed.push(addrs[r]!); return addrs[r]; };
  try {
    assert.equal(await unreachableWith([1], [2, 3, 4, 5], addrOf, 2000), [3]);
    assert.equal(await unreachableWith([4], [3], addrOf, 2000), [], 'only candidates at a silent peer\'s host');
    assert.equal(await unreachableWith([5], [3], addrOf, 2000), []);
    // A silent rank and a candidate that both have no known address: nothing to probe.
    assert.equal(await unreachableWith([5], [5, 6], addrOf, 2000), []);
  } finally {
    live.close();
  }
});

test.run();
