/**
 * Creating a coordinator (coordinator.ts's create and fromEnv): checks the options, finds the
 * group in the layout, resolves the device backend, reserves the process-local name and opens
 * the channels (and the message queue when asked). On a failure it releases what it took. Also
 * the failure state the constructor builds and the error wording of every operation (explainError).
 * coordinator.ts then builds the class from what this returns.
 */
import { invalidArgument, isGroupcommError, withContext } from '../base/errors.js';
import { resolveBackend } from '../device/registry.js';
import type { DeviceBackendV1, DeviceCommunicatorV1 } from '../device/types.js';
import { findGroup, type GroupLayout } from '../core/layout.js';
import { reserveName, releaseName } from './names.js';
import { Deadline, effectiveTimeout } from '../base/deadline.js';
import { groupAddresses, type PortTriple } from './ports.js';
import { closeChannels, openChannels, type Channels } from './channels.js';
import { checkLaunchedWorld } from './env.js';
import { launchEnv } from '../base/launch_env.js';
import { TcpStore } from '../store/index.js';
import { MessageQueue } from './mq.js';
import { GroupFaults } from './faults.js';
import type { CoordinatorOptions } from './types.js';

/** What create() needs to build the coordinator once the channels are up. */
export interface OpenedGroup {
  layout: GroupLayout;
  uniqueName: string;
  localRank: number;
  device: string;
  ports: PortTriple | undefined;
  backend: DeviceBackendV1 | undefined;
  ch: Channels;
  timeoutMs: number;
  mq: MessageQueue | undefined;
}

/**
 * What a sub-group (split.ts) takes from its parent instead of finding it: the parent's backend,
 * and the device communicator already split from the parent's (adopted instead of bootstrapped).
 */
export interface InheritedDevice {
  backend?: DeviceBackendV1;
  comm?: DeviceCommunicatorV1;
}

/** The body of StatelessGroupCoordinator.create up to the constructor. */
export async function openGroup(o: CoordinatorOptions, inherit?: InheritedDevice): Promise<OpenedGroup> {
  if (!o || typeof o !== 'object') throw invalidArgument('StatelessGroupCoordinator.create: options object required');
  const timeoutMs = effectiveTimeout(o);
  const localRank = o.localRank ?? 0;
  if (!Number.isInteger(localRank) || localRank < 0) throw invalidArgument(`localRank must be an integer >= 0, got ${localRank}`);
  if (o.groupPorts && o.rendezvous) throw invalidArgument('pass groupPorts or rendezvous, not both');
  const base = o.groupName ?? 'anonymous';
  if (typeof base !== 'string' || base === '' || base.includes('/')) {
    throw invalidArgument(`groupName must be a non-empty string without '/', got ${JSON.stringify(base)}`);
  }
  checkLaunchedWorld(o);
  const layout = findGroup(o.groupRanks, o.globalRank, o.globalWorldSize);
  const addrs = await groupAddresses(o);
  const budget = new Deadline(timeoutMs, o.signal, `creating group '${base}' on global rank ${o.globalRank}`);

  let backend: DeviceBackendV1 | undefined;
  if (o.useDeviceCommunicator) backend = inherit?.backend ?? await resolveBackend(o.backend);
  const device = backend ? `${backend.deviceType}:${localRank}` : 'cpu';

  const uniqueName = reserveName(base);
  let opened: Awaited<ReturnType<typeof openChannels>>;
  try {
    opened = await openChannels({ o, layout, base, ...addrs, localRank, timeoutMs, budget, backend, adopt: inherit?.comm });
  } catch (e) {
    releaseName(uniqueName);
    throw e;
  }
  const { ch, ports } = opened;
  let mq: MessageQueue | undefined;
  if (o.useMessageQueueBroadcaster && ch.pg && ch.cpu) {
    try {
      mq = await MessageQueue.create({ pg: ch.pg, cpu: ch.cpu, rank: layout.rankInGroup, worldSize: layout.ranks.length, label: `${base}_${layout.groupIndex}` }, budget.next());
    } catch (e) {
      await closeChannels(ch, 0);
      releaseName(uniqueName);
      throw e;
    }
  }
  return { layout, uniqueName, localRank, device, ports, backend, ch, timeoutMs, mq };
}

/** The body of StatelessGroupCoordinator.fromEnv; `create` is the class's create(). */
export async function createFromEnv<G>(o: Omit<CoordinatorOptions, 'globalRank' | 'rendezvous' | 'groupPorts'> & { globalRank?: number },
  create: (o: CoordinatorOptions) => Promise<G>): Promise<G> {
  const env = launchEnv();
  const store = await TcpStore.fromEnv({ timeoutMs: o.timeoutMs, signal: o.signal });
  try {
    return await create({
      ...o, globalRank: o.globalRank ?? env.rank, localRank: o.localRank ?? env.localRank,
      globalWorldSize: o.globalWorldSize ?? env.worldSize, rendezvous: store,
    });
  } finally {
    await store.close();
  }
}

/** Adds the group's name and the global rank of a named peer to a lower layer's error. */
export function explainError(e: unknown, what: string, label: string, rank: number, ranks: readonly number[]): unknown {
  if (!isGroupcommError(e)) return e;
  const peers = e.peerRanks ?? (e.peerRank !== undefined ? [e.peerRank] : []);
  const named = peers.filter((r) => r >= 0 && r < ranks.length)
    .map((r) => `group rank ${r} = global rank ${ranks[r]}`);
  const msg = `${label}.${what} (global rank ${rank}): ${e.message}` +
    (named.length ? ` [${named.join('; ')}]` : '');
  return withContext(e, msg, { rank });
}

/** The group's failure state (faults.ts), built by the constructor; `life` aborts the pending operations. */
export function groupFaults(label: string, rankInGroup: number, worldSize: number, ch: Channels, life: AbortController): GroupFaults {
  return new GroupFaults({
    label, rankInGroup, worldSize, store: ch.store, cpu: ch.cpu,
    // The pending operations' signal fires with the failure; the ops then reject with it (judge).
    onFail: (e) => {
      life.abort(e);
      // A rank lost (not one that left): its store keys would stay forever (pg/group.ts reclaim).
      const dead = e.code === 'ERR_GROUPCOMM_PEER_LOST' ? e.peerRanks ?? (e.peerRank === undefined ? [] : [e.peerRank]) : [];
      const lost = dead.filter((r) => r !== rankInGroup && !ch.cpu?.hasLeft(r));
      if (lost.length) void ch.pg?.reclaim(lost).catch(() => {});
    },
  });
}
