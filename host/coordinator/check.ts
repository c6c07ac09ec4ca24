/**
 * Mismatched calls on the device path. CPU tensors are checked on every call by the fingerprint
 * in each CPU group frame (host/cpu/fingerprint.ts); a device communicator's frames are not ours
 * to extend (NCCL's), so every N-th device collective (GROUPCOMM_CHECK_CALLS_EVERY; default every
 * call under GROUPCOMM_DEBUG=debug or trace, else every 64th) first exchanges the fingerprints
 * over the store channel, and every rank fails with ERR_GROUPCOMM_MISMATCH naming the ranks and
 * fields that differ. Which calls are checked depends only on the call count, so all ranks agree.
 */
import type { Deadline } from '../base/deadline.js';
import { setting } from '../base/config.js';
import { mismatchError } from '../base/errors.js';
import { logger } from '../base/log.js';
import type { Collectives } from '../core/collectives.js';
import type { Tensor } from '../core/tensor.js';
import { describeMismatch, fingerprint, type CallShape } from '../cpu/fingerprint.js';
import type { GroupIo } from './io.js';

const debugging = logger('COORD').enabled('debug');

/** How often device collectives are checked (0: never). */
export function checkEvery(): number {
  return setting('GROUPCOMM_CHECK_CALLS_EVERY') ?? (debugging ? 1 : 64);
}

/** Before a collective on `ch`: when it is the device communicator and this call is sampled, compare calls. */
export async function checkDeviceCall(io: GroupIo, ch: Collectives<Tensor>, call: CallShape, b: Deadline): Promise<void> {
  const net = io.net;
  if (!net?.comm || ch !== net.comm) return;
  const n = io.deviceCalls++;
  const every = checkEvery();
  if (every === 0 || n % every !== 0) return;
  const mine = fingerprint(call);
  const all = await net.pg.allGatherObj(mine, b.next());
  const differ = all.map((fp, r) => ({ fp: Number(fp), r })).filter((x) => x.fp !== mine);
  if (differ.length === 0) return;
  const words = differ.map((x) => `rank ${x.r}: ${describeMismatch(mine, x.fp, x.r).text}`);
  throw mismatchError(`${call.collective}: ranks made different calls (device collective #${n}, checked over the store channel): ${words.join('; ')}`,
    { peerRanks: differ.map((x) => x.r), peerRank: differ.length === 1 ? differ[0].r : undefined });
}
