// The core's exports, nothing else. Each module owns its own section.
export * from './dtype';
export * from './mem';
export * from './frame';
export * from './layout';
export * from './reduce';
