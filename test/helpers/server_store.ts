// A TcpStore hosting its server in this process for the length of one test body, closed after it
// whether the body passed or threw (shared by the process-group unit tests).
import { TcpStore } from '../../host/index.js';

export async function withStore(fn: (s: TcpStore) => Promise<void>): Promise<void> {
  const s = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 5000 });
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}
