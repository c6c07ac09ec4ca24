// A peer for liveness.test.ts. Modes (argv[2]):
//   store <port>  nothing but a store server on 127.0.0.1:<port>; prints "ready"
//   rank <port>   rank 1 of a 2-rank CPU group whose store is on <port>; allReduces until killed
import { TcpStore, TcpStoreServer } from '../../../host/store/index.js';
import { CpuGroup } from '../../../host/cpu/group.js';
import { tensor } from '../../../host/core/tensor.js';

const [mode, port] = [process.argv[2], Number(process.argv[3])];
if (mode === 'store') {
  await TcpStoreServer.listen({ host: '127.0.0.1', port });
  console.log('ready');
  setInterval(() => {}, 1 << 30);
} else {
  const store = await TcpStore.create({ host: '127.0.0.1', port, timeoutMs: 30_000 });
  const g = await CpuGroup.create({ store, rank: 1, worldSize: 2, groupName: 'live', transport: 'tcp', timeoutMs: 120_000 });
  console.log('ready');
  for (;;) await g.allReduce(tensor(new Float32Array(256).fill(1)));
}
