/**
 * Dialing one peer (the receive side of a pair; mesh.ts): connect to the address the peer
 * published, and when that fails, decide whether to retry, to give up, or that the peer left.
 *
 * - During the mesh's setup a refusal means the address is stale (a crashed earlier run of the
 *   group; a peer publishes only once it listens): read the key again and retry until the peer's
 *   new incarnation has replaced it, or setup's deadline.
 * - After setup pairs connect on demand, and a live peer listens for its group's whole life. So
 *   a refusal at the address its key still names means it is gone — after a short grace
 *   (REFUSED_GRACE_MS: a stale key about to be replaced) the group is lost naming it; and a key
 *   that is gone means the peer closed its end of the group (close deletes it): it left. A
 *   connection that drops before the peer's ACK is a failed attempt too (a peer closing its
 *   listener resets the connections still in their handshake): its departure must not read
 *   as a crash.
 */
import net from 'node:net';
import type { Store } from '../../store/types.js';
import { applyKeepAlive } from '../../base/netaddr.js';
import type { Inbound } from './inbound.js';
import { dialReader } from './tcp.js';

/** After setup: how long a peer may refuse us at an unchanged address before it counts as gone. */
export const REFUSED_GRACE_MS = 2000;
/** Pause between attempts. */
const RETRY_MS = 50;

export interface DialSpec {
  peer: number;
  /** The address the peer published (`host:port`) and its key, read again on a failure. */
  addr: string;
  key: string;
  store: Store;
  inbound: Inbound;
  /** performance.now() after which a failing dial gives up. */
  deadline: number;
  /** True once the mesh's setup finished (see the file comment). */
  afterSetup(): boolean;
  /** False once the mesh is closing or lost: no more attempts. */
  active(): boolean;
  /** The socket connected (the CHALLENGE comes next, on the inbound). */
  connected(s: net.Socket): void;
  /** The connection, once its handshake was acknowledged (or during setup), broke or ended. */
  lost(why: string): void;
  /** The listener refused us (a stale or dead address): `refused(true)`; connected: `refused(false)`. */
  refused(yes: boolean): void;
  /** Gave up: the last error and the address it was at. */
  failed(e: Error, addr: string): void;
  /** After setup, the peer's key is gone: it left the group. */
  left(): void;
}

export function dialPeer(d: DialSpec): void {
  let addr = d.addr;
  /** When the listener first refused us at this address (after setup), if it did. */
  let refusedAt = 0;
  const setAddr = (v: Uint8Array) => {
    const a = Buffer.from(v).toString('utf8');
    if (a !== addr) refusedAt = 0;
    addr = a;
  };
  const attempt = () => {
    if (!d.active()) return;
    let connected = false;
    const cut = addr.lastIndexOf(':');
    const s = dialReader(addr.slice(0, cut), Number(addr.slice(cut + 1)), d.inbound);
    let retried = false;
    const retry = (e: Error, refusal: boolean) => {
      if (retried) return;
      retried = true;
      s.destroy();
      const now = performance.now();
      if (refusal) refusedAt ||= now;
      if (now >= d.deadline || (d.afterSetup() && refusedAt > 0 && now - refusedAt >= REFUSED_GRACE_MS)) {
        d.failed(e, addr);
        return;
      }
      setTimeout(() => {
        const opts = { timeoutMs: Math.max(1, Math.min(2000, d.deadline - performance.now())) };
        const reread = d.afterSetup()
          ? d.store.check([d.key], opts).then(async (there) => {
            if (!there) return false;
            setAddr(await d.store.get(d.key, opts));
            return true;
          })
          : d.store.get(d.key, opts).then((v) => { setAddr(v); return true; });
        reread.then((again) => (again ? attempt() : d.left()), () => attempt());
      }, RETRY_MS);
    };
    const ended = (why: string) => {
      if (retried) return;
      if (!d.inbound.acked && d.afterSetup() && d.active()) {
        // Dropped in the handshake: the peer may be closing (see the file comment).
        d.inbound.restartHandshake();
        retry(new Error(why), true);
      } else {
        d.lost(why);
      }
    };
    s.on('connect', () => {
      connected = true;
      d.refused(false);
      s.setNoDelay(true);
      applyKeepAlive(s);
      d.connected(s);
      // Everything a peer sends, its goodbye included, arrives in order on this connection,
      // so the end of *this* stream decides: after a goodbye it is a departure, else a loss.
      s.on('error', (e) => ended(e.message));
      s.on('end', () => ended('connection closed by the peer'));
      s.on('close', () => ended('connection closed'));
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      if (connected) return;
      if (e.code === 'ECONNREFUSED') d.refused(true);
      retry(e, e.code === 'ECONNREFUSED');
    });
  };
  attempt();
}

/**
 * Whether a TCP connection to `addr` (`host:port`) completes within `timeoutMs` (then closed at
 * once, before any byte). The kernel completes it for a listening process even when that
 * process is stuck, so false means the host is cut off or the listener is gone.
 */
export function reachable(addr: string, timeoutMs: number): Promise<boolean> {
  const cut = addr.lastIndexOf(':');
  return new Promise((resolve) => {
    const s = net.connect({ host: addr.slice(0, cut), port: Number(addr.slice(cut + 1)) });
    const end = (ok: boolean) => { clearTimeout(t); s.destroy(); resolve(ok); };
    const t = setTimeout(() => end(false), timeoutMs);
    s.once('connect', () => end(true));
    s.once('error', () => end(false));
  });
}

/**
 * Of `candidates`, those published at the host of a peer in `silent` that are not reachable
 * (liveness.ts: the ranks of a cut node go together; a stuck process's host still answers).
 */
export async function unreachableWith(silent: number[], candidates: number[], addrOf: (r: number) => string | undefined, timeoutMs: number): Promise<number[]> {
  const hostOf = (r: number) => { const a = addrOf(r) ?? ''; return a.slice(0, a.lastIndexOf(':')); };
  const hosts = new Set(silent.map(hostOf));
  const probe = candidates.filter((r) => addrOf(r) !== undefined && hosts.has(hostOf(r)));
  const up = await Promise.all(probe.map((r) => reachable(addrOf(r)!, timeoutMs)));
  return probe.filter((_, i) => !up[i]);
}
