#!/usr/bin/env node
// Node runs the compiled dist/; Bun runs the TypeScript sources directly.
import fs from 'node:fs';
const dist = new URL('../dist/host/cli/main.js', import.meta.url);
const useSources = typeof process.versions.bun === 'string' && !fs.existsSync(dist);
const entry = useSources ? new URL('../host/cli/main.ts', import.meta.url) : dist;
if (!useSources && !fs.existsSync(entry)) {
  console.error('groupcomm: dist/ is missing; run `npm run build` first');
  process.exit(2);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
