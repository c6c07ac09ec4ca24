/**
 * Loads build/core.wasm once, synchronously, on first use (Node and Bun alike), and hands out
 * typed access to its memory. Wrappers in this folder hide pointers from the rest of the host.
 *
 * Memory growth detaches every view of the old buffer, so views are never cached by callers:
 * `u8()`/`dv()` return a view of the current buffer, re-created only when it changed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { instantiateSync, type ASUtil } from '@assemblyscript/loader';
import { packageRoot } from '../base/pkgroot.js';
import { setting } from '../base/config.js';

// The raw exports are declared loosely here; each wrapper module types the ones it uses.
export type CoreExports = ASUtil & { [name: string]: any };

export interface Core {
  readonly exports: CoreExports;
  readonly memory: WebAssembly.Memory;
  /** A Uint8Array over the whole current memory. */
  u8(): Uint8Array;
  /** A DataView over the whole current memory. */
  dv(): DataView;
  alloc(size: number): number;
  free(ptr: number): void;
}

let core: Core | undefined;

export function wasmPath(): string {
  return setting('GROUPCOMM_CORE_WASM') ?? path.join(packageRoot(), 'build', 'core.wasm');
}

export function getCore(): Core {
  if (core) return core;
  const file = wasmPath();
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new Error(`groupcomm: cannot read the WebAssembly core at ${file}; run \`npm run build:wasm\``, { cause: e });
  }
  const mod = instantiateSync<Record<string, unknown>>(bytes, {
    env: {
      abort(msg: number, file: number, line: number, col: number) {
        // The release build compiles asserts out; an abort here is a bug in the core, not bad input.
        throw new Error(`groupcomm core abort at ${line}:${col}`);
      },
    },
  });
  const exports = mod.exports as unknown as CoreExports;
  const memory = exports.memory as WebAssembly.Memory;
  let buf = memory.buffer;
  let u8 = new Uint8Array(buf);
  let dv = new DataView(buf);
  const refresh = () => {
    if (memory.buffer !== buf) {
      buf = memory.buffer;
      u8 = new Uint8Array(buf);
      dv = new DataView(buf);
    }
  };
  core = {
    exports,
    memory,
    u8: () => (refresh(), u8),
    dv: () => (refresh(), dv),
    alloc: (n) => exports.alloc(n) >>> 0,
    free: (p) => exports.free(p),
  };
  return core;
}

/**
 * A reusable region of core memory that only grows. Hot paths keep one per use site, so no
 * call allocates in the steady state.
 */
export class Scratch {
  ptr = 0;
  cap = 0;
  ensure(size: number): number {
    if (size <= this.cap) return this.ptr;
    const c = getCore();
    if (this.ptr) c.free(this.ptr);
    this.cap = Math.max(size, this.cap * 2, 64);
    this.ptr = c.alloc(this.cap);
    return this.ptr;
  }
}
