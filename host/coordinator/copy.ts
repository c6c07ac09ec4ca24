/**
 * Copies between tensors of one group: CPU to CPU directly, anything involving a device tensor
 * through its backend's host copies (the device API has no strided or device-to-device copy, and
 * only the less common paths — outputs given on a device, non-zero `dim`s — need these).
 */
import { invalidArgument } from '../base/errors.js';
import { bytesOf, isCpu, itemSize, numel, type CpuTensor, type DeviceBuffer, type Tensor } from '../core/tensor.js';
import type { DeviceBackendV1 } from '../device/types.js';
import { transposeBlocks } from './dims.js';

function need(backend: DeviceBackendV1 | undefined, t: Tensor): DeviceBackendV1 {
  if (!backend || t.device.split(':')[0] !== backend.deviceType) {
    throw invalidArgument(`no device backend for a tensor on ${t.device}`);
  }
  return backend;
}

function byteSize(t: Tensor): number {
  return numel(t.shape) * itemSize(t.dtype);
}

/** A host copy of any tensor's bytes (an alias for CPU tensors). */
function hostBytes(backend: DeviceBackendV1 | undefined, t: Tensor): Uint8Array {
  if (isCpu(t)) return bytesOf(t);
  const out = new Uint8Array(byteSize(t));
  need(backend, t).copyToHost(out, t.data as DeviceBuffer);
  return out;
}

function storeBytes(backend: DeviceBackendV1 | undefined, t: Tensor, bytes: Uint8Array): void {
  if (isCpu(t)) bytesOf(t as CpuTensor).set(bytes);
  else need(backend, t).copyFromHost(t.data as DeviceBuffer, bytes);
}

/** Copies src's elements into dst (same byte size); returns dst. */
export function copyTensor(backend: DeviceBackendV1 | undefined, dst: Tensor, src: Tensor): Tensor {
  if (dst === src) return dst;
  if (byteSize(dst) !== byteSize(src)) throw invalidArgument(`copy: ${byteSize(src)} bytes do not fit ${byteSize(dst)}`);
  storeBytes(backend, dst, hostBytes(backend, src));
  return dst;
}

/** Block transpose `(a, b, block) → (b, a, block)` from src to dst (same byte size). */
export function reorderTensor(backend: DeviceBackendV1 | undefined, src: Tensor, dst: Tensor, a: number, b: number): void {
  const n = byteSize(src);
  const block = n / (a * b);
  if (isCpu(src) && isCpu(dst)) {
    transposeBlocks(bytesOf(src), bytesOf(dst), a, b, block);
    return;
  }
  const to = new Uint8Array(n);
  transposeBlocks(hostBytes(backend, src), to, a, b, block);
  storeBytes(backend, dst, to);
}
