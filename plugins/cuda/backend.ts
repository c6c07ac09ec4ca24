/**
 * The cuda backend: NCCL collectives on CUDA device memory, through koffi.
 *
 * probe() runs the library probe in a child process (plugins/cuda/transport.ts) and turns what
 * it saw into one plain reason: which library was not found where, or what the CUDA runtime
 * said ("CUDA driver missing or too old: cudaErrorInsufficientDriver (35)"). The libraries are
 * loaded into this process only after a successful probe, on first use.
 */
import {
  logger, pluginUnavailable,
  type CommunicatorOptions, type DeviceBackendV1, type DeviceBuffer, type DeviceCommunicatorV1, type ProbeResult,
} from 'groupcomm/plugin';
import { CudaCommunicator, CUDA_FP8_REDUCE_DTYPES, CUDA_REDUCE_DTYPES, DEVICE_TYPE, ONE_RANK_UNSCALED, type NcclLibs } from './communicator.js';
import { CudaRuntime } from './memory.js';
import {
  bindLibrary, CudaError, CUDART_FUNCTIONS, NCCL_FP8_VERSION, NCCL_FUNCTIONS, NCCL_MIN_VERSION, NCCL_SPLIT_VERSION, ncclVersionString, notFoundMessage, probeLibraries,
  type ProbeReport,
} from './transport.js';

const log = logger('DEVICE');

/** One plain sentence per problem the probe found (empty when CUDA and NCCL are usable). */
export function probeReasons(r: ProbeReport | { error: string }): string[] {
  if ('error' in r) return [r.error];
  const out: string[] = [];
  if (!r.cudart) out.push(notFoundMessage('cudart', r.cudartTried));
  else {
    const c = r.cudart;
    const versions = `runtime ${c.runtimeVersion}, driver ${c.driverVersion}`;
    if (c.deviceCountRc === CudaError.cudaErrorInsufficientDriver) {
      out.push(`CUDA driver missing or too old: ${c.errName} (${c.deviceCountRc}) from ${c.path} (${versions}); install the NVIDIA driver, or point GROUPCOMM_CUDART_PATH at a runtime the driver supports`);
    } else if (c.deviceCountRc === CudaError.cudaErrorNoDevice) {
      out.push(`no CUDA device: ${c.errName} (${c.deviceCountRc}) (${versions}); check CUDA_VISIBLE_DEVICES=${process.env.CUDA_VISIBLE_DEVICES ?? '(unset)'}`);
    } else if (c.deviceCountRc !== 0) {
      out.push(`cudaGetDeviceCount failed: ${c.errName} (${c.deviceCountRc}): ${c.errString} (${versions})`);
    } else if (c.deviceCount === 0) {
      out.push(`no CUDA device visible (CUDA_VISIBLE_DEVICES=${process.env.CUDA_VISIBLE_DEVICES ?? '(unset)'})`);
    }
  }
  if (!r.nccl) out.push(notFoundMessage('nccl', r.ncclTried));
  else if (r.nccl.version < NCCL_MIN_VERSION) {
    // Before 2.14 there is no ncclCommInitRankConfig: init would block a thread that never
    // selected the rank's device (NCCL takes the device from the calling thread), so every
    // rank would land on GPU 0. Refused rather than half-supported.
    out.push(`NCCL ${ncclVersionString(r.nccl.version)} at ${r.nccl.path} is too old: groupcomm needs NCCL >= ${ncclVersionString(NCCL_MIN_VERSION)} (ncclCommInitRankConfig); pip install nvidia-nccl-cu13 (or -cu12), or set GROUPCOMM_NCCL_PATH`);
  }
  return out;
}

/** NCCL reduces fp8 from 2.24 on, on sm_90 and later: every device must be. */
export function fp8Reduces(r: ProbeReport | { error: string }): boolean {
  if ('error' in r || !r.nccl || r.nccl.version < NCCL_FP8_VERSION) return false;
  const cc = r.cudart?.ccMajor ?? [];
  return cc.length > 0 && cc.length === r.cudart!.deviceCount && cc.every((m) => m >= 9);
}

export class CudaBackend implements DeviceBackendV1 {
  readonly apiVersion = 1 as const;
  readonly name = 'cuda';
  readonly deviceType = DEVICE_TYPE;
  private probed: Promise<ProbeReport | { error: string }> | undefined;
  /** Set by probe(): NCCL >= 2.24 and every visible device sm_90 or later. */
  private fp8 = false;
  /** Set by probe(): NCCL >= 2.18 (ncclCommSplit). */
  private splits = false;
  /** ncclRedOpCreatePreMulSum and ncclRedOpDestroy (NCCL 2.11+, so every NCCL the probe accepts; checked at load). */
  private premul = true;

  // NCCL refuses two ranks of one communicator on the same GPU. fp8 reduces once probe() has
  // seen the hardware and NCCL for it (every caller of a backend probes it first).
  get capabilities() {
    return { reduceDtypes: this.fp8 ? CUDA_FP8_REDUCE_DTYPES : CUDA_REDUCE_DTYPES, sharedDevice: false, split: this.splits, variableCollectives: true, premulSum: this.premul, premulSumRefusedAtOneRank: ONE_RANK_UNSCALED };
  }
  private libs: NcclLibs | undefined;
  /** The load in progress (see load()). */
  private loading: Promise<NcclLibs> | undefined;

  /** The child-process probe, run once per process (the libraries do not change under us). */
  report(): Promise<ProbeReport | { error: string }> {
    this.probed ??= probeLibraries();
    return this.probed;
  }

  async probe(): Promise<ProbeResult> {
    const r = await this.report();
    this.fp8 = fp8Reduces(r);
    this.splits = !('error' in r) && (r.nccl?.version ?? 0) >= NCCL_SPLIT_VERSION;
    const reasons = probeReasons(r);
    if (reasons.length) return { available: false, reason: reasons.join('; ') };
    // Available means usable: alloc, toDevice and copies are synchronous and need the libraries
    // in this process, and resolveBackend('cuda') is all a caller awaits before them (a group of
    // one creates no communicator that would load them).
    try {
      await this.load();
    } catch (e) {
      return { available: false, reason: (e as Error).message };
    }
    return { available: true };
  }

  /**
   * The libraries, loaded in-process after a successful probe; throws the probe's reason
   * otherwise. Concurrent first calls share one load: two CudaRuntimes would each keep their own
   * allocations and in-flight count, so a free through one would neither find the other's buffer
   * nor wait for its operations.
   */
  private load(): Promise<NcclLibs> {
    if (this.libs) return Promise.resolve(this.libs);
    this.loading ??= this.loadOnce().finally(() => { this.loading = undefined; });
    return this.loading;
  }

  private async loadOnce(): Promise<NcclLibs> {
    const r = await this.report();
    const reasons = probeReasons(r);
    if (reasons.length || 'error' in r) throw pluginUnavailable(`device backend 'cuda' is not available: ${reasons.join('; ')}`);
    const cuda = new CudaRuntime(bindLibrary(r.cudart!.path, CUDART_FUNCTIONS), r.cudart!.path);
    const nccl = bindLibrary(r.nccl!.path, NCCL_FUNCTIONS);
    log.info(`cuda backend: CUDA runtime ${r.cudart!.runtimeVersion} (${r.cudart!.path}), NCCL ${ncclVersionString(r.nccl!.version)} (${r.nccl!.path}), ${r.cudart!.deviceCount} device(s)`);
    this.fp8 = fp8Reduces(r);
    this.splits = !!nccl.ncclCommSplit;
    this.premul = !!nccl.ncclRedOpCreatePreMulSum && !!nccl.ncclRedOpDestroy;
    return (this.libs = { cuda, nccl, ncclVersion: r.nccl!.version, ncclPath: r.nccl!.path, reduceDtypes: this.capabilities.reduceDtypes });
  }

  /** Synchronous entry points need the libraries already loaded (probe, deviceCount or createCommunicator first). */
  private cuda(): CudaRuntime {
    if (!this.libs) throw pluginUnavailable("cuda backend not loaded yet: await resolveBackend('cuda') (or backend.probe()) before allocating");
    return this.libs.cuda;
  }

  async deviceCount(): Promise<number> {
    const r = await this.report();
    if ('error' in r || !r.cudart || r.cudart.deviceCountRc !== 0) return 0;
    await this.load();
    return this.cuda().deviceCount();
  }

  alloc(nbytes: number, deviceIndex: number): DeviceBuffer {
    return this.cuda().alloc(nbytes, deviceIndex);
  }

  free(buf: DeviceBuffer): void {
    this.cuda().free(buf);
  }

  copyFromHost(dst: DeviceBuffer, src: Uint8Array): void {
    this.cuda().copyFromHost(dst, src);
  }

  copyToHost(dst: Uint8Array, src: DeviceBuffer): void {
    this.cuda().copyToHost(dst, src);
  }

  async createCommunicator(opts: CommunicatorOptions): Promise<DeviceCommunicatorV1> {
    return CudaCommunicator.create(await this.load(), opts);
  }
}
