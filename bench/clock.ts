/**
 * A nanosecond clock that every process on the host shares (CLOCK_MONOTONIC), for one-way
 * latencies between processes: the broadcast benches compare the root's stamp with each
 * receiver's. `performance.timeOrigin + performance.now()` is not such a clock: each process
 * takes its wall-clock origin and its monotonic origin at slightly different moments, and
 * receivers measured up to ~100 µs off (medians of −8 µs were seen). Node's
 * process.hrtime.bigint() reads CLOCK_MONOTONIC itself; Bun's counts from process start, so under
 * Bun the clock is read from libc through bun:ffi.
 */
import { IS_BUN } from '../host/base/runtime.js';

async function monotonicNs(): Promise<() => number> {
  if (!IS_BUN) return () => Number(process.hrtime.bigint());
  const { dlopen, FFIType } = await import('bun:ffi');
  const CLOCK_MONOTONIC = 1;
  const lib = dlopen('libc.so.6', { clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } });
  const ts = new BigInt64Array(2);
  return () => {
    lib.symbols.clock_gettime(CLOCK_MONOTONIC, ts);
    return Number(ts[0]) * 1e9 + Number(ts[1]);
  };
}

/** Nanoseconds of CLOCK_MONOTONIC (exact to well under a µs at today's uptimes). */
export const now = await monotonicNs();
