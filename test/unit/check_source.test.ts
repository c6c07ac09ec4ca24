// scripts/check-source.js on this tree: GROUPCOMM_* read only through host/base/config.ts, and
// GroupcommErrors made only by the factories of host/base/errors.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../../host/base/pkgroot.js';

test('no file under host/ or plugins/ breaks the source rules', async () => {
  const root = packageRoot();
  const { checkSource } = await import(pathToFileURL(path.join(root, 'scripts', 'check-source.js')).href) as { checkSource(root: string): string[] };
  assert.equal(checkSource(root), []);
});

test.run();
