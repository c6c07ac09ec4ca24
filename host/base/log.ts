/**
 * Debug output, silent by default. GROUPCOMM_DEBUG=warn|info|debug|trace picks the level,
 * GROUPCOMM_DEBUG_SUBSYS=STORE,PG,CPU,DEVICE,CORE,COORD filters subsystems. Lines go to stderr
 * prefixed with `groupcomm host:pid SUBSYS` (and `rank r/n` when the logger knows it).
 */
import os from 'node:os';
import { setting } from './config.js';

const LEVELS = { off: 0, warn: 1, info: 2, debug: 3, trace: 4 } as const;
export type LogLevel = Exclude<keyof typeof LEVELS, 'off'>;

// Read once per process (every logger checks them on every line); a bad value warns, see config.ts.
const level = LEVELS[setting('GROUPCOMM_DEBUG')];
const subsys: readonly string[] = setting('GROUPCOMM_DEBUG_SUBSYS') ?? [];
const host = os.hostname();
const warnedOnce = new Set<string>();

export interface Logger {
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
  trace(msg: string): void;
  /** True when `lvl` would print: guard costly message building with it. */
  enabled(lvl: LogLevel): boolean;
  /** A logger that adds `rank r/n` (or any tag) to every line. */
  child(tag: string): Logger;
  /** Warn once per process for a given key (no wall of identical warnings). */
  warnOnce(key: string, msg: string): void;
}

export function logger(sub: string, tag = ''): Logger {
  const on = subsys.length === 0 || subsys.includes(sub.toUpperCase());
  const prefix = `groupcomm ${host}:${process.pid} ${sub.toUpperCase()}${tag ? ' ' + tag : ''}`;
  const emit = (lvl: LogLevel, msg: string) => {
    if (on && LEVELS[lvl] <= level) process.stderr.write(`${prefix} ${lvl.toUpperCase()} ${msg}\n`);
  };
  return {
    warn: (m) => emit('warn', m),
    info: (m) => emit('info', m),
    debug: (m) => emit('debug', m),
    trace: (m) => emit('trace', m),
    enabled: (lvl) => on && LEVELS[lvl] <= level,
    child: (t) => logger(sub, tag ? `${tag} ${t}` : t),
    warnOnce: (key, m) => {
      if (warnedOnce.has(key)) return;
      warnedOnce.add(key);
      emit('warn', m);
    },
  };
}
