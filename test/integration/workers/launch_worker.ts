// A script for `groupcomm launch` tests. Modes (argv[2]):
//   env     print the launch environment, meet the other ranks in the launcher's store
//   fail    rank 1 exits with code 3, the others wait to be stopped
//   signal  print "ready", then wait; print the signal that arrives and exit 0
//   coord   form a StatelessGroupCoordinator through the launcher's store and allReduce
import { TcpStore } from '../../../host/store/index.js';
import { StatelessGroupCoordinator } from '../../../host/coordinator/coordinator.js';
import { tensor } from '../../../host/core/tensor.js';

const mode = process.argv[2];
const e = process.env;
const rank = Number(e.RANK);
const worldSize = Number(e.WORLD_SIZE);
const extra = process.argv.slice(3);

if (mode === 'env') {
  console.log(`env RANK=${e.RANK} LOCAL_RANK=${e.LOCAL_RANK} WORLD_SIZE=${e.WORLD_SIZE} LOCAL_WORLD_SIZE=${e.LOCAL_WORLD_SIZE} ` +
    `MASTER_ADDR=${e.MASTER_ADDR} MASTER_PORT=${e.MASTER_PORT} BACKEND=${e.GROUPCOMM_DEVICE_PLUGIN} args=${extra.join(',')} ` +
    `GROUP_RANK=${e.GROUP_RANK} GROUP_WORLD_SIZE=${e.GROUP_WORLD_SIZE} RUN_ID=${e.GROUPCOMM_RUN_ID} TE_RUN_ID=${e.TORCHELASTIC_RUN_ID}`);
  process.stdout.write('no newline at the end');
  const store = await TcpStore.create({ host: e.MASTER_ADDR, port: Number(e.MASTER_PORT), timeoutMs: 20_000 });
  await store.add('joined', 1);
  await store.set(`rank/${rank}`, 'here');
  await store.wait([...Array(worldSize).keys()].map((r) => `rank/${r}`));
  await store.close();
} else if (mode === 'fail') {
  // Rank 1 (or argv[3]) fails once every other rank is ready to report the SIGTERM it will get.
  const failing = Number(extra[0] ?? 1);
  const store = await TcpStore.create({ host: e.MASTER_ADDR, port: Number(e.MASTER_PORT), timeoutMs: 20_000 });
  if (rank === failing) {
    await store.wait([...Array(worldSize).keys()].filter((r) => r !== failing).map((r) => `ready/${r}`));
    console.log('some ordinary output first');
    console.error(`note: about to fail\nError: rank ${rank} fails on purpose`);
    process.exit(3);
  } else {
    process.on('SIGTERM', () => { console.log('stopped by SIGTERM'); process.exit(0); });
    await store.set(`ready/${rank}`, '1');
    setInterval(() => {}, 1000);
  }
} else if (mode === 'sleep') {
  // Print "ready", then exit 0 after argv[3] ms if on node argv[4], at once otherwise.
  console.log('ready');
  if (e.GROUP_RANK === extra[1]) await new Promise((r) => setTimeout(r, Number(extra[0])));
} else if (mode === 'signal') {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => { console.log(`got ${sig}`); process.exit(0); });
  }
  console.log('ready');
  setInterval(() => {}, 1000);
} else if (mode === 'coord') {
  const store = await TcpStore.create({ host: e.MASTER_ADDR, port: Number(e.MASTER_PORT), timeoutMs: 20_000 });
  const g = await StatelessGroupCoordinator.create({
    groupRanks: [[...Array(worldSize).keys()]], globalRank: rank, localRank: Number(e.LOCAL_RANK),
    groupName: 'launched', rendezvous: store, timeoutMs: 20_000,
  });
  const s = await g.allReduce(tensor(new Int32Array([rank + 1])));
  console.log(`sum=${(s.data as Int32Array)[0]}`);
  await g.destroy();
  await store.close();
}
