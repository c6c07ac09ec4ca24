/**
 * The package root, found by walking up from this file to the first package.json named
 * groupcomm. Bun runs host/*.ts and Node runs dist/host/*.js, so a relative URL to
 * build/core.wasm would point to different places; the root does not.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function packageRoot(): string {
  if (cached) return cached;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'groupcomm') return (cached = dir);
      } catch { /* keep walking */ }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('groupcomm: package root not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** True when running the TypeScript sources (Bun), false when running dist/ (Node). */
export const runningSources = import.meta.url.endsWith('.ts');
