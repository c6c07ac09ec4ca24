/**
 * How the cpu backend moves bytes between ranks. Two transports behind one interface, picked
 * when the communicator is created:
 *
 * - GroupTransport: groupcomm's CPU group (host/cpu/: a TCP mesh with ring / tree algorithms
 *   and the WASM core's reductions), built over the store the bootstrap exposes. This is the
 *   normal path and as fast as host collectives get in groupcomm.
 * - BootstrapTransport: only the bootstrap's broadcast and point-to-point bytes (every byte goes
 *   through the store server). Slow, but it needs nothing beyond a DeviceBootstrap, so the
 *   backend works with any bootstrap, even one without a store behind it.
 *
 * Buffers are views of HostMemory; every method writes its result into the views it is given
 * (allReduce and broadcast in place; the communicator has refused every other overlap).
 * Every call takes the operation's signal and passes it down, so an aborted communicator stops
 * waiting at once.
 */
import {
  arrayClassOf, CpuGroup, finishAvg, isPreMulSum, itemSize, protocolError, reduceBytes, scaleBytes,
  type CpuTensor, type DeviceBootstrap, type DType, type OpOptions, type ReduceOpSpec, type Store,
} from 'groupcomm/plugin';

export interface HostTransport {
  readonly kind: 'group' | 'bootstrap';
  allReduce(buf: Uint8Array, dtype: DType, op: ReduceOpSpec, o: OpOptions): Promise<void>;
  allGather(out: Uint8Array, inp: Uint8Array, dtype: DType, o: OpOptions): Promise<void>;
  reduceScatter(out: Uint8Array, inp: Uint8Array, dtype: DType, op: ReduceOpSpec, o: OpOptions): Promise<void>;
  /** Resolves with the number of bytes src broadcast (the caller checks it against the buffer). */
  broadcast(buf: Uint8Array, src: number, dtype: DType, o: OpOptions): Promise<number>;
  send(buf: Uint8Array, dst: number, dtype: DType, o: OpOptions): Promise<void>;
  /** Resolves with the number of bytes the peer sent (the caller checks it against the buffer). */
  recv(buf: Uint8Array, src: number, dtype: DType, o: OpOptions): Promise<number>;
  gather(out: Uint8Array | undefined, inp: Uint8Array, dst: number, dtype: DType, o: OpOptions): Promise<void>;
  allToAll(out: Uint8Array, inp: Uint8Array, dtype: DType, o: OpOptions): Promise<void>;
  barrier(o: OpOptions): Promise<void>;
  close(): Promise<void>;
  /** The variable-size collectives, on `rowElems`-wide rows (sizes and splits count rows). */
  allGatherv(out: Uint8Array, inp: Uint8Array, dtype: DType, rowElems: number, sizes: readonly number[], o: OpOptions): Promise<void>;
  reduceScatterv(out: Uint8Array, inp: Uint8Array, dtype: DType, rowElems: number, sizes: readonly number[], op: ReduceOpSpec, o: OpOptions): Promise<void>;
  allToAllv(out: Uint8Array, inp: Uint8Array, dtype: DType, rowElems: number, inputSplits: readonly number[], outputSplits: readonly number[], o: OpOptions): Promise<void>;
}

/** `bytes` as a `[rows, rowElems]` CPU tensor (the variable collectives count rows). */
function rowsView(bytes: Uint8Array, dtype: DType, rows: number, rowElems: number): CpuTensor {
  return { ...view(bytes, dtype), shape: [rows, rowElems] };
}

const sum = (a: readonly number[]) => a.reduce((x, y) => x + y, 0);

/** out = op over `parts`, combined in rank order so every rank gets the same bits. */
function reduceParts(dtype: DType, op: ReduceOpSpec, out: Uint8Array, parts: readonly Uint8Array[]): void {
  if (isPreMulSum(op)) {
    // Each rank's part scaled, then summed. Scaled into a buffer of this call's own: a part may be
    // the very bytes an in-process store hands every reader of a key.
    scaleBytes(dtype, out, parts[0], op);
    const scaled = new Uint8Array(out.byteLength);
    for (let r = 1; r < parts.length; r++) { scaleBytes(dtype, scaled, parts[r], op); reduceBytes('sum', dtype, out, scaled); }
    return;
  }
  out.set(parts[0]);
  for (let r = 1; r < parts.length; r++) reduceBytes(op === 'avg' ? 'sum' : op, dtype, out, parts[r]);
  if (op === 'avg') finishAvg(dtype, out, parts.length);
}

// ---- over the CPU group ---------------------------------------------------------------------

/** A CpuTensor over `bytes`: aliasing when aligned for the dtype, else over a copy (see `settle`). */
function view(bytes: Uint8Array, dtype: DType): CpuTensor {
  const C = arrayClassOf(dtype);
  const n = bytes.byteLength / C.BYTES_PER_ELEMENT;
  if (bytes.byteOffset % C.BYTES_PER_ELEMENT === 0) return { dtype, shape: [n], device: 'cpu', data: new C(bytes.buffer, bytes.byteOffset, n) };
  const data = new C(n);
  new Uint8Array(data.buffer).set(bytes);
  return { dtype, shape: [n], device: 'cpu', data };
}

/** Copies a result back when `view` had to copy (a sub-buffer at an unaligned offset). */
function settle(t: CpuTensor, bytes: Uint8Array): void {
  if (t.data.buffer !== bytes.buffer) bytes.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

export class GroupTransport implements HostTransport {
  readonly kind = 'group';
  private constructor(private readonly g: CpuGroup) {}

  static async create(o: { store: Store; rank: number; worldSize: number; name: string; host?: string; timeoutMs: number; signal?: AbortSignal }): Promise<GroupTransport> {
    return new GroupTransport(await CpuGroup.create({
      store: o.store, rank: o.rank, worldSize: o.worldSize, groupName: o.name, host: o.host, timeoutMs: o.timeoutMs, signal: o.signal,
    }));
  }

  async allReduce(buf: Uint8Array, dtype: DType, op: ReduceOpSpec, o: OpOptions) {
    const t = view(buf, dtype);
    await this.g.allReduce(t, { ...o, op, out: t });
    settle(t, buf);
  }
  async allGather(out: Uint8Array, inp: Uint8Array, dtype: DType, o: OpOptions) {
    const r = view(out, dtype);
    await this.g.allGather(view(inp, dtype), { ...o, out: r });
    settle(r, out);
  }
  async reduceScatter(out: Uint8Array, inp: Uint8Array, dtype: DType, op: ReduceOpSpec, o: OpOptions) {
    const r = view(out, dtype);
    await this.g.reduceScatter(view(inp, dtype), { ...o, op, out: r });
    settle(r, out);
  }
  async broadcast(buf: Uint8Array, src: number, dtype: DType, o: OpOptions) {
    const t = view(buf, dtype);
    await this.g.broadcast(t, { ...o, src, out: t });
    settle(t, buf);
    return buf.byteLength;
  }
  async send(buf: Uint8Array, dst: number, dtype: DType, o: OpOptions) {
    await this.g.send(view(buf, dtype), dst, o);
  }
  async recv(buf: Uint8Array, src: number, dtype: DType, o: OpOptions) {
    const t = view(buf, dtype);
    await this.g.recv(t, src, o); // the group checks the size against its own header
    settle(t, buf);
    return buf.byteLength;
  }
  async gather(out: Uint8Array | undefined, inp: Uint8Array, dst: number, dtype: DType, o: OpOptions) {
    const r = out && view(out, dtype);
    await this.g.gather(view(inp, dtype), { ...o, dst, out: r });
    if (r && out) settle(r, out);
  }
  async allToAll(out: Uint8Array, inp: Uint8Array, dtype: DType, o: OpOptions) {
    const r = view(out, dtype);
    await this.g.allToAll(view(inp, dtype), { ...o, out: r });
    settle(r, out);
  }
  barrier(o: OpOptions) {
    return this.g.barrier(o);
  }
  async allGatherv(out: Uint8Array, inp: Uint8Array, dtype: DType, rowElems: number, sizes: readonly number[], o: OpOptions) {
    const r = rowsView(out, dtype, sum(sizes), rowElems);
    await this.g.allGatherv(rowsView(inp, dtype, sizes[this.g.rank], rowElems), { ...o, sizes, out: r });
    settle(r, out);
  }
  async reduceScatterv(out: Uint8Array, inp: Uint8Array, dtype: DType, rowElems: number, sizes: readonly number[], op: ReduceOpSpec, o: OpOptions) {
    const r = rowsView(out, dtype, sizes[this.g.rank], rowElems);
    await this.g.reduceScatterv(rowsView(inp, dtype, sum(sizes), rowElems), { ...o, sizes, op, out: r });
    settle(r, out);
  }
  async allToAllv(out: Uint8Array, inp: Uint8Array, dtype: DType, rowElems: number, inputSplits: readonly number[], outputSplits: readonly number[], o: OpOptions) {
    const r = rowsView(out, dtype, sum(outputSplits), rowElems);
    await this.g.allToAll(rowsView(inp, dtype, sum(inputSplits), rowElems), { ...o, inputSplits, outputSplits, out: r });
    settle(r, out);
  }
  close() {
    // The communicator's abort and destroy are both immediate: no waiting for the group's ops.
    return this.g.abort();
  }
}

// ---- over the bootstrap only ------------------------------------------------------------------

export class BootstrapTransport implements HostTransport {
  readonly kind = 'bootstrap';
  constructor(private readonly boot: DeviceBootstrap) {}

  private get rank() { return this.boot.rank; }
  private get worldSize() { return this.boot.worldSize; }

  private bcast(bytes: Uint8Array | undefined, src: number, o: OpOptions): Promise<Uint8Array> {
    if (this.worldSize === 1) return Promise.resolve(bytes!);
    return this.boot.broadcastBytes(bytes, src, o);
  }

  /** Every rank's bytes by rank; the broadcasts use distinct keys per source, so all run at once. */
  private gatherAll(bytes: Uint8Array, o: OpOptions): Promise<Uint8Array[]> {
    const mine = bytes.slice();
    return Promise.all(Array.from({ length: this.worldSize }, (_, src) => this.bcast(src === this.rank ? mine : undefined, src, o)));
  }

  async allReduce(buf: Uint8Array, dtype: DType, op: ReduceOpSpec, o: OpOptions) {
    reduceParts(dtype, op, buf, await this.gatherAll(buf, o));
  }
  async allGather(out: Uint8Array, inp: Uint8Array, _dtype: DType, o: OpOptions) {
    const parts = await this.gatherAll(inp, o);
    parts.forEach((p, r) => out.set(p, r * inp.byteLength));
  }
  async reduceScatter(out: Uint8Array, inp: Uint8Array, dtype: DType, op: ReduceOpSpec, o: OpOptions) {
    const parts = await this.gatherAll(inp, o);
    const n = out.byteLength;
    reduceParts(dtype, op, out, parts.map((p) => p.subarray(this.rank * n, (this.rank + 1) * n)));
  }
  async broadcast(buf: Uint8Array, src: number, _dtype: DType, o: OpOptions) {
    const got = await this.bcast(this.rank === src ? buf.slice() : undefined, src, o);
    if (this.rank !== src && got.byteLength === buf.byteLength) buf.set(got);
    return got.byteLength;
  }
  send(buf: Uint8Array, dst: number, _dtype: DType, o: OpOptions) {
    return this.boot.sendBytes(buf.slice(), dst, o);
  }
  async recv(buf: Uint8Array, src: number, _dtype: DType, o: OpOptions) {
    const got = await this.boot.recvBytes(src, o);
    if (got.byteLength === buf.byteLength) buf.set(got);
    return got.byteLength;
  }
  async gather(out: Uint8Array | undefined, inp: Uint8Array, dst: number, _dtype: DType, o: OpOptions) {
    if (this.rank !== dst) return this.boot.sendBytes(inp.slice(), dst, o);
    const mine = inp.slice();
    const parts = await Promise.all(Array.from({ length: this.worldSize }, (_, src) =>
      src === dst ? Promise.resolve(mine) : this.boot.recvBytes(src, o)));
    parts.forEach((p, r) => out!.set(p, r * inp.byteLength));
  }
  async allToAll(out: Uint8Array, inp: Uint8Array, _dtype: DType, o: OpOptions) {
    const block = inp.byteLength / this.worldSize;
    const src = inp.slice();
    const blocks = Array.from({ length: this.worldSize }, (_, j) => src.subarray(j * block, (j + 1) * block));
    const sends = blocks.map((b, j) => (j === this.rank ? Promise.resolve() : this.boot.sendBytes(b, j, o)));
    const recvs = blocks.map((b, i) => (i === this.rank ? Promise.resolve(b) : this.boot.recvBytes(i, o)));
    const [, got] = await Promise.all([Promise.all(sends), Promise.all(recvs)]);
    got.forEach((b, r) => out.set(b, r * block));
  }
  barrier(o: OpOptions) {
    return this.boot.barrier(o);
  }
  /** Every rank's whole input (the bootstrap has no cheaper way), each checked against `want(rank)` bytes. */
  private async gatherChecked(inp: Uint8Array, want: (r: number) => number, what: string, o: OpOptions): Promise<Uint8Array[]> {
    const parts = await this.gatherAll(inp, o);
    parts.forEach((p, r) => {
      if (p.byteLength !== want(r)) throw protocolError(`${what}: rank ${r} gave ${p.byteLength} bytes, the sizes say ${want(r)}`, { rank: this.rank, peerRank: r });
    });
    return parts;
  }
  async allGatherv(out: Uint8Array, inp: Uint8Array, dtype: DType, rowElems: number, sizes: readonly number[], o: OpOptions) {
    const row = rowElems * itemSize(dtype);
    const parts = await this.gatherChecked(inp, (r) => sizes[r] * row, 'allGatherv', o);
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.byteLength; }
  }
  async reduceScatterv(out: Uint8Array, inp: Uint8Array, dtype: DType, rowElems: number, sizes: readonly number[], op: ReduceOpSpec, o: OpOptions) {
    const row = rowElems * itemSize(dtype);
    const parts = await this.gatherChecked(inp, () => sum(sizes) * row, 'reduceScatterv', o);
    const at = sum(sizes.slice(0, this.rank)) * row;
    reduceParts(dtype, op, out, parts.map((p) => p.subarray(at, at + out.byteLength)));
  }
  async allToAllv(out: Uint8Array, inp: Uint8Array, dtype: DType, rowElems: number, inputSplits: readonly number[], outputSplits: readonly number[], o: OpOptions) {
    const row = rowElems * itemSize(dtype);
    // Every rank's inputSplits first: what rank i sends here starts after its rows for ranks < this one.
    const splits = (await this.gatherAll(new Uint8Array(Float64Array.from(inputSplits).buffer), o)).map((b) => [...new Float64Array(b.slice().buffer)]);
    const parts = await this.gatherChecked(inp, (r) => sum(splits[r]) * row, 'allToAllv', o);
    let at = 0;
    parts.forEach((p, i) => {
      if (splits[i][this.rank] !== outputSplits[i]) throw protocolError(`allToAllv: rank ${i} sends ${splits[i][this.rank]} rows here, outputSplits[${i}] says ${outputSplits[i]}`, { rank: this.rank, peerRank: i });
      const from = sum(splits[i].slice(0, this.rank)) * row;
      out.set(p.subarray(from, from + outputSplits[i] * row), at);
      at += outputSplits[i] * row;
    });
  }
  async close() {}
}
