/**
 * Conformance cases of the optional variable-size collectives (DeviceCommunicatorV1's
 * allGatherv, reduceScatterv, allToAllv), run when a communicator has them. References come
 * from ./cases.ts's inputs (element i of rank r's input is inputValue(dtype, op, r, i)), so a
 * row's values say which rank and which of its rows they came from. Sizes are uneven and include
 * a rank with no rows; rows are 3 elements wide.
 */
import { fromDevice, toDevice, freeTensor, emptyOn } from '../device/tensors.js';
import type { DeviceBackendV1, DeviceCommunicatorV1 } from '../device/types.js';
import type { DType, Tensor } from '../core/tensor.js';
import { compare, expectedReduce, inputValue, makeInput } from './cases.js';

const ROW = 3;
const DTYPES: DType[] = ['float32', 'int64', 'bfloat16', 'uint8'];
const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);

/** Rows per rank: 1, 3, 1, 3, …, and none on the last rank (of more than one). */
function sizesFor(ws: number): number[] {
  const sizes = Array.from({ length: ws }, (_, r) => (r * 2 + 1) % 4);
  if (ws > 1) sizes[ws - 1] = 0;
  return sizes;
}

/** The case ids, known before anything runs (index.ts registers them). */
export function variableCaseIds(ws: number): string[] {
  const sizes = sizesFor(ws);
  return DTYPES.flatMap((dtype) => [
    `allGatherv ${dtype} sizes [${sizes}]×${ROW}`,
    ...(dtype === 'uint8' ? [] : [`reduceScatterv ${dtype} sum sizes [${sizes}]×${ROW}`]),
    `allToAllv ${dtype} uneven splits ×${ROW}`,
  ]);
}

/**
 * Verdict per case id (null: passed), for a backend whose capabilities say variableCollectives;
 * a method missing on the communicator fails its cases.
 */
export async function runVariableCases(backend: DeviceBackendV1, comm: DeviceCommunicatorV1, deviceIndex: number): Promise<Record<string, string | null>> {
  const out: Record<string, string | null> = {};
  if (!backend.capabilities.variableCollectives) return out;
  const ws = comm.worldSize, me = comm.rank;
  const sizes = sizesFor(ws);
  for (const id of variableCaseIds(ws)) out[id] = `${id}: capabilities.variableCollectives is true but the communicator has no ${id.split(' ')[0]}`;
  const at = sizes.map((_, r) => sum(sizes.slice(0, r)));
  const own: Tensor[] = [];
  const dev = (t: ReturnType<typeof makeInput>) => { const d = toDevice(backend, t, deviceIndex); own.push(d); return d; };
  const run = async (id: string, f: () => Promise<string | null>) => {
    try { out[id] = await f(); } catch (e) { out[id] = `${id}: threw ${(e as Error).message}`; }
  };
  for (const dtype of DTYPES) {
    if (typeof comm.allGatherv === 'function') {
      await run(`allGatherv ${dtype} sizes [${sizes}]×${ROW}`, async () => {
        // Rank r's input: elements at offset (at[r]·ROW) of the reference sequence of rank 0's values.
        const x = dev(shaped(makeInput(dtype, undefined, 0, sizes[me] * ROW, at[me] * ROW), [sizes[me], ROW]));
        const o = emptyOn(backend, [sum(sizes), ROW], dtype, deviceIndex); own.push(o);
        const r = await comm.allGatherv!(x, { sizes, out: o });
        if (r !== o) return 'allGatherv: did not resolve with its out';
        return compare('allGatherv', dtype, fromDevice(backend, o), (i) => inputValue(dtype, undefined, 0, i), sum(sizes) * ROW);
      });
    }
    if (typeof comm.reduceScatterv === 'function' && dtype !== 'uint8') {
      await run(`reduceScatterv ${dtype} sum sizes [${sizes}]×${ROW}`, async () => {
        const x = dev(shaped(makeInput(dtype, 'sum', me, sum(sizes) * ROW), [sum(sizes), ROW]));
        const r = await comm.reduceScatterv!(x, { sizes, op: 'sum' }); own.push(r);
        if (r.shape[0] !== sizes[me]) return `reduceScatterv: result has ${r.shape[0]} rows, expected ${sizes[me]}`;
        return compare('reduceScatterv', dtype, fromDevice(backend, r), (i) => expectedReduce(dtype, 'sum', ws, at[me] * ROW + i), sizes[me] * ROW);
      });
    }
    if (typeof comm.allToAllv === 'function') {
      await run(`allToAllv ${dtype} uneven splits ×${ROW}`, async () => {
        // Rank i sends split(i, j) rows to rank j: its rows for j are taken from rank i's sequence at offset j·8 rows.
        const split = (i: number, j: number) => (i + 2 * j + 1) % 3;
        const ins = Array.from({ length: ws }, (_, j) => split(me, j));
        const outs = Array.from({ length: ws }, (_, i) => split(i, me));
        const parts = ins.map((n, j) => makeInput(dtype, undefined, me, n * ROW, j * 8 * ROW));
        const input = makeInput(dtype, undefined, me, 0);
        const all = new (input.data.constructor as new (n: number) => typeof input.data)(sum(ins) * ROW);
        let k = 0;
        for (const p of parts) { (all as unknown as { set(a: unknown, o: number): void }).set(p.data, k); k += p.data.length; }
        const x = dev({ dtype, shape: [sum(ins), ROW], device: 'cpu', data: all });
        const r = await comm.allToAllv!(x, { inputSplits: ins, outputSplits: outs }); own.push(r);
        const want: number[] = [];
        outs.forEach((n, i) => { for (let e = 0; e < n * ROW; e++) want.push(inputValue(dtype, undefined, i, me * 8 * ROW + e)); });
        return compare('allToAllv', dtype, fromDevice(backend, r), (i) => want[i], want.length);
      });
    }
  }
  for (const t of own) freeTensor(backend, t);
  return out;
}

function shaped<T extends { shape: number[] }>(t: T, shape: number[]): T {
  return { ...t, shape };
}
