/**
 * Liveness of a CPU group's links (GROUPCOMM_LIVENESS_MS, L): every L/5 each rank sends a
 * heartbeat frame to each peer and checks that bytes came from each since the last check. A peer
 * silent for L is lost; the loss names every peer silent for L/2 (a healthy peer is never silent
 * for much more than one heartbeat period, so those went with the first: all the ranks of a node
 * whose link was cut go together).
 *
 * Why not TCP keepalive alone: Node and Bun set only TCP_KEEPIDLE, and the kernel sends no probe
 * while unacknowledged data waits to be sent, which is exactly the case of a rank blocked in an
 * allReduce toward a cut peer. Peers with shared-memory rings are checked too: their doorbells
 * and heartbeats still travel over the socket.
 *
 * Only the pairs this rank has connected, or is connecting, are watched: pairs connect on demand
 * (mesh.ts), and a peer no operation has needed yet is not expected to send. A peer that dies
 * unwatched is found when an operation first needs it: its dial is refused (the group is lost
 * naming it) or stays unanswered, and then it is watched from the dial on, so it is lost after L.
 * When watched peers go silent, the unwatched peers published at the same host address are
 * probed with a bare TCP connect (mesh.ts): one that does not complete within a moment (the
 * host is cut) or is refused (the process is gone) is named with them — so all the ranks of a
 * node whose link was cut still go together — while a host that answers (a stuck process, not a
 * cut link) keeps its other ranks out of the verdict. Failure notice for ranks one never talks
 * to otherwise comes from the coordinator's store channel, not from here.
 */
import { setting } from '../base/config.js';
import { KIND_PING, type FrameHeader } from './wire.js';

const PING: FrameHeader = { kind: KIND_PING, tag: 0, seq: 0, slot: 0 };
const EMPTY = new Uint8Array(0);
const noop = () => {};

/** What the check needs from the mesh. */
export interface LivenessPeers {
  rank: number;
  worldSize: number;
  /** False once the mesh is closing or lost: the check stops. */
  active(): boolean;
  /** Peers that said goodbye are not expected to send. */
  departed(peer: number): boolean;
  /** Peers this rank has connected or is connecting to (the others are not expected to send). */
  watched(peer: number): boolean;
  /** Sends one heartbeat frame to `peer` (a no-op when there is no connection). */
  ping(peer: number, frame: FrameHeader, payload: Uint8Array, done: () => void): void;
  /** Bytes read from `peer` so far. */
  bytesIn(peer: number): number;
  /** The peers in `silent` are lost (the first was silent longest). */
  lose(silent: number[], why: string): void;
  /**
   * Unwatched peers that went with the silent ones (the mesh probes those on the same hosts);
   * named with them.
   */
  alsoCut(silent: number[]): Promise<number[]>;
}

/** Starts the check; returns the function that stops it (undefined when the bound is 0). */
export function watchLiveness(m: LivenessPeers): (() => void) | undefined {
  const bound = setting('GROUPCOMM_LIVENESS_MS');
  if (!bound || m.worldSize === 1) return undefined;
  const seen = Array.from({ length: m.worldSize }, (_, p) => (p === m.rank ? 0 : m.bytesIn(p)));
  const since = new Array<number>(m.worldSize).fill(performance.now());
  let deciding = false;
  const timer = setInterval(() => {
    if (deciding) return;
    if (!m.active()) {
      clearInterval(timer);
      return;
    }
    const now = performance.now();
    let over = false;
    for (let p = 0; p < m.worldSize; p++) {
      if (p === m.rank || m.departed(p)) continue;
      if (!m.watched(p)) {
        // Not connected: watched from the moment its dial starts.
        since[p] = now;
        continue;
      }
      m.ping(p, PING, EMPTY, noop);
      const b = m.bytesIn(p);
      if (b !== seen[p]) {
        seen[p] = b;
        since[p] = now;
      } else if (now - since[p] >= bound) {
        over = true;
      }
    }
    if (!over) return;
    const silent: number[] = [];
    for (let p = 0; p < m.worldSize; p++) {
      if (p !== m.rank && !m.departed(p) && m.watched(p) && now - since[p] >= bound / 2) silent.push(p);
    }
    silent.sort((a, b) => since[a] - since[b]);
    const why = `nothing received for ${Math.round(now - since[silent[0]])} ms, bound ${bound} ms (GROUPCOMM_LIVENESS_MS): link cut or process stuck`;
    deciding = true;
    void m.alsoCut(silent).catch(() => []).then((more) => {
      deciding = false;
      if (m.active()) m.lose([...silent, ...more], more.length ? `${why}; unreachable with them: rank${more.length > 1 ? 's' : ''} ${more.join(', ')}` : why);
    });
  }, Math.max(10, Math.floor(bound / 5)));
  timer.unref?.();
  return () => clearInterval(timer);
}
