// The segments under the CPU group's shared-memory rings (host/cpu/shm.ts, outside the ring
// arithmetic, which shm_ring_exact and shm_ring_wrap test): the host id and owner tag, segment
// names, reclaiming a dead owner's files (in a scratch directory), and Segment.create / open /
// unlink / close with every refusal, each leaving no file descriptor open. Real segments (koffi,
// /dev/shm); skipped where shared memory is unavailable.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { hostId, ownerTag, reclaimDeadSegments, Segment, validSegmentName } from '../../host/cpu/shm.js';

let shmOk = true;
try { Segment.create(1 << 16).close(); } catch (e) {
  shmOk = false;
  console.log(`  (shared memory unavailable, its cases skipped: ${(e as Error).message})`);
}
/** Cases that need real segments: skipped (and counted as skipped) where there are none. */
const shmTest = shmOk ? test : test.skip;

const onLinux = fs.existsSync('/proc/self/ns/pid');
if (!onLinux) console.log('  (skipped: the hostId and reclaim cases read /proc, which this system has not)');
// Open descriptors; compared with <= (a runtime may close one of its own meanwhile: Bun closes a
// finished child's pipes lazily), and each leak checked is repeated so that one more shows anyway.
const fds = () => fs.readdirSync('/proc/self/fd').length;
const shmFile = (name: string) => `/dev/shm${name}`;
/** A pid that is not running (pids are below 2^22 on Linux; searched down from the top). */
function deadPid(): number {
  for (let p = 4_194_000; ; p--) { try { process.kill(p, 0); } catch (e) { if ((e as NodeJS.ErrnoException).code === 'ESRCH') return p; } }
}

(onLinux ? test : test.skip)('hostId: boot id, IPC namespace and the /dev/shm mount; ownerTag: 12 hex of the boot id and PID namespace', () => {
  const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const ipc = fs.readlinkSync('/proc/self/ns/ipc').replace(/\D/g, '');
  const st = fs.statSync('/dev/shm');
  assert.is(hostId(), `${boot}/ipc:${ipc}/shm:${st.dev}:${st.ino}`);
  assert.is(hostId(), hostId());
  const tag = crypto.createHash('sha256').update(boot + fs.readlinkSync('/proc/self/ns/pid')).digest('hex').slice(0, 12);
  assert.is(ownerTag(), tag);
  assert.is(ownerTag(), tag, 'the same on every call');
});

test('validSegmentName: /gcpu-<12 hex>-<pid>-<32 hex> exactly', () => {
  const good = `/gcpu-${'a1'.repeat(6)}-123-${'0f'.repeat(16)}`;
  assert.ok(validSegmentName(good));
  assert.ok(validSegmentName(`/gcpu-${'a1'.repeat(6)}-1234567890-${'0f'.repeat(16)}`));
  for (const bad of [
    good.slice(1), `x${good}`, `${good}0`, good.replace('gcpu', 'gcpx'), `/gcpu-${'a1'.repeat(6)}-12345678901-${'0f'.repeat(16)}`,
    `/gcpu-${'A1'.repeat(6)}-123-${'0f'.repeat(16)}`, `/gcpu-${'a1'.repeat(6)}--${'0f'.repeat(16)}`, `/gcpu-${'a1'.repeat(6)}-12x-${'0f'.repeat(16)}`,
    `/gcpu-${'a1'.repeat(5)}-123-${'0f'.repeat(16)}`, `/gcpu-${'a1'.repeat(6)}-123-${'0f'.repeat(15)}`, `/gcpu-${'a1'.repeat(6)}-123-${'0g'.repeat(16)}`,
  ]) assert.not.ok(validSegmentName(bad), bad);
});

(onLinux ? test : test.skip)('reclaimDeadSegments: removes exactly the files of this tag whose pid is dead; a missing directory is 0', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gcpu-reclaim-'));
  try {
    const tag = ownerTag();
    const rnd = 'cd'.repeat(16);
    const dead = deadPid();
    const files = {
      dead1: `gcpu-${tag}-${dead}-${rnd}`,
      dead2: `gcpu-${tag}-${dead}-${'ef'.repeat(16)}`,
      self: `gcpu-${tag}-${process.pid}-${rnd}`,
      parent: `gcpu-${tag}-${process.ppid}-${rnd}`,
      foreign: `gcpu-000000000000-${dead}-${rnd}`,
      other: `gcpu-${tag}-${dead}-short`,
    };
    for (const f of Object.values(files)) fs.writeFileSync(path.join(dir, f), 'x');
    assert.is(reclaimDeadSegments(dir), 2);
    assert.equal(fs.readdirSync(dir).sort(), [files.self, files.parent, files.foreign, files.other].sort());
    assert.is(reclaimDeadSegments(dir), 0, 'nothing left to remove');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.is(reclaimDeadSegments(path.join(dir, 'gone')), 0);
});

/**
 * Root may signal any process, so the EPERM case runs the reclaim in a child as nobody (uid
 * 65534): only as root on Linux, and where this runtime's binary runs as nobody (a runtime
 * installed under /root may not); elsewhere it is skipped, and counted as skipped.
 */
const asNobody = onLinux && process.getuid?.() === 0 &&
  spawnSync(process.execPath, ['-e', '0'], { uid: 65534, gid: 65534, timeout: 20_000 }).status === 0;
if (!asNobody) console.log('  (skipped: the EPERM case needs root on Linux and a runtime that runs as uid 65534)');
(asNobody ? test : test.skip)('reclaimDeadSegments: a pid it may not signal (EPERM) is alive, its files stay', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gcpu-eperm-'));
  fs.chmodSync(dir, 0o777);
  try {
    // A copy where nobody can read it (this build's directory may be private to root): the
    // compiled module under Node, the TypeScript source under Bun (which runs the tests from it).
    const src = ['shm.js', 'shm.ts'].map((f) => new URL(`../../host/cpu/${f}`, import.meta.url)).find((u) => fs.existsSync(u))!;
    const shm = path.join(dir, src.pathname.endsWith('.ts') ? 'shm.ts' : 'shm.mjs');
    fs.copyFileSync(src, shm);
    fs.chmodSync(shm, 0o644);
    const js = `import(${JSON.stringify(pathToFileURL(shm).href)}).then(({ reclaimDeadSegments, ownerTag }) => {
      const fs = require('node:fs');
      const f = ${JSON.stringify(dir)} + '/gcpu-' + ownerTag() + '-${process.pid}-' + 'ab'.repeat(16);
      fs.writeFileSync(f, 'x');
      let code = 'none';
      try { process.kill(${process.pid}, 0); } catch (e) { code = e.code; }
      console.log(JSON.stringify({ removed: reclaimDeadSegments(${JSON.stringify(dir)}), kept: fs.existsSync(f), code }));
    })`;
    const r = spawnSync(process.execPath, ['-e', js], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 20_000 });
    assert.equal(JSON.parse(r.stdout.trim() || '{}'), { removed: 0, kept: true, code: 'EPERM' }, r.stderr);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

shmTest('Segment.create: a fresh name of this tag and pid, a file of 4 KiB + the ring, views of the ring and the control word', () => {
  const before = fds();
  const more = Array.from({ length: 4 }, () => Segment.create(1 << 16));
  const a = Segment.create(1 << 16);
  const b = Segment.create(1 << 16);
  try {
    assert.match(a.name, new RegExp(`^/gcpu-${ownerTag()}-${process.pid}-[0-9a-f]{32}$`));
    assert.is.not(a.name, b.name);
    assert.is(fs.statSync(shmFile(a.name)).size, 4096 + (1 << 16));
    assert.is((fs.statSync(shmFile(a.name)).mode & 0o777), 0o600);
    assert.is(a.ring.byteLength, 1 << 16);
    assert.is(a.ringBytes, 1 << 16);
    assert.is(a.control.length, 1);
    assert.is(a.control.byteOffset, 0);
    assert.is(a.ring.byteOffset, 4096);
    assert.ok(fds() <= before, 'no descriptor kept: the mapping stays, the fd is closed');
  } finally {
    a.close();
    b.close();
    for (const x of more) x.close();
  }
});

shmTest('Segment.open: maps the same memory; unlinks the name at once unless told not to', () => {
  const a = Segment.create(1 << 16);
  const before = fds();
  const bs = Array.from({ length: 5 }, () => Segment.open(a.name, 1 << 16, false));
  const b = bs[0];
  try {
    assert.ok(fds() <= before);
    assert.ok(fs.existsSync(shmFile(a.name)), 'unlinkNow false: the name stays');
    a.ring[5] = 42;
    Atomics.store(a.control, 0, 7);
    assert.is(b.ring[5], 42);
    assert.is(Atomics.load(b.control, 0), 7);
    const c = Segment.open(a.name, 1 << 16);
    assert.not.ok(fs.existsSync(shmFile(a.name)), 'opened with the default: unlinked');
    assert.is(c.ring[5], 42);
    c.close();
  } finally {
    a.close();
    for (const x of bs) x.close();
  }
});

shmTest('Segment.open refuses a foreign name, a bad size, a missing or a shorter object, leaving no descriptor open', () => {
  const a = Segment.create(1 << 16);
  try {
    const before = fds();
    assert.throws(() => Segment.open('/etc/passwd', 1 << 16), /not one a rank of this host creates/);
    assert.throws(() => Segment.open(a.name, 12345), /ring of 12345 bytes is not a power of two in \[64 KiB, 1 GiB\]/);
    assert.throws(() => Segment.open(a.name, 3000, false, '3 pages', (n) => n === 3 * 4096), /ring of 3000 bytes is not 3 pages/);
    for (let i = 0; i < 5; i++) assert.throws(() => Segment.open(a.name, 1 << 17), /has 69632 bytes, the offer said 135168/);
    const missing = a.name.slice(0, -1) + (a.name.endsWith('0') ? '1' : '0');
    assert.throws(() => Segment.open(missing, 1 << 16), /shm_open\(.*\) failed: errno \d+/);
    assert.ok(fds() <= before);
    assert.ok(fs.existsSync(shmFile(a.name)), 'a refused open does not unlink');
    // a custom check accepts any size it likes (the shared-segment allReduce's segments)
    const b = Segment.create(3 * 4096); // a 12 KiB ring: not a power of two
    try {
      const c = Segment.open(b.name, 3 * 4096, false, '3 pages', (n) => n === 3 * 4096);
      assert.is(c.ringBytes, 3 * 4096);
      c.close();
    } finally {
      b.close();
    }
  } finally {
    a.close();
  }
});

shmTest('unlink and close: idempotent; close removes the name and reports closed', () => {
  const a = Segment.create(1 << 16);
  assert.not.ok(a.closed);
  a.unlink();
  assert.not.ok(fs.existsSync(shmFile(a.name)));
  assert.not.ok(a.closed, 'unlinked is not closed: the mapping stays');
  a.ring[0] = 1; // still mapped
  a.unlink();
  a.close();
  assert.ok(a.closed);
  a.close();
  const b = Segment.create(1 << 16);
  b.close();
  assert.not.ok(fs.existsSync(shmFile(b.name)));
  assert.ok(b.closed);
});

shmTest('a second close does not unmap again: the address may already belong to a newer segment', () => {
  const addr = (s: Segment) => (s as unknown as { addr: bigint }).addr;
  const a = Segment.create(1 << 16);
  a.close();
  const b = Segment.create(1 << 16); // the kernel usually hands out the range a had
  try {
    a.close();
    b.ring[0] = 7; // would fault if a's second close had unmapped b's range
    assert.is(b.ring[0], 7);
    if (addr(a) !== addr(b)) console.log('  (the new segment got another address: this case checked less)');
  } finally {
    b.close();
  }
});

shmTest('the first segment a process creates reclaims dead owners\' files, later ones do not look again', () => {
  const shm = new URL('../../host/cpu/shm.js', import.meta.url).href;
  const dead = deadPid();
  const js = `import(${JSON.stringify(shm)}).then(({ Segment, ownerTag }) => {
    const fs = require('node:fs');
    const f = (i) => '/dev/shm/gcpu-' + ownerTag() + '-${dead}-' + String(i).repeat(32);
    fs.writeFileSync(f(1), 'x');
    Segment.create(1 << 16).close();
    const first = fs.existsSync(f(1));
    fs.writeFileSync(f(2), 'x');
    Segment.create(1 << 16).close();
    const second = fs.existsSync(f(2));
    fs.rmSync(f(2), { force: true });
    console.log(JSON.stringify({ first, second }));
  })`;
  const r = spawnSync(process.execPath, ['-e', js], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(JSON.parse(r.stdout.trim() || '{}'), { first: false, second: true }, r.stderr);
});

test.run();
