/**
 * Rank 1 of a 2-rank CPU group that the test SIGKILLs during setup, once its address key is in
 * the store (argv: STORE_PORT GROUP_NAME). Rank 0 has not started yet, so the key is left behind.
 */
import { CpuGroup } from '../../../host/cpu/group.js';
import { TcpStore } from '../../../host/store/client.js';

const [port, groupName] = process.argv.slice(2);
const store = await TcpStore.create({ host: '127.0.0.1', port: Number(port), timeoutMs: 30_000 });
await CpuGroup.create({ store, rank: 1, worldSize: 2, groupName, timeoutMs: 30_000 });
