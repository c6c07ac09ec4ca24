/**
 * The CPU group's options (CpuGroup.create) and how they and their GROUPCOMM_CPU_* variables
 * become the transport and the pipeline tuning. group.ts re-exports CpuGroupOptions.
 */
import type { Store } from '../store/types.js';
import { setting } from '../base/config.js';
import { invalidArgument } from '../base/errors.js';
import type { Tuning } from './algorithms.js';
import type { Transport } from './mesh.js';
import { validRingBytes } from './shm.js';

export interface CpuGroupOptions {
  store: Store;
  rank: number;
  worldSize: number;
  /** Names the group in the store and in every handshake; groups with other names are refused. */
  groupName: string;
  /**
   * Address to listen on and to publish (default: GROUPCOMM_SOCKET_IFNAME's, else the source
   * address of the route toward MASTER_ADDR, else 127.0.0.1; see docs/multinode.md). A wildcard
   * (0.0.0.0, ::) listens everywhere and publishes the default instead.
   */
  host?: string;
  /** Port to listen on (default 0: any free port). */
  port?: number;
  /** Default for setup and for every operation (default GROUPCOMM_TIMEOUT_MS or 300 s). */
  timeoutMs?: number;
  /** Incarnation of the group; ranks of another epoch are refused (default 0). */
  epoch?: number;
  signal?: AbortSignal;
  /** Bytes per pipelined ring segment (default GROUPCOMM_CPU_CHUNK_BYTES or 512 KiB). */
  chunkBytes?: number;
  /** Ring segments in flight (default GROUPCOMM_CPU_WINDOW or 4). */
  window?: number;
  /** Messages up to this size use the latency algorithms (default GROUPCOMM_CPU_SMALL_BYTES or 64 KiB). */
  smallBytes?: number;
  /** Reused receive buffer per peer (default GROUPCOMM_CPU_RECV_BUFFER_BYTES or 1 MiB). */
  recvBufferBytes?: number;
  /**
   * 'tcp': sockets only. 'auto' and 'shm': same-host peers (same hostname and boot id) move
   * payloads through shared-memory rings, with the socket for doorbells; remote peers, or a
   * failed shm setup (logged; at warn level for 'shm'), use TCP. Default GROUPCOMM_CPU_TRANSPORT or 'auto'.
   */
  transport?: Transport;
  /**
   * Payload bytes of each ring this rank sends through, a power of two (default
   * GROUPCOMM_CPU_SHM_RING_BYTES, else 16 MiB / (P−1) rounded down to a power of two, between
   * 256 KiB and 4 MiB, so that a rank's rings stay within ~32 MiB however large the group).
   */
  shmRingBytes?: number;
  /**
   * An allReduce of at least this many bytes, in a group of 3 to 8 ranks all on this host,
   * reduces straight out of every rank's shared segment (segments.ts) instead of the ring; 0
   * turns it off. Default GROUPCOMM_CPU_SHM_REDUCE_BYTES or 256 KiB; the same on every rank.
   */
  shmReduceBytes?: number;
  /**
   * Bytes of each of the 3 buffers of a rank's allReduce segment (default
   * GROUPCOMM_CPU_SHM_REDUCE_CHUNK_BYTES or 1 MiB; lowered so that the P segments a rank maps
   * stay within 24 MiB). The same on every rank.
   */
  shmReduceChunkBytes?: number;
  /**
   * The job secret every peer must prove in its handshake (default GROUPCOMM_SECRET). Without
   * one, a non-loopback `host` is refused unless `insecure` (docs/security.md).
   */
  secret?: string | Uint8Array;
  /** Allow a non-loopback `host` without a secret (logged as a warning). Default GROUPCOMM_INSECURE. */
  insecure?: boolean;
  /** Largest frame payload a peer may send this rank (default GROUPCOMM_CPU_MAX_FRAME_BYTES, 4 GiB). */
  maxFrameBytes?: number;
  /**
   * A rank connected to every other rank at creation (default none: only the ring neighbours
   * are, every other pair connects on first use; docs/cpu-group.md, "Setup"). The coordinator
   * passes group rank 0, which hosts the group's store: the other members' fault reports travel
   * through that store, so each member must see that rank's loss itself.
   */
  hub?: number;
}

function defaultRingBytes(worldSize: number): number {
  const share = (16 << 20) / Math.max(1, worldSize - 1);
  let r = 256 * 1024;
  while (r * 2 <= share && r < (4 << 20)) r *= 2;
  return r;
}

export function transportOf(opts: CpuGroupOptions): { transport: Transport; shmRingBytes: number; shmMinBytes: number } {
  const t = opts.transport ?? setting('GROUPCOMM_CPU_TRANSPORT');
  if (t !== 'auto' && t !== 'tcp' && t !== 'shm') throw invalidArgument(`transport must be 'auto', 'tcp' or 'shm', got '${t}'`);
  const r = opts.shmRingBytes ?? setting('GROUPCOMM_CPU_SHM_RING_BYTES') ?? defaultRingBytes(opts.worldSize);
  if (!validRingBytes(r)) throw invalidArgument(`shmRingBytes must be a power of two in [64 KiB, 1 GiB], got ${r}`);
  // Tests set it to 1 to send every frame through the rings.
  const shmMinBytes = setting('GROUPCOMM_CPU_SHM_MIN_BYTES');
  return { transport: t, shmRingBytes: r, shmMinBytes };
}

/** The shared-segment allReduce's threshold and chunk (segments.ts). */
export function shmReduceOf(opts: CpuGroupOptions): { minBytes: number; chunkBytes: number } {
  const minBytes = opts.shmReduceBytes ?? setting('GROUPCOMM_CPU_SHM_REDUCE_BYTES');
  if (!Number.isSafeInteger(minBytes) || minBytes < 0) throw invalidArgument(`shmReduceBytes must be an integer >= 0, got ${minBytes}`);
  const chunkBytes = opts.shmReduceChunkBytes ?? setting('GROUPCOMM_CPU_SHM_REDUCE_CHUNK_BYTES');
  if (!Number.isInteger(chunkBytes) || chunkBytes < 4096 || chunkBytes > (1 << 30)) {
    throw invalidArgument(`shmReduceChunkBytes must be an integer in [4096, 2^30], got ${chunkBytes}`);
  }
  return { minBytes, chunkBytes };
}

export function tuningOf(opts: CpuGroupOptions): Tuning & { smallBytes: number } {
  const pick = (v: number | undefined, env: 'GROUPCOMM_CPU_CHUNK_BYTES' | 'GROUPCOMM_CPU_WINDOW' | 'GROUPCOMM_CPU_SMALL_BYTES', what: string) => {
    const x = v ?? setting(env);
    if (!Number.isInteger(x) || x < 1 || x > 0xffffffff) throw invalidArgument(`${what} must be an integer in [1, 2^32), got ${x}`);
    return x;
  };
  return {
    chunkBytes: pick(opts.chunkBytes, 'GROUPCOMM_CPU_CHUNK_BYTES', 'chunkBytes'),
    window: pick(opts.window, 'GROUPCOMM_CPU_WINDOW', 'window'),
    smallBytes: pick(opts.smallBytes, 'GROUPCOMM_CPU_SMALL_BYTES', 'smallBytes'),
  };
}
