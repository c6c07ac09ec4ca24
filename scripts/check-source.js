#!/usr/bin/env node
// Source rules no compiler checks, for host/ and plugins/ (test/unit/check_source.test.ts runs
// this on every `npm test`):
//   1. GROUPCOMM_* variables are read only through the registry: no file but
//      host/base/config.ts reads process.env.GROUPCOMM_* or process.env['GROUPCOMM_…'].
//   2. Every GroupcommError comes from a factory: no `new GroupcommError(` outside
//      host/base/errors.ts.
//   node scripts/check-source.js        (exit 1 and one line per violation)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const RULES = [
  {
    what: 'reads a GROUPCOMM_* variable outside the registry (use setting() from host/base/config.ts)',
    re: /process\.env\s*(?:\.\s*GROUPCOMM_|\[\s*['"`]GROUPCOMM_)/,
    except: 'host/base/config.ts',
  },
  {
    what: 'constructs a GroupcommError directly (use a factory from host/base/errors.ts)',
    re: /new\s+GroupcommError\s*\(/,
    except: 'host/base/errors.ts',
  },
];

function sources(dir, root) {
  const out = [];
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) { if (e.name !== 'node_modules') out.push(...sources(p, root)); } else if (/\.(ts|js|mjs|cjs)$/.test(e.name) && !e.name.endsWith('.d.ts')) out.push(path.relative(root, p));
  }
  return out;
}

/** Every violation under `root` as `file:line: what`. */
export function checkSource(root) {
  const found = [];
  for (const file of [...sources(path.join(root, 'host'), root), ...sources(path.join(root, 'plugins'), root)]) {
    const rel = file.split(path.sep).join('/');
    const lines = fs.readFileSync(path.join(root, file), 'utf8').split('\n');
    for (const rule of RULES) {
      if (rel === rule.except) continue;
      lines.forEach((l, i) => { if (rule.re.test(l)) found.push(`${rel}:${i + 1}: ${rule.what}`); });
    }
  }
  return found;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const found = checkSource(root);
  for (const f of found) console.error(f);
  console.log(found.length ? `${found.length} violation(s)` : 'source rules hold');
  process.exit(found.length ? 1 : 0);
}
