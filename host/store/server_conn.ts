/**
 * The server's per-connection state (Conn), an in-process subscriber (LocalSub), and the small
 * wire helpers and constant replies the other server files share (server.ts is the entry).
 */
import type net from 'node:net';
import type { GroupcommError } from '../base/errors.js';
import { CheckReply, EXT_PROBE_KEY, Inbox, isAscii, WaitReply } from './protocol.js';

/** Pause reading from a client whose unread replies exceed this (it pipelines faster than it reads). */
export const MAX_PENDING_REPLY_BYTES = 64 * 1024 * 1024;
/** A reply buffer this big is written as it is (its own iovec) rather than copied into a batch. */
export const FLUSH_ALONE_BYTES = 16 * 1024;

export const EXT_PROBE_LATIN1 = Buffer.from(EXT_PROBE_KEY, 'utf8').toString('latin1');
/**
 * A mailbox prefix: `<ns>/to/<rank>/` with a non-empty namespace — a process group's
 * (pg/messages.ts: `<group>/<epoch>/to/<rank>/`) or the coordinator's fault inbox
 * (`groupcomm/faults/<label>/to/<rank>/`). One rank's messages, never a whole namespace.
 */
export const MAILBOX_PREFIX = /^[^]*[^/][^]*\/to\/\d+\/$/;
export const STOP_WAITING = Buffer.from([WaitReply.STOP_WAITING]);
export const WAIT_CANCELED = Buffer.from([WaitReply.WAIT_CANCELED]);
export const READY = Buffer.from([CheckReply.READY]);
export const NOT_READY = Buffer.from([CheckReply.NOT_READY]);

/** A u64 length field, little-endian (lengths here stay far below 2^53). */
export function putU64(f: Buffer, at: number, n: number): void {
  f.writeUInt32LE(n % 0x1_0000_0000, at);
  f.writeUInt32LE(Math.floor(n / 0x1_0000_0000), at + 4);
}

/** Writes a latin1 string (a wire key); short ones in a loop, cheaper than the native call. */
export function putLatin1(f: Buffer, at: number, s: string): void {
  if (s.length > 64) {
    f.write(s, at, 'latin1');
    return;
  }
  for (let i = 0; i < s.length; i++) f[at + i] = s.charCodeAt(i);
}

/** A wire key (latin1, one char per byte) as the text it encodes (UTF-8). */
export function utf8Key(key: string): string {
  return isAscii(key) ? key : Buffer.from(key, 'latin1').toString('utf8');
}

export class Conn {
  readonly id: number;
  stage: 'validate' | 'auth-hello' | 'auth-proof' | 'ready';
  readonly inbox = new Inbox(true);
  out: Buffer[] = [];
  /** The array `out` was last flushed from (flush swaps the two). */
  spare: Buffer[] = [];
  outBytes = 0;
  /** In the server's list of connections to flush (server_reply.ts). */
  queued = false;
  /** Keys this connection's current WAIT still misses (torch: one count per connection). */
  waitCount = 0;
  waitKeys: string[] | null = null;
  /** The keys of a pending WAIT_GET (answered with their values), null for a plain WAIT. */
  waitGet: string[] | null = null;
  /** The pending WAIT_GET deletes its keys once answered. */
  waitTake = false;
  closed = false;
  /** The prefix this connection subscribed to (it is a push stream from then on). */
  subscribed: string | null = null;
  clientNonce?: Buffer;
  serverNonce?: Buffer;
  /** Sent the extension probe: a groupcomm client (SUBSCRIBE needs it). */
  groupcomm = false;
  /** Bytes this connection's inbox holds toward the server-wide budget. */
  held = 0;
  /** Closes the connection if the handshake is not done in time. */
  deadline?: NodeJS.Timeout;
  constructor(readonly socket: net.Socket, id: number) {
    this.id = id;
    this.stage = 'validate';
  }
  get remote(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }
}

/** A subscriber in this process (subscribeLocal): its pushes are calls, not bytes on a link. */
export class LocalSub {
  closed = false;
  constructor(readonly fn: (key: string, value: Uint8Array) => void, readonly onEnd: (e: GroupcommError) => void) {}
}
