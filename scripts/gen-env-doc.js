#!/usr/bin/env node
// Writes docs/env.md from the configuration registry (host/base/config.ts), through the built
// dist/ (run `npm run build` first). `--check` writes nothing and exits 1 when the file differs.
//   node scripts/gen-env-doc.js [--check]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const built = path.join(root, 'dist', 'host', 'base', 'config_doc.js');
if (!fs.existsSync(built)) {
  console.error(`gen-env-doc: ${path.relative(root, built)} not found; run \`npm run build\` first`);
  process.exit(2);
}
const { renderEnvDoc } = await import(pathToFileURL(built).href);
const file = path.join(root, 'docs', 'env.md');
const want = renderEnvDoc();
const have = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
if (process.argv.includes('--check')) {
  if (have !== want) {
    console.error('docs/env.md differs from host/base/config.ts: run `npm run build && node scripts/gen-env-doc.js`');
    process.exit(1);
  }
  console.log('docs/env.md is up to date');
} else if (have !== want) {
  fs.writeFileSync(file, want);
  console.log('wrote docs/env.md');
} else {
  console.log('docs/env.md is up to date');
}
