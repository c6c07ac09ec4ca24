// Folders are layers and imports only go down (docs/architecture.md, "Layers and imports"):
// every import in host/ and bench/ is parsed from the sources and checked against the rank
// table below. A folder may import its own files and any folder of a lower rank; a folder of
// the same rank (pg and cpu, coordinator and conformance) or of a higher rank is refused.
// Plugins import only groupcomm/plugin and host/ never imports plugins/ (plugin_kit.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';

const root = packageRoot();

/** Lower imports higher never. Keep in step with the table in docs/architecture.md. */
const RANK: Record<string, number> = {
  'host/base': 0,
  'host/core': 1,
  'host/store': 2,
  'host/pg': 3,
  'host/cpu': 3,
  // Above cpu: the kit re-exports CpuGroup for backends that move bytes through host memory.
  'host/device': 4,
  'host/coordinator': 5,
  'host/conformance': 5,
  'host/index.ts': 6,
  'bench': 6,
  'host/cli': 7,
};

/** The package's own subpaths (package.json "exports"), as the unit they load. */
const SELF: Record<string, string> = {
  'groupcomm': 'host/index.ts',
  'groupcomm/core': 'host/core',
  'groupcomm/plugin': 'host/device',
  'groupcomm/conformance': 'host/conformance',
};

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** The layer a path belongs to: host/<folder> (subfolders included), host/index.ts, bench, else the path. */
function unitOf(abs: string): string {
  const rel = path.relative(root, abs).split(path.sep);
  if (rel[0] === 'host') return `host/${rel[1]}`;
  if (rel[0] === 'bench') return 'bench';
  if (rel[0] === 'plugins') return 'plugins';
  return rel.join('/');
}

/**
 * Every module specifier a source file names outside comments: static imports and re-exports,
 * side-effect imports, import() with a string, and import() with a template (its static prefix).
 */
function specifiers(src: string): string[] {
  const code = src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const found: string[] = [];
  for (const re of [
    /\b(?:import|export)\s[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]/g,
    /\bimport\s*['"]([^'"]+)['"]/g,
    /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\bimport\(\s*`([^`$]*)\$\{/g,
  ]) {
    for (const m of code.matchAll(re)) found.push(m[1]);
  }
  return found;
}

/** The unit a specifier in `file` loads; undefined for outside packages and node: built-ins. */
function target(file: string, spec: string): string | undefined {
  if (spec.startsWith('.')) return unitOf(path.resolve(path.dirname(file), spec));
  if (spec in SELF) return SELF[spec];
  if (spec.startsWith('groupcomm/')) return spec; // another subpath: not in the table, so refused
  return undefined;
}

/** Every import in host/ and bench/ that does not go down: "file: 'spec' (from → to)". */
function violations(extra?: { file: string; src: string }): { bad: string[]; checked: number } {
  const bad: string[] = [];
  let checked = 0;
  const sources = [...files(path.join(root, 'host')), ...files(path.join(root, 'bench'))]
    .map((f) => ({ file: f, src: fs.readFileSync(f, 'utf8') }));
  if (extra) sources.push(extra);
  for (const { file, src } of sources) {
    const from = unitOf(file);
    assert.ok(from in RANK, `${path.relative(root, file)}: its folder '${from}' has no rank in this test's table (and docs/architecture.md)`);
    for (const spec of specifiers(src)) {
      const to = target(file, spec);
      if (to === undefined) continue;
      checked++;
      if (to === from) continue;
      if (!(to in RANK) || RANK[to] >= RANK[from]) {
        bad.push(`${path.relative(root, file)}: '${spec}' (${from} → ${to})`);
      }
    }
  }
  return { bad, checked };
}

test('no import in host/ or bench/ runs upward or sideways', () => {
  const { bad, checked } = violations();
  assert.ok(checked > 200, `only ${checked} imports of the package's own modules found (the scan is broken)`);
  assert.equal(bad, []);
});

test('the check catches an upward, a sideways and a template import', () => {
  // Proof that the scan and the table can fail: one file of each kind, never written to disk.
  const probes = [
    { file: path.join(root, 'host', 'store', 'probe.ts'), src: "import { CpuGroup } from '../cpu/group.js';\n", want: 'host/store → host/cpu' },
    { file: path.join(root, 'host', 'pg', 'probe.ts'), src: "export { CpuGroup } from '../cpu/group.js';\n", want: 'host/pg → host/cpu' },
    { file: path.join(root, 'host', 'base', 'probe.ts'), src: 'const m = await import(`../coordinator/${name}.js`);\n', want: 'host/base → host/coordinator' },
    { file: path.join(root, 'host', 'core', 'probe.ts'), src: "import type { Store } from 'groupcomm';\n", want: 'host/core → host/index.ts' },
  ];
  for (const p of probes) {
    const mine = violations(p).bad.filter((b) => b.startsWith(path.relative(root, p.file) + ':'));
    assert.equal(mine.length, 1, `${p.want}: ${JSON.stringify(mine)}`);
    assert.ok(mine[0].includes(p.want), mine[0]);
  }
  // An import inside a comment is not an import.
  assert.equal(specifiers("/** import { x } from '../cli/main.js'; */\n// import '../cli/main.js';\nconst a = 1;\n"), []);
});

test('docs/architecture.md names every folder of host/ that the table ranks', () => {
  const doc = fs.readFileSync(path.join(root, 'docs', 'architecture.md'), 'utf8');
  for (const dir of fs.readdirSync(path.join(root, 'host'), { withFileTypes: true })) {
    if (!dir.isDirectory()) continue;
    assert.ok(`host/${dir.name}` in RANK, `host/${dir.name} has no rank in this test's table`);
    assert.ok(doc.includes(`host/${dir.name}/`), `docs/architecture.md does not mention host/${dir.name}/`);
  }
});

test.run();
