/**
 * One operation's view of the mesh (host/cpu/exchange.ts) on its own, against a recording mesh:
 * receives posted before and after their frame, streams (consume, dest, early frames handed
 * over), the expected-receive count behind waitingOn and departures, sends and flushed(), and
 * the one way to fail (waiters, the verdict told back, release).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Exchange, told } from '../../host/cpu/exchange.js';
import type { Mesh } from '../../host/cpu/mesh.js';
import type { Sink } from '../../host/cpu/link/sink.js';
import type { FrameHeader, SendOptions, WriteDone } from '../../host/cpu/link/link.js';
import { KIND_COLL, KIND_P2P } from '../../host/cpu/wire.js';
import { ErrorCode, GroupcommError, isGroupcommError, mismatchError, protocolError } from '../../host/base/errors.js';

interface Sent { peer: number; frame: FrameHeader; payload: Uint8Array; opts: SendOptions; done: WriteDone }

/** The part of Mesh an Exchange uses, recording every call. */
class FakeMesh {
  rank = 1;
  worldSize = 4;
  departed = new Set<number>();
  sinks = new Map<string, Sink>();
  calls: string[] = [];
  sent: Sent[] = [];
  verdicts: number[][] = [];
  register(peer: number, key: string, sink: Sink): void { this.calls.push(`register ${peer} ${key}`); this.sinks.set(`${peer} ${key}`, sink); }
  unregister(peer: number, key: string): void { this.calls.push(`unregister ${peer} ${key}`); }
  discard(key: string, peers?: number[]): void { this.calls.push(`discard ${key} ${peers === undefined ? 'all' : peers.join(',')}`); }
  send(peer: number, frame: FrameHeader, payload: Uint8Array, opts: SendOptions, done: WriteDone): void {
    this.sent.push({ peer, frame: { ...frame }, payload, opts, done });
  }
  sendVerdict(peer: number, seq: number, fp: number): void { this.verdicts.push([peer, seq, fp]); }
  sink(peer: number, key: string): Sink {
    const s = this.sinks.get(`${peer} ${key}`);
    assert.ok(s, `no sink for ${peer} ${key}`);
    return s!;
  }
}

function make(kind = KIND_COLL, tag = 77, seq = 5, peers?: number[]): { m: FakeMesh; ex: Exchange } {
  const m = new FakeMesh();
  return { m, ex: new Exchange(m as unknown as Mesh, kind, tag, seq, peers) };
}

/** Settles `p` now-ish: 'pending', or the value / error it settled with. */
async function state<T>(p: Promise<T>): Promise<{ v?: T; e?: unknown; pending?: true }> {
  let out: { v?: T; e?: unknown; pending?: true } = { pending: true };
  p.then((v) => { out = { v }; }, (e) => { out = { e }; });
  await new Promise((r) => setImmediate(r));
  return out;
}

const code = (e: unknown) => (isGroupcommError(e) ? e.code : String(e));

test('key, rank, size; a collective\'s sink carries its fingerprint, a point-to-point one none', () => {
  const { m, ex } = make(KIND_COLL, 77, 5);
  assert.is(ex.key, '1:0:5');
  assert.is(ex.rank, 1);
  assert.is(ex.size, 4);
  void ex.recv(2, 0);
  assert.equal(m.calls, ['register 2 1:0:5']);
  assert.is(m.sink(2, '1:0:5').fingerprint, 77);
  const p = make(KIND_P2P, 9, 3);
  assert.is(p.ex.key, '2:9:3');
  void p.ex.recv(0, 0);
  assert.is(p.m.sink(0, '2:9:3').fingerprint, undefined);
  // One registration per peer, however many receives.
  void ex.recv(2, 1);
  void ex.recv(3, 0);
  assert.equal(m.calls, ['register 2 1:0:5', 'register 3 1:0:5']);
});

test('recv before the frame: the sink offers the caller\'s dest (or null), done resolves it; waitingOn counts', async () => {
  const { m, ex } = make();
  const dest = new Uint8Array(3);
  const a = ex.recv(2, 0, dest);
  const b = ex.recv(2, 1);
  const c = ex.recv(0, 0);
  assert.equal(ex.waitingOn(), [0, 2]);
  const s = m.sink(2, ex.key);
  assert.is(s.dest(0, 3), dest);
  assert.is(s.dest(1, 3), null);
  assert.is(s.dest(7, 3), null, 'a slot nobody posted');
  s.done(0, dest);
  assert.equal(ex.waitingOn(), [0, 2], 'one more expected from rank 2');
  const own = Uint8Array.of(9, 9);
  s.done(1, own);
  assert.equal(ex.waitingOn(), [0]);
  assert.is((await a), dest);
  assert.is((await b), own);
  m.sink(0, ex.key).done(0, Uint8Array.of(1));
  assert.equal([...(await c)], [1]);
  assert.equal(ex.waitingOn(), []);
  // A slot's posting is used once: the same slot again is kept as an early frame.
  s.done(1, Uint8Array.of(4));
  assert.equal([...(await ex.recv(2, 1))], [4]);
});

test('recv after the frame: the early frame is returned, or copied into dest; a length that differs is a protocol error', async () => {
  const { m, ex } = make();
  void ex.recv(2, 9); // registers the sink
  const s = m.sink(2, ex.key);
  s.done(0, Uint8Array.of(1, 2, 3));
  s.done(1, Uint8Array.of(4, 5));
  s.done(2, Uint8Array.of(6, 7));
  const early = Uint8Array.of(8);
  s.done(3, early);
  assert.is(await ex.recv(2, 3), early, 'no dest: the frame itself');
  assert.ok((await state(ex.recv(2, 3))).pending, 'an early frame is returned once');
  const into = new Uint8Array(2);
  assert.is(await ex.recv(2, 1, into), into);
  assert.equal([...into], [4, 5]);
  const bad = await state(ex.recv(2, 2, new Uint8Array(5)));
  assert.is(code(bad.e), ErrorCode.PROTOCOL);
  assert.is((bad.e as GroupcommError).rank, 1);
  assert.is((bad.e as GroupcommError).peerRank, 2);
  assert.match((bad.e as Error).message, /slot 2 from rank 2 has 2 bytes, expected 5/);
  assert.equal(ex.waitingOn(), [2], 'only the still posted slot 9');
});

test('stream: frames go to the stream\'s sink; consume decides, a throw fails the operation; expecting counts', async () => {
  const { m, ex } = make();
  const got: string[] = [];
  let consumeResult: boolean | 'throw' = false;
  const stream: Sink = {
    dest: (slot, len) => (slot === 0 ? new Uint8Array(len) : null),
    done: (slot, buf) => { got.push(`done ${slot} ${buf.byteLength}`); if (slot === 9) throw protocolError('bad', { peerRank: 3 }); },
    consume: (slot) => {
      got.push(`consume ${slot}`);
      if (consumeResult === 'throw') throw protocolError('consume failed');
      return consumeResult;
    },
    fail: () => {},
  };
  ex.stream(3, 4, stream);
  assert.equal(m.calls, ['register 3 1:0:5']);
  assert.equal(ex.waitingOn(), [3]);
  const s = m.sink(3, ex.key);
  assert.is(s.dest(0, 4)!.byteLength, 4);
  assert.is(s.dest(1, 4), null);
  assert.is(s.consume!(1, new Uint8Array(1)), false);
  s.done(1, new Uint8Array(2));
  consumeResult = true;
  assert.is(s.consume!(2, new Uint8Array(1)), true);
  consumeResult = false;
  s.done(3, new Uint8Array(1));
  assert.equal(got, ['consume 1', 'done 1 2', 'consume 2', 'done 3 1']);
  assert.equal(ex.waitingOn(), [3], 'one frame still expected');
  const failed = ex.failed();
  consumeResult = 'throw';
  assert.is(s.consume!(4, new Uint8Array(1)), true, 'a throwing consume took the frame');
  assert.equal(ex.waitingOn(), [], 'and it counts as received');
  const f = await state(failed);
  assert.is(code(f.e), ErrorCode.PROTOCOL);
  assert.is(s.consume!(5, new Uint8Array(1)), false, 'nothing consumed once finished');
  s.done(6, new Uint8Array(1));
  assert.equal(got.length, 5, 'nothing delivered once finished');
});

test('a frame that came before its receive does not hide a receive still due from that peer (waitingOn, departure)', async () => {
  const { m, ex } = make();
  void ex.recv(2, 0);
  const s = m.sink(2, ex.key);
  s.done(0, Uint8Array.of(1));
  s.done(1, Uint8Array.of(2)); // early: nobody posted slot 1 yet
  s.done(2, Uint8Array.of(3)); // early
  assert.equal([...(await ex.recv(2, 1))], [2]);
  assert.equal(ex.waitingOn(), [], 'every posted receive has its frame');
  const due = state(ex.recv(2, 3));
  assert.equal(ex.waitingOn(), [2], 'slot 3 is still due from rank 2');
  m.departed.add(2);
  ex.checkDeparted(2);
  assert.is(code((await due).e), ErrorCode.PEER_LEFT, 'its departure fails the operation');
  // A stream counts the frames it was handed early, too.
  const b = make();
  void b.ex.recv(3, 0);
  const t = b.m.sink(3, b.ex.key);
  t.done(0, Uint8Array.of(1));
  t.done(1, Uint8Array.of(1)); // early, for the stream
  b.ex.stream(3, 2, { dest: () => null, done: () => {}, fail: () => {} });
  assert.equal(b.ex.waitingOn(), [3], 'one of the stream\'s two frames is still due');
  t.done(2, Uint8Array.of(1));
  assert.equal(b.ex.waitingOn(), []);
});

test('stream: a sink without consume is never offered a frame; a throwing done fails the operation', async () => {
  const { m, ex } = make();
  ex.stream(2, 2, { dest: () => null, done: (slot) => { if (slot === 1) throw protocolError('done failed', { peerRank: 2 }); }, fail: () => {} });
  const s = m.sink(2, ex.key);
  assert.is(s.consume!(0, new Uint8Array(1)), false);
  assert.equal(ex.waitingOn(), [2]);
  s.done(0, new Uint8Array(1));
  const failed = ex.failed();
  s.done(1, new Uint8Array(1));
  const f = await state(failed);
  assert.match(String((f.e as Error).message), /done failed/);
  assert.is(ex.finished, true);
});

test('stream: frames kept before it are handed over in order, like the parser (consume, then dest, length checked)', async () => {
  const { m, ex } = make();
  void ex.recv(2, 99).catch(() => {}); // the setup receive that registered the sink
  const s = m.sink(2, ex.key);
  s.done(0, Uint8Array.of(1));
  s.done(1, Uint8Array.of(2, 3));
  s.done(2, Uint8Array.of(4, 5, 6));
  const got: string[] = [];
  const dests: Uint8Array[] = [];
  ex.stream(2, 3, {
    consume: (slot) => slot === 0,
    dest: (slot, len) => { const d = slot === 1 ? new Uint8Array(len) : null; if (d) dests.push(d); return d; },
    done: (slot, buf) => { got.push(`${slot}:${[...buf].join(',')}`); },
    fail: () => {},
  });
  assert.equal(got, ['1:2,3', '2:4,5,6']);
  assert.is(dests.length, 1);
  assert.equal([...dests[0]], [2, 3], 'copied into the dest');
  // A dest of the wrong length fails the operation with a protocol error naming the peer.
  const b = make();
  void b.ex.recv(3, 99).catch(() => {});
  b.m.sink(3, b.ex.key).done(0, Uint8Array.of(1, 2));
  b.m.sink(3, b.ex.key).done(1, Uint8Array.of(3, 4));
  const failed = b.ex.failed();
  const seen: string[] = [];
  b.ex.stream(3, 2, { dest: (slot) => { seen.push(`dest ${slot}`); return new Uint8Array(5); }, done: (slot) => { seen.push(`done ${slot}`); }, fail: () => {} });
  const f = await state(failed);
  assert.is(code(f.e), ErrorCode.PROTOCOL);
  assert.is((f.e as GroupcommError).peerRank, 3);
  assert.equal(seen, ['dest 0'], 'the failed operation hands over no further early frame');
  // A throwing consume on an early frame fails the operation too.
  const c = make();
  void c.ex.recv(3, 99).catch(() => {});
  c.m.sink(3, c.ex.key).done(0, Uint8Array.of(1));
  const failedC = c.ex.failed();
  c.ex.stream(3, 1, { consume: () => { throw protocolError('nope'); }, dest: () => null, done: () => {}, fail: () => {} });
  assert.match(String(((await state(failedC)).e as Error).message), /nope/);
});

test('a departed peer fails the operation only while it still expects data from it', async () => {
  const { m, ex } = make();
  m.departed.add(2);
  ex.checkDeparted(2);
  assert.is(ex.finished, false, 'nothing expected from it yet');
  const r = await state(ex.recv(2, 0));
  assert.is(code(r.e), ErrorCode.PEER_LEFT);
  assert.is((r.e as GroupcommError).rank, 1);
  assert.is((r.e as GroupcommError).peerRank, 2);
  const b = make();
  b.m.departed.add(3);
  const failed = b.ex.failed();
  b.ex.stream(3, 1, { dest: () => null, done: () => {}, fail: () => {} });
  assert.is(code((await state(failed)).e), ErrorCode.PEER_LEFT);
  // Once every frame from it has come, its departure is no failure.
  const c = make();
  const p = c.ex.recv(3, 0);
  c.m.sink(3, c.ex.key).done(0, Uint8Array.of(1));
  await p;
  c.m.departed.add(3);
  c.ex.checkDeparted(3);
  assert.is(c.ex.finished, false);
});

test('send: one reused header with the slot, copy as asked; flushed waits for every write; a failed write counts as done', async () => {
  const { m, ex } = make(KIND_COLL, 77, 5);
  assert.is((await state(ex.flushed())).pending, undefined, 'nothing written: flushed at once');
  const pl = Uint8Array.of(1);
  ex.send(2, 3, pl);
  ex.send(0, 4, pl, true);
  assert.equal(m.sent.map((s) => [s.peer, s.frame.kind, s.frame.tag, s.frame.seq, s.frame.slot, s.opts.copy]), [[2, 1, 77, 5, 3, false], [0, 1, 77, 5, 4, true]]);
  assert.is(m.sent[0].payload, pl);
  const fl = ex.flushed();
  m.sent[0].done(new Error('socket closed'));
  assert.ok((await state(fl)).pending, 'one write left');
  assert.is(ex.finished, false, 'a lost write is the mesh\'s to report');
  m.sent[1].done(undefined);
  assert.is((await state(fl)).pending, undefined);
  assert.is(ex.finished, false);
  // Flushed again once a later write completes.
  ex.send(2, 5, pl);
  const fl2 = ex.flushed();
  assert.ok((await state(fl2)).pending);
  m.sent[2].done(undefined);
  assert.is((await state(fl2)).pending, undefined);
});

test('send: a refused frame (a GroupcommError) fails the operation; later sends are dropped, flushed rejects', async () => {
  const { m, ex } = make();
  ex.send(2, 0, Uint8Array.of(1));
  ex.send(2, 1, Uint8Array.of(1));
  const fl = ex.flushed();
  const err = protocolError('too big', { rank: 1, peerRank: 2 });
  m.sent[0].done(err);
  assert.is((await state(fl)).e, err);
  assert.is((await state(ex.flushed())).e, err);
  assert.is((await state(ex.failed())).e, err, 'failed() after the failure rejects at once');
  assert.is((await state(ex.recv(2, 0))).e, err);
  ex.send(2, 2, Uint8Array.of(1));
  assert.is(m.sent.length, 2, 'nothing sent after the failure');
});

test('fail: waiters get the first error only; a collective\'s MISMATCH naming a peer is told back once, unless it was told to us', async () => {
  const { m, ex } = make(KIND_COLL, 77, 5, [2, 3]);
  const r = state(ex.recv(2, 0));
  const f = state(ex.failed());
  const e = mismatchError('differs', { peerRank: 2 });
  ex.fail(e);
  ex.fail(mismatchError('again', { peerRank: 3 }));
  assert.is((await r).e, e);
  assert.is((await f).e, e);
  assert.equal(m.verdicts, [[2, 5, 77]]);
  assert.equal(m.calls, ['register 2 1:0:5', 'discard 1:0:5 2,3'], 'abandoned: the key is discarded for its peers');
  const cases: [string, number, GroupcommError][] = [
    ['a point-to-point MISMATCH', KIND_P2P, mismatchError('p2p', { peerRank: 2 })],
    ['no peer named', KIND_COLL, mismatchError('whose?')],
    ['another code', KIND_COLL, protocolError('other', { peerRank: 2 })],
  ];
  const toldErr = mismatchError('told', { peerRank: 2 });
  told.add(toldErr);
  cases.push(['a verdict told to us', KIND_COLL, toldErr]);
  for (const [what, kind, err] of cases) {
    const x = make(kind);
    x.ex.fail(err);
    assert.equal(x.m.verdicts, [], what);
    assert.equal(x.m.calls, ['discard ' + x.ex.key + ' all'], what);
  }
});

test('the sink\'s fail adds this rank to the parser\'s error; release without abandon unregisters every peer', async () => {
  const { m, ex } = make();
  const r = ex.recv(2, 0);
  void ex.recv(3, 0).catch(() => {});
  m.sink(2, ex.key).fail(protocolError('bad frame', { peerRank: 2 }));
  const e = (await state(r)).e as GroupcommError;
  assert.is(e.rank, 1);
  assert.is(e.peerRank, 2);
  const b = make();
  void b.ex.recv(2, 0);
  void b.ex.recv(0, 0);
  b.ex.release(false);
  assert.equal(b.m.calls, ['register 2 1:0:5', 'register 0 1:0:5', 'unregister 2 1:0:5', 'unregister 0 1:0:5']);
  assert.is(b.ex.finished, true);
  b.ex.fail(protocolError('late'));
  assert.is((await state(b.ex.flushed())).pending, undefined, 'a finished operation takes no failure');
  assert.equal(b.m.calls.length, 4);
  // Nothing is routed once finished.
  const s = b.m.sink(2, b.ex.key);
  s.done(0, Uint8Array.of(1));
  assert.equal(b.ex.waitingOn(), [0, 2]);
  assert.is(s.dest(0, 1), null, 'postings dropped');
  // A frame for a finished operation is not kept for a receive either.
  s.done(4, Uint8Array.of(9));
  assert.ok((await state(b.ex.recv(2, 4))).pending, 'nothing kept after the operation finished');
});

test.run();
