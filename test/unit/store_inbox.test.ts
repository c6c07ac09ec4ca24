// Inbox (store/protocol.ts): the bytes a connection received and has not parsed. Checked here:
// reads handed over as transient views of a reused read buffer (Node's onread, connect.ts) are
// copied — a big value straight into the buffer that holds all of it — and the server's inbox
// (growWithReceived) never allocates more than a few times what arrived.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Inbox } from '../../host/store/protocol.js';

/** One read buffer reused for every read, as net's onread does. */
const scratch = Buffer.alloc(64 * 1024);
function read(bytes: Uint8Array): Buffer {
  scratch.set(bytes);
  return scratch.subarray(0, bytes.length);
}
const fill = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

test('transient reads: a whole message is copied out of the read buffer, which may then be overwritten', () => {
  const box = new Inbox();
  const msg = fill(100, 1);
  assert.ok(box.push(read(msg), true));
  scratch.fill(0xee);
  assert.equal([...box.buf.subarray(box.start, box.end)], [...msg]);
});

test('transient reads: a big value arriving in pieces lands in one buffer of its size, intact', () => {
  const box = new Inbox();
  const value = fill(200_000, 3);
  const piece = 50_000;
  // The first read: the parser learns the message needs all 200 000 bytes.
  assert.ok(box.push(read(value.subarray(0, piece)), true));
  box.consume(0, value.length);
  let whole: Buffer | undefined;
  for (let at = piece; at < value.length; at += piece) {
    const ready = box.push(read(value.subarray(at, at + piece)), true);
    scratch.fill(0xee); // the socket's next read overwrites its buffer
    if (at === piece) {
      whole = box.buf;
      assert.is(whole.length, value.length, 'sized for the whole message at its second read');
    }
    assert.is(box.buf, whole, 'later reads are copied into that same buffer');
    assert.is(ready, at + piece >= value.length);
  }
  assert.equal(Buffer.compare(box.buf.subarray(box.start, box.end), Buffer.from(value)), 0);
});

test('non-transient reads are borrowed as they are (no copy) while nothing is pending', () => {
  const box = new Inbox();
  const own = Buffer.from(fill(100, 5));
  box.push(own);
  assert.is(box.buf, own);
});

test('growWithReceived: a declared length is not an allocation, growth is at most 4x what arrived', () => {
  const box = new Inbox(true);
  box.push(Buffer.alloc(1000));
  box.consume(0, 1 << 30); // a peer claims a 1 GiB message
  box.push(Buffer.alloc(1000));
  assert.ok(box.held <= 64 * 1024, `${box.held} bytes held for 2000 received`);
  for (let i = 0; i < 100; i++) box.push(Buffer.alloc(1000));
  assert.ok(box.held <= 4 * 102_000, `${box.held} bytes held for 102 000 received`);
  assert.ok(box.held >= 102_000);
});

test.run();
