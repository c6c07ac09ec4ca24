// Wire interop with PyTorch's TCPStore on loopback, both ways: a torch client against our server
// and our client against a torch server. Runs when a torch ≥ 2.2 is found (see test/helpers/torch_env.ts);
// otherwise every case is reported as skipped, with the reason printed.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { findTorch } from '../helpers/torch_env.js';

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');
const EVENT_TIMEOUT_MS = 45_000;

const found = findTorch();

test('torch lookup: finds a torch ≥ 2.2 or says why not', () => {
  if (found.ok) assert.match(found.torch.version, /^(2\.([2-9]|\d\d)|[3-9])/);
  else assert.ok(found.reason.length > 0);
});
const CASES = [
  'torch client → groupcomm server',
  'groupcomm client → torch server',
  'torch client handshake bytes: 00 ce f7 85 3c, then PING 0d + its pid',
];

if (!found.ok) {
  console.log(`interop: skipped, no PyTorch ≥ 2.2 found: ${found.reason}`);
  for (const name of CASES) test.skip(name, () => {});
} else {
  const torch = found.torch;
  console.log(`interop: torch ${torch.version} (${torch.where})`);
  let py: ChildProcess | undefined;
  let server: TcpStoreServer | undefined;
  let stderr = '';
  let torchPort: number | undefined;
  const events: Array<Record<string, any>> = [];
  const waiters: Array<() => void> = [];

  /** The next event named `name` from the python peer (its stdout, one JSON object per line). */
  async function next(name: string): Promise<Record<string, any>> {
    const t0 = Date.now();
    for (;;) {
      const i = events.findIndex((e) => e.event === name);
      if (i >= 0) return events.splice(i, 1)[0];
      if (!py || py.exitCode !== null) throw new Error(`python peer exited before '${name}':\n${stderr}`);
      if (Date.now() - t0 > EVENT_TIMEOUT_MS) throw new Error(`no '${name}' from the python peer after ${EVENT_TIMEOUT_MS}ms:\n${stderr}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 500);
      });
    }
  }

  test.before(async () => {
    server = await TcpStoreServer.listen({ port: 0 });
    const [cmd, args] = torch.command(path.join(packageRoot(), 'test/interop/torch_peer.py'));
    py = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    py.stderr!.on('data', (d) => (stderr += d));
    readline.createInterface({ input: py.stdout! }).on('line', (line) => {
      try {
        events.push(JSON.parse(line));
      } catch {
        stderr += `(stdout) ${line}\n`;
      }
      for (const w of waiters.splice(0)) w();
    });
    py.on('exit', () => { for (const w of waiters.splice(0)) w(); });
  });

  test.after(async () => {
    if (py && py.exitCode === null) py.kill('SIGKILL');
    await server?.close();
  });

  test(CASES[0], async () => {
    const ours = await TcpStore.create({ port: server!.port, timeoutMs: 30_000 });
    try {
      await ours.set('from_ts', 'ts_value');
      torchPort = (await next('torch_server')).port;
      py!.stdin!.write(`${server!.port}\n`);
      await next('need_late');
      await ours.set('late', 'late from ts');
      const r = (await next('client_done')).results;
      assert.is(r.get_ts_key, 'ts_value');
      assert.equal(r.add, [5, 21]);
      assert.is(r.get_ctr, '21');
      assert.is(r.cas_missing, 'wrong');
      assert.is(r.cas_create, 'first');
      assert.is(r.cas_wrong, 'first');
      assert.is(r.cas_right, 'second');
      assert.equal(r.check, [true, false]);
      // torch's own message, produced after our server answered its CANCEL_WAIT properly
      assert.match(r.wait_timeout, /wait timeout after 200ms, keys: \/never/);
      assert.is(r.after_timeout, 'ok');
      assert.equal(r.multi_get, ['v1', 'v2']);
      assert.is(r.append, 'potato');
      assert.equal(r.delete, [true, false]);
      // from_ts, from_torch, ctr, cas, after_timeout, m2, ap
      assert.is(r.num_keys, 7);
      assert.is(r.late, 'late from ts');
      // and what torch wrote is what we read
      assert.is(text(await ours.get('from_torch')), 'torch_value');
      assert.is(text(await ours.get('ap')), 'potato');
    } finally {
      await ours.close();
    }
  });

  test(CASES[1], async () => {
    assert.ok(torchPort, 'the torch server never reported its port');
    const c = await TcpStore.create({ port: torchPort!, timeoutMs: 30_000 });
    try {
      assert.not.ok(c.extended, 'a torch server must not be taken for a groupcomm one');
      assert.is(text(await c.get('py_key')), 'hello from torch');
      await c.set('ts_set', 'set by ts');
      assert.is(await c.add('ts_ctr', 5), 5);
      assert.is(await c.add('ts_ctr', 16), 21);
      assert.is(text(await c.compareSet('ts_cas', 'wrong', 'x')), 'wrong');
      assert.is(text(await c.compareSet('ts_cas', '', 'first')), 'first');
      assert.is(text(await c.compareSet('ts_cas', 'nope', 'second')), 'first');
      assert.is(text(await c.compareSet('ts_cas', 'first', 'second')), 'second');
      assert.ok(await c.check(['ts_set']));
      assert.not.ok(await c.check(['missing']));
      try {
        await c.wait(['never'], { timeoutMs: 200 });
        assert.unreachable('wait must time out');
      } catch (e) {
        assert.ok(isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT'), String(e));
      }
      await c.set('after', 'ok');
      assert.is(text(await c.get('after')), 'ok');
      await c.multiSet(['ts_m1', 'ts_m2'], ['v1', 'v2']);
      assert.equal((await c.multiGet(['ts_m1', 'ts_m2'])).map(text), ['v1', 'v2']);
      await c.append('ts_append', 'po');
      await c.append('ts_append', 'tato');
      await c.set('ts_del', 'x');
      assert.ok(await c.deleteKey('ts_del'));
      assert.not.ok(await c.deleteKey('ts_del'));
      // py_key ts_set ts_ctr ts_cas after ts_m1 ts_m2 ts_append
      assert.is(await c.numKeys(), 8);
      assert.ok((await c.ping()) >= 0);
      // pipelining works against torch's server too (it answers in order)
      const n = 200;
      await Promise.all(Array.from({ length: n }, (_, i) => c.set(`pipe${i}`, `v${i}`)));
      const got = await Promise.all(Array.from({ length: n }, (_, i) => c.get(`pipe${i}`)));
      got.forEach((v, i) => assert.is(text(v), `v${i}`));
      // a get that blocks until the torch side sets the key
      const late = c.get('py_late', { timeoutMs: 30_000 });
      await c.set('ts_waiting', '1');
      assert.is(text(await late), 'late from torch');
      await c.set('ts_done', '1');
      const r = (await next('server_done')).results;
      assert.is(r.ts_set, 'set by ts');
      assert.is(r.ts_ctr, '21');
      assert.is(r.ts_append, 'potato');
      assert.equal(r.ts_multi, ['v1', 'v2']);
      assert.is(r.ts_cas, 'second');
      assert.is(r.ts_deleted, false);
      assert.is(r.num_keys, 8 + n + 3);
    } finally {
      await c.close();
    }
  });

  test(CASES[2], async () => {
    let got = Buffer.alloc(0);
    const recorder = net.createServer((sock) => {
      sock.on('data', (d: Buffer) => {
        const before = got.length;
        got = Buffer.concat([got, d]);
        if (before < 10 && got.length >= 10) sock.write(got.subarray(6, 10)); // echo the nonce
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => recorder.listen(0, '127.0.0.1', () => r()));
    try {
      py!.stdin!.write(`${(recorder.address() as net.AddressInfo).port}\n`);
      const { pid } = await next('handshake_done');
      assert.is(got.subarray(0, 5).toString('hex'), '00cef7853c');
      assert.is(got[5], 13);
      assert.is(got.readUInt32LE(6), pid);
      assert.is(got.length, 10, 'nothing after the handshake with wait_for_workers=False');
    } finally {
      await new Promise<void>((r) => { recorder.close(() => r()); setTimeout(r, 300); });
    }
  });
}

test.run();
