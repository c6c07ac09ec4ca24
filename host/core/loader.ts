/**
 * Loads build/core.wasm once, synchronously, on first use (Node and Bun alike), and hands out
 * typed access to its exports (host/core/exports.ts), its constants and its memory. Wrappers in
 * this folder hide pointers from the rest of the host.
 *
 * Memory growth detaches every view of the old buffer, so views are never cached by callers:
 * `u8()`/`dv()` return a view of the current buffer, re-created only when it changed.
 *
 * The core's `abort(msg, file, line, col)` import (AssemblyScript's runtime errors, and asserts
 * in the debug build) throws ERR_GROUPCOMM_INTERNAL with the core's message and source position;
 * the exception unwinds out of the export that was called, to that call's caller.
 */
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../base/pkgroot.js';
import { internalError } from '../base/errors.js';
import { CORE_GLOBALS, exportMismatches, type CoreConstants, type CoreExports } from './exports.js';
import { setting } from '../base/config.js';

export type { CoreConstants, CoreExports };

export interface Core {
  readonly exports: CoreExports;
  /** Every exported constant's value, read once at load. */
  readonly consts: CoreConstants;
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
  let memory: WebAssembly.Memory | undefined;
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {
    env: {
      abort(msg: number, srcFile: number, line: number, col: number) {
        const where = `${readCoreString(memory, srcFile) || '?'}:${line}:${col}`;
        throw internalError(`groupcomm WebAssembly core aborted: ${readCoreString(memory, msg) || '(no message)'} (${where})`);
      },
    },
  });
  const raw = instance.exports as Readonly<Record<string, unknown>>;
  const problems = exportMismatches(raw);
  if (problems.length) {
    throw internalError(`groupcomm: the WebAssembly core at ${file} does not match this host (${problems.join('; ')}); ` +
      'rebuild it with `npm run build:wasm`');
  }
  const exports = raw as unknown as CoreExports;
  memory = exports.memory;
  const mem = memory;
  // fromEntries, not a loop of assignments: V8 keeps this object in fast mode (a loop of
  // keyed stores turns an object this big into a slower dictionary).
  const consts = Object.fromEntries(CORE_GLOBALS.map((name) => [name, exports[name].value as number]));
  let buf = mem.buffer;
  let u8 = new Uint8Array(buf);
  let dv = new DataView(buf);
  const refresh = () => {
    if (mem.buffer !== buf) {
      buf = mem.buffer;
      u8 = new Uint8Array(buf);
      dv = new DataView(buf);
    }
  };
  core = {
    exports,
    consts: Object.freeze(consts) as CoreConstants,
    memory: mem,
    u8: () => (refresh(), u8),
    dv: () => (refresh(), dv),
    alloc: (n) => exports.alloc(n) >>> 0,
    free: (p) => exports.free(p),
  };
  return core;
}

/**
 * An AssemblyScript string in core memory: UTF-16LE code units, preceded by the object header
 * whose last u32 is the byte length. '' for a null or out-of-range pointer (the abort path must
 * not fail on its way to reporting).
 */
export function readCoreString(memory: WebAssembly.Memory | undefined, ptr: number): string {
  if (!memory) return '';
  const at = ptr >>> 0;
  const buf = memory.buffer;
  if (at < 4 || at % 2 !== 0 || at > buf.byteLength) return '';
  const bytes = new DataView(buf).getUint32(at - 4, true);
  const len = Math.min(bytes, buf.byteLength - at, 2048) >>> 1;
  const units = new Uint16Array(buf, at, len);
  let s = '';
  for (let i = 0; i < len; i += 256) s += String.fromCharCode(...units.subarray(i, i + 256));
  return s;
}

/**
 * Constants of the core as a frozen object `{ name: value }`, read on first access (importing a
 * module that exports such a table does not load the core). `names` maps each key to a global.
 */
export function coreConstantTable<K extends string>(names: Readonly<Record<K, keyof CoreConstants>>): Readonly<Record<K, number>> {
  const table = {} as Record<K, number>;
  for (const key of Object.keys(names) as K[]) {
    let value: number | undefined;
    Object.defineProperty(table, key, { enumerable: true, get: () => (value ??= getCore().consts[names[key]]) });
  }
  return Object.freeze(table);
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
    // Doubling stops at 256 MiB: the core's allocator refuses a single region above 1 GiB, and
    // a doubled capacity must never be what crosses that line.
    this.cap = Math.max(size, Math.min(this.cap * 2, 1 << 28), 64);
    this.ptr = c.alloc(this.cap);
    return this.ptr;
  }
}
