/**
 * The CPU mesh's trust boundary (docs/security.md): peers prove the job secret in a
 * challenge–response bound to group, epoch and both ranks; an outsider who wrote a rank's
 * address key, replays a HELLO or knows another secret is refused; listening off loopback needs
 * a secret; shared-memory setup checks what the ACK names.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { CpuGroup } from '../../host/cpu/group.js';
import { Mesh } from '../../host/cpu/mesh.js';
import { TcpStore } from '../../host/store/client.js';
import { TcpStoreServer } from '../../host/store/server.js';
import { tensor } from '../../host/core/tensor.js';
import { CHALLENGE_SIZE, decodeAck, encodeChallenge, encodeHello, Status, ACK_SIZE } from '../../host/cpu/wire.js';
import { signAck, signHello } from '../../host/cpu/link/handshake.js';
import { hostId, ownerTag, reclaimDeadSegments, Segment, validSegmentName } from '../../host/cpu/shm.js';
import { isLoopback } from '../../host/base/secret.js';
import { rejectsWith } from '../helpers/rejects.js';

const SECRET = Buffer.from('the job secret');
let store: TcpStore;
let n = 0;

test.before(async () => {
  store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000, secret: SECRET });
});
test.after(async () => {
  await store.close();
});

/** Connects to a rank's listener, answers its challenge with `hello(nonce)`, returns the ACK status. */
function answer(port: number, hello: (challengeNonce: Buffer) => Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    let sent = false;
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (!sent && got.length >= CHALLENGE_SIZE) {
        sent = true;
        s.write(hello(got.subarray(8, CHALLENGE_SIZE)));
        got = got.subarray(CHALLENGE_SIZE);
      }
    });
    s.on('error', reject);
    s.on('close', () => (got.length >= ACK_SIZE ? resolve(decodeAck(got).status) : reject(new Error(`closed after ${got.length} bytes`))));
  });
}

test('a replayed HELLO (signed with the secret, for an earlier challenge) is refused; a fresh one for this challenge would pass the MAC', async () => {
  const name = `replay-${n++}`;
  const first = CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: name, timeoutMs: 10_000, secret: SECRET });
  const port = Number(Buffer.from(await store.get(`groupcomm/cpu/${name}/0/addr/0`)).toString().split(':')[1]);
  const fields = { rank: 1, worldSize: 2, epoch: 0, name, chunkBytes: 512 * 1024, smallBytes: 64 * 1024, toRank: 0, maxFrameBytes: 1 << 20 };
  const recorded = encodeHello(fields);
  signHello(SECRET, recorded, Buffer.alloc(32, 7)); // what an eavesdropper saw on an earlier connection
  assert.is(await answer(port, () => recorded), Status.BAD_AUTH);
  // Bound to the rank it was meant for: a HELLO signed for rank 1's listener is refused by rank 0.
  assert.is(await answer(port, (c) => { const h = encodeHello({ ...fields, toRank: 1 }); signHello(SECRET, h, c); return h; }), Status.BAD_RANK);
  // Bound to the epoch: signed correctly but for epoch 3.
  assert.is(await answer(port, (c) => { const h = encodeHello({ ...fields, epoch: 3 }); signHello(SECRET, h, c); return h; }), Status.WRONG_EPOCH);
  // The group still forms with the real rank 1 and computes correctly.
  const gs = await Promise.all([first, CpuGroup.create({ store, rank: 1, worldSize: 2, groupName: name, timeoutMs: 10_000, secret: SECRET })]);
  const ts = [tensor(new Int32Array([1, 2])), tensor(new Int32Array([10, 20]))];
  await Promise.all(gs.map((g, r) => g.allReduce(ts[r], { out: ts[r] })));
  assert.equal([...ts[0].data], [11, 22]);
  await Promise.all(gs.map((g) => g.destroy()));
});

test('an outsider that wrote rank 1\'s address key cannot become rank 1: rank 0 fails setup with PROTOCOL, never computes with it', async () => {
  const name = `impostor-${n++}`;
  // The outsider listens, challenges, and answers with an ACK it cannot sign (it lacks the secret).
  const outsider = net.createServer((s) => {
    s.on('error', () => {});
    s.write(encodeChallenge(Buffer.alloc(32, 1)));
    s.once('data', (d) => s.write(signAck(Buffer.from('a guess'), encodeAckOk(1), d.subarray(d.length - 32))));
  });
  await new Promise<void>((r) => outsider.listen(0, '127.0.0.1', r));
  await store.set(`groupcomm/cpu/${name}/0/addr/1`, `127.0.0.1:${(outsider.address() as net.AddressInfo).port}`);
  try {
    const e = await rejectsWith(CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: name, timeoutMs: 5_000, secret: SECRET }), 'ERR_GROUPCOMM_PROTOCOL');
    assert.is(e.peerRank, 1);
    assert.match(e.message, /not signed with this job's secret/);
  } finally {
    outsider.close();
  }
});

function encodeAckOk(rank: number): Buffer {
  const b = Buffer.alloc(ACK_SIZE);
  b.writeUInt32LE(0x55504347, 0);
  b.writeUInt16LE(3, 4);
  b.writeUInt32LE(rank, 8);
  return b;
}

test('ranks with different secrets do not form a group (each names the peer)', async () => {
  const name = `two-secrets-${n++}`;
  const res = await Promise.allSettled([
    CpuGroup.create({ store, rank: 0, worldSize: 2, groupName: name, timeoutMs: 3_000, secret: 'one' }),
    CpuGroup.create({ store, rank: 1, worldSize: 2, groupName: name, timeoutMs: 3_000, secret: 'two' }),
  ]);
  for (const r of res) {
    assert.is(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason;
    assert.ok(['ERR_GROUPCOMM_PROTOCOL', 'ERR_GROUPCOMM_TIMEOUT'].includes(e.code), e.message);
  }
  for (const r of res) if (r.status === 'fulfilled') await r.value.destroy();
});

test('secure by default: a non-loopback listener without a secret is refused naming GROUPCOMM_SECRET; insecure opts out', async () => {
  const e = await rejectsWith(TcpStoreServer.listen({ host: '0.0.0.0', port: 0, secret: undefined }), 'ERR_GROUPCOMM_AUTH');
  assert.match(e.message, /GROUPCOMM_SECRET/);
  assert.is(e.variable, 'GROUPCOMM_SECRET');
  const ok = await TcpStoreServer.listen({ host: '0.0.0.0', port: 0, insecure: true });
  await ok.close();
  const withSecret = await TcpStoreServer.listen({ host: '0.0.0.0', port: 0, secret: 's' });
  await withSecret.close();
  const g = await rejectsWith(CpuGroup.create({ store, rank: 0, worldSize: 1, groupName: `open-${n++}`, host: '0.0.0.0', timeoutMs: 2000 }), 'ERR_GROUPCOMM_AUTH');
  assert.match(g.message, /GROUPCOMM_SECRET/);
  for (const h of ['127.0.0.1', '127.3.2.1', '::1', '[::1]', 'localhost']) assert.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.2', 'example.com']) assert.not.ok(isLoopback(h), h);
});

test('same-host identity: boot id, IPC namespace and the /dev/shm mount, never an address', () => {
  const id = hostId();
  if (!fs.existsSync('/proc/self/ns/ipc')) return;
  const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const ipc = fs.readlinkSync('/proc/self/ns/ipc').replace(/\D/g, '');
  assert.ok(id.startsWith(`${boot}/ipc:${ipc}/shm:`), id);
});

test('same host only when /dev/shm and the IPC namespace are shared: another network namespace is the same host, another IPC namespace or /dev/shm is not', () => {
  const shm = new URL('../../host/cpu/shm.js', import.meta.url).href;
  const idIn = (...wrap: string[]) => {
    const js = `import(${JSON.stringify(shm)}).then(({ hostId }) => console.log(hostId()))`;
    const r = spawnSync(wrap[0], [...wrap.slice(1), process.execPath, '-e', js], { encoding: 'utf8', timeout: 20_000 });
    return r.status === 0 ? r.stdout.trim() : undefined;
  };
  const here = hostId();
  const net = idIn('unshare', '--net');
  if (!here || net === undefined) {
    console.log('  (skipped: cannot create namespaces here: needs root and unshare)');
    return;
  }
  assert.is(net, here, 'a process in its own network namespace shares /dev/shm and IPC: same host');
  const ipc = idIn('unshare', '--ipc');
  assert.ok(ipc && ipc !== here, `another IPC namespace is another host (${ipc})`);
  const privateShm = idIn('unshare', '--mount', 'sh', '-c', 'mount -t tmpfs none /dev/shm && exec "$0" "$@"');
  assert.ok(privateShm && privateShm !== here, `a private /dev/shm is another host (${privateShm})`);
});

let shmOk = fs.existsSync('/dev/shm');
if (shmOk) {
  try { Segment.create(1 << 16).close(); } catch (e) {
    shmOk = false;
    console.log(`  (shared memory unavailable, its cases skipped: ${(e as Error).message})`);
  }
} else console.log('  (no /dev/shm: the segment cases are skipped)');
/** Cases that need real segments: skipped (and counted as skipped) where there are none. */
const shmTest = shmOk ? test : test.skip;
/** The segment files this process's ranks made (other test processes may make theirs meanwhile). */
const ownShmFiles = () => (fs.existsSync('/dev/shm')
  ? fs.readdirSync('/dev/shm').filter((f) => f.startsWith(`gcpu-${ownerTag()}-${process.pid}-`)) : []);

shmTest('shm setup checks the ACK: a name this host does not make, a bad size or a short object is refused', () => {
  const seg = Segment.create(1 << 16);
  try {
    assert.ok(validSegmentName(seg.name), seg.name);
    assert.match(seg.name, new RegExp(`^/gcpu-${ownerTag()}-${process.pid}-[0-9a-f]{32}$`));
    assert.throws(() => Segment.open('/gcpu-1234-abcd', 1 << 16), /not one a rank of this host creates/);
    assert.throws(() => Segment.open('/../etc/passwd', 1 << 16), /not one a rank of this host creates/);
    assert.throws(() => Segment.open(seg.name, 1 << 20), /has 69632 bytes, the offer said/);
    assert.throws(() => Segment.open(seg.name, 12345), /not a power of two/);
  } finally {
    seg.close();
  }
});

shmTest('a dead owner\'s segment files are reclaimed; a live owner\'s and foreign files are left', () => {
  const tag = ownerTag();
  // A pid that is not running (pids are below 2^22 on Linux; search down from the top).
  let dead = 4_194_000;
  for (;; dead--) { try { process.kill(dead, 0); } catch (e) { if ((e as NodeJS.ErrnoException).code === 'ESRCH') break; } }
  const rnd = 'ab'.repeat(16);
  const deadFile = `/dev/shm/gcpu-${tag}-${dead}-${rnd}`;
  const liveFile = `/dev/shm/gcpu-${tag}-${process.ppid}-${rnd}`;
  const foreign = `/dev/shm/gcpu-000000000000-${dead}-${rnd}`;
  for (const f of [deadFile, liveFile, foreign]) fs.writeFileSync(f, 'x');
  try {
    assert.ok(reclaimDeadSegments() >= 1);
    assert.not.ok(fs.existsSync(deadFile), 'the dead owner\'s file is gone');
    assert.ok(fs.existsSync(liveFile), 'a live owner\'s file stays');
    assert.ok(fs.existsSync(foreign), 'another kernel\'s / PID namespace\'s file stays');
  } finally {
    for (const f of [deadFile, liveFile, foreign]) fs.rmSync(f, { force: true });
  }
});

test('a rank in setup closes connections that send no valid HELLO in time; the mesh still forms', async () => {
  const groupName = `silent-${n++}`;
  const opts = (rank: number) => ({
    store, rank, worldSize: 2, groupName, epoch: 0, host: '127.0.0.1', port: 0, timeoutMs: 10_000, recvBufferBytes: 4096,
    framing: { chunkBytes: 4096, smallBytes: 1024 }, transport: 'tcp' as const, shmRingBytes: 1 << 16, shmMinBytes: 8192,
    maxFrameBytes: 1 << 20, secret: SECRET, helloTimeoutMs: 300,
  });
  const m0 = Mesh.connect(opts(0));
  const port = Number(Buffer.from(await store.get(`groupcomm/cpu/${groupName}/0/addr/0`)).toString().split(':')[1]);
  const silent = net.connect(port, '127.0.0.1');
  silent.on('error', () => {});
  silent.on('data', () => {}); // the challenge; never answered
  const t0 = performance.now();
  await new Promise<void>((r) => silent.once('close', () => r()));
  assert.ok(performance.now() - t0 < 5000);
  const [a, b] = await Promise.all([m0, Mesh.connect(opts(1))]);
  a.close();
  b.close();
});

test('nothing left behind: 40 create/destroy cycles (shared memory where it works) leave no store key and no /dev/shm file', async () => {
  const server = await TcpStoreServer.listen({ port: 0, secret: SECRET });
  const s = await TcpStore.create({ port: server.port, secret: SECRET, timeoutMs: 10_000 });
  try {
    for (let i = 0; i < 40; i++) {
      const gs = await Promise.all([0, 1].map((rank) => CpuGroup.create({ store: s, rank, worldSize: 2, groupName: 'cycle', epoch: i, secret: SECRET, timeoutMs: 10_000 })));
      await Promise.all(gs.map((g) => g.destroy()));
    }
    // A failed setup (its peer never comes) deletes its address key too.
    await rejectsWith(CpuGroup.create({ store: s, rank: 0, worldSize: 2, groupName: 'alone', secret: SECRET, timeoutMs: 300 }), 'ERR_GROUPCOMM_TIMEOUT');
    await new Promise((r) => setTimeout(r, 100));
    await s.ping();
    assert.is(server.numKeys, 0, `${server.numKeys} keys left`);
    assert.equal(ownShmFiles(), [], 'segment files of this process left in /dev/shm');
  } finally {
    await s.close();
    await server.close();
  }
});

shmTest('a rank killed after creating a segment leaves a file that the next rank on this host removes', () => {
  // A real process creates a segment and dies before any peer maps it.
  const shm = new URL('../../host/cpu/shm.js', import.meta.url).href;
  const r = spawnSync(process.execPath, ['-e', `import(${JSON.stringify(shm)}).then(({ Segment }) => { console.log(Segment.create(1 << 16).name); process.kill(process.pid, 'SIGKILL'); })`], { encoding: 'utf8', timeout: 20_000 });
  const name = r.stdout.trim();
  assert.match(name, /^\/gcpu-/, r.stderr);
  assert.ok(fs.existsSync(`/dev/shm${name}`), 'the dead rank left its file');
  assert.ok(reclaimDeadSegments() >= 1);
  assert.not.ok(fs.existsSync(`/dev/shm${name}`), 'reclaimed');
});

test.run();
