// Trip 7 of issue 17, the logs: a version banner once per process, timestamps, one line per
// operation at trace in every layer (CPU group, process group, coordinator, device), nothing of
// it below trace, an error for a level GROUPCOMM_DEBUG does not know (it used to be silently
// off), and one spelling of a group's name (`world_0`; the coordinator said `world:0`).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot, runningSources } from '../../host/base/pkgroot.js';
import { commandFor, currentRuntime } from '../helpers/ranks.js';

const root = packageRoot();
const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;

function runWorker(level: string): { status: number | null; stdout: string; stderr: string } {
  const [cmd, args] = commandFor('test/integration/workers/log_worker', currentRuntime());
  const env: Record<string, string | undefined> = { ...process.env, GROUPCOMM_DEBUG: level, NO_COLOR: '1' };
  delete env.GROUPCOMM_DEBUG_SUBSYS;
  const r = spawnSync(cmd, args, { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z groupcomm \S+:\d+ /;

test('trace: banner once, timestamps, one line per operation in the CPU group, process group, coordinator and device layers', () => {
  const r = runWorker('trace');
  assert.is(r.status, 0, r.stderr.slice(-4000));
  assert.match(r.stdout, '@@DONE');
  const lines = r.stderr.split('\n').filter(Boolean);
  const bad = lines.filter((l) => !TS.test(l));
  assert.equal(bad, [], 'lines without a timestamp and prefix');
  const banners = lines.filter((l) => / INFO groupcomm \S+ on (Node|Bun) /.test(l));
  assert.is(banners.length, 1, banners.join('\n'));
  assert.match(banners[0], `groupcomm ${version} on ${currentRuntime() === 'bun' ? 'Bun' : 'Node'}`);
  assert.match(banners[0], 'GROUPCOMM_DEBUG=trace');
  assert.ok(lines.indexOf(banners[0]) === 0, 'the banner comes first');
  const trace = (sub: string, re: RegExp) => lines.filter((l) => l.includes(` ${sub} `) && l.includes(' TRACE ') && re.test(l));
  for (const rank of [0, 1]) {
    const peer = 1 - rank;
    const who = `world_0 rank ${rank}/2 TRACE`;
    // Three CPU-tensor allReduces of 4096 bytes: one CPU group line and one coordinator line each.
    const cpu = trace('CPU', new RegExp(`CPU ${who} op=allReduce#\\d+ bytes=4096 peers=${peer} us=\\d+$`));
    assert.is(cpu.length, 3, lines.filter((l) => l.includes(' CPU ')).join('\n'));
    const coord = trace('COORD', new RegExp(`COORD ${who} op=allReduce bytes=4096 peers=${peer} us=\\d+$`));
    assert.is(coord.length, 3, lines.filter((l) => l.includes(' COORD ')).join('\n'));
    // One device allReduce of 32 bytes: the device communicator's line and the coordinator's.
    assert.is(trace('DEVICE', new RegExp(`DEVICE ${who} op=allReduce bytes=32 peers=${peer} us=\\d+$`)).length, 1);
    assert.is(trace('COORD', new RegExp(`COORD ${who} op=allReduce bytes=32 peers=${peer} us=\\d+$`)).length, 1);
    // broadcastObject: the store channel's broadcast (msgpack bytes) under the coordinator's line.
    assert.is(trace('PG', new RegExp(`PG ${who} op=broadcastObj bytes=\\d+ peers=${peer} us=\\d+$`)).length, 1);
    assert.is(trace('COORD', new RegExp(`COORD ${who} op=broadcastObject peers=${peer} us=\\d+$`)).length, 1);
  }
  // One spelling of the group's name: the coordinator's lines say world_0 as the layers below do.
  assert.not.match(r.stderr, 'world:0');
});

test('debug: the banner and timestamps, no trace line', () => {
  const r = runWorker('debug');
  assert.is(r.status, 0, r.stderr.slice(-4000));
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.ok(lines.length > 5, r.stderr);
  assert.ok(lines.every((l) => TS.test(l)), r.stderr);
  assert.is(lines.filter((l) => / INFO groupcomm \S+ on /.test(l)).length, 1);
  assert.is(lines.filter((l) => l.includes(' TRACE ')).length, 0);
});

test('off (the default): silent', () => {
  const r = runWorker('');
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stderr, '');
});

test('GROUPCOMM_DEBUG=verbose fails loading groupcomm with ERR_GROUPCOMM_CONFIG naming the accepted levels', () => {
  const entry = path.join(root, ...(runningSources ? ['host', 'index.ts'] : ['dist', 'host', 'index.js']));
  const r = spawnSync(process.execPath, ['-e', `import(${JSON.stringify(entry)}).then(() => console.log('@@LOADED'), (e) => { console.error(e.code + ': ' + e.message + ' [' + e.variable + ']'); process.exit(3); })`], {
    env: { ...process.env, GROUPCOMM_DEBUG: 'verbose' }, encoding: 'utf8', timeout: 30_000,
  });
  assert.is(r.status, 3, `${r.stdout}\n${r.stderr}`);
  assert.not.match(r.stdout, '@@LOADED');
  assert.match(r.stderr, 'ERR_GROUPCOMM_CONFIG: GROUPCOMM_DEBUG="verbose" is not valid: expected one of off, warn, info, debug, trace');
  assert.match(r.stderr, '[GROUPCOMM_DEBUG]');
});

test('the CLI reports a bad GROUPCOMM_DEBUG as a configuration error (exit 2), not as a missing command', () => {
  const bin = path.join(root, 'bin', 'groupcomm.js');
  const r = spawnSync(process.execPath, [bin, 'store', '--port', '0'], { env: { ...process.env, GROUPCOMM_DEBUG: 'loud' }, encoding: 'utf8', timeout: 30_000 });
  assert.is(r.status, 2, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stderr, 'ERR_GROUPCOMM_CONFIG');
  assert.match(r.stderr, 'GROUPCOMM_DEBUG="loud" is not valid');
  assert.not.match(r.stderr, 'not available in this build');
});

test.run();
