/**
 * The CPU group's listener (mesh.ts): accepts connections and reads each one's HELLO (the
 * handshake, handshake.ts). Connections that have not completed a HELLO — strangers — are
 * bounded in number and in time: a flood must not take this rank's descriptors, nor a silent
 * socket hold one for the group's life (the listener stays open as long as the group: pairs
 * connect on demand).
 */
import type net from 'node:net';
import { bindError } from '../../base/errors.js';
import { applyKeepAlive } from '../../base/netaddr.js';
import type { Logger } from '../../base/log.js';
import type { Handshake, PeerHello } from './handshake.js';
import { listen } from './tcp.js';

/** A connection must send a valid HELLO within this (ms), or it is closed. */
const HELLO_TIMEOUT_MS = 10_000;
/** Connections without a HELLO yet held at once (besides 2 per peer). */
const MAX_STRANGERS = 64;

export interface ListenerOptions {
  host: string;
  port: number;
  /** Names the listener in a bind error. */
  what: string;
  worldSize: number;
  helloTimeoutMs?: number;
  hs: Handshake;
  log: Logger;
  /** True when `rank` already has an accepted connection (a second one is refused). */
  connected(rank: number): boolean;
  /** A connection whose HELLO checked out (the caller answers with the ACK). */
  accepted(s: net.Socket, h: PeerHello): void;
}

export class Listener {
  private strangers = new Set<net.Socket>();
  private closed = false;

  private constructor(private readonly o: ListenerOptions, private readonly server: net.Server) {}

  /** Listens on host:port (0: any free port). */
  static async open(o: ListenerOptions): Promise<Listener> {
    let l: Listener | undefined;
    const server = await listen(o.host, o.port, (s) => l ? l.onConnection(s) : s.destroy(), (e) => o.log.warn(`listener error: ${e.message}`))
      .catch((e) => { throw bindError(o.what, o.host, o.port, e); });
    l = new Listener(o, server);
    return l;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  private onConnection(s: net.Socket): void {
    if (this.closed) { s.destroy(); return; }
    const { log } = this.o;
    if (this.strangers.size >= MAX_STRANGERS + 2 * this.o.worldSize) {
      log.warn(`too many connections that have not completed a HELLO (${this.strangers.size}): refusing ${s.remoteAddress}:${s.remotePort}`);
      s.destroy();
      return;
    }
    s.setNoDelay(true);
    applyKeepAlive(s);
    this.strangers.add(s);
    const helloMs = this.o.helloTimeoutMs ?? HELLO_TIMEOUT_MS;
    const timer = setTimeout(() => {
      if (this.strangers.has(s)) {
        log.warn(`no valid HELLO from ${s.remoteAddress}:${s.remotePort} within ${helloMs} ms: closing it`);
        s.destroy();
      }
    }, helloMs);
    timer.unref?.();
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(timer); this.strangers.delete(s); });
    this.o.hs.readHello(s, (r) => this.o.connected(r), (h) => {
      clearTimeout(timer);
      this.strangers.delete(s);
      this.o.accepted(s, h);
    });
  }

  /** Stops listening and drops the strangers (accepted connections are the mesh's). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    for (const s of this.strangers) s.destroy();
    this.strangers.clear();
  }
}
