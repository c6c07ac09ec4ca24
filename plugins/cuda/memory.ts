/**
 * The CUDA runtime as the cuda backend uses it: every call checked (a non-zero cudaError_t
 * becomes a GroupcommError naming the call, the error's name and text), device memory
 * allocation, and synchronous host <-> device copies. Device pointers are BigInts (koffi 3).
 */
import { invalidArgument, logger, pluginUnavailable, type DeviceBuffer } from 'groupcomm/plugin';
import {
  CudaError, CudaMemcpyKind, CudaMemoryType, CUDA_EVENT_DISABLE_TIMING, CUDA_POINTER_ATTRIBUTES_BYTES, CUDA_STREAM_NON_BLOCKING,
  type FnTable,
} from './transport.js';

const log = logger('DEVICE');

export class CudaRuntime {
  // Live allocations (pointer → bytes, device): makes free() idempotent, and lets the pointer
  // check skip a CUDA call for a buffer allocated here.
  private readonly live = new Map<bigint, { nbytes: number; device: number }>();
  /**
   * Operations that may still be running on some communicator's stream (see hold()). cudaFree
   * synchronises the whole device: called while a kernel waits on a dead peer, it would freeze
   * the event loop until that kernel ends. So frees wait here until nothing is in flight: any
   * operation still running, not only those issued before the free, would make cudaFree wait.
   * (Memory comes back at the next moment with nothing in flight, e.g. after a synchronize.)
   */
  private inFlight = 0;
  private deferred: bigint[] = [];
  private readonly attrs = new Uint8Array(CUDA_POINTER_ATTRIBUTES_BYTES);

  constructor(readonly fn: FnTable, readonly path: string) {}

  errorText(rc: number): string {
    return `${this.fn.cudaGetErrorName(rc)} (${rc}): ${this.fn.cudaGetErrorString(rc)}`;
  }

  /** Throws for a non-zero cudaError_t; `what` names the call in the message. */
  check(rc: number, what: string): void {
    if (rc !== CudaError.cudaSuccess) {
      throw pluginUnavailable(`CUDA ${what} failed: ${this.errorText(rc)}`, { detail: rc });
    }
  }

  deviceCount(): number {
    const n = [0];
    this.check(this.fn.cudaGetDeviceCount(n), 'cudaGetDeviceCount');
    return n[0];
  }

  setDevice(i: number): void {
    this.check(this.fn.cudaSetDevice(i), `cudaSetDevice(${i})`);
  }

  alloc(nbytes: number, deviceIndex: number): DeviceBuffer {
    if (!Number.isSafeInteger(nbytes) || nbytes < 0) throw invalidArgument(`alloc: nbytes must be an integer >= 0, got ${nbytes}`);
    this.setDevice(deviceIndex);
    const out: unknown[] = [null];
    // cudaMalloc(0) may return a null pointer; a 1-byte minimum keeps every buffer distinct.
    this.check(this.fn.cudaMalloc(out, Math.max(nbytes, 1)), `cudaMalloc(${nbytes})`);
    const ptr = BigInt(out[0] as bigint);
    this.live.set(ptr, { nbytes: Math.max(nbytes, 1), device: deviceIndex });
    // Zero-filled like every backend's alloc (the contract does not leave garbage to read).
    // cudaMemset may return before the device has done it, on the legacy default stream, which
    // the communicators' non-blocking streams never wait for: a late fill could overwrite a
    // result. Waiting for the legacy stream here orders it before anything issued later.
    this.check(this.fn.cudaMemset(ptr, 0, Math.max(nbytes, 1)), 'cudaMemset');
    this.syncLegacy('cudaMemset');
    return { ptr, nbytes };
  }

  free(buf: DeviceBuffer): void {
    if (typeof buf?.ptr !== 'bigint') throw invalidArgument('free: expected a DeviceBuffer { ptr: bigint, nbytes }');
    if (!this.live.delete(buf.ptr)) return; // already freed (or not ours): the contract says no-op
    if (this.inFlight > 0) { this.deferred.push(buf.ptr); return; }
    this.check(this.fn.cudaFree(buf.ptr), 'cudaFree');
  }

  /** An operation was enqueued on a stream: frees wait until release() (see inFlight). */
  hold(): void {
    this.inFlight++;
  }

  /** That operation is done on the device, or its communicator's ncclCommAbort has returned. */
  release(): void {
    if (this.inFlight === 0 || --this.inFlight > 0) return;
    const ptrs = this.deferred;
    this.deferred = [];
    for (const p of ptrs) {
      const rc = this.fn.cudaFree(p);
      // Nobody is waiting for this free any more: say it, do not throw into an unrelated caller.
      if (rc !== CudaError.cudaSuccess) log.warn(`deferred cudaFree(0x${p.toString(16)}) failed: ${this.errorText(rc)}`);
    }
  }

  /** Frees still waiting for operations in flight (tests look). */
  get deferredFrees(): number {
    return this.deferred.length;
  }

  /**
   * Throws INVALID_ARGUMENT unless [ptr, ptr + nbytes) is device memory of `deviceIndex`: NCCL
   * given a host pointer or another GPU's memory faults on the device (a sticky error that
   * kills every communicator of the process) instead of returning an error.
   */
  checkPointer(ptr: bigint, nbytes: number, deviceIndex: number, what: string): void {
    if (nbytes === 0) return;
    const a = this.live.get(ptr);
    if (a) {
      if (a.device === deviceIndex && nbytes <= a.nbytes) return;
      throw invalidArgument(`${what}: buffer 0x${ptr.toString(16)} is ${a.nbytes} bytes of cuda:${a.device}, used as ${nbytes} bytes of cuda:${deviceIndex}`);
    }
    // Not an allocation of ours (a sub-buffer, or memory from another allocator): ask CUDA.
    this.check(this.fn.cudaPointerGetAttributes(this.attrs, ptr), 'cudaPointerGetAttributes');
    const dv = new DataView(this.attrs.buffer);
    const type = dv.getInt32(0, true), device = dv.getInt32(4, true);
    if (type !== CudaMemoryType.Device && type !== CudaMemoryType.Managed) {
      throw invalidArgument(`${what}: pointer 0x${ptr.toString(16)} is not CUDA device memory (cudaMemoryType ${type})`);
    }
    if (device !== deviceIndex) throw invalidArgument(`${what}: pointer 0x${ptr.toString(16)} is memory of cuda:${device}, not cuda:${deviceIndex}`);
  }

  copyFromHost(dst: DeviceBuffer, src: Uint8Array): void {
    if (src.byteLength > dst.nbytes) throw invalidArgument(`copyFromHost: ${src.byteLength} bytes do not fit a ${dst.nbytes}-byte buffer`);
    if (src.byteLength === 0) return;
    this.check(this.fn.cudaMemcpy(dst.ptr, src, src.byteLength, CudaMemcpyKind.HostToDevice), 'cudaMemcpy(HostToDevice)');
    // From pageable memory, cudaMemcpy returns once the source is staged, not copied: without
    // this wait an NCCL op on a non-blocking stream could read the buffer before the copy lands.
    this.syncLegacy('cudaMemcpy(HostToDevice)');
  }

  /**
   * Waits for the legacy default stream (handle NULL) of the current device. Never for the
   * communicators' streams (they are non-blocking), so a kernel stuck on a dead peer cannot hang it.
   */
  private syncLegacy(after: string): void {
    this.check(this.fn.cudaStreamSynchronize(null), `cudaStreamSynchronize(legacy stream) after ${after}`);
  }

  copyToHost(dst: Uint8Array, src: DeviceBuffer): void {
    if (dst.byteLength > src.nbytes) throw invalidArgument(`copyToHost: ${dst.byteLength} bytes requested from a ${src.nbytes}-byte buffer`);
    if (dst.byteLength === 0) return;
    this.check(this.fn.cudaMemcpy(dst, src.ptr, dst.byteLength, CudaMemcpyKind.DeviceToHost), 'cudaMemcpy(DeviceToHost)');
  }

  /** Device-to-device copy on `stream` (both pointers are device memory, so no host buffer is at risk). */
  copyOnStream(dst: bigint, src: bigint, nbytes: number, stream: bigint): void {
    if (nbytes === 0) return;
    this.check(this.fn.cudaMemcpyAsync(dst, src, nbytes, CudaMemcpyKind.DeviceToDevice, stream), 'cudaMemcpyAsync(DeviceToDevice)');
  }

  /**
   * The device a caller's stream belongs to, or undefined where the runtime cannot say
   * (cudaStreamGetDevice is CUDA 12.8's) or the handle is not a stream it knows (then NCCL's own
   * call fails on it).
   */
  streamDevice(stream: bigint): number | undefined {
    if (!this.fn.cudaStreamGetDevice) return undefined;
    const out = [0];
    return this.fn.cudaStreamGetDevice(stream, out) === 0 ? out[0] : undefined;
  }

  createStream(): bigint {
    const out: unknown[] = [null];
    this.check(this.fn.cudaStreamCreateWithFlags(out, CUDA_STREAM_NON_BLOCKING), 'cudaStreamCreateWithFlags');
    return BigInt(out[0] as bigint);
  }

  createEvent(): bigint {
    const out: unknown[] = [null];
    this.check(this.fn.cudaEventCreateWithFlags(out, CUDA_EVENT_DISABLE_TIMING), 'cudaEventCreateWithFlags');
    return BigInt(out[0] as bigint);
  }

  /** True when the event has completed, false while the device is still working. */
  eventDone(event: bigint): boolean {
    const rc = this.fn.cudaEventQuery(event);
    if (rc === CudaError.cudaErrorNotReady) return false;
    this.check(rc, 'cudaEventQuery');
    return true;
  }
}
