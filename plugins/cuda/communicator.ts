/**
 * A NCCL communicator driven from JavaScript without blocking the event loop.
 *
 * - Creation: rank 0 makes the unique id; its raw 128 bytes travel over the bootstrap. The
 *   communicator is created non-blocking with ncclCommInitRankConfig (NCCL >= 2.14; older NCCL
 *   is refused by the probe) and we poll ncclCommGetAsyncError, so a rank that never comes ends
 *   in a timeout and ncclCommAbort instead of a hung process. NCCL_COMM_BLOCKING=1 would make
 *   that init block the event loop, so it is refused. A one-byte allReduce (the warm-up, as
 *   PyNccl does) then makes connection failures surface at creation, not at the first call.
 * - The rank's device is made current again after every await and before every CUDA or NCCL
 *   call that depends on it: another communicator of this process may have changed it meanwhile.
 * - Operations are enqueued on the communicator's own non-blocking stream, followed by an
 *   event; completion is awaited by polling cudaEventQuery on a short timer, and the
 *   communicator's async error is polled alongside. NCCL has no watchdog of its own: a timeout
 *   here calls ncclCommAbort (the only way to free a stuck kernel) and the communicator is dead.
 *   An async error from NCCL kills the communicator too (ncclTimeout as TIMEOUT, remote/system
 *   errors as PEER_LOST, the rest as ABORTED), with ncclGetLastError's text in the message.
 * - Device memory freed while operations are in flight is freed later (CudaRuntime.hold):
 *   cudaFree synchronises the device and would freeze the event loop behind a stuck kernel.
 * - Every buffer is checked to be device memory of this communicator's device before NCCL sees it.
 * - Data movement (allGather, broadcast, send/recv, gather, allToAll) is a byte copy and goes as
 *   ncclUint8 with byte counts, so every dtype works (bool, int16 and fp8 included); reductions
 *   use the dtype's NCCL type.
 * - Results follow the aliasing contract through the kit's deviceOutput: NCCL's separate send
 *   and receive buffers take the input and `out` (or a buffer allocated here) directly; in place
 *   is the same pointer for both.
 *
 * This file is the communicator's creation, issue and lifecycle; fixed.ts and variable.ts hold
 * the collectives and point to point, nccl.ts what they share (reduce dtypes and args, NcclLibs).
 */
import {
  abortedError, checkDeviceTensor, deviceOutput, deviceString,
  effectiveTimeout, ErrorCode, GroupcommError, guard, invalidArgument, isGroupcommError, logger, OrderedOps, peerLostError,
  pluginUnavailable, simpleTimeout, timeoutError,
  type BroadcastOptions, type CheckedTensor, type CommunicatorOptions, type DeviceBuffer, type DeviceCommunicatorV1,
  type DeviceOutput, type GatherOptions, type OpOptions, type OutOptions, type ReduceOptions,
  type CommSplitOptions, type Tensor, type SizesOptions, type SizesReduceOptions, type AllToAllSplitsOptions,
} from 'groupcomm/plugin';
import * as variable from './variable.js';
import * as fixed from './fixed.js';
import {
  callerStream, CUDA_FP8_REDUCE_DTYPES, CUDA_REDUCE_DTYPES, DEVICE_TYPE, NCCL_SPLIT_NOCOLOR, ncclReduceArgs, ONE_RANK_UNSCALED, pollPause, SPIN_MS,
  type CudaOpOptions, type CudaStream, type NcclLibs, type NcclReduceArgs,
} from './nccl.js';
import { callDetached, CudaError, NcclDataType, NcclRedOp, NcclResult, NcclScalarResidence, NCCL_UNIQUE_ID_BYTES, ncclConfigBytes } from './transport.js';

export { DEVICE_TYPE, CUDA_REDUCE_DTYPES, CUDA_FP8_REDUCE_DTYPES, ncclReduceArgs, ONE_RANK_UNSCALED, type CudaOpOptions, type CudaStream, type NcclLibs };

export class CudaCommunicator implements DeviceCommunicatorV1 {
  readonly rank: number;
  readonly worldSize: number;
  readonly deviceIndex: number;
  private readonly ops: OrderedOps;
  private readonly log;
  private comm = 0n;
  private stream = 0n;
  private event = 0n;
  /** One byte of device memory for barrier()'s allReduce, made on first use. */
  private scratch: DeviceBuffer | undefined;
  /** Operations of this communicator holding CudaRuntime's deferred frees (see issue()). */
  private holds = 0;
  /** The first abortNative's work (see there). */
  private aborting: Promise<void> | undefined;
  /** The caller's stream (CudaOpOptions.stream) of the operation being issued or stuck; undefined: the own stream. */
  private opStream: bigint | undefined;
  /** What fixed.ts and variable.ts use of this communicator, made once (no allocation per call). */
  private io: variable.VariableIo | undefined;

  private constructor(private readonly libs: NcclLibs, o: Pick<CommunicatorOptions, 'rank' | 'worldSize' | 'deviceIndex' | 'name'>, private readonly timeoutMs: number) {
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    this.deviceIndex = o.deviceIndex;
    this.log = logger('DEVICE', `rank ${o.rank}/${o.worldSize} cuda:${o.deviceIndex}`);
    this.ops = new OrderedOps(`NCCL communicator${o.name ? ` '${o.name}'` : ''}`, o.rank, timeoutMs, (reason) => this.abortNative(reason));
  }

  /** The result's name and, where NCCL has it (ncclGetLastError, 2.13+), what went wrong. */
  private ncclText(rc: number): string {
    const { nccl } = this.libs;
    let last = '';
    try { last = nccl.ncclGetLastError ? String(nccl.ncclGetLastError(this.comm || null) ?? '') : ''; } catch { /* the name alone */ }
    return `${nccl.ncclGetErrorString(rc)} (${rc})${last ? `: ${last}` : ''}`;
  }

  private ncclCheck(rc: number, what: string): void {
    if (rc === NcclResult.ncclSuccess || rc === NcclResult.ncclInProgress) return;
    const msg = `NCCL ${what} failed on rank ${this.rank}: ${this.ncclText(rc)}`;
    if (rc === NcclResult.ncclInvalidArgument || rc === NcclResult.ncclInvalidUsage) throw invalidArgument(msg, { rank: this.rank, detail: rc });
    if (rc === NcclResult.ncclRemoteError || rc === NcclResult.ncclSystemError) throw peerLostError(msg, { rank: this.rank, detail: rc });
    if (rc === NcclResult.ncclTimeout) throw timeoutError(msg, { rank: this.rank, detail: rc });
    throw pluginUnavailable(msg, { rank: this.rank, detail: rc });
  }

  /**
   * An error after work was enqueued leaves the communicator in an unknown state: every such
   * error is fatal (OrderedOps aborts the communicator for TIMEOUT, ABORTED, PEER_LOST,
   * PROTOCOL), so the rest (an unhandled CUDA error, an internal error) becomes ABORTED.
   */
  private fatal(e: unknown, what: string): unknown {
    if (!isGroupcommError(e)) return e;
    if (e.code === ErrorCode.TIMEOUT || e.code === ErrorCode.ABORTED || e.code === ErrorCode.PEER_LOST || e.code === ErrorCode.PROTOCOL || e.code === ErrorCode.DESTROYED) return e;
    return abortedError(`${e.message}; ${what} cannot complete and the communicator is aborted`, { rank: this.rank, detail: e.detail, cause: e });
  }

  /**
   * A non-blocking NCCL communicator keeps the error of any call that failed (ncclEnqueueCheck
   * and ncclGroupEnd set it as the communicator's async error), and every later call on it fails
   * with that error. An enqueue error that NCCL kept has killed the communicator: it becomes
   * ABORTED (OrderedOps then aborts it), not an INVALID_ARGUMENT the caller could mend and retry.
   * An error of this plugin's own checks, which NCCL never saw, passes through unchanged.
   */
  private stickyError(e: unknown, what: string): unknown {
    if (!isGroupcommError(e) || !this.comm) return e;
    try {
      this.asyncPending(what); // throws once NCCL holds an error
      return e;
    } catch { /* NCCL kept it: the communicator is dead */ }
    return abortedError(`${e.message}; NCCL keeps that error on the communicator, so ${what} cannot run and the communicator is aborted`, { rank: this.rank, detail: e.detail, cause: e });
  }

  /** ncclCommGetAsyncError, checked; returns true while the communicator is still in progress. */
  private asyncPending(what: string): boolean {
    // After ncclCommAbort the handle is gone: asking NCCL about it would read freed memory.
    if (!this.comm) throw abortedError(`${what}: the NCCL communicator of rank ${this.rank} was aborted or closed`, { rank: this.rank });
    const st = [0];
    this.ncclCheck(this.libs.nccl.ncclCommGetAsyncError(this.comm, st), 'ncclCommGetAsyncError');
    this.ncclCheck(st[0], `${what} (async error)`);
    return st[0] === NcclResult.ncclInProgress;
  }

  static async create(libs: NcclLibs, o: CommunicatorOptions): Promise<CudaCommunicator> {
    const timeoutMs = effectiveTimeout(o);
    if (o.bootstrap.rank !== o.rank || o.bootstrap.worldSize !== o.worldSize) {
      throw invalidArgument(`createCommunicator: rank ${o.rank}/${o.worldSize} does not match the bootstrap's ${o.bootstrap.rank}/${o.bootstrap.worldSize}`, { rank: o.rank });
    }
    const blocking = process.env.NCCL_COMM_BLOCKING?.trim();
    if (blocking && blocking !== '0') {
      // NCCL lets the variable override ncclConfig_t.blocking: init would then block the event
      // loop until every rank has joined, and no timeout could fire.
      throw invalidArgument(`createCommunicator: NCCL_COMM_BLOCKING=${blocking} would make NCCL init block this process's event loop (no timeout could fire); unset it, or set it to 0`, { rank: o.rank });
    }
    const c = new CudaCommunicator(libs, o, timeoutMs);
    const t0 = performance.now();
    const left = () => Math.max(1, timeoutMs - (performance.now() - t0));
    // 1. The unique id: made by rank 0, shipped as its raw 128 bytes.
    let id: Uint8Array | undefined;
    if (o.rank === 0) {
      id = new Uint8Array(NCCL_UNIQUE_ID_BYTES);
      c.ncclCheck(libs.nccl.ncclGetUniqueId(id), 'ncclGetUniqueId');
    }
    id = await o.bootstrap.broadcastBytes(id, 0, { timeoutMs: left(), signal: o.signal });
    if (id.byteLength !== NCCL_UNIQUE_ID_BYTES) throw invalidArgument(`NCCL unique id from rank 0 has ${id.byteLength} bytes, expected ${NCCL_UNIQUE_ID_BYTES}`);
    // 2. Join: every rank with its device current.
    libs.cuda.setDevice(o.deviceIndex);
    await c.initComm(id, left(), o.signal);
    // Stream and event on the rank's device (set again in there: while init was awaited, another
    // communicator may have made its own device current), then the warm-up: connections are made
    // on the first operation; fail here, not in the caller's first call.
    await c.finishSetup(left(), o.signal);
    c.log.info(`NCCL ${libs.ncclVersion} communicator ready (${libs.ncclPath})`);
    return c;
  }

  private async initComm(id: Uint8Array, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const { nccl } = this.libs;
    const out: unknown[] = [null];
    const uid = { internal: id };
    if (!nccl.ncclCommInitRankConfig) throw pluginUnavailable(`NCCL ${this.libs.ncclVersion} lacks ncclCommInitRankConfig (NCCL >= 2.14 is required)`, { rank: this.rank });
    const rc = nccl.ncclCommInitRankConfig(out, this.worldSize, uid, this.rank, ncclConfigBytes(false));
    this.comm = out[0] ? BigInt(out[0] as bigint) : 0n;
    if (rc !== NcclResult.ncclSuccess && rc !== NcclResult.ncclInProgress) {
      let err: unknown;
      try { this.ncclCheck(rc, 'ncclCommInitRankConfig'); } catch (e) { err = e; } // the text before abort clears it
      if (this.comm) await this.abortNative('init failed');
      throw err;
    }
    await this.awaitReady('ncclCommInitRankConfig', timeoutMs, signal);
  }

  /** Polls a non-blocking init (or split) until NCCL says it is done; aborts it on error, timeout or signal. */
  private async awaitReady(what: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const t0 = performance.now();
    const pending = async () => {
      try {
        return this.asyncPending(what);
      } catch (e) {
        await this.abortNative(`${what} failed`); // an async init error: the half-made communicator must go
        throw e;
      }
    };
    for (let spins = 0; await pending(); spins++) {
      if (signal?.aborted || performance.now() - t0 > timeoutMs) {
        await this.abortNative(`${what} timed out`);
        if (signal?.aborted) throw abortedError(`NCCL ${what} aborted on rank ${this.rank}`, { rank: this.rank, cause: signal.reason });
        throw timeoutError(`NCCL ${what} on rank ${this.rank} of ${this.worldSize} did not complete within ${timeoutMs}ms (a rank missing, or the network between them blocked); the communicator was aborted`,
          { rank: this.rank, timeoutMs });
      }
      await pollPause(spins);
    }
  }

  /** Stream, event and warm-up of a communicator whose NCCL handle is ready. */
  private async finishSetup(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    try {
      this.libs.cuda.setDevice(this.deviceIndex);
      this.stream = this.libs.cuda.createStream();
      this.event = this.libs.cuda.createEvent();
    } catch (e) {
      await this.abortNative('stream setup failed');
      throw e;
    }
    try {
      await this.barrier({ timeoutMs, signal });
    } catch (e) {
      await this.close({ timeoutMs: 1 });
      throw e;
    }
  }

  /**
   * ncclCommSplit (NCCL 2.18+): a sub-group without a new unique id. Issued in order with this
   * communicator's operations (every rank of it must call); the new communicator is made
   * non-blocking and polled like init, then gets its own stream and a warm-up.
   */
  async split(opts: CommSplitOptions): Promise<DeviceCommunicatorV1 | undefined> {
    const { nccl } = this.libs;
    if (!nccl.ncclCommSplit) throw pluginUnavailable(`split needs ncclCommSplit (NCCL >= 2.18; this is ${this.libs.ncclVersion})`, { rank: this.rank });
    const color = opts?.color;
    const key = opts.key ?? this.rank;
    if (!Number.isInteger(color) || !Number.isInteger(key) || color > 0x7fffffff || Math.abs(key) > 0x7fffffff) {
      throw invalidArgument(`split: color and key must be 32-bit integers, got color ${color}, key ${key}`, { rank: this.rank });
    }
    const timeoutMs = effectiveTimeout(opts, this.timeoutMs);
    return this.ops.run('split', opts, async (signal) => {
      this.libs.cuda.setDevice(this.deviceIndex);
      const out: unknown[] = [null];
      const rc = nccl.ncclCommSplit(this.comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, out, ncclConfigBytes(false));
      const handle = out[0] ? BigInt(out[0] as bigint) : 0n;
      if (rc !== NcclResult.ncclSuccess && rc !== NcclResult.ncclInProgress) {
        if (handle) void nccl.ncclCommAbort(handle);
        this.ncclCheck(rc, 'ncclCommSplit');
      }
      // NCCL runs the split as a job on the parent, which reads ncclInProgress until the job is
      // done, NCCL_SPLIT_NOCOLOR included: the parent's next operation must not overlap it.
      await this.awaitReady('ncclCommSplit', timeoutMs, signal);
      if (color < 0 || !handle) return undefined;
      // Rank and size are NCCL's answer, known once the split is done.
      const child = new CudaCommunicator(this.libs, { rank: this.rank, worldSize: this.worldSize, deviceIndex: this.deviceIndex, name: opts.name }, this.timeoutMs);
      child.comm = handle;
      await child.awaitReady('ncclCommSplit', timeoutMs, signal);
      const r = [0], n = [0];
      child.ncclCheck(nccl.ncclCommUserRank(handle, r), 'ncclCommUserRank');
      child.ncclCheck(nccl.ncclCommCount(handle, n), 'ncclCommCount');
      const made = new CudaCommunicator(this.libs, { rank: r[0], worldSize: n[0], deviceIndex: this.deviceIndex, name: opts.name }, this.timeoutMs);
      made.comm = handle;
      await made.finishSetup(timeoutMs, signal);
      made.log.info(`split from rank ${this.rank}/${this.worldSize}: color ${color}, key ${key}`);
      return made;
    });
  }

  /**
   * ncclCommAbort off the event loop (it may wait for kernels), bounded so we never hang on it:
   * on a detached native thread, which cannot keep the process alive, then waiting (at most
   * 10 s) for this communicator's stream to drain; or, where no such thread can be made, on
   * koffi's thread pool. Once: a later call (close() right after a timeout's abort) waits for
   * the first instead of releasing the held frees while the aborted kernel may still run.
   */
  private abortNative(reason: string): Promise<void> {
    return (this.aborting ??= this.abortOnce(reason));
  }

  private async abortOnce(reason: string): Promise<void> {
    const comm = this.comm;
    this.comm = 0n;
    if (comm) this.log.warn(`aborting NCCL communicator: ${reason}`);
    if (comm && callDetached(this.libs.ncclPath, 'ncclCommAbort', comm)) {
      if (await this.streamDrained(10_000)) this.unholdAll(); // no kernel of ours runs: held frees may go
      else this.log.warn('the communicator\'s stream is still busy 10 s after ncclCommAbort; its deferred frees stay deferred');
    } else if (comm) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { this.log.warn('ncclCommAbort still running after 10 s; leaving it'); resolve(); }, 10_000);
        this.libs.nccl.ncclCommAbort.async(comm, () => {
          clearTimeout(t);
          // No kernel of this communicator runs any more: frees held for it may go ahead.
          this.unholdAll();
          resolve();
        });
      });
    } else {
      this.unholdAll();
    }
    this.releaseStream();
  }

  /**
   * Polls cudaStreamQuery until this communicator's stream, and a caller's stream an operation
   * was stuck on, are idle; false after `timeoutMs`.
   */
  private async streamDrained(timeoutMs: number): Promise<boolean> {
    const streams: bigint[] = [];
    if (this.stream) streams.push(this.stream);
    if (this.opStream !== undefined) streams.push(this.opStream); // 0n: the legacy default stream
    const t0 = performance.now();
    for (let spins = 0; performance.now() - t0 < timeoutMs; spins++) {
      if (streams.every((s) => this.libs.cuda.fn.cudaStreamQuery(s) !== CudaError.cudaErrorNotReady)) {
        this.opStream = undefined;
        return true;
      }
      await pollPause(spins);
    }
    return false;
  }

  private hold(): void { this.holds++; this.libs.cuda.hold(); }
  private unhold(): void { if (this.holds > 0) { this.holds--; this.libs.cuda.release(); } }
  private unholdAll(): void { while (this.holds > 0) this.unhold(); }

  private releaseStream(): void {
    const { fn } = this.libs.cuda;
    if (this.event) { fn.cudaEventDestroy(this.event); this.event = 0n; }
    if (this.stream) { fn.cudaStreamDestroy(this.stream); this.stream = 0n; }
  }

  /**
   * Enqueues with `enqueue` (its NCCL calls) on the caller's stream (opts.stream) or the
   * communicator's own, then waits for that stream to reach that point.
   */
  private issue<T>(what: string, opts: CudaOpOptions | undefined, enqueue: () => void, result: T, peerRank?: number): Promise<T> {
    let stream: bigint | undefined;
    // Refused as a rejection, not a throw: the caller settles (frees) its allocated result on it.
    try {
      stream = callerStream(opts?.stream, what, this.rank);
      // NCCL would fail on another device's stream, and keep that error on the communicator:
      // refuse it here, where the communicator survives the mistake.
      const dev = stream ? this.libs.cuda.streamDevice(stream) : undefined;
      if (dev !== undefined && dev !== this.deviceIndex) throw invalidArgument(`${what}: the stream given is on cuda:${dev}, this communicator on cuda:${this.deviceIndex}`, { rank: this.rank });
    } catch (e) { return Promise.reject(e); }
    return this.ops.run(what, opts, async (signal) => {
      this.libs.cuda.setDevice(this.deviceIndex);
      // Until this operation is seen done (or the communicator's abort has returned), frees are
      // deferred: a synchronising cudaFree behind a stuck kernel would freeze the event loop.
      this.hold();
      // Read by io.stream() while enqueuing, and by abortNative (a stuck operation's stream must drain too).
      this.opStream = stream;
      try {
        enqueue();
      } catch (e) {
        this.opStream = undefined; // nothing was enqueued
        this.unhold();
        throw this.stickyError(e, what);
      }
      try {
        // A non-blocking communicator may still be launching: wait until it says it is done.
        for (let spins = 0; this.asyncPending(what); spins++) {
          if (signal.aborted) throw signal.reason instanceof GroupcommError ? signal.reason : abortedError(`${what} aborted`, { rank: this.rank });
          await pollPause(spins);
          this.libs.cuda.setDevice(this.deviceIndex); // after an await: another communicator may have changed it
        }
        this.libs.cuda.check(this.libs.cuda.fn.cudaEventRecord(this.event, stream ?? this.stream), 'cudaEventRecord');
        await this.waitEvent(what, signal);
      } catch (e) {
        throw this.fatal(e, what); // the hold (and opStream) stay until ncclCommAbort has returned
      }
      this.opStream = undefined;
      this.unhold();
      return result;
    }, peerRank === undefined ? {} : { peerRank });
  }

  private async waitEvent(what: string, signal: AbortSignal): Promise<void> {
    // Small operations end within microseconds, and one event-loop turn costs several: poll
    // synchronously for a bounded moment (SPIN_MS) before yielding.
    const until = performance.now() + SPIN_MS;
    do if (this.libs.cuda.eventDone(this.event)) return; while (performance.now() < until);
    for (let spins = 0; ; spins++) {
      // The signal first: after an abort the event and stream are being released.
      if (signal.aborted) throw signal.reason instanceof GroupcommError ? signal.reason : abortedError(`${what} aborted`, { rank: this.rank });
      if (this.libs.cuda.eventDone(this.event)) return;
      // A peer failure shows up here, not in the event: without this we would wait for the timeout.
      if (spins % 64 === 63) this.asyncPending(what);
      await pollPause(spins);
    }
  }

  private t(t: Tensor | undefined, what: string): CheckedTensor {
    const c = checkDeviceTensor(t, DEVICE_TYPE, this.deviceIndex, what);
    this.libs.cuda.checkPointer(c.buf.ptr, c.nbytes, this.deviceIndex, what);
    return c;
  }

  private rc(rc: number, what: string): void {
    this.ncclCheck(rc, what);
  }

  /** Runs `body` between ncclGroupStart and ncclGroupEnd (the group always ends). */
  private grouped(what: string, body: () => void): void {
    const { nccl } = this.libs;
    this.rc(nccl.ncclGroupStart(), 'ncclGroupStart');
    try { body(); } finally { this.rc(nccl.ncclGroupEnd(), `ncclGroupEnd (${what})`); }
  }

  /** `out` checked against `input`, or a result allocated on this device (freed if the operation fails). */
  private output(out: Tensor | undefined, input: Tensor, count: number, shape: number[], inPlace: boolean, what: string): DeviceOutput {
    return deviceOutput({
      out, input, count, shape, inPlace, what, device: deviceString({ deviceType: DEVICE_TYPE }, this.deviceIndex),
      check: (t, w) => this.t(t, w), alloc: (n) => this.libs.cuda.alloc(n, this.deviceIndex), free: (b) => this.libs.cuda.free(b),
      fields: { rank: this.rank },
    });
  }

  private splits(count: number, what: string): void {
    if (count % this.worldSize !== 0) throw invalidArgument(`${what}: ${count} elements do not split evenly over ${this.worldSize} ranks`, { rank: this.rank });
  }

  async allReduce(input: Tensor, opts: ReduceOptions & CudaOpOptions = {}): Promise<Tensor> {
    return fixed.allReduce(this.variableIo(), input, opts);
  }

  async allGather(input: Tensor, opts: OutOptions & CudaOpOptions = {}): Promise<Tensor> {
    return fixed.allGather(this.variableIo(), input, opts);
  }

  async reduceScatter(input: Tensor, opts: ReduceOptions & CudaOpOptions = {}): Promise<Tensor> {
    return fixed.reduceScatter(this.variableIo(), input, opts);
  }

  async broadcast(tensor: Tensor, opts: BroadcastOptions & CudaOpOptions): Promise<Tensor> {
    return fixed.broadcast(this.variableIo(), tensor, opts);
  }

  async send(tensor: Tensor, dst: number, opts?: CudaOpOptions): Promise<void> {
    return fixed.send(this.variableIo(), tensor, dst, opts);
  }

  async recv(dst: Tensor, src: number, opts?: CudaOpOptions): Promise<Tensor> {
    return fixed.recv(this.variableIo(), dst, src, opts);
  }

  async gather(input: Tensor, opts: GatherOptions & CudaOpOptions): Promise<Tensor | undefined> {
    return fixed.gather(this.variableIo(), input, opts);
  }

  async allToAll(input: Tensor, opts: OutOptions & CudaOpOptions = {}): Promise<Tensor> {
    return fixed.allToAll(this.variableIo(), input, opts);
  }

  // ---- variable sizes (capabilities.variableCollectives; ./variable.ts) ----

  allGatherv(input: Tensor, opts: SizesOptions & CudaOpOptions): Promise<Tensor> { return variable.allGatherv(this.variableIo(), input, opts); }
  reduceScatterv(input: Tensor, opts: SizesReduceOptions & CudaOpOptions): Promise<Tensor> { return variable.reduceScatterv(this.variableIo(), input, opts); }
  allToAllv(input: Tensor, opts?: AllToAllSplitsOptions & CudaOpOptions): Promise<Tensor> { return variable.allToAllv(this.variableIo(), input, opts); }

  /** This communicator's private parts that ./variable.ts and ./fixed.ts use (comm and stream read at enqueue time). */
  private variableIo(): variable.VariableIo {
    return this.io ??= {
      rank: this.rank, worldSize: this.worldSize, libs: this.libs,
      comm: () => this.comm, stream: () => this.opStream ?? this.stream,
      t: (t, w) => this.t(t, w),
      output: (out, input, count, shape, inPlace, w) => this.output(out, input, count, shape, inPlace, w),
      issue: (w, o, enqueue, result, peerRank) => this.issue(w, o, enqueue, result, peerRank),
      grouped: (w, body) => this.grouped(w, body),
      rc: (rc, w) => this.rc(rc, w),
      reduceArgs: (dtype, op) => ncclReduceArgs(dtype, op, this.libs.reduceDtypes, this.worldSize),
      redOp: (a) => this.redOp(a),
      freeOp: (a, op) => this.freeOp(a, op),
      splits: (count, w) => this.splits(count, w),
    };
  }

  /** The op for a reduction: a's own, or a premulSum op created on this communicator (HostImmediate: the scalar is read now). */
  private redOp(a: NcclReduceArgs): number {
    if (!a.scalar) return a.op;
    const { nccl } = this.libs;
    if (!nccl.ncclRedOpCreatePreMulSum || !nccl.ncclRedOpDestroy) throw pluginUnavailable(`premulSum needs ncclRedOpCreatePreMulSum (NCCL >= 2.11; this is ${this.libs.ncclVersion})`, { rank: this.rank });
    const out = [0];
    this.rc(nccl.ncclRedOpCreatePreMulSum(out, a.scalar, a.type, NcclScalarResidence.ncclScalarHostImmediate, this.comm), 'ncclRedOpCreatePreMulSum');
    return out[0];
  }

  /** NCCL lets an op go as soon as the last call using it has returned (its kernels keep their copy). */
  private freeOp(a: NcclReduceArgs, op: number): void {
    if (a.scalar) this.rc(this.libs.nccl.ncclRedOpDestroy(op, this.comm), 'ncclRedOpDestroy');
  }

  /** NCCL has no barrier: a one-byte allReduce every rank must join, completed on the device. */
  async barrier(opts?: OpOptions): Promise<void> {
    return this.issue('barrier', opts, () => {
      this.scratch ??= this.libs.cuda.alloc(1, this.deviceIndex);
      this.rc(this.libs.nccl.ncclAllReduce(this.scratch.ptr, this.scratch.ptr, 1, NcclDataType.ncclUint8, NcclRedOp.ncclMax, this.comm, this.stream), 'ncclAllReduce (barrier)');
    }, undefined);
  }

  async synchronize(opts?: OpOptions): Promise<void> {
    return this.issue('synchronize', opts, () => {}, undefined);
  }

  async abort(reason = 'abort() called'): Promise<void> {
    await this.ops.abort(reason);
  }

  /**
   * Local, graceful and bounded: lets issued operations finish within the timeout, then, like
   * vLLM since #39846, releases the communicator with ncclCommAbort, which never waits for peers
   * (ncclCommDestroy may).
   */
  async close(opts?: OpOptions): Promise<void> {
    if (this.ops.state === 'closed') return;
    if (this.ops.state === 'ready') {
      const t = effectiveTimeout(opts, this.timeoutMs);
      await guard(this.ops.drain(), { timeoutMs: t, signal: opts?.signal, what: 'close', onTimeout: simpleTimeout('close', t) }).catch(() => {});
    }
    this.ops.markClosed();
    await this.abortNative('close');
    if (this.scratch) { this.libs.cuda.free(this.scratch); this.scratch = undefined; }
    this.log.debug('closed');
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
