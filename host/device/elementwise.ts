/**
 * Element codecs for the dtypes JavaScript lacks (float16, bfloat16, float8_e4m3fn,
 * float8_e5m2: round to nearest even, e4m3fn overflow → NaN as torch does) and per-element
 * access to device bytes, for backends that read their results on the host and for checking
 * results against host references (the conformance suite). Reductions themselves run in the
 * WASM core (host/core/reduce.ts); `checkReduce` states which op/dtype pairs exist at all.
 */
import { invalidArgument } from '../base/errors.js';
import type { DType } from '../core/tensor.js';
import { isPreMulSum, premulScalar, type ReduceOpSpec } from '../core/premul.js';

export { decodeMiniFloat, encodeMiniFloat, MINIFLOATS, readElement, writeElement, type MiniFloat } from '../core/element.js';

/**
 * Throws ERR_GROUPCOMM_INVALID_ARGUMENT for an unknown op, avg on bool (no such mean), or a
 * premulSum whose factor the dtype cannot hold (core/premul.ts).
 */
export function checkReduce(dtype: DType, op: ReduceOpSpec): void {
  if (isPreMulSum(op)) { premulScalar(dtype, op); return; }
  if (typeof op !== 'string' || !['sum', 'prod', 'max', 'min', 'avg'].includes(op)) throw invalidArgument(`unknown reduce op '${op}'; expected sum, prod, max, min or avg`);
  if (op === 'avg' && dtype === 'bool') throw invalidArgument(`reduce op 'avg' is not defined for bool (use sum or max for "any", prod or min for "all")`);
}
