/**
 * Classes whose instances need I/O before they are usable (a connection, a listener, a
 * handshake with the other ranks) are made by an awaited factory — `TcpStore.create()`,
 * `TcpStoreServer.listen()`, `CpuGroup.create()`, … — because a constructor cannot wait. Their
 * constructors take a token private to their module as the first argument; a `new` from
 * anywhere else (JavaScript does not enforce TypeScript's `private constructor`) throws at once
 * with the line to write instead, rather than building an object whose every method then fails.
 */
import { invalidArgument } from './errors.js';

/** A token only `cls`'s own module holds. */
export function factoryToken(cls: string): symbol {
  return Symbol(`${cls} factory`);
}

/**
 * Throws ERR_GROUPCOMM_INVALID_ARGUMENT unless the constructor got `expected` (from its factory).
 * `instead` is the call to write, e.g. "await TcpStore.create({ host, port })".
 */
export function checkFactory(token: unknown, expected: symbol, cls: string, instead: string, why: string): void {
  if (token === expected) return;
  throw invalidArgument(`new ${cls}() is not supported: ${why}, and a constructor cannot wait. Use \`${instead}\``);
}
