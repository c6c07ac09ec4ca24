// The server's request handling (server_ops.ts) at its edges, from raw sockets: VALIDATE again on
// a ready connection, which CHECK counts as groupcomm's extension probe, and which of two nested
// subscriptions gets a key (the shortest prefix, whatever the order they were made in).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '../../host/index.js';
import { EXT_PROBE_KEY } from '../../host/store/protocol.js';
import { Raw, VALIDATE, keys, ping, str, withServer, sync } from './store_raw.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const op = (n: number) => Buffer.from([n]);
const SET = 1, CHECK = 5, SUBSCRIBE = 0xe6;
const set = (k: string, v: string | Buffer) => Buffer.concat([op(SET), str(k), str(v)]);

test('VALIDATE again on a ready connection: the right magic is accepted silently, a wrong one closes it', () => withServer(async (server) => {
  const r = await Raw.connect(server.port);
  try {
    r.write(VALIDATE, VALIDATE, VALIDATE);
    await sync(r); // nothing answered the VALIDATEs: the echo is the first reply
    assert.not.ok(r.closed);
    const bad = Buffer.from(VALIDATE);
    bad[1] ^= 1;
    r.write(bad);
    assert.ok(await r.waitClosed(3000), 'closed on a wrong magic');
    assert.is(r.pending, 0, 'nothing answered it');
  } finally {
    r.close();
  }
}));

test('only a CHECK of the probe key alone makes a connection a groupcomm client (SUBSCRIBE needs it)', () => withServer(async (server) => {
  const subscribeAfter = async (checked: string[]): Promise<'ok' | 'closed'> => {
    const r = await Raw.connect(server.port);
    try {
      r.write(VALIDATE, op(CHECK), keys(...checked), op(SUBSCRIBE), str('/g/to/1/'));
      await r.read(1); // the CHECK's reply
      if (await r.waitClosed(300)) return 'closed';
      assert.is((await r.read(1))[0], 0, 'SUBSCRIBE OK');
      return 'ok';
    } finally {
      r.close();
    }
  };
  assert.is(await subscribeAfter(['/x']), 'closed', 'one other key');
  assert.is(await subscribeAfter([EXT_PROBE_KEY, '/x']), 'closed', 'the probe and another key');
  assert.is(await subscribeAfter(['/x', EXT_PROBE_KEY]), 'closed', 'another key, then the probe');
  await pause(20); // the subscribers above are gone: /g/to/1/ is free
  assert.is(await subscribeAfter([EXT_PROBE_KEY]), 'ok', 'the probe alone');
}));

test('nested subscriptions: a key under both goes to the shorter prefix, whichever subscribed first', () => withServer(async (server) => {
  const w = await Raw.connect(server.port);
  w.write(VALIDATE);
  // Lengths 3 and 17: in the wrong order both by insertion and as text ("17" < "3").
  const short = '/n/', long = '/n/deeper/longer/';
  for (const order of [[long, short], [short, long]]) {
    const subs = new Map<string, Raw>();
    try {
      for (const prefix of order) {
        const r = await Raw.connect(server.port);
        subs.set(prefix, r);
        r.write(VALIDATE, op(SUBSCRIBE), str(prefix));
        assert.is((await r.read(1))[0], 0, `SUBSCRIBE ${prefix} OK`);
      }
      const key = long + 'k';
      w.write(set(key, 'v'));
      await sync(w);
      assert.ok((await subs.get(short)!.read(8 + key.length + 8 + 1)).equals(Buffer.concat([str(key), str('v')])), `${order}: pushed to ${short}`);
      await pause(20);
      assert.is(subs.get(long)!.pending, 0, `${order}: nothing pushed to ${long}`);
      assert.is(server.numKeys, 0, 'not stored');
    } finally {
      for (const r of subs.values()) r.close();
    }
    await pause(20); // both subscriptions dropped with their connections
  }
  w.close();
}, { subscribePrefixes: 'any' }));

test.run();
