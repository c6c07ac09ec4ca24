// Store.publish: keys meant for a subscriber, written like set / multiSet but without the
// client's write bookkeeping, and applied in memory when the server is in the publisher's own
// process (TcpStoreServer.publishLocal). Checked with a TCP publisher and with the isServer
// (in-process) publisher, against TCP and in-process subscribers, a torch-mode client and PrefixStore.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PrefixStore, TcpStore, TcpStoreServer } from '../../host/index.js';
import { rejectsWith } from '../helpers/rejects.js';
import net from 'node:net';
import { IS_BUN } from '../../host/base/runtime.js';
import { le64, str, VALIDATE } from './store_raw.js';

const SUBSCRIBE = Buffer.from([0xe6]);

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');
const bytes = (s: string) => new Uint8Array(Buffer.from(s));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Mode = 'tcp' | 'in-process';
const MODES: Mode[] = ['tcp', 'in-process'];

/** `pub` publishes (a TCP client, or the isServer client whose server is in memory); `other` is a TCP client. */
async function setup(mode: Mode, limits?: { maxValueBytes: number }) {
  if (mode === 'tcp') {
    const server = await TcpStoreServer.listen({ port: 0, limits, subscribePrefixes: 'any' });
    const pub = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
    const other = await TcpStore.create({ port: server.port, timeoutMs: 5000 });
    return { pub, other, close: async () => { await pub.close(); await other.close(); await server.close(); } };
  }
  const pub = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, limits, subscribePrefixes: 'any' });
  const other = await TcpStore.create({ port: pub.port, timeoutMs: 5000 });
  return { pub, other, close: async () => { await other.close(); await pub.close(); } };
}

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

for (const mode of MODES) {
  test(`${mode} publisher: subscribed keys are pushed in order and not stored; other keys are stored; one call may mix both`, async () => {
    const { pub, other, close } = await setup(mode);
    try {
      const got: [string, string][] = [];
      const sub = await other.subscribe('box/', (k, v) => { got.push([k, text(v)]); });
      assert.ok(sub);
      const before = await other.numKeys();
      await pub.publish(['box/a'], [bytes('A')]);
      await pub.publish(['box/b', 'kept/x', 'box/c'], [bytes('B'), bytes('X'), bytes('C')]);
      await until(() => got.length === 3, 'three pushes');
      assert.equal(got, [['box/a', 'A'], ['box/b', 'B'], ['box/c', 'C']]);
      assert.is(text(await other.get('kept/x')), 'X');
      assert.is(await other.numKeys(), before + 1);
      await pub.publish([], []);
      sub!.close();
    } finally {
      await close();
    }
  });

  test(`${mode} publisher: a publish follows this client's earlier unawaited requests (same key, and a subscribed prefix)`, async () => {
    const { pub, other, close } = await setup(mode);
    try {
      const got: string[] = [];
      const sub = await other.subscribe('ord/', (k) => { got.push(k); });
      for (let i = 0; i < 20; i++) {
        const k = `plain/${i}`;
        void pub.set(k, 'old');
        void pub.set(`ord/${i}/set`, 'via set');
        await pub.publish([k, `ord/${i}/pub`], [bytes('new'), bytes('via publish')]);
      }
      for (let i = 0; i < 20; i++) assert.is(text(await other.get(`plain/${i}`)), 'new', `plain/${i}`);
      await until(() => got.length === 40, 'forty pushes');
      assert.equal(got, [...Array(20).keys()].flatMap((i) => [`ord/${i}/set`, `ord/${i}/pub`]));
      sub!.close();
    } finally {
      await close();
    }
  });

  test(`${mode} publisher: values are copied (the caller may reuse its buffer at once); bad calls reject and lose nothing`, async () => {
    const { pub, other, close } = await setup(mode, { maxValueBytes: 1024 });
    try {
      const got: string[] = [];
      const sub = await other.subscribe('cp/', (_k, v) => { got.push(text(v)); });
      const buf = bytes('first');
      const p = pub.publish(['cp/1', 'stored/1'], [buf, buf]);
      buf.set(bytes('XXXXX'));
      await p;
      await until(() => got.length === 1, 'one push');
      assert.equal(got, ['first']);
      assert.is(text(await other.get('stored/1')), 'first');
      const e = await rejectsWith(pub.publish(['cp/2', 'cp/3'], [bytes('x')]), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
      assert.match(e.message, /2 keys but 1 values/);
      await rejectsWith(pub.publish(['cp/2'], ['text' as unknown as Uint8Array]), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
      if (mode === 'in-process') {
        // Over TCP the server drops a connection that sends an oversized value; in memory the call says so.
        const big = await rejectsWith(pub.publish(['cp/big'], [new Uint8Array(2048)]), 'ERR_GROUPCOMM_INVALID_ARGUMENT');
        assert.match(big.message, /maxValueBytes/);
      }
      await pub.publish(['cp/4'], [bytes('after')]);
      await until(() => got.length === 2, 'the push after the bad calls');
      assert.equal(got, ['first', 'after']);
      sub!.close();
      await pub.close();
      await rejectsWith(pub.publish(['cp/5'], [bytes('x')]), 'ERR_GROUPCOMM_DESTROYED');
    } finally {
      await close();
    }
  });
}

test('in-process publisher and in-process subscriber: a call each way, no link; a subscriber may publish from inside its callback', async () => {
  const a = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, subscribePrefixes: 'any' });
  const b = await a.clone();
  const remote = await TcpStore.create({ port: a.port, timeoutMs: 5000 });
  try {
    const got: string[] = [];
    const raw: Uint8Array[] = [];
    const answers: string[] = [];
    // b plays a hub: it answers every question on the spot, by publishing to the asker.
    const sb = await b.subscribe('hub/', (k, v) => {
      got.push(`${k}=${text(v)}`);
      raw.push(v);
      void b.publish([`ans/${k.slice(4)}`], [bytes(`re:${text(v)}`)]);
    });
    const sr = await remote.subscribe('ans/', (k, v) => { answers.push(`${k}=${text(v)}`); });
    const sent = bytes('q1');
    await a.publish(['hub/1'], [sent]);
    // Delivered inside the call: nothing to wait for on this side; and a copy, not the caller's buffer.
    assert.equal(got, ['hub/1=q1']);
    sent.fill(0);
    assert.is(text(raw[0]), 'q1');
    await a.publish(['hub/2', 'hub/3'], [bytes('q2'), bytes('q3')]);
    assert.equal(got, ['hub/1=q1', 'hub/2=q2', 'hub/3=q3']);
    await until(() => answers.length === 3, 'three answers');
    assert.equal(answers, ['ans/1=re:q1', 'ans/2=re:q2', 'ans/3=re:q3']);
    sb!.close();
    sr!.close();
  } finally {
    await remote.close();
    await b.close();
    await a.close();
  }
});

test('handOver: a big value goes to a subscriber\'s socket as it is (no copy); without it, and to an in-process subscriber, a copy', async () => {
  const pub = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 20_000, subscribePrefixes: 'any' });
  const local = await pub.clone();
  const socket = net.connect({ port: pub.port, host: '127.0.0.1' });
  const chunks: Buffer[] = [];
  let got = 0;
  socket.on('data', (d: Buffer) => { chunks.push(d); got += d.length; });
  try {
    socket.write(Buffer.concat([VALIDATE, SUBSCRIBE, str('/r/')]));
    await until(() => got >= 1, 'the SUBSCRIBE reply');
    const seen: Uint8Array[] = [];
    const sub = await local.subscribe('mine/', (_k, v) => { seen.push(v); });
    // The subscriber stops reading: a value far beyond the socket buffers (at most 4 + 32 MiB
    // here, and they start small) is still in this process after publish returns. Changing its
    // last byte then shows whether the server kept the caller's buffer or a copy.
    const size = 48 << 20;
    socket.pause();
    const given = new Uint8Array(size).fill(1);
    const copied = new Uint8Array(size).fill(2);
    await pub.publish(['r/given'], [given], { handOver: true });
    await pub.publish(['r/copied'], [copied]);
    await pub.publish(['mine/x'], [given], { handOver: true });
    given[size - 1] = 9;
    copied[size - 1] = 9;
    socket.resume();
    const head = (key: string) => Buffer.concat([str(key), le64(size)]);
    const a0 = 1 + head('/r/given').length;
    const b0 = a0 + size + head('/r/copied').length;
    await until(() => got >= b0 + size, 'both pushes', 20_000);
    const all = Buffer.concat(chunks, got);
    assert.ok(all.subarray(1, a0).equals(head('/r/given')));
    assert.ok(all.subarray(a0 + size, b0).equals(head('/r/copied')));
    assert.is(all[a0], 1);
    // Bun's socket copies what it cannot write at once, so there the buffer is free again anyway.
    if (!IS_BUN) assert.is(all[a0 + size - 1], 9, 'handed over: the very buffer was written');
    assert.is(all[b0 + size - 1], 2, 'not handed over: a copy was written');
    assert.is(seen.length, 1);
    assert.is(seen[0][size - 1], 1, 'an in-process subscriber gets its own copy');
    sub!.close();
  } finally {
    socket.destroy();
    await local.close();
    await pub.close();
  }
});

test('torch-mode client (extensions: false): publish is a plain SET / MULTI_SET, and the keys are stored', async () => {
  const server = await TcpStoreServer.listen({ port: 0, subscribePrefixes: 'any' });
  const t = await TcpStore.create({ port: server.port, timeoutMs: 5000, extensions: false });
  try {
    await t.publish(['p/1'], [bytes('one')]);
    await t.publish(['p/2', 'p/3'], [bytes('two'), bytes('three')]);
    assert.equal((await t.multiGet(['p/1', 'p/2', 'p/3'])).map(text), ['one', 'two', 'three']);
  } finally {
    await t.close();
    await server.close();
  }
});

test('PrefixStore: publish writes x/k (to x/\'s subscriber), also over a store without publish', async () => {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, subscribePrefixes: 'any' });
  try {
    const got: string[] = [];
    const sub = await s.subscribe('x/in/', (k, v) => { got.push(`${k}=${text(v)}`); });
    const view = new PrefixStore('x', s);
    await view.publish(['in/1', 'out/1'], [bytes('a'), bytes('b')]);
    assert.equal(got, ['x/in/1=a']);
    assert.is(text(await s.get('x/out/1')), 'b');
    // A store without publish (here: one whose publish is hidden) gets a multiSet.
    const bare = new PrefixStore('y', new Proxy(s, { get: (t, p) => (p === 'publish' ? undefined : (t as never)[p]) }) as unknown as TcpStore);
    await bare.publish(['k'], [bytes('c')]);
    assert.is(text(await s.get('y/k')), 'c');
    sub!.close();
  } finally {
    await s.close();
  }
});

test('publishesLocally: only a client whose server is in this process (and speaks the extensions), through any PrefixStore; not once closed', async () => {
  const host = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  const remote = await TcpStore.create({ port: host.port, timeoutMs: 5000 });
  const torchHost = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, extensions: false });
  const overTcp = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000, inProcess: false });
  try {
    assert.is(host.publishesLocally, true);
    assert.is(new PrefixStore('a', new PrefixStore('b', host)).publishesLocally, true);
    assert.is(remote.publishesLocally, false);
    assert.is(new PrefixStore('a', remote).publishesLocally, false);
    assert.is(torchHost.publishesLocally, false, 'a torch-mode client publishes with SET over its link');
    assert.is(overTcp.publishesLocally, false, 'inProcess: false reaches its own server over TCP');
  } finally {
    await remote.close();
    await torchHost.close();
    await overTcp.close();
    await host.close();
  }
  assert.is(host.publishesLocally, false);
});

test.run();
