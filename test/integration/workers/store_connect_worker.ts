// One store client of store_connect_netns.test.ts, started inside a node's namespace: connects
// to argv[2]:argv[3] with timeoutMs argv[4] and prints one JSON line — how the connect ended
// (code, the last try's errno as cause, the message, the time it took).
import { TcpStore } from '../../../host/store/client.js';

const [host, port, timeoutMs] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const t0 = performance.now();
try {
  const s = await TcpStore.create({ host, port, timeoutMs });
  await s.close();
  console.log(JSON.stringify({ code: 'connected', elapsedMs: performance.now() - t0 }));
} catch (e) {
  const err = e as Error & { code?: string; cause?: { code?: string } };
  console.log(JSON.stringify({ code: err.code, cause: err.cause?.code, message: err.message, elapsedMs: performance.now() - t0 }));
}
