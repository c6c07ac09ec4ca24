/**
 * The TCP link: frames written on the connection the peer dialed to us (send side), and the
 * connection we dialed to the peer, whose bytes go to the parser (receive side).
 *
 * Why one-way connections: Node reaches ~3 GiB/s on loopback only with
 * `net.connect({ onread })` (one reused receive buffer, no allocation per read), and `onread`
 * exists only on the dialing side (Bun hangs on the server-side equivalent). So every rank reads
 * only from sockets it dialed and writes only to sockets it accepted.
 */
import net from 'node:net';
import { HEADER_SIZE, KIND_BYE, writeHeader, type FrameHeader } from '../wire.js';
import type { Inbound } from './inbound.js';
import { COPY_BELOW, type SidePool } from './sink.js';
import type { Link, LinkEvents, SendOptions, WriteDone } from './link.js';

const BYE: FrameHeader = { kind: KIND_BYE, tag: 0, seq: 0, slot: 0 };

export interface TcpLinkOptions {
  /** The rank at the other end (for messages). */
  peer: number;
  /** The accepted connection from that peer: this side only writes on it. */
  socket: net.Socket;
  events: LinkEvents;
  /** Recycled buffers for copied frames, shared by the group's links. */
  pool: SidePool;
  /**
   * Bytes the peer sends on this connection: a shm link's wake-ups. Without it any byte is a
   * protocol violation (nothing may arrive on a send side).
   */
  onData?: (d: Buffer) => void;
}

export class TcpLink implements Link {
  readonly transport = 'tcp' as const;
  readonly peer: number;
  private readonly s: net.Socket;
  private readonly pool: SidePool;
  private closed = false;

  constructor(o: TcpLinkOptions) {
    this.peer = o.peer;
    this.s = o.socket;
    this.pool = o.pool;
    const { events } = o;
    this.s.on('data', o.onData ?? (() => events.malformed('unexpected bytes on the send-side connection')));
    this.s.on('error', (e) => events.lost(e.message));
    this.s.on('end', () => events.lost('connection closed by the peer'));
    this.s.on('close', () => events.lost('connection closed'));
  }

  /** The connection is gone: nothing more can be sent. */
  get destroyed(): boolean {
    return this.s.destroyed;
  }

  /**
   * Small payloads are copied into the write (the caller may reuse them at once); larger ones
   * are written from the caller's memory, which must stay unchanged until `done` runs (Node
   * keeps a reference until the kernel has taken the bytes).
   */
  send(frame: FrameHeader, payload: Uint8Array, opts: SendOptions, done: WriteDone): void {
    if (this.s.destroyed) {
      done(new Error(`no connection to rank ${this.peer}`));
      return;
    }
    this.write(frame, payload, opts.copy === true, done);
  }

  /** Writes one frame, without the connection check (a shm link's queued frames come here). */
  write(frame: FrameHeader, payload: Uint8Array, copy: boolean, done: WriteDone): void {
    const s = this.s;
    const n = payload.byteLength;
    if (copy || n <= COPY_BELOW) {
      // Small frames come from Node's shared pool; larger copies from our own recycled
      // buffers, since a fresh allocation of that size means fresh pages (page faults) here.
      const pooled = n >= 4096;
      const b = pooled ? this.pool.get(HEADER_SIZE + n) : Buffer.allocUnsafe(HEADER_SIZE + n);
      writeHeader(b, 0, frame, n);
      b.set(payload, HEADER_SIZE);
      s.write(b, pooled ? (err) => { this.pool.put(b); done(err); } : done);
      return;
    }
    const h = Buffer.allocUnsafe(HEADER_SIZE);
    writeHeader(h, 0, frame, n);
    s.cork();
    s.write(h);
    s.write(payload, done);
    s.uncork();
  }

  /** Writes `b` as it is (a doorbell, built by the shm link). */
  writeRaw(b: Uint8Array, done: WriteDone): void {
    this.s.write(b, done);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.s.destroyed) return;
    const bye = Buffer.alloc(HEADER_SIZE);
    writeHeader(bye, 0, BYE, 0);
    const s = this.s;
    s.end(bye);
    setTimeout(() => s.destroy(), 1000).unref();
  }

  destroy(): void {
    this.s.destroy();
  }
}

/**
 * Dials `host:port` and feeds what the peer sends to `inbound`, read with `onread` into the
 * parser's reused buffer or straight into the current frame's destination (see
 * Inbound.nextBuffer). The caller handles 'connect' and errors.
 */
export function dialReader(host: string, port: number, inbound: Inbound): net.Socket {
  return net.connect({
    host, port,
    onread: { buffer: () => inbound.nextBuffer(), callback: (n: number, b: Uint8Array) => { inbound.feed(b, n); return true; } },
  } as net.NetConnectOpts);
}

/**
 * Listens on `host:port` (0: any free port) and hands every accepted connection to
 * `onConnection`; resolves once listening. Later listener errors go to `onError`.
 */
export function listen(host: string, port: number, onConnection: (s: net.Socket) => void, onError: (e: Error) => void): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer(onConnection);
    srv.once('error', reject);
    srv.listen(port, host, () => {
      srv.off('error', reject);
      srv.on('error', onError);
      resolve(srv);
    });
  });
}
