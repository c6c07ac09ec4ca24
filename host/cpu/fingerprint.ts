/**
 * A collective call's fingerprint: what every rank must agree on (which collective, dtype,
 * reduction, root, shape, the caller's dim), packed into the 32-bit `tag` field that every
 * collective frame header already carries (docs/cpu-group.md, "Frames"). A receiver compares
 * each frame's tag with its own call's and fails the operation with ERR_GROUPCOMM_MISMATCH,
 * naming the peer and the fields that differ, instead of reducing garbage. It costs one integer
 * comparison per frame and no extra byte on the wire.
 *
 *   bits  0–3   collective (COLLECTIVE_IDS; 0 never appears)
 *   bits  4–8   dtype (index in DTYPE_NAMES + 1)
 *   bits  9–11  reduction (index in REDUCE_OPS + 1, premulSum 6; 0: none)
 *   bits 12–19  root (src or dst) + 1, mod 256 (0: none)
 *   bits 20–23  the caller's dim + 1, mod 16 (0: none)
 *   bits 24–31  a hash of the shape (count and dims)
 *
 * The shape is hashed into 8 bits, so 1 in 256 different shapes goes unnoticed here (a size
 * difference is then still caught by the frame-length check).
 */
import { DTYPE_NAMES, type DType } from '../core/dtype.js';
import { REDUCE_OPS } from '../core/reduce.js';
import { opName, type ReduceOpSpec } from '../core/premul.js';

const COLLECTIVE_IDS = ['', 'broadcast', 'allReduce', 'allGather', 'reduceScatter', 'gather', 'scatter', 'allToAll', 'barrier', 'allGatherv', 'reduceScatterv'] as const;
export type CollectiveName = Exclude<(typeof COLLECTIVE_IDS)[number], ''>;

export interface CallShape {
  collective: CollectiveName;
  dtype?: DType;
  op?: ReduceOpSpec;
  root?: number;
  shape?: readonly number[];
  /** The dim the caller (the coordinator) gathers or scatters along, when it has one. */
  dim?: number;
}

const dtypeIndex = new Map<string, number>(DTYPE_NAMES.map((d, i) => [d, i + 1]));
/** The reduction field's names: the reduce ops, then premulSum (its factor is not part of the fingerprint). */
const OP_NAMES: readonly string[] = [...REDUCE_OPS, 'premulSum'];
const opIndex = new Map<string, number>(OP_NAMES.map((o, i) => [o, i + 1]));

function shapeHash(shape: readonly number[] | undefined): number {
  if (!shape) return 0;
  let h = 0x9e ^ shape.length;
  for (const d of shape) h = (Math.imul(h ^ d, 0x01000193) + (d >>> 8)) >>> 0;
  return (h ^ (h >>> 8) ^ (h >>> 16) ^ (h >>> 24)) & 0xff;
}

export function fingerprint(c: CallShape): number {
  const coll = COLLECTIVE_IDS.indexOf(c.collective);
  const dt = c.dtype ? dtypeIndex.get(c.dtype) ?? 0 : 0;
  const op = c.op ? opIndex.get(opName(c.op)) ?? 0 : 0;
  const root = c.root === undefined ? 0 : (c.root + 1) & 0xff;
  const dim = c.dim === undefined ? 0 : (c.dim + 1) & 0xf;
  return (coll | (dt << 4) | (op << 9) | (root << 12) | (dim << 20) | (shapeHash(c.shape) << 24)) >>> 0;
}

/** Each field of a fingerprint in words (`?` for a shape: only its hash travels). */
function fields(fp: number): Record<string, string> {
  const dt = (fp >>> 4) & 0x1f, op = (fp >>> 9) & 0x7, root = (fp >>> 12) & 0xff, dim = (fp >>> 20) & 0xf;
  return {
    collective: COLLECTIVE_IDS[fp & 0xf] || `#${fp & 0xf}`,
    dtype: dt ? DTYPE_NAMES[dt - 1] ?? `#${dt}` : '-',
    op: op ? OP_NAMES[op - 1] ?? `#${op}` : '-',
    root: root ? String(root - 1) : '-',
    dim: dim ? String(dim - 1) : '-',
    shape: `#${(fp >>> 24).toString(16)}`,
  };
}

/** A fingerprint's call in words: "broadcast (dtype float32, root 1)". */
export function describeCall(fp: number): string {
  const f = fields(fp);
  const rest = Object.entries(f).filter(([k, v]) => k !== 'collective' && k !== 'shape' && v !== '-').map(([k, v]) => `${k} ${v}`);
  return `${f.collective}${rest.length ? ` (${rest.join(', ')})` : ''}`;
}

/**
 * What differs between this rank's call (`mine`) and a peer's (`theirs`), in words:
 * "dtype (float32 here, int32 on rank 1), op (sum here, max on rank 1)".
 */
export function describeMismatch(mine: number, theirs: number, peer: number): { fields: string[]; text: string } {
  const a = fields(mine), b = fields(theirs);
  const diff = Object.keys(a).filter((k) => a[k] !== b[k]);
  const text = diff.map((k) => k === 'shape' ? 'shape or count' : `${k} (${a[k]} here, ${b[k]} on rank ${peer})`).join(', ');
  return { fields: diff.map((k) => (k === 'shape' ? 'shape' : k)), text };
}
