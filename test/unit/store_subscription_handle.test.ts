// SubscriptionHandle (host/store/client_subscription.ts), what subscribe() hands out over TCP or
// in memory: close() stops the stream without a reason; fail(e) stops it with one; onClose
// listeners hear the reason once, also when added after the end.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SubscriptionHandle } from '../../host/store/client_subscription.js';
import { peerLostError, isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

function handle() {
  const stops: (GroupcommError | undefined)[] = [];
  const h = new SubscriptionHandle((e) => { stops.push(e); });
  const heard: (Error | undefined)[] = [];
  h.onClose((e) => heard.push(e));
  return { h, stops, heard };
}

test('close(): stops the stream without a reason; listeners hear nothing wrong, once', () => {
  const { h, stops, heard } = handle();
  h.close();
  assert.equal(stops, [undefined]);
  assert.equal(heard, [undefined]);
  h.end(new Error('late'));
  assert.equal(heard, [undefined], 'ended once');
  // A listener added after a close on purpose hears no error either.
  const after: (Error | undefined)[] = [];
  h.onClose((e) => after.push(e));
  assert.equal(after, [undefined]);
});

test('fail(e): stops the stream with e; listeners, before and after the end, hear e', () => {
  const { h, stops, heard } = handle();
  const e = peerLostError('store closed');
  h.fail(e);
  assert.equal(stops, [e]);
  assert.equal(heard.length, 1);
  assert.is(heard[0], e);
  const after: (Error | undefined)[] = [];
  h.onClose((x) => after.push(x));
  assert.is(after[0], e);
  h.end();
  assert.is(heard.length, 1, 'ended once');
});

test('end(e) from the stream: every listener hears e; one added later too; undefined means a plain end', () => {
  const { h, stops, heard } = handle();
  const second: (Error | undefined)[] = [];
  h.onClose((x) => second.push(x));
  const e = new Error('connection lost');
  h.end(e);
  assert.equal(stops, [], 'the stream ended by itself: nothing to stop');
  assert.is(heard[0], e);
  assert.is(second[0], e);
  h.end(new Error('again'));
  assert.is(heard.length, 1);

  // Ended without a reason and not closed on purpose: a late listener is told it is over.
  const quiet = new SubscriptionHandle(() => {});
  quiet.end();
  let told: Error | undefined;
  quiet.onClose((x) => { told = x; });
  assert.ok(isGroupcommError(told, 'ERR_GROUPCOMM_DESTROYED'), String(told));
});

test('close() after the stream failed: listeners already heard the failure; a new one hears nothing wrong', () => {
  const { h, heard } = handle();
  const e = new Error('lost');
  h.end(e);
  h.close();
  assert.equal(heard, [e]);
  let later: Error | undefined = new Error('unset');
  h.onClose((x) => { later = x; });
  assert.is(later, undefined);
});

test('close(): a stream that reports its own end with an error while stopping is still a close on purpose', () => {
  let h!: SubscriptionHandle;
  h = new SubscriptionHandle(() => h.end(new Error('socket closed')));
  const heard: (Error | undefined)[] = [];
  h.onClose((e) => heard.push(e));
  h.close();
  assert.equal(heard, [undefined]);
});

test.run();
