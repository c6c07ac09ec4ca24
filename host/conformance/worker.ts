/**
 * One rank of the conformance suite, in its own process (started by ./spawn.ts): resolves the
 * plugin, runs every case through the store at 127.0.0.1:port, and prints one result line,
 * `{ verdicts }`, or `{ unavailable }` when the plugin does not probe as available here.
 * Its arguments are one JSON object (WorkerArgs), so no environment variable is involved.
 */
import { ErrorCode, isGroupcommError } from '../base/errors.js';
import { resolveBackend } from '../device/registry.js';
import { TcpStore } from '../store/index.js';
import { runRank } from './run.js';
import { RESULT_TAG, type WorkerArgs, type WorkerResult } from './spawn.js';

const args = JSON.parse(process.argv[2] ?? '{}') as WorkerArgs;
const report = (r: WorkerResult) => process.stdout.write(RESULT_TAG + JSON.stringify(r) + '\n');

let backend;
try {
  backend = await resolveBackend(args.plugin);
} catch (e) {
  if (!isGroupcommError(e, ErrorCode.PLUGIN_UNAVAILABLE)) throw e;
  report({ unavailable: (e as Error).message });
  process.exit(0);
}
const store = await TcpStore.create({ host: '127.0.0.1', port: args.storePort, timeoutMs: args.timeoutMs });
// Each rank drives its own device where the backend cannot share one (NCCL: one rank per GPU).
const deviceIndex = backend.capabilities.sharedDevice ? 0 : args.rank;
const verdicts = await runRank({
  backend, rank: args.rank, worldSize: args.worldSize, deviceIndex, store,
  prefix: args.prefix, timeoutMs: args.timeoutMs, bareBootstrap: args.bareBootstrap,
});
await store.close();
report({ verdicts });
