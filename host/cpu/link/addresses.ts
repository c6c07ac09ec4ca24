/**
 * The CPU group's rendezvous (mesh.ts): each rank publishes `host:port` under its own key and
 * reads every peer's with one multiGet — two store operations per rank, O(ranks) in total (a
 * third, the key's deletion, comes at close). A peer whose key never appears is named.
 */
import type { Store } from '../../store/types.js';
import { isGroupcommError, timeoutError } from '../../base/errors.js';

export interface AddressSpec {
  store: Store;
  groupName: string;
  epoch: number;
  rank: number;
  worldSize: number;
  signal?: AbortSignal;
}

/** Where rank `r` publishes its address. */
export function addrKey(s: { groupName: string; epoch: number }, r: number): string {
  return `groupcomm/cpu/${s.groupName}/${s.epoch}/addr/${r}`;
}

/**
 * Publishes this rank's address (then `published()`) and waits for every peer's. Returns rank →
 * address (own: undefined), decoded when first asked for: a rank only dials a few peers, and
 * decoding every one of P−1 addresses on each of P ranks would be O(P²) work again.
 */
export async function exchangeAddresses(s: AddressSpec, mine: string, left: () => number, published: (key: string) => void): Promise<(r: number) => string | undefined> {
  const keys = [...Array(s.worldSize).keys()].map((r) => addrKey(s, r));
  await s.store.set(keys[s.rank], mine, { timeoutMs: left(), signal: s.signal });
  published(keys[s.rank]);
  let addrs: Uint8Array[];
  try {
    addrs = await s.store.multiGet(keys.filter((_, r) => r !== s.rank), { timeoutMs: left(), signal: s.signal });
  } catch (e) {
    throw await unpublished(s, e, keys);
  }
  return (r) => (r === s.rank || r < 0 || r >= s.worldSize ? undefined : Buffer.from(addrs[r < s.rank ? r : r - 1]).toString('utf8'));
}

/**
 * The address wait timed out: name the ranks whose address never appeared (a store wait only
 * knows its keys), asking the store key by key, briefly.
 */
async function unpublished(s: AddressSpec, e: unknown, keys: string[]): Promise<unknown> {
  if (!isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) return e;
  const { store, rank } = s;
  const there = await Promise.all(keys.map((k, r) => (r === rank ? true : store.check([k], { timeoutMs: 300 }).catch(() => undefined))));
  const missing = keys.map((_, r) => r).filter((r) => there[r] === false);
  if (missing.length === 0) return e;
  return timeoutError(`CPU group '${s.groupName}' rank ${rank}: rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} ` +
    `never published ${missing.length > 1 ? 'their' : 'its'} address (did ${missing.length > 1 ? 'they' : 'it'} call create?): ${e.message}`,
  { rank, peerRanks: missing, peerRank: missing.length === 1 ? missing[0] : undefined, timeoutMs: e.timeoutMs, cause: e });
}
