/**
 * Trace lines for device communicators (GROUPCOMM_DEBUG=trace): one line per operation, as the
 * CPU group and the process group print them (base/log.ts traceOp). The coordinator wraps the
 * communicator a plugin gives it only when tracing is on; otherwise it uses the plugin's object
 * itself, so tracing off costs nothing on the device path, and no plugin has to log anything.
 */
import { logger, othersOf, traceOp } from '../base/log.js';
import { isTensor, nbytes } from '../core/tensor.js';
import type { DeviceCommunicatorV1 } from './types.js';

/** The operations that get a line (the lifecycle calls do not). */
const OPS = new Set<PropertyKey>(['allReduce', 'allGather', 'reduceScatter', 'broadcast', 'gather', 'allToAll', 'send', 'recv', 'barrier', 'synchronize']);

/** `comm` itself when tracing is off; else a view of it that logs each operation under `name`. */
export function tracedCommunicator(comm: DeviceCommunicatorV1, name: string): DeviceCommunicatorV1 {
  const log = logger('DEVICE', `${name} rank ${comm.rank}/${comm.worldSize}`);
  if (!log.tracing) return comm;
  const others = othersOf(comm.rank, comm.worldSize);
  return new Proxy(comm, {
    get(target, prop) {
      // Methods run on the plugin's own object (its private fields are not the proxy's).
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      const fn = v as (...a: unknown[]) => Promise<unknown>;
      if (!OPS.has(prop)) return fn.bind(target);
      const op = String(prop);
      return (...args: unknown[]) => {
        // send(tensor, dst) and recv(dst, src) name their peer; collectives involve everyone.
        const peers = op === 'send' || op === 'recv' ? [args[1] as number] : others;
        // bytes: the result's size (send and a gather off its root: the input's), none for a barrier.
        const bytes = (r: unknown) => (isTensor(r) ? nbytes(r) : isTensor(args[0]) ? nbytes(args[0]) : undefined);
        return traceOp(log, op, bytes, peers, fn.apply(target, args));
      };
    },
  });
}
