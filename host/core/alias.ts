/**
 * Whether two tensors share memory, for the aliasing contract (./collectives.ts): CPU tensors
 * by their ArrayBuffer ranges, device tensors by their pointer ranges on the same device.
 * Tensors on different devices never alias.
 */
import { invalidArgument, type GroupcommErrorFields } from '../base/errors.js';
import { isCpu, itemSize, numel, type CpuTensor, type DeviceBuffer, type Tensor } from './tensor.js';

/** 'same': exactly the same bytes; 'partial': some shared bytes; 'disjoint': none. */
export type Aliasing = 'same' | 'partial' | 'disjoint';

function span(t: Tensor): { space: unknown; start: number | bigint; len: number } {
  const len = numel(t.shape) * itemSize(t.dtype);
  if (isCpu(t)) {
    const d = (t as CpuTensor).data;
    return { space: d.buffer, start: d.byteOffset, len };
  }
  return { space: t.device, start: (t.data as DeviceBuffer).ptr, len };
}

export function aliasing(a: Tensor, b: Tensor): Aliasing {
  if (a === b) return numel(a.shape) === 0 ? 'disjoint' : 'same';
  const x = span(a), y = span(b);
  if (x.space !== y.space || x.len === 0 || y.len === 0) return 'disjoint';
  if (typeof x.start !== typeof y.start) return 'disjoint';
  const xs = BigInt(x.start), ys = BigInt(y.start);
  if (xs === ys && x.len === y.len) return 'same';
  return xs < ys + BigInt(y.len) && ys < xs + BigInt(x.len) ? 'partial' : 'disjoint';
}

/**
 * The aliasing rule for one operation: `out` may be the input itself (in place) only where
 * `inPlace` says so; any other overlap is refused. Returns true for an in-place call.
 */
export function checkOutAliasing(out: Tensor, input: Tensor, inPlace: boolean, what: string, fields: GroupcommErrorFields = {}): boolean {
  const a = aliasing(out, input);
  if (a === 'disjoint') return false;
  if (a === 'same' && inPlace) return true;
  throw invalidArgument(a === 'same'
    ? `${what}: out is the input; ${what} cannot run in place (pass another tensor as out, or none)`
    : `${what}: out overlaps the input without being the same memory; pass the input itself as out (in place) or a separate tensor`,
  fields);
}
