// Several groups over the same processes: overlapping groups with traffic on both at once
// (vLLM's pattern of several parallel groups per process), many small groups created while another serves, and destroy then
// re-create on the same explicit ports.
import { test } from 'uvu';
import { assertClean, coordScenario } from '../helpers/scenarios.js';
import { reservePort } from '../../host/coordinator/ports.js';


test('overlapping groups A = [0..3] and B = [0..2] serve at the same time', async () => {
  assertClean(await coordScenario(4, 'overlapping'), 60);
});

test('a group per pair of ranks is created while the world group serves', async () => {
  assertClean(await coordScenario(4, 'many'), 10);
});

test('destroy then re-create on the same explicit ports, three times', async () => {
  // Explicit ports are the caller's choice; the test picks free ones (the window between this
  // probe and the group's bind is the caller-side race the rendezvous scheme avoids).
  const r = await Promise.all([reservePort('127.0.0.1'), reservePort('127.0.0.1'), reservePort('127.0.0.1')]);
  const ports = r.map((x) => x.port);
  await Promise.all(r.map((x) => x.release()));
  assertClean(await coordScenario(3, 'recreate', { env: { COORD_PORTS: JSON.stringify(ports) } }), 12);
});

test.run();
