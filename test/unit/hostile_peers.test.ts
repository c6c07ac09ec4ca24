/**
 * The hostile-peer suite (docs/security.md): seeded garbage, truncated, oversized, replayed and
 * impersonating input against every surface a peer can reach — the store (its parser through
 * the in-process link, and a flood of real sockets), the CPU mesh's handshake and frame parser,
 * shared-memory setup, the value decoders (objects, tensors, tensor dicts) and the launcher's
 * rendezvous. It prints its figures and fails on any crash (an exception escaping a parser, a
 * non-GroupcommError from a decoder), any wrong value accepted, RSS over the budget, or a
 * legitimate operation that failed or returned a wrong value during the attack. Most cases are
 * in-process decoder cases (cheap); the socket cases are few. GROUPCOMM_HOSTILE_SCALE scales them.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { Packr } from 'msgpackr';
import { prng } from '../helpers/prng.js';
import { isGroupcommError } from '../../host/base/errors.js';
import { decodeObject, decodeTensor, encodeObject, encodeTensor } from '../../host/pg/codec.js';
import { decodeTensorDict, encodeTensorDict } from '../../host/coordinator/tensor_dict.js';
import { Inbound } from '../../host/cpu/link/inbound.js';
import { CHALLENGE_SIZE, encodeAck, encodeHello, HEADER_SIZE, Status, writeHeader, decodeAck, ACK_SIZE } from '../../host/cpu/wire.js';
import { signHello } from '../../host/cpu/link/handshake.js';
import { CpuGroup } from '../../host/cpu/group.js';
import { Segment } from '../../host/cpu/shm.js';
import { TcpStore, TcpStoreServer } from '../../host/index.js';
import { tensor } from '../../host/core/tensor.js';
import { dtypeInfo } from '../../host/core/dtype.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { IS_BUN } from '../../host/base/runtime.js';

const SCALE = Number(process.env.GROUPCOMM_HOSTILE_SCALE ?? 1);
const SEED = Number(process.env.GROUPCOMM_HOSTILE_SEED ?? 0x7e57);
const RSS_BUDGET = 1536 * 1024 * 1024;
const rnd = prng(SEED);
const int = (n: number) => Math.floor(rnd() * n);

const fig = { cases: 0, crashes: 0, wrong: 0, peakRss: 0, quietOps: 0, attackOps: 0 };
const wrongs: string[] = [];
function wrong(what: string): void {
  fig.wrong++;
  if (wrongs.length < 5) wrongs.push(what);
}
const crashes: string[] = [];
const sampleRss = () => { fig.peakRss = Math.max(fig.peakRss, process.memoryUsage().rss); };
const rssTimer = setInterval(sampleRss, 50);
rssTimer.unref();

function crash(what: string, e: unknown): void {
  fig.crashes++;
  if (crashes.length < 5) crashes.push(`${what}: ${(e as Error)?.stack ?? e}`);
}

/** One mutation of `b`: flip, truncate, extend, splice garbage, or replace. */
function mutate(b: Uint8Array): Uint8Array {
  const c = Uint8Array.from(b);
  switch (int(6)) {
    case 0: for (let i = 1 + int(4); i > 0 && c.length; i--) c[int(c.length)] ^= 1 << int(8); return c;
    case 1: return c.subarray(0, int(c.length + 1));
    case 2: return new Uint8Array([...c, ...Array.from({ length: 1 + int(16) }, () => int(256))]);
    case 3: { if (!c.length) return c; const at = int(c.length); for (let i = at; i < Math.min(c.length, at + 8); i++) c[i] = [0xff, 0x00, 0x7f, 0x80][int(4)]; return c; }
    case 4: return Uint8Array.from({ length: int(64) }, () => int(256));
    default: { if (c.length < 8) return c; const at = int(c.length - 8); new DataView(c.buffer).setFloat64(at, [2 ** 40, 2 ** 53 - 1, -1, NaN, 2 ** 32][int(5)], true); return c; }
  }
}

const evil = new Packr({ moreTypes: true, structuredClone: true, useRecords: false });
const OBJ_HEADER = [0x67, 0x63, 0x01, 0x01];

/** A decoded value a peer must never be able to produce. */
function dangerous(v: unknown, depth = 0): boolean {
  if (depth > 64 || typeof v !== 'object' || v === null) return false;
  if (v instanceof RegExp || v instanceof Error) return true;
  if (Object.prototype.hasOwnProperty.call(v, '__proto__') && !Array.isArray(v) && Object.getPrototypeOf(v) !== Object.prototype) return true;
  const proto = Object.getPrototypeOf(v);
  if (proto !== null && proto !== Object.prototype && !(v instanceof Map || v instanceof Set || v instanceof Date || Array.isArray(v) || ArrayBuffer.isView(v) || v instanceof ArrayBuffer)) return true;
  const kids = v instanceof Map ? [...v.keys(), ...v.values()] : v instanceof Set ? [...v] : Array.isArray(v) ? v : ArrayBuffer.isView(v) ? [] : Object.values(v);
  return kids.some((k) => dangerous(k, depth + 1));
}

test('decoders: objects, tensors and tensor dicts from a peer', () => {
  const o = { key: 'k', src: 1 };
  const seeds = [
    encodeObject({ a: 1, b: [1, 2, 3], s: 'str', n: null, m: new Map([[1, 'x']]), set: new Set([1]), d: new Date(5), big: 2n ** 70n }),
    encodeObject({ seg: new Float32Array(2048), nested: { u8: new Uint8Array(5000) } }),
    new Uint8Array([...OBJ_HEADER, ...evil.pack({ r: /x/g })]),
    new Uint8Array([...OBJ_HEADER, ...evil.pack(Object.assign(new Error('e'), { name: 'valueOf' }))]),
    new Uint8Array([...OBJ_HEADER, ...Buffer.from('81a95f5f70726f746f5f5f81a178a179', 'hex')]),
  ];
  const tseeds = [encodeTensor(tensor(new Float32Array([1, 2, 3, 4]), { shape: [2, 2] })), encodeTensor(tensor(new Int32Array(100)))];
  const dseeds = [
    encodeTensorDict({ a: tensor(new Float32Array(8)), v: { x: 1 }, s: 'k' }, { inlineCpu: true }).frame,
    encodeTensorDict({ a: tensor(new Float32Array(8)), b: { deep: [1, 2] } }).frame,
  ];
  const n = Math.round(30_000 * SCALE);
  for (let i = 0; i < n; i++) {
    fig.cases++;
    const src = i % 5 === 0 ? seeds[2 + int(3)] : seeds[int(seeds.length)];
    const b = i < seeds.length ? seeds[i] : mutate(src);
    try {
      const v = decodeObject(b, o);
      if (dangerous(v)) wrong(`decodeObject accepted ${Buffer.from(b).toString('hex').slice(0, 120)}`);
    } catch (e) {
      if (!isGroupcommError(e, 'ERR_GROUPCOMM_PROTOCOL')) crash('decodeObject', e);
    }
  }
  for (let i = 0; i < Math.round(8_000 * SCALE); i++) {
    fig.cases++;
    const b = mutate(tseeds[int(tseeds.length)]);
    try {
      const t = decodeTensor(b, o);
      const want = t.shape.reduce((x, d) => x * d, 1) * dtypeInfo(t.dtype)!.itemSize;
      if (t.bytes.byteLength !== want) wrong(`decodeTensor: ${t.dtype} [${t.shape}] with ${t.bytes.byteLength} bytes accepted`);
    } catch (e) {
      if (!isGroupcommError(e, 'ERR_GROUPCOMM_PROTOCOL')) crash('decodeTensor', e);
    }
  }
  for (let i = 0; i < Math.round(12_000 * SCALE); i++) {
    fig.cases++;
    const b = mutate(dseeds[int(dseeds.length)]);
    try {
      const d = decodeTensorDict(b, { maxBytes: 1 << 20 });
      if (d.slots.some((s) => !(s.nbytes <= 1 << 20)) || dangerous(d.dict)) wrong(`decodeTensorDict accepted ${Buffer.from(b).toString('hex').slice(0, 160)}`);
    } catch (e) {
      if (!isGroupcommError(e)) crash('decodeTensorDict', e);
    }
  }
  // msgpackr's module-global state is intact: a clean value still decodes to itself.
  assert.equal(decodeObject(encodeObject({ ok: [1, 'two'] }), o), { ok: [1, 'two'] });
  sampleRss();
});

test('mesh frame parser: garbage, oversized and impossible headers after a valid ACK', () => {
  const max = 1 << 20;
  let allocated = 0;
  for (let i = 0; i < Math.round(10_000 * SCALE); i++) {
    fig.cases++;
    let malformed = 0;
    const inb = new Inbound(1, new Uint8Array(4096), { ack: () => {}, bye: () => {}, malformed: () => { malformed++; } }, max);
    inb.register('1:0:0', { dest: (_s, len) => { allocated = Math.max(allocated, len); return len <= max ? new Uint8Array(len) : null; }, done: () => {}, fail: () => {} });
    const parts: Uint8Array[] = [encodeAck(Status.OK, 1)];
    for (let k = int(4); k >= 0; k--) {
      const h = new Uint8Array(HEADER_SIZE);
      const len = [int(64), max, max + 1, 2 ** 40, 2 ** 53 - 1, -5, NaN, Infinity, 0.5][int(9)];
      writeHeader(h, 0, { kind: [1, 2, 3, 0x101, int(2 ** 32)][int(5)], tag: 0, seq: 0, slot: int(3) }, len);
      parts.push(h, Uint8Array.from({ length: int(80) }, () => int(256)));
    }
    const stream = mutate(Buffer.concat(parts));
    try {
      let at = 0;
      while (at < stream.length) {
        const buf = inb.nextBuffer();
        const k = Math.min(buf.byteLength, stream.length - at, 1 + int(200));
        buf.set(stream.subarray(at, at + k));
        inb.feed(buf, k);
        at += k;
      }
    } catch (e) {
      crash('Inbound.feed', e);
    }
    if (malformed > 1) wrong('Inbound reported malformed twice'); // reported once, then the stream is ignored
  }
  if (allocated > max) wrong(`Inbound asked for ${allocated} bytes`);
  sampleRss();
});

test('shm setup: offered names and sizes that are not ours are refused, never mapped', () => {
  const names = ['/gcpu-1-2', '/../../etc/passwd', '/gcpu-000000000000-1-' + 'a'.repeat(32), '', 'gcpu', '/x'.repeat(40)];
  for (let i = 0; i < Math.round(2_000 * SCALE); i++) {
    fig.cases++;
    const name = i < names.length ? names[i] : '/' + Buffer.from(Uint8Array.from({ length: int(60) }, () => 33 + int(90))).toString('latin1');
    const size = [int(2 ** 32), 1 << 16, 12345, 0, 2 ** 31][int(5)];
    try {
      const seg = Segment.open(name, size);
      seg.close();
      wrong(`Segment.open mapped '${name}'`);
    } catch (e) {
      if (!(e instanceof Error)) crash('Segment.open', e);
    }
  }
});

test('store: garbage requests through the in-process link, then a flood of sockets while a client works', async () => {
  const server = await TcpStoreServer.listen({ port: 0, secret: 'job', handshakeTimeoutMs: 2000, maxConnections: 512, maxBufferedBytes: 256 << 20 });
  const good = await TcpStore.create({ port: server.port, secret: 'job', timeoutMs: 20_000 });
  try {
    const seeds = [
      Buffer.from([0x00, 0xce, 0xf7, 0x85, 0x3c, 0xe1, ...new Uint8Array(32)]),
      Buffer.from([0x00, 0xce, 0xf7, 0x85, 0x3c, 0x01, 5, 0, 0, 0, 0, 0, 0, 0, ...Buffer.from('/k/ab'), 0, 0, 0, 0, 0, 1, 0, 0]),
      Buffer.from([0x00, 0xce, 0xf7, 0x85, 0x3c, 0xe6, 1, 0, 0, 0, 0, 0, 0, 0, 0x2f]),
    ];
    for (let i = 0; i < Math.round(3_000 * SCALE); i++) {
      fig.cases++;
      const c = server.connectLocal()!;
      c.on('error', () => {});
      c.write(mutate(seeds[int(seeds.length)]));
      c.destroy();
      if (i % 500 === 0) await new Promise((r) => setImmediate(r));
    }
    // Quiet rate, then the same work while hostile sockets connect, claim huge requests and idle.
    const work = async (ms: number) => {
      let ops = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < ms) {
        const k = `w/${ops}`;
        await good.set(k, String(ops));
        if (Buffer.from(await good.get(k)).toString() !== String(ops)) wrong('store returned a wrong value');
        await good.deleteKey(k);
        ops++;
      }
      return (ops * 1000) / ms;
    };
    fig.quietOps = await work(1000);
    const socks: net.Socket[] = [];
    const attack = (async () => {
      for (let i = 0; i < Math.round(300 * SCALE); i++) {
        fig.cases++;
        const s = net.connect(server.port, '127.0.0.1');
        s.on('error', () => {});
        s.on('connect', () => {
          const kind = i % 4;
          if (kind === 0) s.write(Buffer.from([0x00, 0xce, 0xf7, 0x85, 0x3c, 0x01, 4, 0, 0, 0, 0, 0, 0, 0, ...Buffer.from('/big'), 0, 0, 0, 0, 0, 1, 0, 0])); // unauthenticated SET of 2^40
          else if (kind === 1) s.write(Buffer.from([0x00, 0xce, 0xf7, 0x85, 0x3c, 0xe6, 1, 0, 0, 0, 0, 0, 0, 0, 0x2f])); // SUBSCRIBE '/'
          else if (kind === 2) s.write(Uint8Array.from({ length: 64 + int(4000) }, () => int(256)));
          // kind 3: connects and says nothing
        });
        socks.push(s);
        if (i % 25 === 0) await new Promise((r) => setTimeout(r, 5));
      }
    })();
    fig.attackOps = await work(1500);
    await attack;
    sampleRss();
    assert.is(server.numKeys <= 2, true, `${server.numKeys} keys: nothing the attackers sent was stored`);
    for (const s of socks) s.destroy();
  } finally {
    await good.close();
    await server.close();
  }
});

test('mesh: forged, replayed, wrong-secret and misdirected HELLOs against a rank in setup; the group then forms and computes correctly', async () => {
  const store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 20_000, secret: 'job' });
  const name = 'hostile-mesh';
  try {
    const first = CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: name, timeoutMs: 20_000, secret: 'job' });
    const port = Number(Buffer.from(await store.get(`groupcomm/cpu/${name}/0/addr/0`)).toString().split(':')[1]);
    const base = { rank: 1, worldSize: 2, epoch: 0, name, chunkBytes: 512 * 1024, smallBytes: 64 * 1024, toRank: 0, maxFrameBytes: 1 << 20 };
    const recorded = encodeHello(base);
    signHello(Buffer.from('job'), recorded, Buffer.alloc(32, 9));
    const attempt = (k: number) => new Promise<void>((resolve) => {
      fig.cases++;
      const s = net.connect(port, '127.0.0.1');
      let got = Buffer.alloc(0);
      let sent = false;
      // A truncated HELLO is simply waited for (until setup ends): give up on it.
      setTimeout(() => s.destroy(), 1000).unref();
      s.on('error', () => resolve());
      s.on('data', (d) => {
        got = Buffer.concat([got, d]);
        if (!sent && got.length >= CHALLENGE_SIZE) {
          sent = true;
          const nonce = got.subarray(8, CHALLENGE_SIZE);
          let h: Buffer;
          if (k % 4 === 0) h = recorded; // replay
          else if (k % 4 === 1) { h = encodeHello(base); signHello(Buffer.from('wrong'), h, nonce); } // wrong secret
          else if (k % 4 === 2) { h = encodeHello(base); } // unsigned
          else h = Buffer.from(mutate(recorded)); // garbage
          s.write(h);
          got = got.subarray(CHALLENGE_SIZE);
        }
      });
      s.on('close', () => {
        if (got.length >= ACK_SIZE && decodeAck(got).status === Status.OK) wrong(`mesh accepted forged HELLO kind ${k % 4}`);
        resolve();
      });
    });
    for (let k = 0; k < Math.round(200 * SCALE); k += 20) await Promise.all(Array.from({ length: 20 }, (_, j) => attempt(k + j)));
    const gs = await Promise.all([first, CpuGroup.create({ store, rank: 1, worldSize: 2, groupName: name, timeoutMs: 20_000, secret: 'job' })]);
    for (let i = 0; i < 20; i++) {
      fig.cases++;
      const ts = [tensor(new Int32Array([i, 1])), tensor(new Int32Array([10, 2]))];
      await Promise.all(gs.map((g, r) => g.allReduce(ts[r], { out: ts[r] })));
      if (ts[0].data[0] !== i + 10 || ts[1].data[1] !== 3) wrong('allReduce result');
    }
    await Promise.all(gs.map((g) => g.destroy()));
  } finally {
    await store.close();
  }
});

test('launcher rendezvous: ranks get the generated secret; its store refuses a client without it', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gc-hostile-'));
  const script = path.join(dir, 'rank.mjs');
  const entry = path.join(packageRoot(), 'dist', 'host', 'index.js');
  fs.writeFileSync(script, `
    import { TcpStore } from ${JSON.stringify(entry)};
    const port = Number(process.env.MASTER_PORT);
    let outsider = 'accepted';
    try { const s = await TcpStore.create({ port, secret: 'a guess', timeoutMs: 3000 }); await s.close(); }
    catch (e) { outsider = e.code; }
    const s = await TcpStore.create({ port, timeoutMs: 5000 }); // GROUPCOMM_SECRET from the launcher
    await s.set('x', '1'); await s.close();
    console.log(JSON.stringify({ secretLength: (process.env.GROUPCOMM_SECRET ?? '').length, outsider }));
  `);
  const env = { ...process.env };
  delete env.GROUPCOMM_SECRET;
  const bin = path.join(packageRoot(), 'bin', 'groupcomm.js');
  const r = spawnSync(process.execPath, [bin, 'launch', '-n', '1', '--no-prefix', script], { env, encoding: 'utf8', timeout: 30_000 });
  fs.rmSync(dir, { recursive: true, force: true });
  fig.cases++;
  assert.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.ok(out.secretLength >= 32, `secret of ${out.secretLength} chars`);
  if (out.outsider !== 'ERR_GROUPCOMM_AUTH') wrong(`launcher store: outsider ${out.outsider}`);
});

test('figures', () => {
  clearInterval(rssTimer);
  sampleRss();
  const mib = (b: number) => `${(b / 1048576).toFixed(0)} MiB`;
  console.log(`\n  hostile-peer suite (${IS_BUN ? 'bun' : 'node'}, seed ${SEED}): ${fig.cases} cases, ${fig.crashes} crashes, ${fig.wrong} wrong values accepted, ` +
    `peak RSS ${mib(fig.peakRss)}, legitimate store ops/s ${fig.quietOps.toFixed(0)} quiet / ${fig.attackOps.toFixed(0)} under attack`);
  for (const c of crashes) console.log(`  crash: ${c.slice(0, 400)}`);
  for (const w of wrongs) console.log(`  wrong: ${w}`);
  assert.is(fig.crashes, 0, 'crashes');
  assert.is(fig.wrong, 0, 'wrong values accepted');
  assert.ok(fig.peakRss < RSS_BUDGET, `peak RSS ${mib(fig.peakRss)} over ${mib(RSS_BUDGET)}`);
  assert.ok(fig.attackOps > 0, 'legitimate traffic continued during the attack');
});

test.run();
