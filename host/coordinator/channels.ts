/**
 * A coordinator's channels: opening them at create (ports, the group's store, the store channel
 * and the CPU group side by side, then the device communicator) and closing them in order at
 * close, abort, or after a failed create.
 */
import { anySignal, sleep, type Deadline } from '../base/deadline.js';
import { logger } from '../base/log.js';
import { isGroupcommError, mismatchError, peerLostError, withContext, type GroupcommError } from '../base/errors.js';
import { checkView, publishView, reportedMismatch, watchViews } from './members.js';
import { setting } from '../base/config.js';
import type { GroupLayout } from '../core/layout.js';
import { TcpStore, type TcpStoreServer } from '../store/index.js';
import { StatelessProcessGroup } from '../pg/group.js';
import { CpuGroup } from '../cpu/group.js';
import { storeBootstrap } from '../device/bootstrap.js';
import { tracedCommunicator } from '../device/trace.js';
import type { DeviceBackendV1, DeviceCommunicatorV1 } from '../device/types.js';
import { resolvePorts, type PortTriple, type ResolvedPorts } from './ports.js';
import type { CoordinatorOptions } from './types.js';

/** What `create` found out and opened; kept together so a failed create can close it all. */
export interface Channels {
  server?: TcpStoreServer;
  store?: TcpStore;
  pg?: StatelessProcessGroup;
  cpu?: CpuGroup;
  comm?: DeviceCommunicatorV1;
}

/** The channels of a group of more than one rank, once created. */
export interface Net {
  pg: StatelessProcessGroup;
  cpu: CpuGroup;
  comm: DeviceCommunicatorV1 | undefined;
}

export interface OpenRequest {
  o: CoordinatorOptions;
  layout: GroupLayout;
  /** The group name's base (CoordinatorOptions.groupName or its default). */
  base: string;
  /** Where this rank listens if it is its group's rank 0 (explicit ports: rank 0's host). */
  host: string;
  /** Where this rank's CPU listener binds otherwise (see ports.ts's groupAddresses). */
  localHost: string;
  /** What rank 0 publishes in rendezvous mode (never a wildcard). */
  advertise: string;
  localRank: number;
  timeoutMs: number;
  budget: Deadline;
  backend: DeviceBackendV1 | undefined;
  /** A device communicator made already (split from a parent's): used instead of bootstrapping one. */
  adopt?: DeviceCommunicatorV1;
}

/**
 * Opens the channels of this process's group (none for a group of one rank). On failure, closes
 * whatever it had opened and releases the held ports before rethrowing.
 */
export async function openChannels(r: OpenRequest): Promise<{ ch: Channels; ports: PortTriple | undefined }> {
  const { o, layout, base, host, localHost, advertise, localRank, timeoutMs, budget, backend } = r;
  const ch: Channels = {};
  let ports: PortTriple | undefined;
  let held: ResolvedPorts | undefined;
  /** The groupRanks comparison (members.ts): rank 0's watch, or a member's check. */
  let views: Promise<void> | undefined;
  let viewErr: unknown;
  try {
    if (layout.ranks.length > 1) {
      // One wire name per group, equal on every member (unique names are process-local).
      const wireName = `${base}_${layout.groupIndex}`;
      const isHost = layout.rankInGroup === 0;
      const plan = await resolvePorts({
        key: wireName, index: layout.groupIndex, numGroups: o.groupRanks.length, isHost, host, advertise, groupPorts: o.groupPorts,
        rendezvous: o.rendezvous, opts: budget.next(),
        // Rank 0 hosts the group's store and reaches it in memory (TcpStore isServer: the
        // in-process link, store/local.ts), never over loopback TCP: a request it makes is then
        // served before its operation resolves, so the others' progress never waits for rank 0's
        // event loop to turn again (a rank busy in synchronous code after a barrier).
        listenStore: async (port) => {
          ch.store = await TcpStore.create({ host, port, isServer: true, secret: o.secret, insecure: o.insecure, ...budget.next() });
          ch.server = ch.store.server!;
          // Before anyone can reach the store: the members compare their view with it (members.ts).
          await publishView(ch.store, layout, wireName, budget.next());
          return ch.server.port;
        },
      });
      ports = plan.ports;
      held = plan;
      ch.store ??= await TcpStore.create({ host: plan.host, port: ports[2], hostRank: 0, secret: o.secret, ...budget.next() });
      const rank = layout.rankInGroup;
      const worldSize = layout.ranks.length;
      // The store channel's join and the CPU mesh are independent rendezvous on the group's
      // own (fresh) store, so they run side by side; creation costs one of them, not both.
      // If one fails, the other is aborted instead of waiting out its timeout.
      const sibling = new AbortController();
      const both = { ...budget.next(), signal: anySignal([o.signal, sibling.signal]) };
      let first: unknown;
      // Both run to the same deadline: one that times out gives the other a moment to reach its
      // own verdict before aborting it (bothVerdict picks between two timeouts).
      const failFast = <T>(p: Promise<T>, other: Promise<unknown>) => p.catch(async (e) => {
        if (first === undefined && isGroupcommError(e, 'ERR_GROUPCOMM_TIMEOUT')) {
          await Promise.race([other.then(() => {}, () => {}), sleep(TIMEOUT_GRACE_MS)]);
        }
        first ??= e; sibling.abort(e); throw e;
      });
      // Before the join, every member compares its groupRanks with group rank 0's; every rank
      // fails as soon as one reports a difference (members.ts).
      const watching = new AbortController();
      const watchOpts = { timeoutMs, signal: anySignal([both.signal, watching.signal]) };
      views = isHost ? Promise.resolve() : checkView(ch.store, layout, wireName, budget.next());
      const watch = views.then(() => watchViews(ch.store!, layout, wireName, watchOpts));
      for (const p of [views, watch]) p.catch((e) => { if (isGroupcommError(e, 'ERR_GROUPCOMM_MISMATCH')) { viewErr ??= e; first ??= e; sibling.abort(e); } });
      // A member joins only once its view matched: one that differs then never takes a place
      // in the join or the mesh (where it would take another rank's).
      await views;
      const joining = StatelessProcessGroup.create({ store: ch.store, rank, worldSize, groupName: wireName, ...both });
      const meshing = (async () => {
        await plan.cpu?.release();
        return CpuGroup.create({
          store: ch.store!, rank, worldSize, groupName: wireName, host: isHost ? host : localHost, port: isHost ? ports![1] : 0,
          secret: o.secret, insecure: o.insecure, recvBufferBytes: recvBufferFor(worldSize), ...both,
          // Group rank 0 hosts the store the fault reports travel through: everyone sees its loss directly.
          hub: 0,
        });
      })();
      const [pg, cpu] = await Promise.allSettled([failFast(joining, meshing), failFast(meshing, joining)]);
      if (pg.status === 'fulfilled') ch.pg = pg.value;
      if (cpu.status === 'fulfilled') ch.cpu = cpu.value;
      watching.abort();
      if (first !== undefined) throw bothVerdict(pg, cpu, first);
      await views;
      // Every member has read the record once the store channel has formed.
      if (isHost && o.rendezvous) await o.rendezvous.deleteKey(wireName, budget.next());
      if (backend && r.adopt) {
        ch.comm = tracedCommunicator(r.adopt, wireName);
      } else if (backend) {
        const bootstrap = storeBootstrap(ch.store, {
          rank, worldSize, prefix: `groupcomm/device/${wireName}`, timeoutMs,
        });
        // The wire name, not the unique name: it is the same on every member (unique names are
        // process-local), so logs and errors of one communicator match across ranks.
        ch.comm = tracedCommunicator(await backend.createCommunicator({
          rank, worldSize, deviceIndex: localRank, bootstrap, name: wireName, host: plan.host, ...budget.next(),
        }), wireName);
      }
      await plan.device?.release();
    }
  } catch (e) {
    await held?.cpu?.release();
    await held?.device?.release();
    const err = await createFailVerdict(e, { ch, layout, wireName: `${base}_${layout.groupIndex}`, views, viewErr: () => viewErr });
    await closeChannels(ch, 0);
    throw namedCreateError(err, layout);
  }
  return { ch, ports };
}

/** What a failed create knows when it picks its error (openChannels's catch). */
export interface FailedCreate {
  ch: Channels;
  layout: GroupLayout;
  wireName: string;
  /** The groupRanks comparison (members.ts), if it had started. */
  views: Promise<void> | undefined;
  /** The MISMATCH that comparison or the watch found, as of now (either may still report one). */
  viewErr: () => unknown;
}

/**
 * The error a failed create reports (exported for tests). Another groupRanks on some member
 * explains whatever else failed (a refused handshake, a lost connection, a timeout): this rank's
 * own comparison, else a member's report (waited for a moment after a refused handshake, which
 * can come just before the report). Rank 0 hosts the group's store: it leaves what it found out
 * there and keeps the store up a moment, so the others, which time out about now too, can still
 * ask it who never arrived instead of finding it closed; a member adopts that verdict.
 */
export async function createFailVerdict(e: unknown, f: FailedCreate): Promise<unknown> {
  const { ch, layout, wireName, views } = f;
  let err = e;
  if (isGroupcommError(e) && e !== f.viewErr() && e.code !== 'ERR_GROUPCOMM_ABORTED' && ch.store) {
    const mine = views && await Promise.race([views.then(() => undefined, (x) => x), sleep(CREATE_FAIL_LINGER_MS)]);
    const m = f.viewErr() ?? (isGroupcommError(mine, 'ERR_GROUPCOMM_MISMATCH') ? mine
      : await reportedMismatch(ch.store, layout, wireName, e.code === 'ERR_GROUPCOMM_PROTOCOL' || e.code === 'ERR_GROUPCOMM_MISMATCH' ? CREATE_FAIL_LINGER_MS : 0));
    if (isGroupcommError(m, 'ERR_GROUPCOMM_MISMATCH')) err = m;
  }
  if (ch.server && isGroupcommError(err) && (err.code === 'ERR_GROUPCOMM_TIMEOUT' || err.code === 'ERR_GROUPCOMM_PEER_LOST' || err.code === 'ERR_GROUPCOMM_MISMATCH')) {
    // Rank 0 sees the whole join; what it found out is left for the others to read.
    const named = err.peerRanks ?? (err.peerRank !== undefined ? [err.peerRank] : []);
    if (named.length || err.code === 'ERR_GROUPCOMM_MISMATCH') {
      await ch.store?.set(createFailKey(wireName), JSON.stringify({ code: err.code, peerRanks: named, message: err.message }), { timeoutMs: 200 }).catch(() => {});
    }
    await new Promise((r) => setTimeout(r, CREATE_FAIL_LINGER_MS));
  } else if (!ch.server && ch.store && isGroupcommError(err) && (err.code === 'ERR_GROUPCOMM_TIMEOUT' || err.code === 'ERR_GROUPCOMM_PEER_LOST' || err.code === 'ERR_GROUPCOMM_PROTOCOL')) {
    err = await hostsView(ch.store, wireName, err);
  }
  return err;
}

const createFailKey = (wireName: string) => `groupcomm/create-failed/${wireName}`;

/** How long a rendezvous that timed out waits for the other one's verdict (they share a deadline). */
const TIMEOUT_GRACE_MS = 100;

/**
 * Which error a failed create reports when the store channel's join and the CPU mesh both ran
 * out of time: the join's. Rank 0 sees the whole join, so it names exactly the ranks that never
 * arrived; the mesh names every rank whose address it lacked, and a rank that did arrive can be
 * among them (busy in the join, or slow to listen, at the deadline) — the chaos test saw group
 * rank 0 name [1, 2] for a stopped rank 1 when the mesh's timer fired first. Otherwise: the
 * first failure (the other one is then an abort it caused).
 */
export function bothVerdict(pg: PromiseSettledResult<unknown>, cpu: PromiseSettledResult<unknown>, first: unknown): unknown {
  if (pg.status === 'rejected' && cpu.status === 'rejected' &&
    isGroupcommError(pg.reason, 'ERR_GROUPCOMM_TIMEOUT') && isGroupcommError(cpu.reason, 'ERR_GROUPCOMM_TIMEOUT')) return pg.reason;
  return first;
}

/**
 * A member's create failed: group rank 0's own verdict, when it left one in the group's store
 * within a moment, names who it was waiting for. It wins over the member's: rank 0 sees the
 * whole join (and a member that gave up a moment earlier may already have taken its keys back,
 * so a member's own look at the keys can name ranks that were there).
 */
export async function hostsView(store: TcpStore, wireName: string, e: GroupcommError): Promise<GroupcommError> {
  try {
    const v = JSON.parse(new TextDecoder().decode(await store.get(createFailKey(wireName), { timeoutMs: 300 }))) as { code?: string; peerRanks: number[]; message: string };
    const peerRanks = v.peerRanks.filter((r) => Number.isInteger(r) && r > 0);
    if (v.code === 'ERR_GROUPCOMM_MISMATCH') {
      // Group rank 0 found that a member describes the group differently: so does this one's create fail.
      return mismatchError(`group rank 0 could not complete the group: ${v.message}; here: ${e.message}`, {
        peerRanks: [0, ...peerRanks], cause: e,
      });
    }
    if (peerRanks.length === 0) return e;
    return withContext(e, `group rank 0 could not complete the group (${v.message}); here: ${e.message}`, {
      peerRanks, peerRank: peerRanks.length === 1 ? peerRanks[0] : undefined,
    });
  } catch {
    return e;
  }
}

/** How long a group rank 0 whose create failed keeps the group's store up for the others. */
const CREATE_FAIL_LINGER_MS = 500;

/**
 * A create-phase error that names the ranks (group and global): a lost store connection is the
 * loss of group rank 0, which hosts it; a port record that never came is group rank 0 that never
 * called create.
 */
export function namedCreateError(e: unknown, layout: GroupLayout): unknown {
  if (!isGroupcommError(e)) return e;
  const me = layout.rankInGroup;
  let err = e;
  if (me !== 0 && e.peerRank === undefined && e.peerRanks === undefined) {
    if (e.code === 'ERR_GROUPCOMM_PEER_LOST') {
      err = peerLostError(`lost group rank 0, which hosts the group's store (or it gave up creating the group): ${e.message}`, { peerRank: 0, cause: e });
    } else if (e.code === 'ERR_GROUPCOMM_TIMEOUT' && e.keys?.length === 1 && !e.keys[0].includes('/')) {
      err = withContext(e, `group rank 0 never published the group's ports (did it call create?): ${e.message}`, { peerRank: 0, peerRanks: [0] });
    } else if (e.code === 'ERR_GROUPCOMM_TIMEOUT' && e.keys === undefined) {
      // Not a wait for keys: connecting to the group's store, which group rank 0 hosts.
      err = withContext(e, `could not reach group rank 0, which hosts the group's store (gone, or it gave up creating the group): ${e.message}`, { peerRank: 0, peerRanks: [0] });
    }
  }
  const peers = err.peerRanks ?? (err.peerRank !== undefined ? [err.peerRank] : []);
  const named = peers.filter((r) => r >= 0 && r < layout.ranks.length).map((r) => `group rank ${r} = global rank ${layout.ranks[r]}`);
  return withContext(err, `creating group ${layout.groupIndex} of [${layout.ranks.join(', ')}] on global rank ${layout.ranks[me]}: ${err.message}` +
    (named.length ? ` [${named.join('; ')}]` : ''), { rank: layout.ranks[me] });
}

/**
 * The CPU group keeps one receive buffer per peer (1 MiB by default, zero-filled at setup). In a
 * large group that is most of the creation time on Node and 63 MiB per rank at 64 ranks, so the
 * total per rank is capped at 16 MiB (at least 64 KiB per peer) past 17 ranks. Large messages are
 * read straight into their destination anyway. GROUPCOMM_CPU_RECV_BUFFER_BYTES, when set, wins.
 */
export function recvBufferFor(worldSize: number): number | undefined {
  if (setting('GROUPCOMM_CPU_RECV_BUFFER_BYTES') !== undefined || worldSize <= 17) return undefined;
  return Math.max(64 * 1024, Math.floor((16 << 20) / (worldSize - 1)));
}

/**
 * Closes what is open, device first (it may use the store), the store server last. The store
 * channel's departure handshake (bounded by lingerMs) lets rank 0, which hosts the server, leave
 * last, so nobody's final reads or deletes hit a closed server. With `awaitServer`, the other
 * ranks then wait (also bounded) until that server has closed: a group re-created on the same
 * explicit ports right after close() must not reach the old server. lingerMs 0: no departure
 * (a failed create, an abort).
 */
export async function closeChannels(ch: Channels, lingerMs: number, awaitServer = false): Promise<void> {
  const errors: unknown[] = [];
  const step = async (fn: () => Promise<unknown> | unknown) => {
    try { await fn(); } catch (e) { errors.push(e); }
  };
  const grace = { timeoutMs: Math.max(lingerMs, 1) };
  if (ch.comm) await step(() => ch.comm!.close(grace));
  if (ch.cpu) await step(() => lingerMs === 0 ? ch.cpu!.abort() : ch.cpu!.close(grace));
  if (ch.pg) await step(() => lingerMs === 0 ? ch.pg!.abort() : ch.pg!.close(grace));
  if (ch.store && !ch.server && awaitServer) {
    const store = ch.store;
    await step(async () => {
      const until = performance.now() + lingerMs;
      while (performance.now() < until) {
        try {
          await store.ping({ timeoutMs: Math.max(1, until - performance.now()) });
        } catch {
          return; // the server is gone
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    });
  }
  if (ch.store) await step(() => lingerMs === 0 ? ch.store!.abort() : ch.store!.close(grace));
  if (ch.server) await step(() => lingerMs === 0 ? ch.server!.abort() : ch.server!.close(grace));
  ch.comm = ch.cpu = ch.pg = ch.store = ch.server = undefined;
  // Closing never throws for what a dead peer left behind; it logs instead.
  if (errors.length) logger('COORD').debug(`close: ${errors.length} channel(s) closed with errors: ${errors.map(String).join('; ')}`);
}

/** abort() on every open channel at once (each is idempotent); closeChannels then finds them closed. */
export function abortChannels(ch: Channels, reason: unknown): void {
  const why = reason instanceof Error ? reason.message : reason === undefined ? undefined : String(reason);
  void ch.comm?.abort(why).catch(() => {});
  void ch.cpu?.abort(reason);
  void ch.pg?.abort(reason);
  void ch.store?.abort(reason);
  void ch.server?.abort(reason);
}
