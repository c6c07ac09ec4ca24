/**
 * Same-host shared-memory rings for the CPU group's mesh (docs/cpu-group.md, "Transport"): the
 * segments and the ring arithmetic, no sockets. The shm link (link/shm.ts) is built on them.
 *
 * One ring per direction of a pair of ranks. The sending side (the rank that accepted the
 * connection, which is the side that writes on it) creates a POSIX shm segment, maps it with
 * MAP_POPULATE (its pages are faulted in once, at setup, not on the hot path) and names it in its
 * ACK; the receiving side maps it too and both unlink the name at once, so nothing is left in
 * /dev/shm even if a process crashes later. The TCP connection stays: it carries the frame
 * headers as small "payload at ring position X, N bytes" doorbells (in order with any frame that
 * still goes over TCP), the receiver's occasional "space freed" wake-ups on the way back, and —
 * by closing — the news that a peer died.
 *
 * Layout of a segment: one 4 KiB control page (u32 `tail` at 0: the receiver's consumed
 * position), then `ringBytes` (a power of two) of payload. Positions are free-running u32
 * counters; `pos % ringBytes` is the offset. A payload is always contiguous: when it does not
 * fit before the end, the sender skips to offset 0, and the skipped bytes are freed with it.
 * Payloads above 7/16 of the ring go over TCP (see SendRing for why that bound).
 */
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';

const require = createRequire(import.meta.url);

type Koffi = typeof import('koffi');
interface Libc {
  koffi: Koffi;
  shmOpen: (name: string, oflag: number, mode: number) => number;
  shmUnlink: (name: string) => number;
  ftruncate: (fd: number, len: number) => number;
  mmap: (addr: null, len: number, prot: number, flags: number, fd: number, off: number) => bigint;
  munmap: (addr: bigint, len: number) => number;
  close: (fd: number) => number;
}

const O_RDWR = 2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const PROT_RW = 3;
const MAP_SHARED = 1;
const MAP_POPULATE = 0x8000;
const MAP_FAILED = 0xffffffffffffffffn;
const CONTROL_BYTES = 4096;

let libc: Libc | undefined;
let libcError: string | undefined;

/** libc's shm calls through koffi, loaded on first use; throws with the reason when unavailable. */
function loadLibc(): Libc {
  if (libc) return libc;
  if (libcError) throw new Error(libcError);
  try {
    if (process.platform !== 'linux') throw new Error(`shared memory transport is implemented for Linux only (this is ${process.platform})`);
    // koffi is an optional dependency: without it same-host peers use TCP, and the log says why.
    try { require.resolve('koffi'); } catch {
      throw new Error("koffi is not installed (groupcomm's optional dependency for shared memory and cuda; `npm install koffi` enables it)");
    }
    const koffi = require('koffi') as Koffi;
    const lib = koffi.load('libc.so.6');
    libc = {
      koffi,
      shmOpen: lib.func('int shm_open(const char *name, int oflag, uint32_t mode)') as Libc['shmOpen'],
      shmUnlink: lib.func('int shm_unlink(const char *name)') as Libc['shmUnlink'],
      ftruncate: lib.func('int ftruncate(int fd, int64_t length)') as Libc['ftruncate'],
      mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)') as Libc['mmap'],
      munmap: lib.func('int munmap(void *addr, size_t length)') as Libc['munmap'],
      close: lib.func('int close(int fd)') as Libc['close'],
    };
    return libc;
  } catch (e) {
    libcError = `shared memory unavailable: ${(e as Error).message}`;
    throw new Error(libcError);
  }
}

/**
 * Identifies what a peer must share with this process for a ring to work: the running kernel
 * (boot id), the IPC namespace, and the /dev/shm mount itself (device and inode). Addresses and
 * hostnames are not part of it: two network namespaces on one machine are one "host" only when
 * they truly see the same /dev/shm. Empty when it cannot be told, which never matches, so such
 * peers use TCP. It travels in the authenticated HELLO (link/handshake.ts).
 */
let hostIdCache: string | undefined;
export function hostId(): string {
  if (hostIdCache !== undefined) return hostIdCache;
  try {
    const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const ipc = fs.readlinkSync('/proc/self/ns/ipc').replace(/\D/g, '');
    const shm = fs.statSync('/dev/shm');
    hostIdCache = boot && ipc ? `${boot}/ipc:${ipc}/shm:${shm.dev}:${shm.ino}`.slice(0, 255) : '';
  } catch {
    hostIdCache = '';
  }
  return hostIdCache;
}

/**
 * The tag every segment name of this kernel and PID namespace carries: a dead owner's segments
 * can then be recognised (and reclaimed) only by processes that can tell whether its pid lives.
 */
let ownerTagCache: string | undefined;
export function ownerTag(): string {
  if (ownerTagCache !== undefined) return ownerTagCache;
  let id = '';
  try {
    id = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() + fs.readlinkSync('/proc/self/ns/pid');
  } catch { /* no /proc: a tag of nothing, reclaim then only matches this same situation */ }
  ownerTagCache = crypto.createHash('sha256').update(id).digest('hex').slice(0, 12);
  return ownerTagCache;
}

/** `/gcpu-<owner tag>-<pid>-<128 random bits>`: unguessable, and says whose it is. */
const NAME_RE = /^\/gcpu-([0-9a-f]{12})-(\d{1,10})-[0-9a-f]{32}$/;

/**
 * True for a name this code could have created (the ACK's name is checked against it). Any
 * owner tag: a peer in another PID namespace that shares this /dev/shm has another tag.
 */
export function validSegmentName(name: string): boolean {
  return NAME_RE.test(name);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let reclaimed = false;
/**
 * Removes the /dev/shm files of segments whose creator (same kernel, same PID namespace) is dead:
 * a rank killed between creating a segment and its peer mapping it leaves one behind. Run once
 * per process, by the first segment it creates. Returns how many were removed.
 */
export function reclaimDeadSegments(dir = '/dev/shm'): number {
  let n = 0;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  const tag = ownerTag();
  for (const f of names) {
    const m = NAME_RE.exec('/' + f);
    if (!m || m[1] !== tag) continue;
    const pid = Number(m[2]);
    if (pid === process.pid || alive(pid)) continue;
    try {
      fs.unlinkSync(`${dir}/${f}`);
      n++;
    } catch { /* another rank reclaimed it first */ }
  }
  return n;
}

/** One mapped segment: a control page and a ring. */
export class Segment {
  readonly ring: Uint8Array;
  readonly control: Int32Array;
  private unlinked = false;
  private unmapped = false;

  private constructor(readonly name: string, private addr: bigint, private mapBytes: number, readonly ringBytes: number) {
    const lc = loadLibc();
    const ab = lc.koffi.view(addr, mapBytes) as ArrayBuffer;
    this.control = new Int32Array(ab, 0, 1);
    this.ring = new Uint8Array(ab, CONTROL_BYTES, ringBytes);
  }

  /** Creates a new segment with a fresh random name (the sender's side). */
  static create(ringBytes: number): Segment {
    const lc = loadLibc();
    if (!reclaimed) {
      reclaimed = true;
      reclaimDeadSegments();
    }
    const name = `/gcpu-${ownerTag()}-${process.pid}-${crypto.randomBytes(16).toString('hex')}`;
    const fd = lc.shmOpen(name, O_RDWR | O_CREAT | O_EXCL, 0o600);
    if (fd < 0) throw new Error(`shm_open(${name}) failed: errno ${lc.koffi.errno()}`);
    return Segment.map(lc, name, fd, ringBytes, true);
  }

  /**
   * Maps a segment the peer created (the receiver's side) and unlinks its name, unless
   * `unlinkNow` is false (several readers must still open it; the creator unlinks it later). The
   * name must be one this code makes, the size a valid ring, and the object exactly that size
   * (mapping past a shorter file would fault on first touch). `valid` checks the size (the
   * shared-memory allReduce's segments, segments.ts, are not rings: any whole number of chunks).
   */
  static open(name: string, ringBytes: number, unlinkNow = true, what = 'a power of two in [64 KiB, 1 GiB]', valid = validRingBytes): Segment {
    if (!validSegmentName(name)) throw new Error(`segment name '${name}' is not one a rank of this host creates`);
    if (!valid(ringBytes)) throw new Error(`ring of ${ringBytes} bytes is not ${what}`);
    const lc = loadLibc();
    const fd = lc.shmOpen(name, O_RDWR, 0o600);
    if (fd < 0) throw new Error(`shm_open(${name}) failed: errno ${lc.koffi.errno()}`);
    let size = -1;
    try { size = fs.fstatSync(fd).size; } catch { /* checked below */ }
    if (size !== CONTROL_BYTES + ringBytes) {
      lc.close(fd);
      throw new Error(`segment ${name} has ${size} bytes, the offer said ${CONTROL_BYTES + ringBytes}`);
    }
    const s = Segment.map(lc, name, fd, ringBytes, false);
    if (unlinkNow) s.unlink();
    return s;
  }

  private static map(lc: Libc, name: string, fd: number, ringBytes: number, size: boolean): Segment {
    const mapBytes = CONTROL_BYTES + ringBytes;
    try {
      if (size && lc.ftruncate(fd, mapBytes) !== 0) throw new Error(`ftruncate(${name}, ${mapBytes}) failed: errno ${lc.koffi.errno()}`);
      const addr = lc.mmap(null, mapBytes, PROT_RW, MAP_SHARED | MAP_POPULATE, fd, 0);
      if (addr === MAP_FAILED || addr === 0n) throw new Error(`mmap(${name}, ${mapBytes}) failed: errno ${lc.koffi.errno()}`);
      return new Segment(name, addr, mapBytes, ringBytes);
    } catch (e) {
      if (size) lc.shmUnlink(name);
      throw e;
    } finally {
      lc.close(fd);
    }
  }

  /** Removes the name (the mapping stays); both sides call it, the second call is a no-op. */
  unlink(): void {
    if (this.unlinked) return;
    this.unlinked = true;
    loadLibc().shmUnlink(this.name);
  }

  /** Unlinks and unmaps. The views must not be touched afterwards (callers check `closed`). */
  close(): void {
    this.unlink();
    if (this.unmapped) return;
    this.unmapped = true;
    loadLibc().munmap(this.addr, this.mapBytes);
  }

  get closed(): boolean {
    return this.unmapped;
  }
}

/** The sender's side of a ring: where the next payload goes, and whether it fits now. */
export class SendRing {
  private head = 0;
  /** Largest payload sent through the ring; larger frames go over TCP. */
  readonly maxFrame: number;

  constructor(readonly seg: Segment) {
    // A waiting sender is woken by the receiver's last wake-up, after which fewer than
    // T = creditStep bytes may still look used. A payload must then fit wherever the head is,
    // including when it has to skip to offset 0 (up to n - 1 skipped bytes): 2n + T <= R.
    // With T = R/8 that allows n = 7R/16, so a wait can never deadlock.
    this.maxFrame = Math.floor((seg.ringBytes - creditStep(seg.ringBytes)) / 2);
  }

  /** Copies `payload` into the ring and returns its position, or -1 if there is no room yet. */
  put(payload: Uint8Array): number {
    const R = this.seg.ringBytes;
    const n = payload.byteLength;
    const off = this.head & (R - 1);
    const start = off + n > R ? (this.head + (R - off)) >>> 0 : this.head;
    const tail = Atomics.load(this.seg.control, 0) >>> 0;
    if (((start + n - tail) >>> 0) > R) return -1;
    this.seg.ring.set(payload, start & (R - 1));
    this.head = (start + n) >>> 0;
    return start;
  }
}

export const creditStep = (ringBytes: number) => ringBytes >>> 3;

/** The receiver's side: reads a payload at a position and frees it. */
export class RecvRing {
  private tail = 0;
  private lastCredit = 0;

  constructor(readonly seg: Segment) {}

  /** The payload at `pos` (a view into the ring), or undefined if the doorbell is not valid. */
  at(pos: number, n: number): Uint8Array | undefined {
    const R = this.seg.ringBytes;
    const off = pos & (R - 1);
    if (n > R || off + n > R || ((pos - this.tail) >>> 0) > R) return undefined;
    return this.seg.ring.subarray(off, off + n);
  }

  /** Frees everything up to `pos + n`; returns true when the sender should be woken. */
  release(pos: number, n: number): boolean {
    this.tail = (pos + n) >>> 0;
    Atomics.store(this.seg.control, 0, this.tail | 0);
    if (((this.tail - this.lastCredit) >>> 0) >= creditStep(this.seg.ringBytes)) {
      this.lastCredit = this.tail;
      return true;
    }
    return false;
  }
}

/** Checks a ring size option: a power of two between 64 KiB and 1 GiB. */
export function validRingBytes(n: number): boolean {
  return Number.isInteger(n) && n >= 65536 && n <= (1 << 30) && (n & (n - 1)) === 0;
}
