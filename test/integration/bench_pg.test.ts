// `groupcomm bench pg --floor` runs end to end (short cases): real rank processes for the process
// group and for the plain-socket floor, every case yields samples. Speed is not asserted here;
// the numbers belong to the benchmark's report.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { run } from '../../bench/pg.js';
import { Report } from '../../bench/report.js';

test('bench pg --floor: groupcomm and raw-socket rows for every case, with samples', async () => {
  const report = new Report('pg');
  const log = console.log;
  let out = '';
  console.log = (...a: unknown[]) => { out += a.join(' ') + '\n'; };
  try {
    await run(['--seconds', '0.2', '--warmup-seconds', '0', '--warmup-calls', '0', '--floor'], report);
  } finally {
    console.log = log;
  }
  const ours = report.rows.filter((r) => r.impl === 'groupcomm').map((r) => r.name);
  assert.equal(ours, ['pingpong_small_rtt', 'pingpong_1MiB_rtt', 'broadcastObj_last_receiver', 'broadcastObj_1MiB_last_receiver', 'allGatherObj', 'barrier']);
  const floor = report.rows.filter((r) => r.impl === 'raw-node-sockets').map((r) => r.name);
  assert.equal(floor, ['pingpong_small_rtt', 'pingpong_1MiB_rtt', 'broadcastObj_last_receiver', 'broadcastObj_1MiB_last_receiver', 'allGatherObj']);
  for (const r of report.rows) {
    assert.ok((r.median_us ?? NaN) > 0 && Number.isFinite(r.median_us), `${r.impl} ${r.name}: median ${r.median_us}`);
    assert.ok((r.samples as number) >= 3, `${r.impl} ${r.name}: ${r.samples} samples`);
  }
  // The summary compares the two: a ratio of medians per case the floor has.
  const ratio = report.summary.find((s) => s.case.name === 'allGatherObj' && s.impl === 'raw-node-sockets')?.ratios?.groupcomm;
  assert.ok(ratio !== undefined && ratio > 0, `allGatherObj groupcomm / raw sockets: ${ratio}`);
  assert.match(out, /groupcomm\/raw-node-sockets/);
});

test.run();
