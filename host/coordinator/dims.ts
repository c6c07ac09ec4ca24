/**
 * Gather and reduce-scatter along any dimension, built on the dim-0 collectives of the layers
 * below. A contiguous tensor of shape S split at dimension d is `outer × S[d] × inner` with
 * `outer = S[0]·…·S[d-1]`. Concatenating ws such tensors along d interleaves their
 * `S[d]·inner`-sized blocks per outer index; a dim-0 collective lays them out rank-major. The
 * two layouts are one block transpose apart, `(ws, outer, block) ↔ (outer, ws, block)`, which is
 * all these helpers do. (vLLM's reduce_scatter moves axis 0 *to* d instead of d to 0, which is
 * the same only for 2-d tensors; see docs/coordinator.md.)
 */
import { invalidArgument } from '../base/errors.js';

/** Normalises a possibly negative `dim` for a tensor of `ndim` dims; throws when out of range. */
export function normDim(dim: number, ndim: number, what: string): number {
  if (!Number.isInteger(dim)) throw invalidArgument(`${what}: dim must be an integer, got ${dim}`);
  // A 0-d tensor is gathered as if it had one dim of size 1 (torch refuses it; we do not need to).
  const n = Math.max(ndim, 1);
  if (dim < -n || dim >= n) throw invalidArgument(`${what}: dim ${dim} out of range for a ${ndim}-d tensor (expected ${-n}..${n - 1})`);
  return dim < 0 ? dim + n : dim;
}

/** Number of `outer` rows before dim `d` of `shape`. */
export function outerCount(shape: readonly number[], d: number): number {
  let n = 1;
  for (let i = 0; i < d; i++) n *= shape[i];
  return n;
}

/**
 * Copies `src`, laid out as `(a, b, block)` bytes, to `dst` laid out as `(b, a, block)`.
 * `rankMajorToOuterMajor` for gather is `(ws, outer) → (outer, ws)`; reduce-scatter's inverse
 * move is the same call with the two counts swapped.
 */
export function transposeBlocks(src: Uint8Array, dst: Uint8Array, a: number, b: number, block: number): void {
  if (src.byteLength !== a * b * block || dst.byteLength !== a * b * block) {
    throw invalidArgument(`transposeBlocks: sizes do not match (${src.byteLength}, ${dst.byteLength} vs ${a}×${b}×${block})`);
  }
  if (a === 1 || b === 1) {
    dst.set(src);
    return;
  }
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      const s = (i * b + j) * block;
      dst.set(src.subarray(s, s + block), (j * a + i) * block);
    }
  }
}

/** Shape of `ws` tensors of `shape` concatenated along `d`. */
export function catShape(shape: readonly number[], d: number, ws: number): number[] {
  const s = shape.length === 0 ? [1] : [...shape];
  s[d] *= ws;
  return s;
}

/** Shape of one rank's share when `shape` is reduce-scattered along `d` over `ws` ranks. */
export function scatterShape(shape: readonly number[], d: number, ws: number, what: string): number[] {
  if (shape.length === 0) throw invalidArgument(`${what}: cannot scatter a 0-d tensor`);
  if (shape[d] % ws !== 0) {
    throw invalidArgument(`${what}: dim ${d} has size ${shape[d]}, not divisible by the world size ${ws}`);
  }
  const s = [...shape];
  s[d] /= ws;
  return s;
}
