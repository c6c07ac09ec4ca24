// Trip 5 of issue 17, docs that run: every JavaScript or TypeScript block in README.md and
// docs/*.md is either a file under examples/ — marked `<!-- example: examples/x.mjs -->` on the
// line before, and equal to that file, which test/integration/examples.test.ts runs on Node and
// Bun — or marked `<!-- not run: reason -->` (a declaration, a fragment, something that needs a
// GPU or PyTorch). Blocks in other languages (shell commands, python, output) are not checked.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../host/base/pkgroot.js';

const root = packageRoot();
const CODE = new Set(['js', 'mjs', 'javascript', 'ts', 'mts', 'typescript']);
const LANG_OF: Record<string, string[]> = {
  '.mjs': ['js', 'mjs', 'javascript'], '.js': ['js', 'javascript'], '.ts': ['ts', 'typescript'], '.mts': ['ts', 'typescript'], '.json': ['json'],
};

interface Block { doc: string; line: number; lang: string; body: string; marker: string }

function blocksOf(doc: string): Block[] {
  const lines = fs.readFileSync(path.join(root, doc), 'utf8').split('\n');
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)/.exec(lines[i]);
    if (!open) continue;
    let j = i + 1;
    while (j < lines.length && !lines[j].startsWith('```')) j++;
    out.push({ doc, line: i + 1, lang: open[1], body: lines.slice(i + 1, j).join('\n'), marker: (lines[i - 1] ?? '').trim() });
    i = j;
  }
  return out;
}

const docs = ['README.md', ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const all = docs.flatMap(blocksOf);
const code = all.filter((b) => CODE.has(b.lang));

test('every JavaScript/TypeScript block in README.md and docs/ is marked: an example file, or not run with a reason', () => {
  assert.ok(code.length >= 10, `only ${code.length} code blocks found`);
  const unmarked = code.filter((b) => !/^<!-- example: examples\/\S+ -->$/.test(b.marker) && !/^<!-- not run: \S.* -->$/.test(b.marker));
  assert.equal(unmarked.map((b) => `${b.doc}:${b.line}`), [], 'blocks without a marker');
});

test('each example block is its file under examples/, byte for byte, in the language of the file', () => {
  // Any language: a shown config file (getting-started's tsconfig.json) is a file too.
  const examples = all.filter((b) => b.marker.startsWith('<!-- example:'));
  assert.ok(examples.length >= 7, `only ${examples.length} example blocks`);
  for (const b of examples) {
    const file = /examples\/\S+/.exec(b.marker)![0];
    const full = path.join(root, file);
    assert.ok(fs.existsSync(full), `${b.doc}:${b.line} names ${file}, which does not exist`);
    assert.ok(LANG_OF[path.extname(file)]?.includes(b.lang), `${b.doc}:${b.line}: a \`\`\`${b.lang} block for ${file}`);
    assert.fixture(b.body, fs.readFileSync(full, 'utf8').replace(/\n$/, ''), `${b.doc}:${b.line} differs from ${file}`);
  }
});

test('the README shows examples/two-groups.mjs and the getting-started page its examples', () => {
  const readme = code.filter((b) => b.doc === 'README.md').map((b) => b.marker);
  assert.ok(readme.includes('<!-- example: examples/two-groups.mjs -->'), readme.join('\n'));
  const start = all.filter((b) => b.doc === 'docs/getting-started.md').map((b) => b.marker);
  for (const f of ['examples/getting-started/hello.mjs', 'examples/getting-started/hello.ts', 'examples/getting-started/tsconfig.json']) {
    assert.ok(start.includes(`<!-- example: ${f} -->`), `getting-started.md does not show ${f}`);
  }
});

test.run();
