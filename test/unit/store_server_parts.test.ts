// The server's wire helpers on their own (server_parse.ts, server_reply.ts, server_conn.ts), where
// the end-to-end tests cannot see them: setLength is a fast path whose wrong answers handle()
// would repair at a cost (so only its exact answers pin it), and flush's grouping of replies into
// writes is a syscall budget (the bytes on the wire are the same however they are grouped), so
// both are checked against a socket that records each call.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type net from 'node:net';
import { DEFAULT_LIMITS, type StoreLimits } from '../../host/store/protocol.js';
import { RequestParser } from '../../host/store/server_parse.js';
import { Conn, FLUSH_ALONE_BYTES, MAX_PENDING_REPLY_BYTES, putLatin1 } from '../../host/store/server_conn.js';

/** The parser's protected helpers, reachable from a test. */
class Parser extends RequestParser {
  length(buf: Buffer, pos: number, end = buf.length): number {
    return this.setLength(buf, pos, end);
  }
  queue(conn: Conn, b: Buffer): void {
    this.send(conn, b);
  }
  queueValue(conn: Conn, v: string | Buffer, tag: number): void {
    this.sendValue(conn, v, tag);
  }
  flushNow(conn: Conn): void {
    this.flush(conn);
  }
  flushEvery(): void {
    this.flushAll();
  }
  get pending(): Conn[] {
    return this.dirty;
  }
}

/** A SET request: opcode, u64 key length (hi, lo words given), key, u64 value length, value. */
function setRequest(key: Buffer, value: Buffer, keyHi = 0, valueHi = 0): Buffer {
  const f = Buffer.alloc(1 + 8 + key.length + 8 + value.length);
  f[0] = 1;
  f.writeUInt32LE(key.length, 1);
  f.writeUInt32LE(keyHi, 5);
  key.copy(f, 9);
  f.writeUInt32LE(value.length, 9 + key.length);
  f.writeUInt32LE(valueHi, 13 + key.length);
  value.copy(f, 17 + key.length);
  return f;
}

const limits = (l: Partial<StoreLimits> = {}): StoreLimits => ({ ...DEFAULT_LIMITS, ...l });

test('setLength: the exact length of a SET once its header is here, at any offset', () => {
  const p = new Parser(limits());
  const req = setRequest(Buffer.from('key'), Buffer.alloc(100, 7));
  assert.is(p.length(req, 0), req.length);
  const shifted = Buffer.concat([Buffer.alloc(5, 0xee), req]);
  assert.is(p.length(shifted, 5), req.length, 'measured from pos, not from 0');
  // Only the headers need to be here, not the value.
  assert.is(p.length(req, 0, 1 + 8 + 3 + 8), req.length);
});

test('setLength: 0 while a header is incomplete, by one byte on either side', () => {
  const p = new Parser(limits());
  const req = setRequest(Buffer.from('key'), Buffer.alloc(10));
  assert.is(p.length(req, 0, 8), 0, 'key length not all here');
  assert.is(p.length(req, 0, 9 + 3 + 7), 0, 'value length one byte short');
  assert.is(p.length(req, 0, 9 + 3 + 8), req.length, 'value length exactly here');
  assert.is(p.length(req, 0, 9), 0, 'key length here, the value header not');
});

test('setLength: 0 for a key or value over its limit, the length at the limit', () => {
  const p = new Parser(limits({ maxKeyBytes: 4, maxValueBytes: 16 }));
  assert.is(p.length(setRequest(Buffer.from('abcd'), Buffer.alloc(16)), 0), 1 + 8 + 4 + 8 + 16);
  assert.is(p.length(setRequest(Buffer.from('abcde'), Buffer.alloc(16)), 0), 0);
  assert.is(p.length(setRequest(Buffer.from('abcd'), Buffer.alloc(17)), 0), 0);
});

test('setLength: a u64 length past 2^53 reads as too long; one of 2^32 and more is counted whole', () => {
  // Limits no request could reach: only the arithmetic of the length words decides.
  const p = new Parser(limits({ maxKeyBytes: Number.MAX_VALUE, maxValueBytes: Number.MAX_VALUE }));
  const key = Buffer.from('k');
  // A value length whose high word is 1: 2^32 + 5 bytes (the header is here, the value is not).
  const big = setRequest(key, Buffer.alloc(5), 0, 1);
  assert.is(p.length(big, 0), 1 + 8 + 1 + 8 + 2 ** 32 + 5);
  // High words of 0x1fffff and 0x200000: the first is a (huge) number, the second Infinity (0).
  const under = setRequest(key, Buffer.alloc(0), 0, 0x1fffff);
  assert.is(p.length(under, 0), 1 + 8 + 1 + 8 + 0x1fffff * 2 ** 32);
  assert.is(p.length(setRequest(key, Buffer.alloc(0), 0, 0x200000), 0), 0);
  assert.is(p.length(setRequest(key, Buffer.alloc(0), 0, 0x200001), 0), 0);
  // The same for the key's length.
  assert.is(p.length(setRequest(key, Buffer.alloc(0), 0x200000), 0), 0);
});

/** A socket that records what flush does with it. */
class RecordingSocket {
  calls: string[] = [];
  writes: Buffer[] = [];
  writableLength = 0;
  paused = false;
  drain?: () => void;
  write(b: Buffer): boolean {
    this.calls.push(`write ${b.length}`);
    this.writes.push(b);
    return true;
  }
  cork(): void { this.calls.push('cork'); }
  uncork(): void { this.calls.push('uncork'); }
  isPaused(): boolean { return this.paused; }
  pause(): void { this.calls.push('pause'); this.paused = true; }
  resume(): void { this.calls.push('resume'); this.paused = false; }
  once(ev: string, fn: () => void): void { if (ev === 'drain') this.drain = fn; }
}

function conn(): [Conn, RecordingSocket] {
  const s = new RecordingSocket();
  return [new Conn(s as unknown as net.Socket, 1), s];
}

const bytes = (n: number, fill: number) => Buffer.alloc(n, fill);

test('flush: one reply is written as it is (no copy); small ones as one concatenated write', () => {
  const p = new Parser(limits());
  const [c, s] = conn();
  const one = bytes(10, 1);
  p.queue(c, one);
  p.flushNow(c);
  assert.equal(s.calls, ['write 10']);
  assert.ok(s.writes[0] === one, 'the reply buffer itself');
  // Small replies just under FLUSH_ALONE_BYTES in total: one write of their concatenation.
  const a = bytes(100, 2), b = bytes(FLUSH_ALONE_BYTES - 101, 3);
  p.queue(c, a);
  p.queue(c, b);
  p.flushNow(c);
  assert.equal(s.calls.slice(1), [`write ${FLUSH_ALONE_BYTES - 1}`]);
  assert.equal(s.writes[1], Buffer.concat([a, b]));
  assert.is(c.outBytes, 0);
  assert.is(c.out.length, 0);
});

test('flush: replies of FLUSH_ALONE_BYTES and more go out alone; the runs between them concatenated, in order, corked', () => {
  const p = new Parser(limits());
  const [c, s] = conn();
  const parts = [bytes(8, 1), bytes(9, 2), bytes(FLUSH_ALONE_BYTES, 3), bytes(7, 4), bytes(FLUSH_ALONE_BYTES + 1, 5),
    bytes(FLUSH_ALONE_BYTES, 6), bytes(5, 7), bytes(6, 8)];
  for (const b of parts) p.queue(c, b);
  p.flushNow(c);
  assert.equal(s.calls, ['cork', 'write 17', `write ${FLUSH_ALONE_BYTES}`, 'write 7', `write ${FLUSH_ALONE_BYTES + 1}`,
    `write ${FLUSH_ALONE_BYTES}`, 'write 11', 'uncork']);
  assert.equal(Buffer.concat(s.writes), Buffer.concat(parts), 'the same bytes in the same order');
  assert.ok(s.writes[1] === parts[2] && s.writes[3] === parts[4] && s.writes[4] === parts[5], 'big replies not copied');
  assert.ok(s.writes[2] === parts[3], 'a run of one small reply is not copied either');
});

test('flush: a big reply first, a small one alone after it; nothing queued or a closed connection writes nothing', () => {
  const p = new Parser(limits());
  const [c, s] = conn();
  const big = bytes(FLUSH_ALONE_BYTES * 2, 1), small = bytes(3, 2);
  p.queue(c, big);
  p.queue(c, small);
  p.flushNow(c);
  assert.equal(s.calls, ['cork', `write ${2 * FLUSH_ALONE_BYTES}`, 'write 3', 'uncork']);
  assert.ok(s.writes[0] === big && s.writes[1] === small, 'neither copied');
  p.flushNow(c);
  assert.is(s.calls.length, 4, 'nothing queued: no write');
  p.queue(c, small);
  c.closed = true;
  p.flushNow(c);
  assert.is(s.calls.length, 4, 'closed: no write');
  p.queue(c, small);
  assert.is(c.out.length, 1, 'a closed connection queues nothing more');
});

test('flush: a big reply last ends the batch (no empty write after it); exactly FLUSH_ALONE_BYTES of small replies are one batch', () => {
  const p = new Parser(limits());
  const [c, s] = conn();
  const small = bytes(4, 1), big = bytes(FLUSH_ALONE_BYTES, 2);
  p.queue(c, small);
  p.queue(c, big);
  p.flushNow(c);
  assert.equal(s.calls, ['cork', 'write 4', `write ${FLUSH_ALONE_BYTES}`, 'uncork']);
  // Small replies adding up to FLUSH_ALONE_BYTES exactly: not under it, so the corked path,
  // which gathers them as one run all the same.
  s.calls.length = 0;
  p.queue(c, bytes(FLUSH_ALONE_BYTES / 2, 3));
  p.queue(c, bytes(FLUSH_ALONE_BYTES / 2, 4));
  p.flushNow(c);
  assert.equal(s.calls, ['cork', `write ${FLUSH_ALONE_BYTES}`, 'uncork']);
});

test('flushAll: each connection once, however many replies; a connection queued again later flushes again', () => {
  const p = new Parser(limits());
  const [c1, s1] = conn();
  const [c2, s2] = conn();
  p.queue(c1, bytes(2, 1));
  p.queue(c1, bytes(3, 1));
  p.queue(c2, bytes(4, 1));
  assert.is(p.pending.length, 2);
  p.flushEvery();
  assert.equal(s1.calls, ['write 5']);
  assert.equal(s2.calls, ['write 4']);
  assert.is(p.pending.length, 0);
  assert.is(c1.queued, false);
  p.queue(c1, bytes(1, 1));
  assert.is(p.pending.length, 1);
  p.flushEvery();
  assert.equal(s1.calls, ['write 5', 'write 1']);
});

test('flush: reading pauses past MAX_PENDING_REPLY_BYTES unread (not at it), resumes on drain unless closed', () => {
  const p = new Parser(limits());
  const [c, s] = conn();
  s.writableLength = MAX_PENDING_REPLY_BYTES;
  p.queue(c, bytes(1, 1));
  p.flushNow(c);
  assert.not.ok(s.paused, 'exactly at the limit: still read');
  s.writableLength = MAX_PENDING_REPLY_BYTES + 1;
  p.queue(c, bytes(1, 1));
  p.flushNow(c);
  assert.ok(s.paused);
  s.drain?.();
  assert.not.ok(s.paused, 'resumed on drain');
  p.queue(c, bytes(1, 1));
  p.flushNow(c);
  assert.ok(s.paused);
  c.closed = true;
  s.drain?.();
  assert.ok(s.paused, 'a closed connection is not resumed');
});

test('sendValue: length header (and tag) before a buffer value; a string value in one latin1 frame', () => {
  const p = new Parser(limits());
  const [c, s] = conn();
  const v = bytes(5, 9);
  p.queueValue(c, v, 2);
  p.queueValue(c, 'h\u00e9', -1);
  assert.is(c.out.length, 3);
  assert.equal([...c.out[0]], [2, 5, 0, 0, 0, 0, 0, 0, 0]);
  assert.ok(c.out[1] === v);
  assert.equal([...c.out[2]], [2, 0, 0, 0, 0, 0, 0, 0, 0x68, 0xe9]);
  p.flushNow(c);
  assert.is(s.calls.length, 1);
});

test('putLatin1: one byte per char, short and long strings, nothing past the end', () => {
  for (const n of [0, 1, 63, 64, 65, 200]) {
    const s = Array.from({ length: n }, (_, i) => String.fromCharCode(0x20 + (i * 7) % 0xd0)).join('');
    const f = Buffer.alloc(n + 4, 0xaa);
    putLatin1(f, 2, s);
    assert.equal(f.subarray(2, 2 + n), Buffer.from(s, 'latin1'), `${n} chars`);
    assert.equal([...f.subarray(0, 2), ...f.subarray(2 + n)], [0xaa, 0xaa, 0xaa, 0xaa], `${n} chars: the bytes around untouched`);
  }
});

test('Conn.remote: the peer address and port, for log lines', () => {
  const c = new Conn({ remoteAddress: '10.77.0.2', remotePort: 4242 } as unknown as net.Socket, 7);
  assert.is(c.remote, '10.77.0.2:4242');
  assert.is(c.id, 7);
  assert.is(c.stage, 'validate');
});

test.run();
