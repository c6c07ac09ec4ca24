/**
 * `groupcomm store`: a standalone TCPStore-compatible server in the foreground. PyTorch processes
 * can use it too (TCPStore(host, port, is_master=False)). Stops cleanly on SIGINT/SIGTERM.
 */
import { parseArgs } from 'node:util';
import { TcpStoreServer } from '../store/server.js';
import { setting } from '../base/config.js';

const HELP = `usage: groupcomm store [--host H] [--port P] [--world-size N] [options]

Runs a TCPStore-compatible key-value server until SIGINT/SIGTERM.

Address:
  --host H             interface to bind (default 127.0.0.1; 0.0.0.0 for every interface)
  --port P             port to bind (default 29500; 0 picks a free one, printed at start)

Workers:
  --world-size N       report when N clients have joined the init/ counter
  --timeout-ms MS      give up waiting for them after MS (default 300000)

Limits (a request over a limit closes that client's connection):
  --max-key-bytes B    default 8192
  --max-value-bytes B  default 67108864
  --max-keys N         keys per request, default 131072
  --max-request-bytes B  one whole request, default 268435456 (or 2 x max value + 1 MiB)

Security (docs/security.md):
  Set GROUPCOMM_STORE_SECRET (or GROUPCOMM_SECRET) to require groupcomm's shared-secret
  handshake (torch clients cannot connect then). A --host other than loopback needs a secret.
  --insecure           allow a non-loopback --host without a secret (warned)
  The store has no encryption: keep it on a trusted network.

Logs: GROUPCOMM_DEBUG=warn|info|debug|trace (stderr).`;

function int(name: string, v: string | undefined, dflt?: number): number | undefined {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw Object.assign(new Error(`--${name} needs a non-negative integer, got '${v}'`), { usage: true });
  return n;
}

export async function run(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'string', default: '29500' },
        'world-size': { type: 'string' },
        'timeout-ms': { type: 'string' },
        'max-key-bytes': { type: 'string' },
        'max-value-bytes': { type: 'string' },
        'max-keys': { type: 'string' },
        'max-request-bytes': { type: 'string' },
        insecure: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (e) {
    console.error(`groupcomm store: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  let port: number, worldSize: number | undefined, timeoutMs: number;
  const limits: Record<string, number> = {};
  try {
    port = int('port', values.port)!;
    worldSize = int('world-size', values['world-size']);
    timeoutMs = int('timeout-ms', values['timeout-ms'], 300_000)!;
    const lk = int('max-key-bytes', values['max-key-bytes']);
    const lv = int('max-value-bytes', values['max-value-bytes']);
    const ln = int('max-keys', values['max-keys']);
    if (lk !== undefined) limits.maxKeyBytes = lk;
    if (lv !== undefined) limits.maxValueBytes = lv;
    if (ln !== undefined) limits.maxKeysPerRequest = ln;
    const lr = int('max-request-bytes', values['max-request-bytes']);
    if (lr !== undefined) limits.maxRequestBytes = lr;
  } catch (e) {
    console.error(`groupcomm store: ${(e as Error).message}`);
    return 2;
  }
  let server: TcpStoreServer;
  try {
    server = await TcpStoreServer.listen({
      host: values.host, port, worldSize, limits, secret: setting('GROUPCOMM_STORE_SECRET') ?? setting('GROUPCOMM_SECRET'),
      insecure: values.insecure === true ? true : undefined,
    });
  } catch (e) {
    console.error(`groupcomm store: ${(e as Error).message}`);
    return 2;
  }
  console.log(`groupcomm store listening on ${server.host}:${server.port}`);
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  const stop = new AbortController();
  if (worldSize !== undefined) {
    server.waitForWorkers({ worldSize, timeoutMs, signal: stop.signal }).then(
      () => console.log(`groupcomm store: all ${worldSize} clients joined`),
      (e) => { if (!stop.signal.aborted) console.error(`groupcomm store: ${(e as Error).message}`); },
    );
  }
  const sig = await stopped;
  stop.abort();
  await server.close();
  console.log(`groupcomm store stopped (${sig})`);
  return 0;
}
