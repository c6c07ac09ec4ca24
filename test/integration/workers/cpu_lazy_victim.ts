/**
 * The last rank of a CPU group whose other ranks live in the test process (argv: STORE_PORT
 * GROUP_NAME WORLD_SIZE). It joins, says `@@JOINED`, then waits to be SIGKILLed: a rank that
 * dies without closing (its address key stays in the store).
 */
import { CpuGroup } from '../../../host/cpu/group.js';
import { TcpStore } from '../../../host/store/client.js';

const [port, groupName, world] = process.argv.slice(2);
const worldSize = Number(world);
const store = await TcpStore.create({ host: '127.0.0.1', port: Number(port), timeoutMs: 30_000 });
await CpuGroup.create({ store, rank: worldSize - 1, worldSize, groupName, timeoutMs: 30_000, transport: 'tcp' });
process.stdout.write('@@JOINED\n');
setInterval(() => {}, 1000);
