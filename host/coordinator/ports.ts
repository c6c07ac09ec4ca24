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
 *   the same coordination store.
 */
import net from 'node:net';
import type { OpOptions } from '../base/deadline.js';
import { bindError, invalidArgument } from '../base/errors.js';
import type { Store } from '../store/types.js';
import { decodePortRecord, encodePortRecord, groupPortsFor, type PortTriple } from '../core/layout.js';

export type { PortTriple };

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
  host: string;
  groupPorts?: PortTriple[];
  rendezvous?: Store;
  opts: OpOptions;
  /** Starts the group's store server on `port` (0: any) and returns the bound port. */
  listenStore(port: number): Promise<number>;
}

export interface ResolvedPorts {
  ports: PortTriple;
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
    return { ports };
  }
  if (!p.rendezvous) {
    throw invalidArgument('a group with more than one rank needs groupPorts or a rendezvous store');
  }
  if (!p.isHost) return { ports: decodePortRecord(await p.rendezvous.get(p.key, p.opts)) };
  const storePort = await p.listenStore(0);
  const cpu = await reservePort(p.host);
  const device = await reservePort(p.host).catch(async (e) => { await cpu.release(); throw e; });
  const ports: PortTriple = [device.port, cpu.port, storePort];
  try {
    await p.rendezvous.set(p.key, encodePortRecord(ports), p.opts);
  } catch (e) {
    await cpu.release();
    await device.release();
    throw e;
  }
  return { ports, cpu, device };
}
