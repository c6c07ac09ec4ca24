/**
 * The coordinator's tensor send / recv (vLLM's GroupCoordinator.send / recv; pipeline
 * parallelism moves activations with them). A tensor travels over the channel that carries it
 * (the CPU group for CPU tensors, the device communicator for this rank's device tensors), so
 * sends between one pair of ranks arrive in order, under the same timeout, abort and
 * peer-loss rules as every other operation.
 *
 * A send to this rank itself, and every send in a group of one, goes into the loopback queue
 * shared with sendObject / sendTensorDict (io.self) as a copy, so the sender may reuse its
 * buffer at once — the same rule as the other point-to-point calls.
 *
 * recv is told what to expect (vLLM passes size and dtype): a tensor to take shape, dtype and
 * device from (`like`, only read), or `{ shape, dtype, device? }`. The result goes into `out`
 * when given, else a new tensor, as every collective's result does (host/core/collectives.ts).
 */
import type { Deadline } from '../base/deadline.js';
import { invalidArgument } from '../base/errors.js';
import { isTensor, numel, type DType, type Tensor } from '../core/tensor.js';
import { DTYPE_NAMES } from '../core/dtype.js';
import { checkRank } from './ops.js';
import type { GroupIo } from './io.js';

/** What recv expects: a tensor to copy the description from, or the description itself. */
export type RecvSpec = Tensor | { shape: readonly number[]; dtype: DType; device?: string };

/** A tensor in the loopback queue (told apart from objects and dicts queued there). */
class LoopedTensor {
  constructor(readonly t: Tensor) {}
}

export async function send(io: GroupIo, t: Tensor, to: number | undefined, b: Deadline): Promise<void> {
  const dst = to ?? io.ring.next;
  checkRank(dst, io.worldSize, 'send', 'dst');
  const ch = io.channel(t, 'send');
  if (dst === io.rankInGroup || !io.net) {
    io.self.push(new LoopedTensor(io.copyInto(io.allocLike([...t.shape], t), t)));
    return;
  }
  await ch.send(t, dst, b.next());
}

export async function recv(io: GroupIo, spec: RecvSpec, from: number | undefined, out: Tensor | undefined, b: Deadline): Promise<Tensor> {
  const src = from ?? io.ring.prev;
  checkRank(src, io.worldSize, 'recv', 'src');
  const like = describe(spec, io.device);
  // Only its device and dtype matter to pick the channel; nothing is allocated before the checks.
  io.channel({ ...like, data: new Uint8Array(0) } as unknown as Tensor, 'recv');
  const dst = io.output(out, like.shape, like as unknown as Tensor, 'recv');
  if (src === io.rankInGroup || !io.net) return fromLoopback(io, like, dst);
  const into = dst ?? io.empty(like.shape, like.dtype, like.device);
  try {
    return await io.channel(into, 'recv').recv(into, src, b.next());
  } catch (e) {
    if (!dst) io.free(into);
    throw e;
  }
}

function fromLoopback(io: GroupIo, like: { shape: number[]; dtype: DType; device: string }, out: Tensor | undefined): Tensor {
  const head = io.self[0];
  if (!(head instanceof LoopedTensor)) {
    throw invalidArgument(head === undefined
      ? 'recv: nothing was sent to this rank by itself (a self-send must come first in program order)'
      : 'recv: the next thing this rank sent itself is an object or a tensor dict, not a tensor (use recvObject / recvTensorDict)');
  }
  const t = head.t;
  if (t.dtype !== like.dtype || numel(t.shape) !== numel(like.shape) || t.device !== like.device) {
    throw invalidArgument(`recv: this rank sent itself ${t.dtype}[${t.shape.join(', ')}] on ${t.device}, ` +
      `expected ${like.dtype}[${like.shape.join(', ')}] on ${like.device}`);
  }
  io.self.shift();
  if (out) {
    io.copyInto(out, t);
    io.free(t);
    return out;
  }
  return t.shape.length === like.shape.length && t.shape.every((s, i) => s === like.shape[i]) ? t : { ...t, shape: [...like.shape] };
}

/** The checked description of what recv expects (device: this rank's device by default). */
function describe(spec: RecvSpec, device: string): { shape: number[]; dtype: DType; device: string } {
  if (!spec || typeof spec !== 'object') throw invalidArgument('recv: expected a tensor or { shape, dtype } to receive into');
  const s = spec as { shape?: unknown; dtype?: unknown; device?: unknown };
  if (!Array.isArray(s.shape) || !s.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw invalidArgument(`recv: shape must be an array of integers >= 0, got ${JSON.stringify(s.shape)}`);
  }
  if (typeof s.dtype !== 'string' || !(DTYPE_NAMES as readonly string[]).includes(s.dtype)) {
    throw invalidArgument(`recv: unknown dtype ${JSON.stringify(s.dtype)}`);
  }
  const dev = isTensor(spec) ? spec.device : s.device ?? device;
  if (typeof dev !== 'string') throw invalidArgument(`recv: device must be a string, got ${JSON.stringify(dev)}`);
  return { shape: [...s.shape], dtype: s.dtype as DType, device: dev };
}
