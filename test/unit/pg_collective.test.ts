// CollectiveLane (host/pg/collective.ts) on its own: ranks' Messages with PushMailboxes over a
// store stub that hands every published key straight to its rank's mailbox (no sockets, so the
// timings below are the lane's own). What the hub answers to "whose parts of collective n do you
// have?", which queries it ignores, what it remembers of a collective it gave up, when a rank
// asks, and who a timeout names from the answer.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CollectiveLane } from '../../host/pg/collective.js';
import { Messages } from '../../host/pg/messages.js';
import { PushMailbox } from '../../host/pg/mailbox.js';
import { OpTracker } from '../../host/pg/tracker.js';
import { decodeObject, encodeObject } from '../../host/pg/codec.js';
import type { Store } from '../../host/store/types.js';
import { failure } from '../helpers/rejects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Posted { key: string; value: Uint8Array; at: number; timeoutMs?: number }

/** `n` ranks whose lanes go through rank 0 (hub); `drop(key)` loses a message on its way. */
function ranks(n: number, o: { hub?: boolean; drop?: (key: string) => boolean; answer?: boolean } = {}) {
  const boxes: PushMailbox[] = [];
  const posted: Posted[] = [];
  const t0 = performance.now();
  const store = {
    publishesLocally: true,
    publish: async (keys: string[], values: Uint8Array[], po?: { timeoutMs?: number }) => {
      keys.forEach((key, i) => {
        posted.push({ key, value: values[i], at: performance.now() - t0, timeoutMs: po?.timeoutMs });
        if (o.drop?.(key)) return;
        const m = /^g\/1\/to\/(\d+)\/(.*)$/.exec(key);
        if (m) queueMicrotask(() => boxes[Number(m[1])].deliver(m[2], values[i]));
      });
    },
  } as unknown as Store;
  const lanes: CollectiveLane[] = [];
  const msgs: Messages[] = [];
  for (let rank = 0; rank < n; rank++) {
    const m = new Messages({ rank, worldSize: n, groupName: 'g', epoch: 1, store, timeoutMs: 2000, ownsStore: false, tracker: new OpTracker() });
    const box = new PushMailbox();
    m.mailbox = box;
    boxes.push(box);
    const lane = new CollectiveLane(m);
    lane.hub = o.hub ?? true;
    if (rank === 0 && lane.hub && o.answer !== false) lane.answerQueries(box);
    lanes.push(lane);
    msgs.push(m);
  }
  return { boxes, posted, lanes, msgs };
}

const obj = (s: string) => encodeObject(s);
const answers = (posted: Posted[]) => posted.filter((p) => /a\/[^/]*$/.test(p.key))
  .map((p) => ({ key: p.key, ...(decodeObject(p.value, { key: p.key, src: 0 }) as { entered: boolean; arrived: number[] }) }));

test('the hub answers a query with whether it entered n and whose parts it holds; other ranks all-to-all without one', async () => {
  const { boxes, posted, lanes } = ranks(4);
  // Rank 0 has not entered collective 0; rank 2's part is there.
  boxes[0].deliver('c/0/2', obj('p2'));
  boxes[0].deliver('q/0/1', new Uint8Array(0));
  await sleep(0);
  assert.equal(answers(posted), [{ key: 'g/1/to/1/a/0', entered: false, arrived: [2] }]);
  assert.is(posted.find((p) => p.key === 'g/1/to/1/a/0')?.timeoutMs, 2000, 'the answer is written under the group\'s timeout');
  // Rank 0 enters 0 (its take holds rank 2's part and waits for 1 and 3): entered, still [2].
  const run = lanes[0].run(obj('p0'), 'allGatherObj');
  boxes[0].deliver('q/0/3', new Uint8Array(0));
  await sleep(0);
  assert.equal(answers(posted)[1], { key: 'g/1/to/3/a/0', entered: true, arrived: [2] });
  boxes[0].deliver('c/0/1', obj('p1'));
  boxes[0].deliver('q/0/2', new Uint8Array(0));
  await sleep(0);
  assert.equal(answers(posted)[2], { key: 'g/1/to/2/a/0', entered: true, arrived: [1, 2] });
  // A query tag never reaches the box: collective 1's parts are still none.
  boxes[0].deliver('q/1/1', new Uint8Array(0));
  await sleep(0);
  assert.equal(answers(posted)[3], { key: 'g/1/to/1/a/1', entered: false, arrived: [] });
  boxes[0].deliver('c/0/3', obj('p3'));
  await sleep(0);
  const bundle = posted.find((p) => p.key.endsWith('/c/0/all'));
  assert.ok(bundle, 'the bundle went out');
  assert.equal(posted.filter((p) => p.key.endsWith('/c/0/all')).map((p) => p.key), ['g/1/to/1/c/0/all', 'g/1/to/2/c/0/all', 'g/1/to/3/c/0/all']);
  assert.equal((await run).map((p) => decodeObject(p.bytes, p.origin)), ['p0', 'p1', 'p2', 'p3']);
});

test('queries that are not another rank\'s, or not a collective number, get no answer', async () => {
  const { boxes, posted } = ranks(4);
  for (const tag of ['q/x/1', 'q/-1/1', 'q/1.5/1', 'q/0/0', 'q/0/4', 'q/0/-1', 'q/0/1.5', 'q/0/x', 'q/0']) {
    boxes[0].deliver(tag, new Uint8Array(0));
  }
  await sleep(0);
  assert.equal(answers(posted), []);
  assert.equal(boxes[0].arrived(['q/0/0', 'q/x/1']), [false, false], 'queries are not kept in the box either');
  boxes[0].deliver('q/0/3', new Uint8Array(0));
  await sleep(0);
  assert.equal(answers(posted).map((a) => a.key), ['g/1/to/3/a/0'], 'rank worldSize-1 is asked for');
});

test('a collective the hub gave up: a late query gets the parts it had; only the last 16 are remembered', async () => {
  const { boxes, posted, lanes } = ranks(3);
  // 18 collectives time out on the hub, each with rank 1's part and without rank 2's.
  const runs = Array.from({ length: 18 }, (_, n) => {
    boxes[0].deliver(`c/${n}/1`, obj('p1'));
    return failure(lanes[0].run(obj('p0'), 'barrier', { timeoutMs: 20 }));
  });
  for (const e of await Promise.all(runs)) {
    assert.is(e.code, 'ERR_GROUPCOMM_TIMEOUT');
    assert.equal(e.peerRanks, [2]);
  }
  for (const n of [0, 1, 2, 17]) boxes[0].deliver(`q/${n}/2`, new Uint8Array(0));
  await sleep(0);
  assert.equal(answers(posted).map((a) => [a.key, a.entered, a.arrived]), [
    ['g/1/to/2/a/0', true, []], // forgotten: its parts went with the failed take
    ['g/1/to/2/a/1', true, []],
    ['g/1/to/2/a/2', true, [1]],
    ['g/1/to/2/a/17', true, [1]],
  ]);
});

test('a rank about to time out asks the hub a quarter of its timeout (at most 500 ms) before it, and names what the hub lacks', async () => {
  // Rank 2's part never reaches rank 0; rank 1 waits 400 ms for the bundle.
  const { posted, lanes } = ranks(3, { drop: (k) => k === 'g/1/to/0/c/0/2' });
  const t0 = performance.now();
  const all = [failure(lanes[0].run(obj('p0'), 'barrier', { timeoutMs: 500 })), failure(lanes[1].run(obj('p1'), 'barrier', { timeoutMs: 400 }))];
  lanes[2].run(obj('p2'), 'barrier', { timeoutMs: 400 }).catch(() => {});
  const e1 = await all[1];
  const took = performance.now() - t0;
  assert.is(e1.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.equal(e1.peerRanks, [2], e1.message);
  assert.is(e1.key, 'g/1/to/1/c/0/all');
  assert.ok(took >= 390 && took < 700, `failed after ${took.toFixed(0)} ms`);
  const q = posted.find((p) => p.key === 'g/1/to/0/q/0/1');
  assert.ok(q, 'rank 1 asked');
  assert.ok(q.at >= 280 && q.at < 380, `asked at ${q.at.toFixed(0)} ms, not 300`);
  assert.is(posted.filter((p) => p.key === 'g/1/to/0/q/0/1').length, 1, 'asked once');
  assert.match(e1.message, /^barrier \(collective #0\) timed out after 400ms on rank 1/);
  assert.equal((await all[0]).peerRanks, [2], 'the hub itself names rank 2');
});

test('a bundle lost on its way after the hub completed: the late query hears that every part arrived, and rank 0 is named', async () => {
  // Every part reaches rank 0, which completes collective 0; its bundle to rank 1 is lost.
  const { posted, lanes } = ranks(3, { drop: (k) => k === 'g/1/to/1/c/0/all' });
  const [ok0, e1, ok2] = await Promise.all([
    lanes[0].run(obj('p0'), 'barrier', { timeoutMs: 2000 }),
    failure(lanes[1].run(obj('p1'), 'barrier', { timeoutMs: 200 })),
    lanes[2].run(obj('p2'), 'barrier', { timeoutMs: 2000 }),
  ]);
  assert.equal([ok0.length, ok2.length], [3, 3]);
  assert.is(e1.code, 'ERR_GROUPCOMM_TIMEOUT');
  assert.equal(e1.peerRanks, [0], `rank 2 had arrived: ${e1.message}`);
  assert.equal(answers(posted).map((a) => [a.key, a.entered, a.arrived]), [['g/1/to/1/a/0', true, [1, 2]]]);
});

test('the hub that never answers, or one that never entered, is named (rank 0); so is a hub that had everything', async () => {
  // No answers: rank 0 named.
  {
    const { lanes } = ranks(3, { answer: false });
    const e = await failure(lanes[1].run(obj('p1'), 'barrier', { timeoutMs: 80 }));
    assert.equal(e.peerRanks, [0]);
    assert.is(e.peerRank, 0);
  }
  // The hub never entered: it lacks its own part too, and rank 2's.
  {
    const { lanes } = ranks(3);
    const e = await failure(lanes[1].run(obj('p1'), 'barrier', { timeoutMs: 80 }));
    assert.equal(e.peerRanks, [0, 2], e.message);
  }
  // Answers written by hand (rank 0 plays the hub): who is named follows from them.
  for (const c of [
    { ans: { entered: true, arrived: [2] }, names: [0] }, // the hub had everything: rank 0 itself is late
    { ans: { entered: false, arrived: [2] }, names: [0] },
    { ans: { entered: true, arrived: [] }, names: [2] },
    { ans: { entered: false, arrived: [] }, names: [0, 2] },
  ]) {
    const st = ranks(3, { answer: false, drop: (k) => {
      if (k === 'g/1/to/0/q/0/1') queueMicrotask(() => st.boxes[1].deliver('a/0', encodeObject(c.ans)));
      return false;
    } });
    const e = await failure(st.lanes[1].run(obj('p1'), 'barrier', { timeoutMs: 80 }));
    assert.equal(e.peerRanks, c.names, `${JSON.stringify(c.ans)}: ${e.message}`);
  }
});

test('without a hub (or on two ranks) every rank sends its part to every other; origins name key and source', async () => {
  const { posted, lanes } = ranks(3, { hub: false });
  const got = await Promise.all(lanes.map((l, r) => l.run(obj(`v${r}`), 'allGatherObj')));
  for (const [r, parts] of got.entries()) {
    assert.equal(parts.map((p) => decodeObject(p.bytes, p.origin)), ['v0', 'v1', 'v2']);
    assert.equal(parts.map((p) => p.origin), [0, 1, 2].map((s) => ({ key: `g/1/to/${r}/c/0/${s}`, src: s })));
  }
  assert.equal(posted.map((p) => p.key).sort(), [0, 1, 2].flatMap((s) => [0, 1, 2].filter((d) => d !== s).map((d) => `g/1/to/${d}/c/0/${s}`)).sort());
  // A timeout names the ranks whose parts are missing.
  const e = await failure(lanes[0].run(obj('x'), 'barrier', { timeoutMs: 50 }));
  assert.equal(e.peerRanks, [1, 2]);
});

test('hub mode: origins name the bundle key and each source; this rank\'s entry is its own bytes', async () => {
  const { lanes } = ranks(3);
  const mine = obj('v1');
  const got = await Promise.all(lanes.map((l, r) => l.run(r === 1 ? mine : obj(`v${r}`), 'allGatherObj')));
  assert.is(got[1][1].bytes, mine);
  assert.equal(got[1].map((p) => p.origin), [0, 1, 2].map((src) => ({ key: 'g/1/to/1/c/0/all', src })));
  assert.equal(got[0].map((p) => p.origin), [0, 1, 2].map((src) => ({ key: `g/1/to/0/c/0/${src}`, src })));
  assert.equal(got[2].map((p) => decodeObject(p.bytes, p.origin)), ['v0', 'v1', 'v2']);
});

test('a bundle too short for its count, or whose count is not the group\'s, is ERR_GROUPCOMM_PROTOCOL naming its key', async () => {
  const u32 = (...xs: number[]) => new Uint8Array(new Uint32Array(xs).buffer);
  for (const [name, bytes] of [
    ['6 bytes', new Uint8Array([3, 0, 0, 0, 0, 0])],
    ['count 9, three empty parts', u32(9, 0, 0, 0)],
    ['count 2, two empty parts', u32(2, 0, 0)],
  ] as const) {
    const { boxes, lanes } = ranks(3);
    const p = failure(lanes[1].run(new Uint8Array(0), 'barrier', { timeoutMs: 500 }));
    boxes[1].deliver('c/0/all', bytes);
    const e = await p;
    assert.is(e.code, 'ERR_GROUPCOMM_PROTOCOL', `${name}: ${e.message}`);
    assert.is(e.key, 'g/1/to/1/c/0/all');
    assert.is(e.peerRank, 0);
  }
  // The same layout with the right count is a barrier's result.
  const { boxes, lanes } = ranks(3);
  const ok = lanes[1].run(new Uint8Array(0), 'barrier', { timeoutMs: 500 });
  boxes[1].deliver('c/0/all', u32(3, 0, 0, 0));
  assert.equal((await ok).map((x) => x.bytes.length), [0, 0, 0]);
});

test.run();
