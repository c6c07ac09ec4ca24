// Capturing what the library logs, for tests that assert a warning or a log line.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Logger } from '../../host/base/log.js';

/** A logger that keeps the warnings (and drops the rest), for an options object's `log`. */
export function capture(): { log: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const log = {
    warn: (m: string) => { warnings.push(m); }, info() {}, debug() {}, trace() {}, warnOnce() {},
    enabled: () => false, tracing: false, child() { return log; },
  } as Logger;
  return { log, warnings };
}

/** Asserts that one of `warnings` contains `text`. */
export function warned(warnings: string[], text: string): void {
  assert.ok(warnings.some((w) => w.includes(text)), `a warning with '${text}' in ${JSON.stringify(warnings)}`);
}

/**
 * Every chunk written to stderr from now on, instead of stderr (the library's log lines go
 * there); the file's test.after puts stderr back.
 */
export function stderrLines(): string[] {
  const lines: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  test.after(() => { process.stderr.write = write; });
  return lines;
}
