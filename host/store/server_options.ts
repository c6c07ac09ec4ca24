/** What TcpStoreServer.listen takes (server.ts re-exports it). */
import type net from 'node:net';
import type { Logger } from '../base/log.js';
import type { StoreLimits } from './protocol.js';

export interface TcpStoreServerOptions {
  /** Interface to bind (default 127.0.0.1; torch binds every interface, we do not by default). */
  host?: string;
  /** Port to bind; 0 picks a free one, readable as `.port` afterwards. */
  port?: number;
  /** Number of clients expected to join through the `init/` counter (see waitForWorkers). */
  worldSize?: number;
  limits?: Partial<StoreLimits>;
  /**
   * When set, clients must prove they know it (HMAC handshake) before anything else. Default
   * GROUPCOMM_SECRET. Without one, listening on a non-loopback address is refused unless `insecure`.
   */
  secret?: string | Uint8Array;
  /** Allow a non-loopback `host` without a secret (logged as a warning). Default GROUPCOMM_INSECURE. */
  insecure?: boolean;
  /**
   * Which prefixes SUBSCRIBE may claim. 'mailboxes' (default): only one rank's mailbox
   * (`<namespace>/to/<rank>/`), and only by a groupcomm client (one that sent the extension probe;
   * with a secret, authenticated). 'any': any prefix ending in '/' (tests, trusted setups).
   */
  subscribePrefixes?: 'mailboxes' | 'any';
  /** Close a connection that has not finished the handshake (and authentication) by then. Default GROUPCOMM_STORE_HANDSHAKE_TIMEOUT_MS (10 s). */
  handshakeTimeoutMs?: number;
  /** Connections held at once; more are closed at accept. Default GROUPCOMM_STORE_MAX_CONNECTIONS (4096). */
  maxConnections?: number;
  /** Server-wide bytes held in partially received requests. Default GROUPCOMM_STORE_MAX_BUFFERED_BYTES (1 GiB). */
  maxBufferedBytes?: number;
  logger?: Logger;
  /**
   * A net.Server to serve on instead of binding host:port, e.g. one the caller bound itself to
   * restrict the interface or hold the port (torch's master_listen_fd). Listened on if it is not
   * listening yet; closed by close().
   */
  server?: net.Server;
}
