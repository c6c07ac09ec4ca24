// Raw-socket helpers for the store's byte-level tests (not a test file itself).
import net from 'node:net';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '../../host/index.js';

/** Runs `fn` against a fresh server on a free port, closed afterwards whether `fn` passed or not. */
export async function withServer(fn: (server: TcpStoreServer) => Promise<void>, opts: Parameters<typeof TcpStoreServer.listen>[0] = {}): Promise<void> {
  const server = await TcpStoreServer.listen({ port: 0, ...opts });
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

/** Sends a PING and checks that its echo is the very next thing on the wire. */
export async function sync(r: Raw, nonce = 0x0a0b0c0d): Promise<void> {
  r.write(ping(nonce));
  assert.ok((await r.read(4)).equals(ping(nonce).subarray(1)), 'the PING echo came next');
}

export function le64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(n)));
  return b;
}

export function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  return Buffer.concat([le64(b.length), b]);
}

export function keys(...ks: string[]): Buffer {
  return Buffer.concat([le64(ks.length), ...ks.map((k) => str(k))]);
}

export const VALIDATE = Buffer.from([0x00, 0xce, 0xf7, 0x85, 0x3c]);

export function ping(nonce: number): Buffer {
  const b = Buffer.alloc(5);
  b[0] = 13;
  b.writeUInt32LE(nonce, 1);
  return b;
}

/** A socket that reads exact byte counts and notices when the peer closes. */
export class Raw {
  private buf = Buffer.alloc(0);
  private wake?: () => void;
  closed = false;
  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.wake?.(); });
    socket.on('close', () => { this.closed = true; this.wake?.(); });
    socket.on('error', () => {});
  }

  static connect(port: number, host = '127.0.0.1'): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host }, () => resolve(new Raw(s)));
      s.once('error', reject);
    });
  }

  write(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  /** Exactly n bytes, or throws when the peer closed first or nothing came within timeoutMs. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const t0 = Date.now();
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`peer closed with ${this.buf.length}/${n} bytes read`);
      const left = timeoutMs - (Date.now() - t0);
      if (left <= 0) throw new Error(`timed out with ${this.buf.length}/${n} bytes read`);
      await new Promise<void>((r) => { this.wake = r; setTimeout(r, Math.min(left, 100)); });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  /** Resolves true once the peer has closed the connection (false after timeoutMs). */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const t0 = Date.now();
    while (!this.closed && Date.now() - t0 < timeoutMs) {
      await new Promise<void>((r) => { this.wake = r; setTimeout(r, 50); });
    }
    return this.closed;
  }

  /** Bytes received and not read yet. */
  get pending(): number {
    return this.buf.length;
  }

  close(): void {
    this.socket.destroy();
  }
}

export { prng as rng } from '../helpers/prng.js';
