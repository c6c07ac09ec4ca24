/**
 * The CPU group's variable-size collectives: allGatherv, reduceScatterv and allToAll with
 * per-rank splits (vLLM's all_gatherv / reduce_scatterv, torch's all_to_all_single). Sizes
 * count rows along dim 0; the coordinator maps other dims onto it.
 *
 * All three are direct exchanges (each rank sends each peer its part once), as NCCL runs them
 * in vLLM (grouped send/recv or one reduce per root): uneven blocks do not fit the ring's equal
 * segments, and the uses (uneven batches, expert dispatch) are latency-bound.
 *
 * Agreement: before its payload, each rank sends each peer a small header (frame slot 0) with
 * the dtype, the row shape and the sizes that concern that peer; a receiver compares it with
 * what it expects and fails with INVALID_ARGUMENT naming the peer and both views. Every rank
 * sends all its frames before it checks anything, so a disagreement fails every rank involved
 * instead of leaving one waiting; the payload (slot 1) is read only after its header matched.
 */
import type { OpOptions } from '../base/deadline.js';
import { invalidArgument, isGroupcommError, withContext } from '../base/errors.js';
import { checkOutAliasing } from '../core/alias.js';
import type { SizesOptions, SizesReduceOptions, AllToAllSplitsOptions } from '../core/collectives.js';
import { DTYPE_NAMES } from '../core/dtype.js';
import { directPeers } from '../core/layout.js';
import { finishAvg, reduceBytes, REDUCE_OPS, type ReduceOp } from '../core/reduce.js';
import { isPreMulSum, premulScalar, scaleBytes, type ReduceOpSpec } from '../core/premul.js';
import { bytesOf, empty, isCpu, itemSize, numel, type CpuTensor, type DType } from '../core/tensor.js';
import type { Exchange } from './exchange.js';

/** What these collectives need from their CPU group: its place and its queued-operation runner. */
export interface VariableHost {
  readonly rank: number;
  readonly worldSize: number;
  /** Checks synchronously (`prepare` throws: rejected before anything is queued), then runs the body in order with the other collectives. */
  runVariable<T>(what: 'allGatherv' | 'reduceScatterv' | 'allToAll', opts: OpOptions | undefined, prepare: () => (ex: Exchange) => Promise<T>): Promise<T>;
}

const HEADER = 0;
const PAYLOAD = 1;

export function allGatherv(g: VariableHost, input: CpuTensor, opts: SizesOptions<CpuTensor>): Promise<CpuTensor> {
  return g.runVariable('allGatherv', opts, () => {
    const what = 'allGatherv';
    const x = cpu(input, what);
    const sizes = counts(opts?.sizes, g.worldSize, `${what} sizes`);
    const rows = rowsOf(x, what);
    if (rows !== sizes[g.rank]) throw invalidArgument(`${what}: rank ${g.rank}'s input has ${rows} rows (dim 0), sizes[${g.rank}] says ${sizes[g.rank]}`, { rank: g.rank });
    const row = rowShape(x);
    const out = output(opts.out, x, [sum(sizes), ...row], what);
    const rowBytes = numel(row) * itemSize(x.dtype);
    const header = encode(x.dtype, row, sizes);
    return async (ex) => {
      const o = bytesOf(out);
      const at = offsets(sizes, rowBytes);
      const mine = bytesOf(x);
      o.set(mine, at[g.rank]);
      const peers = directPeers(g.rank, g.worldSize);
      for (const p of peers.sendTo) {
        ex.send(p, HEADER, header);
        if (mine.byteLength > 0) ex.send(p, PAYLOAD, mine);
      }
      await Promise.all([...peers.recvFrom].map(async (p) => {
        agree(await ex.recv(p, HEADER), header, p, g.rank, what);
        const n = sizes[p] * rowBytes;
        if (n > 0) await ex.recv(p, PAYLOAD, o.subarray(at[p], at[p] + n));
      }));
      return out;
    };
  });
}

export function reduceScatterv(g: VariableHost, input: CpuTensor, opts: SizesReduceOptions<CpuTensor>): Promise<CpuTensor> {
  return g.runVariable('reduceScatterv', opts, () => {
    const what = 'reduceScatterv';
    const x = cpu(input, what);
    const sizes = counts(opts?.sizes, g.worldSize, `${what} sizes`);
    const op = reduceOp(opts.op, x.dtype, what);
    const rows = rowsOf(x, what);
    if (rows !== sum(sizes)) throw invalidArgument(`${what}: rank ${g.rank}'s input has ${rows} rows (dim 0), the sizes add up to ${sum(sizes)}`, { rank: g.rank });
    const row = rowShape(x);
    const out = output(opts.out, x, [sizes[g.rank], ...row], what);
    const rowBytes = numel(row) * itemSize(x.dtype);
    const header = encode(x.dtype, row, sizes);
    return async (ex) => {
      const inp = bytesOf(x);
      const at = offsets(sizes, rowBytes);
      const part = (p: number) => inp.subarray(at[p], at[p] + sizes[p] * rowBytes);
      const peers = directPeers(g.rank, g.worldSize);
      for (const p of peers.sendTo) {
        ex.send(p, HEADER, header);
        if (sizes[p] > 0) ex.send(p, PAYLOAD, part(p));
      }
      const n = sizes[g.rank] * rowBytes;
      const got: Uint8Array[] = [];
      got[g.rank] = part(g.rank);
      await Promise.all([...peers.recvFrom].map(async (p) => {
        agree(await ex.recv(p, HEADER), header, p, g.rank, what);
        got[p] = n > 0 ? await ex.recv(p, PAYLOAD, new Uint8Array(n)) : new Uint8Array(0);
      }));
      // In rank order on every rank: the same inputs give the same bits, wherever they arrive from.
      const o = bytesOf(out);
      if (isPreMulSum(op)) {
        // Each rank's part scaled, then summed (the received parts are this call's own buffers; this rank's is the input's).
        scaleBytes(x.dtype, o, got[0], op);
        for (let p = 1; p < g.worldSize; p++) {
          const part = p === g.rank ? new Uint8Array(got[p].byteLength) : got[p];
          scaleBytes(x.dtype, part, got[p], op);
          reduceBytes('sum', x.dtype, o, part);
        }
        return out;
      }
      o.set(got[0]);
      for (let p = 1; p < g.worldSize; p++) reduceBytes(op === 'avg' ? 'sum' : op, x.dtype, o, got[p]);
      if (op === 'avg') finishAvg(x.dtype, o, g.worldSize);
      return out;
    };
  });
}

export function allToAllv(g: VariableHost, input: CpuTensor, opts: AllToAllSplitsOptions<CpuTensor>): Promise<CpuTensor> {
  return g.runVariable('allToAll', opts, () => {
    const what = 'allToAll';
    const x = cpu(input, what);
    const P = g.worldSize;
    const rows = rowsOf(x, what);
    const ins = opts.inputSplits === undefined ? equal(rows, P, `${what}: input`) : counts(opts.inputSplits, P, `${what} inputSplits`);
    if (sum(ins) !== rows) throw invalidArgument(`${what}: rank ${g.rank}'s input has ${rows} rows (dim 0), inputSplits add up to ${sum(ins)}`, { rank: g.rank });
    // Without outputSplits each peer sends as many rows as this rank sends it (torch: equal blocks).
    const outs = opts.outputSplits === undefined ? equal(rows, P, `${what}: output`) : counts(opts.outputSplits, P, `${what} outputSplits`);
    if (outs[g.rank] !== ins[g.rank]) {
      throw invalidArgument(`${what}: rank ${g.rank} sends itself ${ins[g.rank]} rows (inputSplits) but expects ${outs[g.rank]} (outputSplits)`, { rank: g.rank });
    }
    const row = rowShape(x);
    const out = output(opts.out, x, [sum(outs), ...row], what);
    const rowBytes = numel(row) * itemSize(x.dtype);
    return async (ex) => {
      const inp = bytesOf(x);
      const o = bytesOf(out);
      const inAt = offsets(ins, rowBytes);
      const outAt = offsets(outs, rowBytes);
      o.set(inp.subarray(inAt[g.rank], inAt[g.rank] + ins[g.rank] * rowBytes), outAt[g.rank]);
      const peers = directPeers(g.rank, P);
      for (const p of peers.sendTo) {
        ex.send(p, HEADER, encode(x.dtype, row, [ins[p]]));
        if (ins[p] > 0) ex.send(p, PAYLOAD, inp.subarray(inAt[p], inAt[p] + ins[p] * rowBytes));
      }
      await Promise.all([...peers.recvFrom].map(async (p) => {
        agree(await ex.recv(p, HEADER), encode(x.dtype, row, [outs[p]]), p, g.rank, what);
        if (outs[p] > 0) await ex.recv(p, PAYLOAD, o.subarray(outAt[p], outAt[p] + outs[p] * rowBytes));
      }));
      return out;
    };
  });
}

// ---- checks (thrown from runVariable's prepare: the CPU group adds this rank to each) -----------

function cpu(t: CpuTensor | undefined, what: string): CpuTensor {
  if (!t || typeof t !== 'object' || !isCpu(t) || !ArrayBuffer.isView(t.data)) throw invalidArgument(`${what}: expected a CPU tensor`);
  const n = numel(t.shape) * itemSize(t.dtype);
  if (t.data.byteLength !== n) throw invalidArgument(`${what}: shape [${t.shape.join(', ')}] of ${t.dtype} needs ${n} bytes, data has ${t.data.byteLength}`);
  return t;
}

function rowsOf(t: CpuTensor, what: string): number {
  if (t.shape.length === 0) throw invalidArgument(`${what}: a 0-d tensor has no rows to split`);
  return t.shape[0];
}

const rowShape = (t: CpuTensor): number[] => t.shape.slice(1);
const sum = (a: readonly number[]): number => a.reduce((x, y) => x + y, 0);

/** A list of `n` row counts (integers >= 0). */
export function counts(v: unknown, n: number, what: string): number[] {
  if (!Array.isArray(v) || v.length !== n || !v.every((s) => Number.isSafeInteger(s) && s >= 0)) {
    throw invalidArgument(`${what}: expected ${n} integers >= 0 (one per rank), got ${JSON.stringify(v)}`);
  }
  return [...v];
}

function equal(rows: number, P: number, what: string): number[] {
  if (rows % P !== 0) throw invalidArgument(`${what}: dim 0 has ${rows} rows, not divisible by the world size ${P}; pass splits`);
  return Array.from({ length: P }, () => rows / P);
}

function offsets(sizes: readonly number[], rowBytes: number): number[] {
  const at: number[] = [];
  let o = 0;
  for (const s of sizes) { at.push(o); o += s * rowBytes; }
  return at;
}

function reduceOp(op: unknown, dtype: DType, what: string): ReduceOpSpec {
  if (isPreMulSum(op)) {
    try {
      premulScalar(dtype, op);
    } catch (e) {
      throw isGroupcommError(e) ? withContext(e, `${what}: ${e.message}`) : e;
    }
    return op;
  }
  const o = (op ?? 'sum') as ReduceOp;
  if (!REDUCE_OPS.includes(o)) throw invalidArgument(`${what}: unknown reduce op '${String(op)}'; expected one of ${REDUCE_OPS.join(', ')}`);
  if (o === 'avg' && dtype === 'bool') throw invalidArgument(`${what}: avg is not defined for bool (sum or max for "any", prod or min for "all")`);
  return o;
}

function output(out: CpuTensor | undefined, x: CpuTensor, shape: number[], what: string): CpuTensor {
  if (out === undefined) return empty(shape, x.dtype);
  const o = cpu(out, `${what} out`);
  if (o.dtype !== x.dtype || o.shape.length !== shape.length || o.shape.some((d, i) => d !== shape[i])) {
    throw invalidArgument(`${what}: out is ${o.dtype}[${o.shape.join(', ')}], expected ${x.dtype}[${shape.join(', ')}]`);
  }
  checkOutAliasing(o, x, false, what);
  return o;
}

// ---- the agreement header ------------------------------------------------------------------------

/** [dtype index, row dims, …row shape, …sizes] as float64 (exact for every safe integer). */
function encode(dtype: DType, row: readonly number[], sizes: readonly number[]): Uint8Array {
  const h = Float64Array.from([DTYPE_NAMES.indexOf(dtype), row.length, ...row, ...sizes]);
  return new Uint8Array(h.buffer);
}

function decode(b: Uint8Array): string {
  const f = new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + (b.byteLength & ~7)));
  const nd = f[1];
  return `${DTYPE_NAMES[f[0]] ?? '?'} rows of [${[...f.subarray(2, 2 + nd)].join(', ')}], sizes [${[...f.subarray(2 + nd)].join(', ')}]`;
}

function agree(got: Uint8Array, want: Uint8Array, peer: number, rank: number, what: string): void {
  const same = got.byteLength === want.byteLength && got.every((v, i) => v === want[i]);
  if (!same) {
    throw invalidArgument(`${what}: ranks disagree: rank ${peer} has ${decode(got)}, rank ${rank} expects ${decode(want)}`, { rank, peerRank: peer });
  }
}
