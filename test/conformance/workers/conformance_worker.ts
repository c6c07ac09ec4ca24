// One rank of the conformance suite: resolves the plugin named by GC_PLUGIN, runs every case
// through the TcpStoreServer at GC_STORE_PORT, and reports { verdicts } (or { unavailable }).
import { resolveBackend } from '../../../host/device/registry.js';
import { isGroupcommError, ErrorCode } from '../../../host/base/errors.js';
import { rankEnv, reportResult } from '../../helpers/ranks.js';
import { runConformance } from '../suite.js';
import { TcpStore } from '../../../host/store/index.js';

const { rank, worldSize } = rankEnv();
let backend;
try {
  backend = await resolveBackend(process.env.GC_PLUGIN);
} catch (e) {
  if (!isGroupcommError(e, ErrorCode.PLUGIN_UNAVAILABLE)) throw e;
  reportResult({ unavailable: (e as Error).message });
  process.exit(0);
}
const store = await TcpStore.create({ host: '127.0.0.1', port: Number(process.env.GC_STORE_PORT) });
// Each rank drives its own device where the backend cannot share one (NCCL: one rank per GPU).
const deviceIndex = backend.capabilities.sharedDevice ? 0 : rank;
const verdicts = await runConformance({
  backend, rank, worldSize, deviceIndex, store,
  prefix: process.env.GC_PREFIX ?? `conformance-${worldSize}`,
  timeoutMs: Number(process.env.GC_TIMEOUT_MS ?? 30_000),
  bareBootstrap: process.env.GC_BARE_BOOTSTRAP === '1',
});
await store.close();
reportResult({ verdicts });
