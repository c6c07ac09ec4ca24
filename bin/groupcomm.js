#!/usr/bin/env node
// Node runs the compiled dist/; Bun runs the TypeScript sources directly (they ship in the
// package, and Bun loads `groupcomm` from them too, through the "bun" export condition), and
// dist/ only when the sources are absent.
import fs from 'node:fs';
const dist = new URL('../dist/host/cli/main.js', import.meta.url);
const sources = new URL('../host/cli/main.ts', import.meta.url);
const useSources = typeof process.versions.bun === 'string' && fs.existsSync(sources);
const entry = useSources ? sources : dist;
if (!useSources && !fs.existsSync(entry)) {
  console.error('groupcomm: dist/ is missing; run `npm run build` first');
  process.exit(2);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
