/**
 * A DeviceBootstrap over any key-value Store (TcpStore, PrefixStore, or anything with the same contract).
 * Keys live under `prefix` and are deleted once their last reader has them, so a long-lived
 * group does not grow the store. Sequence numbers are per source (broadcast) and per pair
 * (send/recv), so ranks agree on keys without talking, as long as every rank issues the same
 * collectives in the same order (the contract of every collective here).
 */
import { effectiveTimeout, guard, simpleTimeout, type OpOptions } from '../base/deadline.js';
import { invalidArgument, isGroupcommError, timeoutError, ErrorCode } from '../base/errors.js';
import { PrefixStore } from '../store/prefix.js';
import type { Store } from '../store/types.js';
import type { DeviceBootstrap } from './types.js';

/** The part of the Store contract a bootstrap needs. */
export type BootstrapStore = Pick<Store, 'set' | 'get' | 'add' | 'check' | 'wait' | 'deleteKey'>;

export interface StoreBootstrapOptions {
  rank: number;
  worldSize: number;
  /** Key namespace; every member of the group must use the same one, and no other group. */
  prefix: string;
  /** Default for calls without their own timeoutMs. */
  timeoutMs?: number;
}

const STORE_METHODS = ['set', 'get', 'add', 'compareSet', 'check', 'wait', 'deleteKey', 'numKeys', 'append', 'multiGet', 'multiSet', 'ping', 'close'] as const;
const isFullStore = (s: BootstrapStore): s is Store => STORE_METHODS.every((m) => typeof (s as unknown as Record<string, unknown>)[m] === 'function');

/**
 * When `store` is a whole Store, the bootstrap also exposes it as `bootstrap.store`, scoped to
 * `${prefix}/backend`, for backends that build their own connections through it.
 */
export function storeBootstrap(store: BootstrapStore, o: StoreBootstrapOptions): DeviceBootstrap {
  const { rank, worldSize, prefix } = o;
  if (!Number.isInteger(worldSize) || worldSize < 1) throw invalidArgument(`worldSize must be an integer >= 1, got ${worldSize}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw invalidArgument(`rank ${rank} is outside [0, ${worldSize})`, { rank });
  const fallback = effectiveTimeout(o);
  const bcastSeq = new Array<number>(worldSize).fill(0);
  const sendSeq = new Array<number>(worldSize).fill(0);
  const recvSeq = new Array<number>(worldSize).fill(0);
  let barrierSeq = 0;
  const peer = (r: number, what: string) => {
    if (!Number.isInteger(r) || r < 0 || r >= worldSize) throw invalidArgument(`${what}: rank ${r} is outside [0, ${worldSize})`, { rank, peerRank: r });
  };
  const opt = (opts?: OpOptions): OpOptions => ({ timeoutMs: effectiveTimeout(opts, fallback), signal: opts?.signal });

  return {
    rank,
    worldSize,
    store: isFullStore(store) ? new PrefixStore(`${prefix}/backend`, store) : undefined,

    async broadcastBytes(bytes, src, opts) {
      peer(src, 'broadcastBytes');
      const key = `${prefix}/bc/${src}/${bcastSeq[src]++}`;
      const o2 = opt(opts);
      if (rank === src) {
        if (!bytes) throw invalidArgument(`broadcastBytes: the source rank ${src} must pass bytes`, { rank });
        if (worldSize > 1) await store.set(key, bytes, o2);
        return bytes;
      }
      const v = await store.get(key, o2);
      // The last of the worldSize-1 readers removes the value and its counter.
      if ((await store.add(`${key}/n`, 1, o2)) === worldSize - 1) {
        await store.deleteKey(key, o2);
        await store.deleteKey(`${key}/n`, o2);
      }
      return v;
    },

    async sendBytes(bytes, dst, opts) {
      peer(dst, 'sendBytes');
      if (dst === rank) throw invalidArgument('sendBytes: a rank cannot send to itself', { rank });
      await store.set(`${prefix}/p2p/${rank}-${dst}/${sendSeq[dst]++}`, bytes, opt(opts));
    },

    async recvBytes(src, opts) {
      peer(src, 'recvBytes');
      if (src === rank) throw invalidArgument('recvBytes: a rank cannot receive from itself', { rank });
      const key = `${prefix}/p2p/${src}-${rank}/${recvSeq[src]++}`;
      const o2 = opt(opts);
      try {
        const v = await store.get(key, o2);
        await store.deleteKey(key, o2);
        return v;
      } catch (e) {
        if (isGroupcommError(e, ErrorCode.TIMEOUT)) {
          throw timeoutError(`recvBytes on rank ${rank}: nothing from rank ${src} after ${o2.timeoutMs}ms (key ${key})`,
            { rank, peerRank: src, key, timeoutMs: o2.timeoutMs, cause: e });
        }
        throw e;
      }
    },

    async barrier(opts) {
      if (worldSize === 1) return;
      const base = `${prefix}/barrier/${barrierSeq++}`;
      const keys = Array.from({ length: worldSize }, (_, r) => `${base}/${r}`);
      const o2 = opt(opts);
      await store.set(keys[rank], '1', o2);
      try {
        await store.wait(keys, o2);
      } catch (e) {
        if (!isGroupcommError(e, ErrorCode.TIMEOUT)) throw e;
        // Name who never arrived; a short check, bounded by its own small timeout.
        const missing: number[] = [];
        for (let r = 0; r < worldSize; r++) {
          const here = await guard(store.check([keys[r]], { timeoutMs: 5_000 }), {
            timeoutMs: 5_000, what: 'barrier check', onTimeout: simpleTimeout('barrier check', 5_000),
          }).catch(() => false);
          if (!here) missing.push(r);
        }
        throw timeoutError(`barrier on rank ${rank} timed out after ${o2.timeoutMs}ms: waiting for ranks [${missing.join(', ')}] of ${worldSize}`,
          { rank, peerRanks: missing, keys, timeoutMs: o2.timeoutMs, cause: e });
      }
      // The last to leave cleans up, so the keys are never deleted under a rank still waiting.
      if ((await store.add(`${base}/left`, 1, o2)) === worldSize) {
        for (const k of keys) await store.deleteKey(k, o2);
        await store.deleteKey(`${base}/left`, o2);
      }
    },
  };
}
