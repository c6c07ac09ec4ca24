/**
 * Connection setup of the CPU group's mesh (docs/cpu-group.md, "Wire format"; docs/security.md):
 * the acceptor sends a CHALLENGE (a fresh nonce); the dialer answers HELLO (who it is, which
 * group, epoch and rank it wants, its framing settings, whether it would take a shared-memory
 * ring, its host id, the largest frame it accepts, its own nonce) signed with an HMAC under the
 * job secret over the HELLO and the challenge: a stranger cannot make one, and a recorded one is
 * useless (the next challenge differs). The acceptor checks it and answers ACK with a status —
 * and, when both want shm and share a host, the name of a ring segment it created for what it
 * sends — signed over the ACK and the HELLO's MAC, so the dialer knows it reached the rank it
 * meant, in this group and epoch, now.
 * The dialer maps it and answers with a u32 (1 mapped, 0 declined). That answer is the first of
 * the u32s the receiver sends on the acceptor's connection; the rest are wake-ups, so the shm
 * link (shm.ts) reads both.
 */
import crypto from 'node:crypto';
import type net from 'node:net';
import type { Logger } from '../../base/log.js';
import { hostId, Segment } from '../shm.js';
import {
  ACK_BODY, ACK_SIZE, decodeAck, decodeChallenge, decodeHelloFixed, encodeAck, encodeChallenge, encodeHello, HELLO_FIXED,
  HELLO_TRAILER, MAC_BYTES, MAGIC, MAX_NAME_BYTES, NONCE_BYTES, Status, statusText, VERSION, WANT_SHM, WANT_TCP,
} from '../wire.js';

const NO_SECRET = Buffer.alloc(0);

/** HMAC-SHA256 under the job secret (an empty key without one: then it only checks integrity). */
function mac(secret: Buffer | undefined, label: string, ...parts: Uint8Array[]): Buffer {
  const h = crypto.createHmac('sha256', secret ?? NO_SECRET).update(`groupcomm-cpu-${label}-v3\n`);
  for (const p of parts) h.update(p);
  return h.digest();
}

/** The MAC a dialer puts at the end of its HELLO (`hello`: the HELLO, MAC bytes zero). */
export function helloMac(secret: Buffer | undefined, hello: Uint8Array, challengeNonce: Uint8Array): Buffer {
  return mac(secret, 'hello', hello.subarray(0, hello.length - MAC_BYTES), challengeNonce);
}

/** Signs an ACK from encodeAck in place, for the HELLO whose MAC is `helloMac`; returns the ACK. */
export function signAck(secret: Buffer | undefined, ack: Buffer, theirHelloMac: Uint8Array): Buffer {
  mac(secret, 'ack', ack.subarray(0, ACK_BODY), theirHelloMac).copy(ack, ACK_BODY);
  return ack;
}

/** Signs a HELLO from encodeHello in place for the given challenge; returns its MAC. */
export function signHello(secret: Buffer | undefined, hello: Buffer, challengeNonce: Uint8Array): Buffer {
  const m = helloMac(secret, hello, challengeNonce);
  m.copy(hello, hello.length - MAC_BYTES);
  return m;
}

/** How a group's ranks on one host talk: 'auto' and 'shm' use shared memory for same-host peers. */
export type Transport = 'auto' | 'tcp' | 'shm';

export interface HandshakeOptions {
  rank: number;
  worldSize: number;
  groupName: string;
  epoch: number;
  /**
   * Settings that decide how collectives cut messages into frames: every rank must use the
   * same ones, so they travel in the HELLO and a rank with others is refused.
   */
  framing: { chunkBytes: number; smallBytes: number };
  /** 'tcp': sockets only; 'auto' / 'shm': shared-memory rings for same-host peers ('shm' warns on a fallback). */
  transport: Transport;
  /** Payload bytes of each shared-memory ring this rank offers (a power of two). */
  shmRingBytes: number;
  /** The job secret (undefined: none; the MACs then only catch corruption and version skew). */
  secret?: Buffer;
  /** Largest frame payload this rank accepts; told to each peer in the HELLO. */
  maxFrameBytes: number;
  log: Logger;
}

/** What an accepted HELLO tells about the peer. */
export interface PeerHello {
  rank: number;
  /** WANT_SHM when the dialer would take a ring. */
  want: number;
  /** The dialer's host id ('' when unknown). */
  hostId: string;
  /** Largest frame payload the dialer accepts (what we may send it). */
  maxFrameBytes: number;
  /** The HELLO's MAC (the ACK's MAC covers it). */
  mac: Buffer;
}

/** An ACK the dialer received: a refusal, or the peer's shm offer (ringBytes 0: none). */
export type AckResult = { ok: false; why: string; status?: number } | { ok: true; ringBytes: number; shmName: string };

export class Handshake {
  /** Every segment this rank created or mapped (the mesh unmaps them on close). */
  readonly segments: Segment[] = [];

  constructor(private readonly o: HandshakeOptions) {}

  /** Per peer: the MAC of the HELLO we sent it (its ACK must be signed over it). */
  private readonly sentMacs = new Map<number, Buffer>();

  /**
   * The dialer's HELLO to `peer`, answering its CHALLENGE; a string says why the challenge is
   * not one (not a groupcomm group, another version).
   */
  hello(peer: number, challenge: Uint8Array): Buffer | string {
    const c = decodeChallenge(challenge);
    if ('why' in c) return c.why;
    const o = this.o;
    const b = encodeHello({
      rank: o.rank, worldSize: o.worldSize, epoch: o.epoch, name: o.groupName, ...o.framing,
      want: o.transport === 'tcp' ? WANT_TCP : WANT_SHM, hostId: hostId(),
      toRank: peer, maxFrameBytes: o.maxFrameBytes, nonce: crypto.randomBytes(NONCE_BYTES),
    });
    this.sentMacs.set(peer, signHello(o.secret, b, c.nonce));
    return b;
  }

  /**
   * Reads the HELLO on an accepted socket and checks it. A refusal answers ACK with the status,
   * logs it with the remote address and closes the socket; an accepted HELLO stops the reading
   * and calls `accepted` (the caller answers with `ack`). `connected(rank)`: that rank already
   * has a connection to us.
   */
  readHello(s: net.Socket, connected: (rank: number) => boolean, accepted: (h: PeerHello) => void): void {
    const o = this.o;
    let got: Buffer = Buffer.alloc(0);
    const who = `${s.remoteAddress}:${s.remotePort}`;
    const nonce = crypto.randomBytes(NONCE_BYTES);
    s.write(encodeChallenge(nonce));
    const refuse = (status: number, detail: string) => {
      o.log.warn(`refused connection from ${who}: ${statusText(status)} (${detail})`);
      s.off('data', onData);
      s.end(encodeAck(status, o.rank));
      setTimeout(() => s.destroy(), 100).unref?.();
    };
    const onData = (d: Buffer) => {
      got = got.length ? Buffer.concat([got, d]) : d;
      if (got.length < HELLO_FIXED) return;
      const h = decodeHelloFixed(got);
      if (h.magic !== MAGIC) return refuse(Status.BAD_MAGIC, `magic 0x${h.magic.toString(16)}`);
      if (h.version !== VERSION) return refuse(Status.BAD_VERSION, `version ${h.version}`);
      if (h.nameLen > MAX_NAME_BYTES) return refuse(Status.WRONG_GROUP, `name of ${h.nameLen} bytes`);
      // After the name: u8 want, u8 hostIdLen, hostId, then the trailer (toRank, maxFrameBytes, nonce, MAC).
      const tail = HELLO_FIXED + h.nameLen;
      if (got.length < tail + 2) return;
      const hostEnd = tail + 2 + got[tail + 1];
      const helloLen = hostEnd + HELLO_TRAILER;
      if (got.length < helloLen) return;
      if (got.length > helloLen) return refuse(Status.BAD_MAGIC, 'bytes after the HELLO');
      const hello = got.subarray(0, helloLen);
      const theirMac = hello.subarray(helloLen - MAC_BYTES);
      const want = helloMac(o.secret, hello, nonce);
      if (!crypto.timingSafeEqual(theirMac, want)) return refuse(Status.BAD_AUTH, 'its HELLO is not signed with this job\'s secret (or answers another challenge)');
      const name = got.subarray(HELLO_FIXED, tail).toString('utf8');
      const wantShm = got[tail];
      const theirHost = got.subarray(tail + 2, hostEnd).toString('utf8');
      const toRank = got.readUInt32LE(hostEnd);
      const maxFrameBytes = got.readDoubleLE(hostEnd + 4);
      if (name !== o.groupName) return refuse(Status.WRONG_GROUP, `group '${name}', this is '${o.groupName}'`);
      if (h.epoch !== o.epoch) return refuse(Status.WRONG_EPOCH, `epoch ${h.epoch}, this is ${o.epoch}`);
      if (h.worldSize !== o.worldSize) return refuse(Status.WRONG_SIZE, `world size ${h.worldSize}, this is ${o.worldSize}`);
      if (h.rank >= o.worldSize || h.rank === o.rank) return refuse(Status.BAD_RANK, `rank ${h.rank}`);
      if (toRank !== o.rank) return refuse(Status.BAD_RANK, `it meant to reach rank ${toRank}, this is rank ${o.rank}`);
      if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 1) return refuse(Status.BAD_MAGIC, `maxFrameBytes ${maxFrameBytes}`);
      const f = o.framing;
      if (h.chunkBytes !== f.chunkBytes || h.smallBytes !== f.smallBytes) {
        return refuse(Status.WRONG_TUNING, `chunkBytes ${h.chunkBytes} / smallBytes ${h.smallBytes}, this rank uses ${f.chunkBytes} / ${f.smallBytes}`);
      }
      if (connected(h.rank)) return refuse(Status.DUPLICATE, `rank ${h.rank}`);
      s.off('data', onData);
      accepted({ rank: h.rank, want: wantShm, hostId: theirHost, maxFrameBytes, mac: Buffer.from(theirMac) });
    };
    s.on('data', onData);
  }

  /** Creates the ring for sending to the peer when both sides want shm and share a host; else undefined. */
  offer(h: PeerHello): Segment | undefined {
    if (this.o.transport === 'tcp' || h.want !== WANT_SHM) return undefined;
    const mine = hostId();
    if (!mine || h.hostId !== mine) {
      this.o.log.debug(`rank ${h.rank} is on another host (${h.hostId || 'unknown'}): TCP`);
      return undefined;
    }
    try {
      const seg = Segment.create(this.o.shmRingBytes);
      this.segments.push(seg);
      return seg;
    } catch (e) {
      this.fallback(h.rank, (e as Error).message);
      return undefined;
    }
  }

  /** The acceptor's ACK of an accepted HELLO, with the ring offer if there is one, signed. */
  ack(h: PeerHello, seg: Segment | undefined): Buffer {
    return signAck(this.o.secret, encodeAck(Status.OK, this.o.rank, seg ? { ringBytes: seg.ringBytes, name: seg.name } : undefined), h.mac);
  }

  /** Checks the ACK `peer` answered our HELLO with (a refusal is unsigned: it only ends setup). */
  readAck(peer: number, b: Uint8Array): AckResult {
    const a = decodeAck(b);
    if (a.magic !== MAGIC || a.version !== VERSION || a.status !== Status.OK || a.rank !== peer) {
      return {
        ok: false,
        status: a.magic === MAGIC && a.version === VERSION ? a.status : undefined,
        why: a.magic !== MAGIC ? 'not a groupcomm CPU group' : a.version !== VERSION ? `protocol version ${a.version}`
          : a.status !== Status.OK ? statusText(a.status) : `it is rank ${a.rank}`,
      };
    }
    const sent = this.sentMacs.get(peer);
    const want = sent && mac(this.o.secret, 'ack', b.subarray(0, ACK_BODY), sent);
    if (!want || !crypto.timingSafeEqual(Buffer.from(b.subarray(ACK_BODY, ACK_SIZE)), want)) {
      return { ok: false, why: 'its ACK is not signed with this job\'s secret for our HELLO (an impostor, or another GROUPCOMM_SECRET)' };
    }
    this.sentMacs.delete(peer);
    return { ok: true, ringBytes: a.ringBytes, shmName: a.shmName };
  }

  /**
   * Maps the ring `peer` offered for what it sends us (which unlinks its name); undefined when
   * this rank uses TCP only or the mapping failed (logged). The caller answers with `answer`.
   */
  take(peer: number, offer: { ringBytes: number; shmName: string }): Segment | undefined {
    if (this.o.transport === 'tcp') return undefined;
    try {
      const seg = Segment.open(offer.shmName, offer.ringBytes);
      this.segments.push(seg);
      return seg;
    } catch (e) {
      this.fallback(peer, (e as Error).message);
      return undefined;
    }
  }

  /** The dialer's answer to an offer. */
  answer(mapped: boolean): Buffer {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(mapped ? 1 : 0, 0);
    return b;
  }

  /** A direction that could have used shm stays on TCP: say why (a warning when 'shm' was asked for). */
  fallback(peer: number, why: string): void {
    const msg = `rank ${peer}: shared memory not used, falling back to TCP (${why})`;
    if (this.o.transport === 'shm') this.o.log.warn(msg);
    else this.o.log.info(msg);
  }

  /** Unmaps every segment (the peer keeps its own mapping until it closes). */
  closeSegments(): void {
    for (const seg of this.segments) {
      try {
        seg.close();
      } catch (e) {
        this.o.log.debug(`could not unmap ${seg.name}: ${e}`);
      }
    }
    this.segments.length = 0;
  }
}
