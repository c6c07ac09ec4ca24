/**
 * env:// for coordinators: groups formed from the launcher's variables (host/base/launch_env.ts),
 * and the check that catches a launch with fewer ranks than the groups name.
 */
import { invalidArgument } from '../base/errors.js';
import { launchedWorldSize } from '../base/launch_env.js';
import type { CoordinatorOptions } from './types.js';

/**
 * Under `groupcomm launch` (GROUPCOMM_RUN_ID set) every global rank is below WORLD_SIZE: a group
 * naming a rank beyond it would wait for a process that will never start (the README example
 * run with `-n 2` used to sit out the 300 s timeout in silence). Says so at once instead.
 */
export function checkLaunchedWorld(o: CoordinatorOptions): void {
  if (o.globalWorldSize !== undefined || !Array.isArray(o.groupRanks)) return;
  const ws = launchedWorldSize();
  if (ws === undefined) return;
  const beyond = [...new Set(o.groupRanks.flat().filter((r) => Number.isInteger(r) && r >= ws))].sort((a, b) => a - b);
  if (beyond.length === 0) return;
  const need = Math.max(...beyond) + 1;
  throw invalidArgument(
    `groupRanks ${JSON.stringify(o.groupRanks)} names rank(s) ${beyond.join(', ')}, but this launch started WORLD_SIZE=${ws} ` +
    `ranks (0..${ws - 1}): those ranks will never join. Launch ${need} ranks (groupcomm launch -n ${need}, or --nnodes × ` +
    `--nproc-per-node = ${need}) or change groupRanks (a program that starts more ranks itself passes globalWorldSize)`, { rank: o.globalRank });
}
