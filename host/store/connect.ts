/**
 * Opening a client connection: TCP connect, then VALIDATE, the optional auth exchange, and PING
 * with the extension probe in the same write. Retries with exponential backoff and jitter until
 * the deadline, like torch's client.
 */
import type { LocalSocket } from './local.js';
import crypto from 'node:crypto';
import net from 'node:net';
import { guard, sleep } from '../base/deadline.js';
import { abortedError, authError, GroupcommError, isGroupcommError, peerLostError, protocolError, timeoutError } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { IS_BUN } from '../base/runtime.js';
import { applyKeepAlive } from '../base/netaddr.js';
import { authProof } from './auth.js';
import { Connection, readU32, readU8, type AttachReads } from './connection.js';
import {
  AUTH_NONCE_BYTES, AUTH_REQUIRED_NONCE, CheckReply, EXT_PROBE_KEY, Frame, keyListFrame, Op, VALIDATE_MAGIC,
} from './protocol.js';

/** Connect retry: first pause, growth, cap. torch starts at 500 ms; local ranks start in ms. */
const BACKOFF_FIRST_MS = 20;
const BACKOFF_FACTOR = 1.5;
const BACKOFF_MAX_MS = 1000;

export interface ConnectSpec {
  host: string;
  port: number;
  timeoutMs: number;
  signal?: AbortSignal;
  secret?: Buffer;
  /** Send the extension probe in the handshake. */
  probe: boolean;
  /** The server is in this process: connect to it in memory (see local.ts), not over TCP. */
  local?: {
    connectLocal(): LocalSocket | undefined;
    subscribeLocal?(prefix: string, fn: (key: string, value: Uint8Array) => void, onEnd: (e: GroupcommError) => void): { close(): void } | null;
    publishLocal?(keys: string[], values: Uint8Array[], handOver?: boolean): void;
  };
  log: Logger;
}

/**
 * Node: the socket reads into one buffer of its own (net's `onread`), and the Connection copies
 * the bytes read from it (Inbox.push, transient) — no stream machinery ('data' events through
 * Readable) and no 64 KiB allocation per read, both paid by every small reply and push; the
 * reads of a big value are copied once, into the buffer that holds the whole value (copying
 * each read to a buffer of its own first doubled the copies, each into fresh memory). Bun
 * keeps plain 'data' events.
 */
function readHook(): { opts: Partial<net.NetConnectOpts>; attach?: AttachReads } {
  if (IS_BUN) return { opts: {} };
  let sink: ((c: Buffer, transient: boolean) => void) | undefined;
  // The Connection attaches in the microtask after 'connect', before any read can be delivered;
  // reads are kept here anyway, so that nothing depends on that ordering.
  const early: Buffer[] = [];
  return {
    opts: {
      onread: {
        buffer: Buffer.allocUnsafeSlow(64 * 1024),
        callback: (n: number, buf: Buffer) => {
          const view = buf.subarray(0, n);
          // The Connection copies the read where it belongs (Inbox.push: a big value's bytes
          // straight into the buffer of the whole value).
          if (sink) sink(view, true);
          else early.push(Buffer.from(view));
          return true;
        },
      },
    },
    attach: (fn) => {
      sink = fn;
      for (const c of early.splice(0)) fn(c, false);
    },
  };
}

/** A connected socket, and (Node) where its Connection registers for its reads. */
function connectSocket(host: string, port: number, timeoutMs: number): Promise<{ socket: net.Socket; attach?: AttachReads }> {
  return new Promise((resolve, reject) => {
    const hook = readHook();
    const s = net.connect({ host, port, noDelay: true, ...hook.opts } as net.NetConnectOpts);
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      applyKeepAlive(s);
      s.removeAllListeners('error');
      resolve({ socket: s, attach: hook.attach });
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    });
  });
}

/** VALIDATE, the optional auth exchange, then PING and the extension probe in one round trip. */
async function handshake(conn: Connection, spec: ConnectSpec): Promise<boolean> {
  conn.writeNow(new Frame(5).u8(Op.VALIDATE).u32(VALIDATE_MAGIC).done());
  if (spec.secret) {
    const clientNonce = crypto.randomBytes(AUTH_NONCE_BYTES);
    let reply: Uint8Array;
    try {
      reply = await conn.request(new Frame(1 + AUTH_NONCE_BYTES).u8(Op.AUTH_HELLO).raw(clientNonce).done(),
        (c) => { const at = c.take(2 * AUTH_NONCE_BYTES); return c.buf.subarray(at, at + 2 * AUTH_NONCE_BYTES); });
    } catch (e) {
      if (isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST')) {
        throw authError(`store ${conn.address} refused authentication: it has no secret (or is not a groupcomm server)`, { cause: e });
      }
      throw e;
    }
    const serverNonce = Buffer.from(reply.subarray(0, AUTH_NONCE_BYTES));
    const proof = reply.subarray(AUTH_NONCE_BYTES);
    if (!crypto.timingSafeEqual(proof, authProof(spec.secret, 'server', clientNonce, serverNonce))) {
      throw authError(`store ${conn.address} failed to prove it knows the secret (different secret?)`);
    }
    try {
      await conn.request(new Frame(1 + 32).u8(Op.AUTH_PROOF).raw(authProof(spec.secret, 'client', serverNonce, clientNonce)).done(), readU8);
    } catch (e) {
      if (isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST')) throw authError(`store ${conn.address} rejected our secret`, { cause: e });
      throw e;
    }
  }
  let nonce = (process.pid ^ crypto.randomBytes(4).readUInt32LE(0)) >>> 0;
  if (nonce === AUTH_REQUIRED_NONCE) nonce ^= 1;
  const echo = conn.request(new Frame(5).u8(Op.PING).u32(nonce).done(), readU32);
  const probe = spec.probe
    ? conn.request(keyListFrame(Op.CHECK, [Buffer.from(EXT_PROBE_KEY, 'utf8')]), readU8)
    : Promise.resolve(CheckReply.NOT_READY);
  probe.catch(() => {});
  const got = await echo;
  if (got === AUTH_REQUIRED_NONCE) {
    conn.close();
    throw authError(`store ${conn.address} requires a secret; pass { secret } (or GROUPCOMM_STORE_SECRET to the CLI)`);
  }
  if (got !== nonce) throw protocolError(`store ${conn.address} answered PING with ${got}, expected ${nonce}`);
  return (await probe) === CheckReply.READY;
}

const RETRYABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/**
 * Connects with exponential backoff and jitter until the deadline, like torch's client: a server
 * that is not up yet, or a reset from an overflowing listen backlog, is retried, not reported.
 */
export async function openConnection(spec: ConnectSpec): Promise<{ conn: Connection; ext: boolean }> {
  const address = `${spec.host}:${spec.port}`;
  const t0 = performance.now();
  let delay = BACKOFF_FIRST_MS;
  let attempts = 0;
  let last: unknown;
  for (;;) {
    if (spec.signal?.aborted) {
      throw abortedError(`connect to store ${address} aborted`, { cause: spec.signal.reason });
    }
    const left = spec.timeoutMs - (performance.now() - t0);
    // Under a millisecond is no time for a try: a timer may fire that much before its time.
    if (left < 1) break;
    attempts++;
    let conn: Connection | undefined;
    try {
      const local = spec.local?.connectLocal() as net.Socket | undefined;
      const { socket, attach } = local ? { socket: local, attach: undefined } : await connectSocket(spec.host, spec.port, left);
      conn = new Connection(socket, address, spec.timeoutMs, spec.log, attach);
      const ext = await guard(handshake(conn, spec), {
        timeoutMs: Math.max(1, spec.timeoutMs - (performance.now() - t0)),
        signal: spec.signal,
        what: `handshake with store ${address}`,
        onTimeout: () => timeoutError(`handshake with store ${address} timed out`),
      });
      return { conn, ext };
    } catch (e) {
      conn?.close();
      if (isGroupcommError(e, 'ERR_GROUPCOMM_AUTH') || isGroupcommError(e, 'ERR_GROUPCOMM_ABORTED')) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      if (!(isGroupcommError(e, 'ERR_GROUPCOMM_PEER_LOST') || isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT') || (code && RETRYABLE.has(code)))) {
        throw e instanceof GroupcommError ? e : peerLostError(`cannot connect to store ${address}: ${(e as Error).message}`, { cause: e });
      }
      last = e;
      spec.log.debug(`connect to ${address} failed (try ${attempts}): ${(e as Error).message}; retrying in ~${Math.round(delay)}ms`);
    }
    const left2 = spec.timeoutMs - (performance.now() - t0);
    if (left2 < 1) break;
    const pause = Math.min(left2, delay * (0.5 + Math.random()));
    await sleep(pause, spec.signal);
    delay = Math.min(BACKOFF_MAX_MS, delay * BACKOFF_FACTOR);
  }
  const why = (last as Error | undefined)?.message ?? 'no attempt';
  throw timeoutError(
    `the client timed out after ${spec.timeoutMs}ms trying to connect to store ${address} ` +
    `(${attempts} attempts, last error: ${(last as NodeJS.ErrnoException)?.code ?? why}). Is the server up? Raise timeoutMs?`,
    { timeoutMs: spec.timeoutMs, cause: last },
  );
}
