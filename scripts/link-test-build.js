#!/usr/bin/env node
// After `tsc -p tsconfig.test.json`: dist-test/{host,plugins,bench} become links to the shipped
// build in dist/. The compiled tests import host/ by relative path while the plugins reach it
// through the package's own name (`groupcomm/plugin`, which Node resolves to dist/); with the
// links both paths are one file (Node keys modules by real path), so a test process holds one
// copy of host/ instead of two whose registries and classes differ.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// `--unlink` runs before tsc: tsc would otherwise write its second copy through the links into dist/.
const unlink = process.argv.includes('--unlink');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
for (const dir of ['host', 'plugins', 'bench']) {
  const link = path.join(root, 'dist-test', dir);
  const target = path.join(root, 'dist', dir);
  if (unlink) {
    if (fs.lstatSync(link, { throwIfNoEntry: false })?.isSymbolicLink()) fs.unlinkSync(link);
    continue;
  }
  if (!fs.existsSync(target)) throw new Error(`link-test-build: ${target} is missing (run tsc -p tsconfig.json first)`);
  fs.rmSync(link, { recursive: true, force: true });
  fs.symlinkSync(path.relative(path.dirname(link), target), link, 'dir');
}
