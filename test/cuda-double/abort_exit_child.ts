// Child of defects.test.ts: creates a communicator on the test double (whose ncclCommAbort is
// made slow by GCDOUBLE_ABORT_DELAY_MS in this process's environment), closes it, and ends. The
// parent checks that the process exits without waiting for that abort.
import { storeBootstrap } from '../../host/device/bootstrap.js';
import { CudaBackend } from '../../plugins/cuda/index.js';
import { MemStoreServer } from '../helpers/memstore.js';

const backend = new CudaBackend();
const store = new MemStoreServer();
const comm = await backend.createCommunicator({
  rank: 0, worldSize: 1, deviceIndex: 0, timeoutMs: 20_000,
  bootstrap: storeBootstrap(store.client(), { rank: 0, worldSize: 1, prefix: 'exit' }),
});
await comm.close();
console.log('closed');
