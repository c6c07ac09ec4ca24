// One rank of `groupcomm bench pg --floor`: the same message pattern as bench/pg_worker.ts, over
// plain loopback TCP sockets between the ranks, with no store, no codec and no library code — the
// floor that the machine and the runtime set for any store-backed design. Rank 0 listens on port 0
// and prints `@@PORT n`; the others connect to it (a star: rank 0 relays nothing, it is the root
// and the hub). Prints `@@BENCH {json}` with raw samples (ns), keyed like pg_worker's.
//
// Framing: each message is one byte of kind plus a fixed-size body, so a reader needs no length:
//   'a' arrive (barrier part, 1 B)   'r' release (1 B)   'b' broadcast (8 B f64 stamp, ns)
//   'p' ping/echo (SMALL_BYTES)      'g' allGather part (SMALL_BYTES)   'G' bundle (4 × SMALL_BYTES)
//   'n' plan (u32: 0 = warm up another round, else the timed count; 4 B unused)
//   'P' / 'Q' 1 MiB ping-pong (MiB bytes; 'Q' is the last one)
//   'B' 1 MiB broadcast (8 B f64 stamp, then MiB bytes)
import net from 'node:net';
import { now } from './clock.js';
import { budgetNs, timedCalls, warmupNs, warmUp } from './warmup.js';

const rank = Number(process.env.RANK);
const worldSize = Number(process.env.WORLD_SIZE);
/** About the msgpack size of pg_worker's SMALL dict. */
const SMALL_BYTES = 120;
const MiB = 1 << 20;
const SIZE: Record<number, number> = {
  0x61: 1, 0x72: 1, 0x62: 9, 0x6e: 9, 0x70: 1 + SMALL_BYTES, 0x67: 1 + SMALL_BYTES, 0x47: 1 + 4 * SMALL_BYTES, 0x50: 1 + MiB, 0x51: 1 + MiB,
  0x42: 9 + MiB,
};

/** Splits a byte stream into messages, handed out in arrival order. */
class Peer {
  /** Reads not split yet; joined once a whole message is there (a 1 MiB one is copied once). */
  private parts: Buffer[] = [];
  private have = 0;
  private readonly waiting: ((m: Buffer) => void)[] = [];
  private readonly queued: Buffer[] = [];
  constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.parts.push(d);
      this.have += d.length;
      while (this.have && this.have >= SIZE[this.parts[0][0]]) {
        const n = SIZE[this.parts[0][0]];
        const buf = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.have);
        const m = buf.subarray(0, n);
        this.parts = buf.length > n ? [buf.subarray(n)] : [];
        this.have -= n;
        const w = this.waiting.shift();
        if (w) w(m);
        else this.queued.push(m);
      }
    });
  }
  next(): Promise<Buffer> {
    const m = this.queued.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  send(b: Buffer): void {
    this.socket.write(b);
  }
}

const small = (kind: number) => Buffer.alloc(1 + SMALL_BYTES, 7).fill(kind, 0, 1);
const res: Record<string, number[]> = {};
let peers: Peer[] = [];

if (rank === 0) {
  const server = net.createServer({ noDelay: true });
  const joined = new Promise<void>((resolve) => {
    server.on('connection', (s) => {
      s.once('data', (d: Buffer) => {
        // The first byte names the connecting rank.
        peers[d[0]] = new Peer(s);
        if (d.length > 1) s.unshift(d.subarray(1));
        if (peers.filter(Boolean).length === worldSize - 1) resolve();
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  process.stdout.write(`@@PORT ${(server.address() as net.AddressInfo).port}\n`);
  await joined;
  server.close();
} else {
  const s = net.connect({ host: '127.0.0.1', port: Number(process.env.PG_PORT) });
  await new Promise<void>((r) => s.once('connect', () => r()));
  s.write(Buffer.from([rank]));
  peers = [new Peer(s)];
}
const hub = peers[0];
/** Rank 0's peers, and the messages that never change: made once, outside the timed calls. */
const others = peers.slice(1);
const ARRIVE = Buffer.from([0x61]);
const RELEASE = Buffer.from([0x72]);
const PART = small(0x67);
const ROOT_PART = small(0).subarray(1);

/** Barrier through rank 0 (1 B each way), as pg's hub barrier does it. */
async function barrier(): Promise<void> {
  if (rank === 0) {
    await Promise.all(others.map((p) => p.next()));
    for (const p of others) p.send(RELEASE);
  } else {
    hub.send(ARRIVE);
    await hub.next();
  }
}

/** Warm-up, then the number of timed calls (see warmup.ts); rank 0's plan travels as message 'n'. */
function plan(fn: () => Promise<void>, minCalls?: number): Promise<number> {
  return warmUp(rank, fn, async (n) => {
    if (rank !== 0) return (await hub.next()).readUInt32LE(1);
    const m = Buffer.alloc(9);
    m[0] = 0x6e;
    m.writeUInt32LE(n!, 1);
    for (const p of others) p.send(m);
    return n!;
  }, undefined, minCalls);
}

/** Warm-up, then the timed calls of `fn`, each one's duration kept. */
async function run(fn: () => Promise<void>): Promise<number[]> {
  return timedCalls(await plan(fn), fn);
}

if (worldSize === 2) {
  // Ping-pong of a SMALL-sized message; rank 0 measures the round trip.
  const msg = small(0x70);
  const durs = await run(async () => {
    if (rank === 0) {
      peers[1].send(msg);
      await peers[1].next();
    } else {
      hub.send(await hub.next());
    }
  });
  if (rank === 0) res.pingpong_small = durs;
  // Ping-pong of 1 MiB, warmed up and timed like pg_worker's (by time, at most 1000 timed).
  if (rank === 0) {
    const big = Buffer.alloc(1 + MiB, 7);
    const rtts: number[] = [];
    const warmEnd = now() + warmupNs;
    let start = 0;
    for (;;) {
      const warming = now() < warmEnd;
      if (!warming && start === 0) start = now();
      const stop = !warming && (now() - start > budgetNs || rtts.length >= 1000);
      big[0] = stop ? 0x51 : 0x50;
      const a = now();
      peers[1].send(big);
      await peers[1].next();
      if (!warming) rtts.push(now() - a);
      if (stop) break;
    }
    res.pingpong_1MiB = rtts;
  } else {
    for (;;) {
      const m = await hub.next();
      hub.send(m);
      if (m[0] === 0x51) break;
    }
  }
} else {
  // broadcastObj one-way latency after an untimed barrier (receivers keep the root's stamp): a
  // stamp alone ('b'), then a stamp and 1 MiB ('B', one buffer written to every socket, as the
  // store writes a handed-over value).
  const broadcast = async (name: string, m: Buffer) => {
    const lat: number[] = [];
    let keep = false;
    const bcast = async () => {
      await barrier();
      if (rank === 0) {
        m.writeDoubleLE(now(), 1);
        for (const p of others) p.send(m);
      } else {
        const got = await hub.next();
        if (keep) lat.push(now() - got.readDoubleLE(1));
      }
    };
    const n = await plan(bcast, m.length > 9 ? 0 : undefined);
    keep = true;
    for (let i = 0; i < n; i++) await bcast();
    res[name] = lat;
  };
  await broadcast('broadcast_obj', Buffer.alloc(9).fill(0x62, 0, 1));
  await broadcast('broadcast_obj_1MiB', Buffer.alloc(9 + MiB, 7).fill(0x42, 0, 1));
  // allGather through the hub: parts to rank 0, one bundle back to each.
  res.all_gather_obj = await run(async () => {
    if (rank === 0) {
      const parts = await Promise.all(others.map((p) => p.next()));
      const bundle = Buffer.concat([Buffer.from([0x47]), ROOT_PART, ...parts.map((x) => x.subarray(1))]);
      for (const p of others) p.send(bundle);
    } else {
      hub.send(PART);
      await hub.next();
    }
  });
}
// Exit only once the line is out: writes to a pipe are asynchronous, and exiting at once cut
// off samples past the pipe's 64 KiB buffer.
process.stdout.write(`@@BENCH ${JSON.stringify(res)}\n`, () => process.exit(0));
