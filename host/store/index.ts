// The store layer's public names (host/index.ts re-exports them by name).
export { TcpStore } from './client.js';
export type { TcpStoreOptions } from './client.js';
export { TcpStoreServer } from './server.js';
export type { TcpStoreServerOptions } from './server.js';
export { PrefixStore } from './prefix.js';
export { DEFAULT_LIMITS } from './protocol.js';
export type { StoreLimits } from './protocol.js';
