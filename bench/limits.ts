/**
 * This machine's limits, measured at run time for the floor a bench shows next to its rows
 * (nothing here is a constant from some other machine):
 *   memcpy     64 MiB between two pre-touched buffers in this process, median of 8 copies
 *   loopback   TCP on 127.0.0.1 between two processes of this runtime: 4 MiB writes for
 *              ~0.5 s, bytes received / time on the receiving side
 * About a second in all. The same file is the sending process (role in argv).
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { median } from './report.js';

const SEND_ROLE = '--limits-sender';
const CHUNK = 4 << 20;

export interface Limits {
  memcpy_gbps: number;
  loopback_tcp_gbps: number;
}

export function memcpyGBps(bytes = 64 << 20, reps = 8): number {
  const src = new Uint8Array(bytes).fill(1);
  const dst = new Uint8Array(bytes).fill(2);
  const rates: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    dst.set(src);
    rates.push(bytes / ((performance.now() - t0) / 1000) / 1e9);
    src[i] ^= dst[bytes - 1 - i]; // the copies are used
  }
  return median(rates);
}

export function loopbackGBps(seconds = 0.5, timeoutMs = 20_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((sock) => {
      let total = 0;
      let t0 = 0;
      sock.on('data', (d) => {
        if (!total) t0 = performance.now();
        total += d.length;
      });
      sock.on('end', () => {
        const s = (performance.now() - t0) / 1000;
        server.close();
        resolve(s > 0 ? total / s / 1e9 : NaN);
      });
      sock.on('error', reject);
    });
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      const child = spawn(process.execPath, [fileURLToPath(import.meta.url), SEND_ROLE, String(port), String(seconds)], { stdio: 'ignore' });
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        server.close();
        reject(new Error('loopback measurement timed out'));
      }, timeoutMs);
      child.on('close', () => clearTimeout(timer));
    });
  });
}

/** Both figures; a failed measurement is NaN (printed n/a), never a made-up number. */
export async function measureLimits(): Promise<Limits> {
  const memcpy_gbps = memcpyGBps();
  const loopback_tcp_gbps = await loopbackGBps().catch(() => NaN);
  return { memcpy_gbps, loopback_tcp_gbps };
}

function sender(port: number, seconds: number): void {
  const sock = net.connect(port, '127.0.0.1');
  const buf = Buffer.alloc(CHUNK, 7);
  const end = performance.now() + seconds * 1000;
  const pump = () => {
    while (performance.now() < end) if (!sock.write(buf)) return void sock.once('drain', pump);
    sock.end();
  };
  sock.on('connect', pump);
}

const i = process.argv.indexOf(SEND_ROLE);
if (i >= 0) sender(Number(process.argv[i + 1]), Number(process.argv[i + 2]));
