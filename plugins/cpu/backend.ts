/**
 * The cpu backend: a DeviceBackendV1 whose device memory is host memory (device type 'host').
 * It reports one device, accepts any device index (all name the same memory, so 'host:N' per
 * local rank works like 'cuda:N'), is always available, needs no native code, supports every
 * dtype and reduce op, and lets any number of ranks share a device, so the whole device path of
 * groupcomm (and the conformance suite) runs on any machine.
 */
import {
  DTYPE_NAMES, invalidArgument,
  type CommunicatorOptions, type DeviceBackendV1, type DeviceBuffer, type DeviceCommunicatorV1, type ProbeResult,
} from 'groupcomm/plugin';
import { CpuCommunicator, DEVICE_TYPE } from './communicator.js';
import { HostMemory } from './memory.js';

export class CpuBackend implements DeviceBackendV1 {
  readonly apiVersion = 1 as const;
  readonly name = 'cpu';
  readonly deviceType = DEVICE_TYPE;
  readonly capabilities = { reduceDtypes: DTYPE_NAMES, sharedDevice: true, variableCollectives: true, split: true, premulSum: true };
  /** Exposed for tests that check for leaks (live allocation count). */
  readonly memory = new HostMemory();

  async probe(): Promise<ProbeResult> {
    return { available: true };
  }

  async deviceCount(): Promise<number> {
    return 1;
  }

  // Every index names the same host memory: code written for one device per rank
  // (deviceIndex = localRank, as on GPUs) runs unchanged on the cpu backend.
  private device(i: number): void {
    if (!Number.isInteger(i) || i < 0) throw invalidArgument(`device index must be an integer >= 0, got ${i}`);
  }

  alloc(nbytes: number, deviceIndex: number): DeviceBuffer {
    this.device(deviceIndex);
    return this.memory.alloc(nbytes);
  }

  free(buf: DeviceBuffer): void {
    this.memory.free(buf);
  }

  copyFromHost(dst: DeviceBuffer, src: Uint8Array): void {
    this.memory.copyFromHost(dst, src);
  }

  copyToHost(dst: Uint8Array, src: DeviceBuffer): void {
    this.memory.copyToHost(dst, src);
  }

  async createCommunicator(opts: CommunicatorOptions): Promise<DeviceCommunicatorV1> {
    this.device(opts.deviceIndex);
    return CpuCommunicator.create(this.memory, opts);
  }
}
