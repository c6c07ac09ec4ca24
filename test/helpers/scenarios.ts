/**
 * Shared drivers for the multi-process scenario tests: each runs a worker script on N ranks and
 * asserts that every rank checked results and found no failure.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { spawnRanks, type Runtime } from './ranks.js';
import { TcpStoreServer } from '../../host/store/index.js';

/** Whether this machine can use shared memory (Linux with koffi): shm configs must then use it. */
export const shmAvailable = (() => {
  if (process.platform !== 'linux') return false;
  try {
    createRequire(import.meta.url).resolve('koffi');
    return true;
  } catch {
    return false;
  }
})();

export interface Outcome { checks: number; failures: string[] }

export function assertClean(res: Outcome[], minChecks: number): void {
  const failures = res.flatMap((r) => r.failures);
  assert.equal(failures, [], failures.join('\n'));
  for (const r of res) assert.ok(r.checks >= minChecks, `only ${r.checks} checks ran`);
}

/** The CPU-group collective matrix (cpu_worker 'matrix') on n ranks, rendezvous through files. */
export async function cpuMatrix(n: number, args: string[] = []): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpu-matrix-'));
  try {
    const res = await spawnRanks<Outcome>(n, 'test/integration/workers/cpu_worker', { args: ['matrix', dir, ...args], timeoutMs: 80_000 });
    assertClean(res, 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A coordinator scenario (coord_worker) on n ranks around a fresh coordination store. */
export async function coordScenario(n: number, scenario: string, opts: { runtime?: Runtime; env?: Record<string, string> } = {}): Promise<Outcome[]> {
  const server = await TcpStoreServer.listen({ host: '127.0.0.1', port: 0 });
  try {
    return await spawnRanks<Outcome>(n, 'test/integration/workers/coord_worker', {
      args: [scenario], runtime: opts.runtime ?? 'same', timeoutMs: 80_000,
      env: { COORD_STORE_PORT: String(server.port), ...opts.env },
    });
  } finally {
    await server.close();
  }
}
