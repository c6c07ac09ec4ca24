/**
 * Debug output, silent by default. GROUPCOMM_DEBUG=warn|info|debug|trace picks the level,
 * GROUPCOMM_DEBUG_SUBSYS=STORE,PG,CPU,DEVICE,CORE,COORD filters subsystems. Lines go to stderr:
 *
 *   2026-12-02T07:42:52.123Z groupcomm host:pid SUBSYS [tag] LEVEL message
 *
 * (the tag names the group and the rank, e.g. `world_0 rank 1/4`). At info and above the first
 * line of a process is preceded by a banner: groupcomm's version, the runtime, the level. At
 * trace, the CPU group, the process group, the coordinator and device communicators print one
 * line per operation (traceOp): `op=allReduce#3 bytes=4096 peers=0-3 us=187`.
 *
 * The level is read once, when this module loads (every logger checks it on every line). A
 * value GROUPCOMM_DEBUG does not accept is an ERR_GROUPCOMM_CONFIG error naming the levels it
 * takes, thrown right here — so loading groupcomm fails before any socket or group exists,
 * instead of running with logging silently off. (GROUPCOMM_DEBUG_SUBSYS only warns: a
 * subsystem filter that matches nothing is visible in the output it still lets through.)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setting } from './config.js';
import { packageRoot } from './pkgroot.js';

const LEVELS = { off: 0, warn: 1, info: 2, debug: 3, trace: 4 } as const;
export type LogLevel = Exclude<keyof typeof LEVELS, 'off'>;

const levelName = setting('GROUPCOMM_DEBUG');
const level = LEVELS[levelName];
const subsys: readonly string[] = setting('GROUPCOMM_DEBUG_SUBSYS') ?? [];
const host = os.hostname();
const warnedOnce = new Set<string>();
let bannerDone = false;

export interface Logger {
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
  trace(msg: string): void;
  /** True when `lvl` would print: guard costly message building with it. */
  enabled(lvl: LogLevel): boolean;
  /**
   * enabled('trace'), computed once: what a hot path tests (a property read, nothing else,
   * when tracing is off).
   */
  readonly tracing: boolean;
  /** A logger that adds `rank r/n` (or any tag) to every line. */
  child(tag: string): Logger;
  /** Warn once per process for a given key (no wall of identical warnings). */
  warnOnce(key: string, msg: string): void;
}

/** groupcomm's version, from its package.json ('unknown' if that cannot be read). */
export function packageVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** `Node v20.20.2` or `Bun 1.4.5`, with the platform. */
export function runtimeDescription(): string {
  const bun = (process.versions as Record<string, string | undefined>).bun;
  return `${bun ? `Bun ${bun}` : `Node ${process.version}`} (${process.platform} ${process.arch})`;
}

function banner(): string {
  const filter = subsys.length ? `, GROUPCOMM_DEBUG_SUBSYS=${subsys.join(',')}` : '';
  return `groupcomm ${packageVersion()} on ${runtimeDescription()}, pid ${process.pid}, GROUPCOMM_DEBUG=${levelName}${filter}`;
}

function write(prefix: string, lvl: string, msg: string): void {
  const ts = new Date().toISOString();
  if (!bannerDone) {
    bannerDone = true;
    if (level >= LEVELS.info) process.stderr.write(`${ts} groupcomm ${host}:${process.pid} INFO ${banner()}\n`);
  }
  process.stderr.write(`${ts} ${prefix} ${lvl} ${msg}\n`);
}

export function logger(sub: string, tag = ''): Logger {
  const on = subsys.length === 0 || subsys.includes(sub.toUpperCase());
  const prefix = `groupcomm ${host}:${process.pid} ${sub.toUpperCase()}${tag ? ' ' + tag : ''}`;
  const emit = (lvl: LogLevel, msg: string) => {
    if (on && LEVELS[lvl] <= level) write(prefix, lvl.toUpperCase(), msg);
  };
  return {
    warn: (m) => emit('warn', m),
    info: (m) => emit('info', m),
    debug: (m) => emit('debug', m),
    trace: (m) => emit('trace', m),
    enabled: (lvl) => on && LEVELS[lvl] <= level,
    tracing: on && LEVELS.trace <= level,
    child: (t) => logger(sub, tag ? `${tag} ${t}` : t),
    warnOnce: (key, m) => {
      if (warnedOnce.has(key)) return;
      warnedOnce.add(key);
      emit('warn', m);
    },
  };
}

/** `0-3` for a run of ranks, else `0,2,5`; `-` for none. */
export function rankList(ranks: readonly number[]): string {
  if (ranks.length === 0) return '-';
  const run = ranks.every((r, i) => i === 0 || r === ranks[i - 1] + 1);
  return run && ranks.length > 2 ? `${ranks[0]}-${ranks[ranks.length - 1]}` : ranks.join(',');
}

/** Every rank of a group of `worldSize` but `rank` (a collective's peers). */
export function othersOf(rank: number, worldSize: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < worldSize; r++) if (r !== rank) out.push(r);
  return out;
}

/**
 * The trace line of one operation, printed when `p` settles: op, bytes (this rank's payload;
 * a function of the result where only the result knows, e.g. a receive), the peer ranks and the
 * microseconds from this call to the settlement. Returns `p` itself. Callers test
 * `log.tracing` first, so none of this runs when tracing is off.
 */
export function traceOp<T>(log: Logger, op: string, bytes: number | ((v: T) => number | undefined) | undefined, peers: readonly number[], p: Promise<T>): Promise<T> {
  const t0 = performance.now();
  const line = (b: number | undefined, tail: string) =>
    `op=${op}${b === undefined ? '' : ` bytes=${b}`} peers=${rankList(peers)} us=${((performance.now() - t0) * 1000).toFixed(0)}${tail}`;
  p.then(
    (v) => log.trace(line(typeof bytes === 'function' ? bytes(v) : bytes, '')),
    (e: { code?: string; message?: string }) => log.trace(line(typeof bytes === 'function' ? undefined : bytes, ` failed=${e?.code ?? e?.message ?? String(e)}`)),
  );
  return p;
}
