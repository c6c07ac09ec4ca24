// The plugin boundary, checked on the sources: plugins import only the kit (groupcomm/plugin),
// host/ never imports plugins/ (built-ins load through the exports map), and docs/plugins.md
// lists exactly what the kit exports. Behaviour through the kit is tested by the conformance
// suite and by test/integration/plugin_pack.test.ts (an out-of-tree plugin from an npm pack).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';
import * as kit from 'groupcomm/plugin';

const root = packageRoot();

function files(dir: string, ext: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p, ext));
    else if (e.name.endsWith(ext)) out.push(p);
  }
  return out;
}

/** Every module specifier a source file names: static imports, re-exports, import(), require(). */
function specifiers(file: string): string[] {
  const src = fs.readFileSync(file, 'utf8');
  const found: string[] = [];
  for (const re of [/\b(?:import|export)\s[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g, /\brequire\(\s*['"]([^'"]+)['"]\s*\)/g]) {
    for (const m of src.matchAll(re)) found.push(m[1]);
  }
  return found;
}

test('every file of plugins/cpu and plugins/cuda imports only groupcomm/plugin (and its own folder, node: built-ins, koffi)', () => {
  for (const name of ['cpu', 'cuda']) {
    const dir = path.join(root, 'plugins', name);
    const ts = files(dir, '.ts');
    assert.ok(ts.length >= 5, `plugins/${name} has ${ts.length} files`);
    for (const f of ts) {
      const specs = specifiers(f);
      assert.ok(specs.length > 0, `${f}: no imports found (the scan is broken)`);
      for (const s of specs) {
        const ok = s === 'groupcomm/plugin' || s.startsWith('node:') || s === 'koffi' ||
          (s.startsWith('./') && !s.includes('..'));
        assert.ok(ok, `${path.relative(root, f)} imports '${s}'`);
      }
    }
  }
});

test('the out-of-tree example plugin imports nothing but groupcomm/plugin', () => {
  const specs = specifiers(path.join(root, 'test', 'fixtures', 'example-plugin', 'index.js'));
  assert.equal([...new Set(specs)], ['groupcomm/plugin']);
});

test('nothing under host/ imports plugins/ (the built-ins load by package specifier, like any plugin)', () => {
  let n = 0;
  for (const f of files(path.join(root, 'host'), '.ts')) {
    for (const s of specifiers(f)) {
      n++;
      const target = s.startsWith('.') ? path.resolve(path.dirname(f), s) : '';
      assert.not.ok(target.startsWith(path.join(root, 'plugins') + path.sep), `${path.relative(root, f)} imports '${s}'`);
    }
  }
  assert.ok(n > 100, `only ${n} imports found under host/ (the scan is broken)`);
});

/** Names exported by host/device/kit.ts, types included (read from its export lists). */
function kitExports(): Set<string> {
  const src = fs.readFileSync(path.join(root, 'host', 'device', 'kit.ts'), 'utf8');
  const names = new Set<string>();
  for (const m of src.matchAll(/export\s+(?:type\s+)?\{([^}]*)\}/g)) {
    for (const part of m[1].split(',')) {
      const n = part.trim().replace(/^type\s+/, '').split(/\s+as\s+/).pop()!.trim();
      if (n) names.add(n);
    }
  }
  return names;
}

test('docs/plugins.md lists exactly what groupcomm/plugin exports, and every value listed is there at run time', () => {
  const doc = fs.readFileSync(path.join(root, 'docs', 'plugins.md'), 'utf8');
  const block = /```ts\nimport \{((?:(?!```)[\s\S])*?)\} from 'groupcomm\/plugin';\n```/.exec(doc);
  assert.ok(block, "docs/plugins.md has no import { … } from 'groupcomm/plugin' block");
  const documented = new Set<string>();
  const values: string[] = [];
  for (const line of block![1].split('\n')) {
    const code = line.replace(/\/\/.*$/, '');
    for (const part of code.split(',')) {
      const p = part.trim();
      if (!p) continue;
      const name = p.replace(/^type\s+/, '');
      documented.add(name);
      if (!p.startsWith('type ')) values.push(name);
    }
  }
  const exported = kitExports();
  assert.equal([...documented].filter((n) => !exported.has(n)).sort(), [], 'documented but not exported');
  assert.equal([...exported].filter((n) => !documented.has(n)).sort(), [], 'exported but not documented');
  const missing = values.filter((n) => !(n in kit));
  assert.equal(missing, [], 'values missing from the module at run time');
});

test.run();
