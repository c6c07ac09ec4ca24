// The link tests' cases (cpu_tcp_link, cpu_shm_link): each case closes what it opened — sockets,
// servers, segments — passed or failed, and fails in 5 s instead of hanging on a write that
// never completes (a failure must not hang the file).
import { test } from 'uvu';
import net from 'node:net';

/** Something a case opened; closed (sockets destroyed) after the case. */
type Closable = net.Socket | { close(): unknown };

/** What the running case opened. */
export const opened: Closable[] = [];

/** Registers a case (skipped, and counted as skipped, unless `enabled`). */
export function linkCase(enabled = true): (name: string, fn: () => Promise<void>) => void {
  return (name, fn) => (enabled ? test : test.skip)(name, async () => {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([fn(), new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('case did not finish within 5 s')), 5000); })]);
    } finally {
      clearTimeout(timer);
      for (const o of opened.splice(0)) {
        if (o instanceof net.Socket) o.destroy();
        else o.close();
      }
    }
  });
}

/** A loopback pair: the accepted socket (the link's) and the dialer at the other end (the peer, which reads). */
export async function socketPair(peerHalfOpen = false): Promise<{ mine: net.Socket; peer: net.Socket }> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const peer = net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: peerHalfOpen });
  peer.on('error', () => {});
  const mine = await accepted;
  opened.push(mine, peer);
  srv.close();
  return { mine, peer };
}
