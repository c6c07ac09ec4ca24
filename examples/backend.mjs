// Choosing a device backend. Run: node examples/backend.mjs
import { resolveBackend } from 'groupcomm';

const backend = await resolveBackend('cpu');       // or 'cuda', or a package name or path
console.log(`${backend.name}: device type ${backend.deviceType}, ${await backend.deviceCount()} device(s)`);
