/**
 * Where a group's rank 0 listens, in one of two ways (vLLM's two schemes):
 *
 * - Explicit: `groupPorts[index] = [devicePort, cpuPort, storePort]`, chosen by the caller and
 *   checked by the WASM core (three distinct ports in 1..65535). Group rank 0 serves the
 *   group's store on storePort and its CPU-group listener on cpuPort. devicePort is kept for
 *   backends that want a listener of their own; the built-in ones (cpu, cuda) bootstrap over
 *   the store channel and do not bind it. Choosing free ports ahead of time is the caller's
 *   problem (and the TOCTOU race vLLM had before #36330).
 * - Rendezvous: group rank 0 binds three listeners on port 0 and publishes the 12-byte
 *   big-endian record `[devicePort, cpuPort, storePort]` in a coordination store under
 *   `${groupName}_${index}`; the others wait for that key. The store listener is the group's
 *   store server itself, so the port that matters most is never free between choice and use.
 *   The CPU listener is handed to the CPU group by closing it right before the group binds the
 *   same port in this process (microseconds; vLLM's probe sockets were closed seconds before
 *   another process bound them). The device listener is held until the group has formed.
 *   Once every member joined, rank 0 deletes the record, so the same name can be used again on
 *   the same coordination store. After the 12 bytes the record carries rank 0's address (UTF-8),
 *   so a group's rank 0 may be on any node: the others connect where it listens, not to a
 *   `host` they were told (a 12-byte record, from an older rank 0, means `host`).
 */
import net from 'node:net';
import { chooseAddress, isLoopback, isUnspecified, masterAddr } from '../base/netaddr.js';
import type { OpOptions } from '../base/deadline.js';
import { bindError, invalidArgument } from '../base/errors.js';
import type { Store } from '../store/types.js';
import { decodePortRecord, encodePortRecord, groupPortsFor, type PortTriple } from '../core/layout.js';

export type { PortTriple };

/** The port record's size; rank 0's address follows it. */
const RECORD_BYTES = 12;

/** A listening socket on port 0 that holds its port until released. */
export interface Reservation {
  port: number;
  release(): Promise<void>;
}

export function reservePort(host: string): Promise<Reservation> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((s) => s.destroy());
    srv.once('error', (e) => reject(bindError('reserving a port', host, 0, e)));
    srv.listen(0, host, () => {
      const a = srv.address();
      const port = a && typeof a === 'object' ? a.port : 0;
      let closed: Promise<void> | undefined;
      resolve({
        port,
        release: () => (closed ??= new Promise<void>((r) => srv.close(() => r()))),
      });
    });
  });
}

export interface PortPlan {
  /** `${groupName}_${index}`: the coordination key. */
  key: string;
  index: number;
  numGroups: number;
  /** True on group rank 0, which listens. */
  isHost: boolean;
  /** Explicit ports: where rank 0 listens. Rendezvous: where this rank (if rank 0) listens. */
  host: string;
  /** Rendezvous, rank 0: the address published for the others (default `host`). */
  advertise?: string;
  groupPorts?: PortTriple[];
  rendezvous?: Store;
  opts: OpOptions;
  /** Starts the group's store server on `port` (0: any) and returns the bound port. */
  listenStore(port: number): Promise<number>;
}

export interface ResolvedPorts {
  ports: PortTriple;
  /** Where the group's rank 0 listens: its store, its CPU listener. */
  host: string;
  /** Rank 0 in rendezvous mode: the CPU listener to release right before the CPU group binds. */
  cpu?: Reservation;
  /** Rank 0 in rendezvous mode: held until the group has formed. */
  device?: Reservation;
}

/** Binds (rank 0) or learns (others) the group's ports. */
export async function resolvePorts(p: PortPlan): Promise<ResolvedPorts> {
  if (p.groupPorts) {
    const ports = groupPortsFor(p.groupPorts, p.index, p.numGroups);
    if (p.isHost) await p.listenStore(ports[2]);
    return { ports, host: p.host };
  }
  if (!p.rendezvous) {
    throw invalidArgument('a group with more than one rank needs groupPorts or a rendezvous store');
  }
  if (!p.isHost) {
    const rec = await p.rendezvous.get(p.key, p.opts);
    const host = rec.length > RECORD_BYTES ? Buffer.from(rec.subarray(RECORD_BYTES)).toString('utf8') : p.host;
    return { ports: decodePortRecord(rec.subarray(0, RECORD_BYTES)), host };
  }
  const storePort = await p.listenStore(0);
  const cpu = await reservePort(p.host);
  const device = await reservePort(p.host).catch(async (e) => { await cpu.release(); throw e; });
  const ports: PortTriple = [device.port, cpu.port, storePort];
  try {
    await p.rendezvous.set(p.key, Buffer.concat([encodePortRecord(ports), Buffer.from(p.advertise ?? p.host, 'utf8')]), p.opts);
  } catch (e) {
    await cpu.release();
    await device.release();
    throw e;
  }
  return { ports, host: p.advertise ?? p.host, cpu, device };
}

/** The addresses a coordinator's rank uses (see groupAddresses). */
export interface GroupAddresses {
  /** Where this rank listens if it is its group's rank 0 (explicit ports: rank 0's address). */
  host: string;
  /** Where this rank's CPU listener binds when it is not rank 0. */
  localHost: string;
  /** What rank 0 publishes in rendezvous mode. */
  advertise: string;
}

/**
 * Explicit ports (vLLM): every rank is told `host`, rank 0's address; the others bind their own
 * listeners on the address of their route toward it (or GROUPCOMM_SOCKET_IFNAME's), which is
 * `host` itself on one machine. Rendezvous: `host` if given, else the address chosen toward the
 * rendezvous store's host (or MASTER_ADDR); rank 0 publishes it with its ports, so rank 0 may be
 * on any node. A wildcard `host` (0.0.0.0, ::) is bound but the chosen address is advertised.
 */
export async function groupAddresses(o: { host?: string; rendezvous?: Store; groupPorts?: unknown }): Promise<GroupAddresses> {
  const storeHost = (o.rendezvous as { host?: unknown } | undefined)?.host;
  const toward = typeof storeHost === 'string' ? storeHost : masterAddr();
  if (o.groupPorts || !o.rendezvous) {
    const host = o.host ?? '127.0.0.1';
    const localHost = isLoopback(host) ? host : await chooseAddress({ toward: isUnspecified(host) ? toward : host });
    return { host, localHost, advertise: host };
  }
  const local = o.host ?? await chooseAddress({ toward });
  const advertise = isUnspecified(local) ? await chooseAddress({ toward }) : local;
  return { host: local, localHost: local, advertise };
}
