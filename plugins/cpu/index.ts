/**
 * The cpu reference backend. A plugin module exports its DeviceBackendV1 as `backend` (and as
 * the default export); `resolveBackend('cpu')` or GROUPCOMM_DEVICE_PLUGIN=cpu selects it.
 */
import { CpuBackend } from './backend.js';

export { CpuBackend } from './backend.js';
export { CpuCommunicator } from './communicator.js';
export { HostMemory } from './memory.js';
export { BootstrapTransport } from './transport.js';

export const backend = new CpuBackend();
export default backend;
