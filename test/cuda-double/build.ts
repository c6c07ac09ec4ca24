/**
 * Builds the CUDA/NCCL test double (./cudart.c, ./nccl.c) with the system C compiler ($CC, else
 * cc) into a cache folder named after the sources' hash, once per machine: libgcd_cudart.so,
 * libgcd_nccl.so (which links the former by soname, so the plugin's two loads share one state)
 * and libgcd_cudart_olddriver.so (a runtime that answers cudaErrorInsufficientDriver).
 * Without a compiler it says why, and the tests using it skip with that reason printed.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface CudaDouble {
  dir: string;
  cudart: string;
  nccl: string;
  oldDriverCudart: string;
  /** Environment that makes the cuda plugin load the double (merge into process.env or a child's env). */
  env: Record<string, string>;
}

/** The sources, found from the compiled test (dist-test/test/cuda-double) or the TypeScript one. */
function sourceDir(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = path.join(d, 'test', 'cuda-double');
    if (fs.existsSync(path.join(p, 'nccl.c'))) return p;
    if (fs.existsSync(path.join(d, 'nccl.c'))) return d;
    d = path.dirname(d);
  }
  throw new Error('test/cuda-double/nccl.c not found');
}

let cached: CudaDouble | { skip: string } | undefined;

export function buildCudaDouble(): CudaDouble | { skip: string } {
  if (cached) return cached;
  const cc = process.env.CC || 'cc';
  try {
    execFileSync(cc, ['--version'], { stdio: 'ignore', timeout: 20_000 });
  } catch (e) {
    return (cached = { skip: `no C compiler to build the CUDA/NCCL test double (${cc}: ${(e as Error).message.split('\n')[0]}); set CC or install cc` });
  }
  const src = sourceDir();
  const files = ['gcd.h', 'cudart.c', 'nccl.c'];
  // -z nodelete: koffi unloads libraries at exit while stream threads may still run their code.
  const flags = ['-O2', '-Wall', '-shared', '-fPIC', '-fvisibility=hidden', '-pthread', '-Wl,-z,nodelete'];
  const h = createHash('sha256');
  for (const f of files) h.update(fs.readFileSync(path.join(src, f)));
  h.update(flags.join(' '));
  const dir = path.join(os.tmpdir(), `groupcomm-cuda-double-${h.digest('hex').slice(0, 12)}`);
  const out = (tmp: string) => ({
    cudart: path.join(tmp, 'libgcd_cudart.so'), nccl: path.join(tmp, 'libgcd_nccl.so'), old: path.join(tmp, 'libgcd_cudart_olddriver.so'),
  });
  if (!fs.existsSync(path.join(dir, 'ok'))) {
    // Built beside, then renamed into place: test files building at once never see half a folder.
    const tmp = `${dir}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp, { recursive: true });
    const o = out(tmp);
    try {
      const run = (args: string[]) => execFileSync(cc, args, { cwd: src, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
      run([...flags, '-Wl,-soname,libgcd_cudart.so', '-o', o.cudart, 'cudart.c']);
      run([...flags, '-DGCD_OLD_DRIVER', '-Wl,-soname,libgcd_cudart_olddriver.so', '-o', o.old, 'cudart.c']);
      run([...flags, '-o', o.nccl, 'nccl.c', `-L${tmp}`, '-lgcd_cudart', '-lm', '-Wl,-rpath,$ORIGIN']);
      fs.writeFileSync(path.join(tmp, 'ok'), '');
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      fs.rmSync(tmp, { recursive: true, force: true });
      return (cached = { skip: `building the CUDA/NCCL test double with ${cc} failed: ${err.stderr?.toString().trim() || err.message}` });
    }
    try { fs.renameSync(tmp, dir); } catch { fs.rmSync(tmp, { recursive: true, force: true }); /* another process won */ }
  }
  const o = out(dir);
  return (cached = {
    dir, cudart: o.cudart, nccl: o.nccl, oldDriverCudart: o.old,
    env: { GROUPCOMM_CUDART_PATH: o.cudart, GROUPCOMM_NCCL_PATH: o.nccl },
  });
}

/** Builds the double and points this process (and the children it starts) at it; the skip reason otherwise. */
export function useCudaDouble(extra: Record<string, string> = {}): CudaDouble | { skip: string } {
  const d = buildCudaDouble();
  if ('skip' in d) return d;
  Object.assign(process.env, d.env, extra);
  return d;
}
