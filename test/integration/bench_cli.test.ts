// `groupcomm bench`: the command line (help, exit statuses, messages) for every target, a tiny
// real `bench cpu` run (rank processes, a stand-in peer, two interleaved rounds) with its table,
// summary, JSON and SVG, and the SVG checked as XML and, where a rasteriser is installed, as a
// picture. Speed is not asserted: the numbers belong to the bench's report.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../host/cli/bench.js';
import { packageRoot } from '../../host/base/pkgroot.js';
import { renderSvg, type Panel } from '../../bench/plot.js';
import { parseXml, walk, type XmlElement } from '../helpers/xml.js';
import { decodePng } from '../helpers/png.js';

const TARGETS = ['core', 'store', 'pg', 'cpu', 'device', 'coordinator'];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gc-bench-cli-'));

/** Runs `groupcomm bench ...argv` in this process; its exit status and what it printed. */
async function bench(argv: string[], deadlineMs = 20_000): Promise<{ code: number; out: string; err: string }> {
  const log = console.log, error = console.error;
  let out = '', err = '';
  console.log = (...a: unknown[]) => { out += a.join(' ') + '\n'; };
  console.error = (...a: unknown[]) => { err += a.join(' ') + '\n'; };
  let timer: NodeJS.Timeout | undefined;
  try {
    const code = await Promise.race([
      run(argv),
      new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`bench ${argv.join(' ')}: still running after ${deadlineMs} ms`)), deadlineMs); }),
    ]);
    return { code, out, err };
  } finally {
    clearTimeout(timer);
    console.log = log;
    console.error = error;
  }
}

test('--help and -h: every target prints its grouped options and exits 0 without running', async () => {
  for (const t of TARGETS) {
    for (const flag of ['--help', '-h']) {
      const r = await bench([t, flag]);
      assert.is(r.code, 0, `${t} ${flag}: ${r.err}`);
      assert.match(r.out, new RegExp(`^usage: groupcomm bench ${t} \\[options\\]`));
      for (const group of ['Benchmark parameters:', 'Output:']) assert.ok(r.out.includes(group), `${t}: no '${group}' in\n${r.out}`);
      assert.ok(r.out.includes('--json FILE'), `${t}: --json missing`);
      assert.not.match(r.out, /^# /m, `${t} ${flag} ran something:\n${r.out}`);
    }
  }
  const cpu = (await bench(['cpu', '--ranks', 'x', '--help'])).out;
  for (const flag of ['-b, --minbytes', '-e, --maxbytes', '-f, --stepfactor', '-d, --datatype', '-o, --op', '-n, --iters', '-w, --warmup_iters', '-c, --check', '-g, --ranks', '-r, --root', '--peer CMD', '--peers-dir DIR', '--rounds N', '--plot FILE.svg']) {
    assert.ok(cpu.includes(flag), `bench cpu --help lacks ${flag}`);
  }
  for (const group of ['Participation:', 'Transport:', 'Comparison']) assert.ok(cpu.includes(group), `bench cpu --help lacks ${group}`);
});

test('an unknown flag exits 2 naming it, for every target', async () => {
  for (const t of TARGETS) {
    const r = await bench([t, '--no-such-flag']);
    assert.is(r.code, 2, `${t}: exit ${r.code}`);
    assert.match(r.err, /'--no-such-flag'/, `${t}: ${r.err}`);
    assert.match(r.err, new RegExp(`groupcomm bench ${t} --help`));
    assert.is(r.out, '', `${t} printed rows: ${r.out}`);
  }
});

test('a bad value exits 2 naming the flag and what it accepts; --ranks x does not hang', async () => {
  const cases: [string[], RegExp][] = [
    [['cpu', '--ranks', 'x'], /-g\/--ranks: 'x' \(a comma-separated list of world sizes >= 2/],
    [['cpu', '-g', '1'], /-g\/--ranks: '1'/],
    [['cpu', '-b', '4Q'], /-b\/--minbytes: '4Q' \(a size in bytes/],
    [['cpu', '-d', 'complex64'], /-d\/--datatype: 'complex64' \(one of float32/],
    [['cpu', '-o', 'xor'], /-o\/--op: 'xor' \(one of sum, prod, min, max, avg\)/],
    [['cpu', '-c', '2'], /-c\/--check: '2'/],
    [['cpu', '--sizes', '4K', '-e', '8K'], /--sizes or -b\/-e\/-f, not both/],
    [['cpu', '-g', '2', '-r', '3'], /-r\/--root: '3'/],
    [['cpu', 'extra'], /Unexpected argument 'extra'/],
    [['store', '--clients', '0'], /--clients: '0'/],
    [['pg', '--seconds=soon'], /--seconds: 'soon' \(a number > 0\)/],
    [['pg', '--rounds', '0'], /--rounds: '0'/],
    [['device', '-n', '0'], /-n\/--iters: '0'/],
    [['coordinator', '--procs', 'many'], /--procs: 'many'/],
    [['core', '--quick=yes'], /'--quick' does not take an argument/],
    [['cpu', '--peers-dir', tmp], /--peers-dir: .* \(it has no gloo_bench\.py\)/],
  ];
  for (const [argv, want] of cases) {
    const r = await bench(argv, 10_000);
    assert.is(r.code, 2, `${argv.join(' ')}: exit ${r.code}\n${r.out}${r.err}`);
    assert.match(r.err, want, argv.join(' '));
  }
});

test('no target: usage and exit 2; unknown target: exit 2 saying so; bench --help: exit 0', async () => {
  const none = await bench([]);
  assert.is(none.code, 2);
  assert.match(none.err, /usage: groupcomm bench <target>/);
  const bad = await bench(['gpu']);
  assert.is(bad.code, 2);
  assert.match(bad.err, /unknown target 'gpu' \(one of core, store, pg, cpu, device, coordinator\)/);
  const help = await bench(['--help']);
  assert.is(help.code, 0);
  for (const t of TARGETS) assert.match(help.out, new RegExp(`^  ${t} `, 'm'));
});

test('the groupcomm process itself exits 2 with the message (bench cpu --ranks x)', () => {
  const r = spawnSync(process.execPath, [path.join(packageRoot(), 'bin', 'groupcomm.js'), 'bench', 'cpu', '--ranks', 'x'], { encoding: 'utf8', timeout: 30_000 });
  assert.is(r.status, 2, `status ${r.status} signal ${r.signal}: ${r.stderr}`);
  assert.match(r.stderr, /bad value for -g\/--ranks: 'x'/);
});

/** Throws a plain Error (uvu's assert.throws passes its own assertion errors through). */
function must(cond: unknown, what: string): void {
  if (!cond) throw new Error(what);
}

/** The SVG's structural checks; returns the panels' series names. */
function checkSvg(svg: string): string[][] {
  const root = parseXml(svg);
  must(root.name === 'svg', `root <${root.name}>`);
  must(root.attrs.xmlns === 'http://www.w3.org/2000/svg', 'xmlns');
  const [vx, vy, vw, vh] = root.attrs.viewBox.split(/\s+/).map(Number);
  must(vw > 0 && vh > 0, `viewBox ${root.attrs.viewBox}`);
  const panels = walk(root).filter((e) => e.name === 'g' && e.attrs.class === 'panel');
  must(panels.length > 0, 'no panel');
  const text = (e: XmlElement) => walk(e).filter((x) => x.name === 'text').map((x) => x.text).join('\n');
  return panels.map((p) => {
    const lines = walk(p).filter((e) => e.name === 'polyline' && e.attrs.class === 'series');
    must(lines.length > 0, 'a panel without a line');
    for (const l of lines) {
      const pts = l.attrs.points.trim().split(/\s+/).map((xy) => xy.split(',').map(Number));
      must(pts.length > 0 && pts.every((q) => q.length === 2 && q.every(Number.isFinite)), `points ${l.attrs.points}`);
      for (const [x, y] of pts) must(x >= vx && x <= vx + vw && y >= vy && y <= vy + vh, `point ${x},${y} outside the viewBox`);
    }
    const names = lines.map((l) => l.attrs['data-name']);
    must(new Set(names).size === names.length, `one line per implementation: ${names}`);
    const words = text(p);
    for (const n of names) must(words.includes(n), `legend lacks ${n}`);
    must(/\(GB\/s\)|\(us/.test(words), 'y axis unit');
    must(/bytes, log scale/.test(words), 'x axis label');
    return names;
  });
}

test('bench cpu, tiny real run: nccl columns, in/out of place, rounds interleaved with a peer, summary, JSON, SVG', async () => {
  const svg = path.join(tmp, 'cpu.svg');
  const json = path.join(tmp, 'cpu.json');
  const peerLog = path.join(tmp, 'peer.log');
  process.env.FAKE_PEER_LOG = peerLog;
  const peer = `node ${path.join(packageRoot(), 'test', 'helpers', 'fake_gloo_bench.mjs')}`;
  const r = await bench(['cpu', '-g', '2', '--ops', 'allReduce,allGather', '-b', '4K', '-e', '16K', '-f', '4', '-n', '3', '-w', '1',
    '--rounds', '2', '--peer', peer, '--skip-limits', '--json', json, '--plot', svg], 120_000);
  delete process.env.FAKE_PEER_LOG;
  assert.is(r.code, 0, r.out + r.err);
  const lines = r.out.split('\n');
  const header = lines.find((l) => /^# impl\s/.test(l));
  assert.ok(header, r.out);
  assert.match(header!, /size\s+count\s+type\s+redop\s+root\s+time\s+algbw\s+busbw\s+#wrong\s+time\s+algbw\s+busbw\s+#wrong/);
  assert.ok(lines.some((l) => /out-of-place\s+in-place/.test(l)), 'form labels');
  assert.ok(lines.some((l) => /\(GB\/s\)/.test(l)), 'GB/s in the header');
  assert.not.match(r.out, /NaN|\de[+-]\d/, 'fixed-point numbers only');
  // allReduce in both forms (in place = the input as out), allGather out of place only; #wrong 0
  const row = (impl: string, round: number, op: string, size: number) =>
    lines.find((l) => new RegExp(`^  ${impl}\\s+${round}\\s+${op}\\s+2\\s+${size}\\s`).test(l));
  for (const round of [1, 2]) {
    for (const size of [4096, 16384]) {
      const ar = row('groupcomm', round, 'allReduce', size);
      assert.ok(ar, `no groupcomm allReduce ${size} row in round ${round}:\n${r.out}`);
      assert.match(ar!, /float32\s+sum\s+-1\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+0\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+0$/);
      const ag = row('groupcomm', round, 'allGather', size);
      assert.match(ag!, /float32\s+none\s+-1\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+0\s+n\/a\s+n\/a\s+n\/a\s+n\/a$/);
      assert.ok(row('gloo-torch-9.9', round, 'allReduce', size), `no peer row ${size} round ${round}`);
    }
  }
  // interleaved: ours, peer, ours, peer
  const doc = JSON.parse(fs.readFileSync(json, 'utf8'));
  const order = doc.rows.map((x: { impl: string; round: number }) => `${x.impl}#${x.round}`).filter((v: string, i: number, a: string[]) => i === 0 || a[i - 1] !== v);
  assert.equal(order, ['groupcomm#1', 'gloo-torch-9.9#1', 'groupcomm#2', 'gloo-torch-9.9#2']);
  assert.is(fs.readFileSync(peerLog, 'utf8').trim().split('\n').length, 2);
  assert.match(fs.readFileSync(peerLog, 'utf8'), /--worlds 2 --sizes 4096,16384 /);
  // the fake peer's allReduce 4K: 2.004 ms → algbw 4096 / 2.0039 ms, in place
  const peerRow = doc.rows.find((x: Record<string, unknown>) => x.impl === 'gloo-torch-9.9' && x.op === 'allReduce' && x.size_bytes === 4096);
  assert.ok(Math.abs(peerRow.ip_us - 2003.9) < 0.2 && peerRow.oop_us === undefined, JSON.stringify(peerRow));
  // Avg bus bandwidth, summary with min/median/max and the ratio of medians
  assert.match(r.out, /^# Avg bus bandwidth\s+: [\d.]+ GB\/s\s+\(groupcomm, allReduce, 2 ranks;/m);
  assert.match(r.out, /^# Avg bus bandwidth\s+: [\d.]+ GB\/s\s+\(gloo-torch-9.9, allGather, 2 ranks;/m);
  const s = doc.summary.find((x: { impl: string; case: Record<string, unknown> }) => x.impl === 'gloo-torch-9.9' && x.case.op === 'allReduce' && x.case.size_bytes === 4096);
  assert.ok(s && s.rounds === 2 && s.min <= s.median && s.median <= s.max, JSON.stringify(s));
  const ours = doc.summary.find((x: { impl: string; case: Record<string, unknown> }) => x.impl === 'groupcomm' && x.case.op === 'allReduce' && x.case.size_bytes === 4096 && x.case.place === s.case.place);
  assert.ok(Math.abs(s.ratios.groupcomm - ours.median / s.median) < 1e-9, 'ratio of medians');
  assert.match(r.out, /groupcomm\/gloo-torch-9\.9/);
  // the picture: a panel per op, one line per implementation
  const names = checkSvg(fs.readFileSync(svg, 'utf8'));
  assert.equal(names, [['groupcomm', 'gloo-torch-9.9'], ['groupcomm', 'gloo-torch-9.9']]);
});

test('the SVG checks catch what they claim to (a broken picture fails them)', () => {
  const panels: Panel[] = [{ title: 'allReduce, 2 ranks', series: [
    { name: 'a<b & "c"', points: [[4096, 0.5], [65536, 1.5], [1 << 20, 2.5]] },
    { name: 'peer', points: [[4096, 0.2], [65536, 1.0], [1 << 20, 3.0]] },
  ] }];
  const good = renderSvg(panels, { title: 't', yLabel: 'busbw (GB/s)' });
  assert.equal(checkSvg(good), [['a<b & "c"', 'peer']]);
  assert.throws(() => checkSvg(good.replace('</g>', '')), /closes|not closed/);
  assert.throws(() => checkSvg(good.replace('&amp;', '&')), /bare '&'/);
  assert.throws(() => checkSvg(good.replace(/points="[^"]*"/, 'points="5000,10"')), /outside the viewBox/);
  assert.throws(() => checkSvg(good.replace(/points="[^"]*"/, 'points=""')), /points/);
  assert.throws(() => checkSvg(good.replace('data-name="peer"', 'data-name="a&lt;b &amp; &quot;c&quot;"')), /one line per implementation/);
});

test('the SVG renders to a picture that is not blank (rsvg-convert, where installed)', () => {
  const probe = spawnSync('rsvg-convert', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    console.log('  skip: rsvg-convert is not installed (Debian: librsvg2-bin); the XML checks above still ran');
    return;
  }
  const panels: Panel[] = [{ title: 'allReduce, 2 ranks', series: [
    { name: 'groupcomm', points: [[4096, 0.5], [65536, 1.5], [1 << 20, 2.5]] },
    { name: 'gloo', points: [[4096, 0.2], [65536, 1.0], [1 << 20, 3.0]] },
  ] }];
  const file = path.join(tmp, 'r.svg');
  fs.writeFileSync(file, renderSvg(panels, { title: 't', yLabel: 'busbw (GB/s)' }));
  const r = spawnSync('rsvg-convert', ['-f', 'png', file], { maxBuffer: 64 << 20, timeout: 30_000 });
  assert.is(r.status, 0, String(r.stderr));
  const img = decodePng(r.stdout);
  assert.ok(img.width >= 400 && img.height >= 200, `${img.width}x${img.height}`);
  let dark = 0, blue = 0, red = 0;
  for (let p = 0; p < img.width * img.height; p++) {
    const [R, G, B, A] = img.rgba.subarray(p * 4, p * 4 + 4);
    if (A > 128 && R + G + B < 600) dark++;
    if (A > 128 && Math.abs(R - 0x1f) < 30 && Math.abs(G - 0x77) < 30 && Math.abs(B - 0xb4) < 30) blue++;
    if (A > 128 && Math.abs(R - 0xd6) < 30 && Math.abs(G - 0x27) < 30 && Math.abs(B - 0x28) < 30) red++;
  }
  const total = img.width * img.height;
  assert.ok(dark > total * 0.005, `only ${dark} of ${total} pixels drawn`);
  assert.ok(blue > 100 && red > 100, `series colours: ${blue} blue, ${red} red pixels`);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.run();
