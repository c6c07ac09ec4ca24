/**
 * "Device" memory of the cpu backend: ArrayBuffers addressed by BigInt handles, so the rest of
 * groupcomm handles them exactly like CUDA pointers. A handle is `id << 32 | offset`: pointer
 * arithmetic (`ptr + offsetBytes`, for sub-buffers) works as on a device, and a stale or foreign
 * pointer is caught instead of silently reading the wrong memory. One allocation holds at most
 * 4 GiB - 1 bytes.
 */
import { invalidArgument, type DeviceBuffer } from 'groupcomm/plugin';

const OFFSET_BITS = 32n;
const OFFSET_MASK = (1n << OFFSET_BITS) - 1n;
export const MAX_ALLOC_BYTES = 2 ** 32 - 1;

export class HostMemory {
  private readonly blocks = new Map<number, Uint8Array>();
  private nextId = 1;

  /** Zero-filled memory of `nbytes`. */
  alloc(nbytes: number): DeviceBuffer {
    if (!Number.isSafeInteger(nbytes) || nbytes < 0 || nbytes > MAX_ALLOC_BYTES) {
      throw invalidArgument(`alloc: nbytes must be an integer in [0, ${MAX_ALLOC_BYTES}], got ${nbytes}`);
    }
    const id = this.nextId++;
    this.blocks.set(id, new Uint8Array(nbytes));
    return { ptr: BigInt(id) << OFFSET_BITS, nbytes };
  }

  free(buf: DeviceBuffer): void {
    if (typeof buf?.ptr !== 'bigint') throw invalidArgument('free: expected a DeviceBuffer { ptr: bigint, nbytes }');
    if ((buf.ptr & OFFSET_MASK) !== 0n) throw invalidArgument('free: pointer is inside an allocation, not its start');
    this.blocks.delete(Number(buf.ptr >> OFFSET_BITS)); // freeing twice is a no-op, like the contract says
  }

  /** The bytes `buf` addresses, aliasing the allocation (writes land in device memory). */
  view(buf: DeviceBuffer, nbytes = buf.nbytes): Uint8Array {
    if (typeof buf?.ptr !== 'bigint') throw invalidArgument('expected a DeviceBuffer { ptr: bigint, nbytes }');
    const block = this.blocks.get(Number(buf.ptr >> OFFSET_BITS));
    if (!block) throw invalidArgument(`pointer 0x${buf.ptr.toString(16)} is not a live allocation of the cpu backend (freed, or from another backend)`);
    const off = Number(buf.ptr & OFFSET_MASK);
    if (off + nbytes > block.byteLength || nbytes > buf.nbytes) {
      throw invalidArgument(`access of ${nbytes} bytes at offset ${off} overruns a ${block.byteLength}-byte allocation`);
    }
    return block.subarray(off, off + nbytes);
  }

  copyFromHost(dst: DeviceBuffer, src: Uint8Array): void {
    if (src.byteLength > dst.nbytes) throw invalidArgument(`copyFromHost: ${src.byteLength} bytes do not fit a ${dst.nbytes}-byte buffer`);
    this.view(dst, src.byteLength).set(src);
  }

  copyToHost(dst: Uint8Array, src: DeviceBuffer): void {
    if (dst.byteLength > src.nbytes) throw invalidArgument(`copyToHost: ${dst.byteLength} bytes requested from a ${src.nbytes}-byte buffer`);
    dst.set(this.view(src, dst.byteLength));
  }

  /** Live allocations (for leak checks in tests). */
  get liveCount(): number {
    return this.blocks.size;
  }
}
