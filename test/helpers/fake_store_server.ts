/**
 * A scripted groupcomm-like store server, for client tests that need what a real server does
 * not do on cue (answer late, wrongly, or not at all). It answers the basics every client sends
 * — VALIDATE, PING, the extension probe's CHECK (READY), LIMITS — and hands every request to a
 * per-connection script first, which may take it over.
 */
import net from 'node:net';

/**
 * One connection's script, called with the request at `buf[0]`: the bytes it used, 0 to stop
 * reading until more bytes come (a request not all here yet, or a server gone mute), or
 * undefined to leave the request to the basics.
 */
export type Script = (op: number, buf: Buffer, socket: net.Socket) => number | undefined;

export interface ScriptedServer {
  port: number;
  /** Connections accepted so far. */
  connections(): number;
  /** Destroys every connection and stops listening. */
  close(): Promise<void>;
}

/** A u64-length-prefixed list of keys at `b[at]` (u64 count, then each u64 length + bytes), or undefined while incomplete. */
export function keyList(b: Buffer, at: number): { keys: string[]; end: number } | undefined {
  if (b.length < at + 8) return undefined;
  const n = Number(b.readBigUInt64LE(at));
  const keys: string[] = [];
  at += 8;
  for (let j = 0; j < n; j++) {
    if (b.length < at + 8) return undefined;
    const len = Number(b.readBigUInt64LE(at));
    if (b.length < at + 8 + len) return undefined;
    keys.push(b.toString('latin1', at + 8, at + 8 + len));
    at += 8 + len;
  }
  return { keys, end: at };
}

/** A wire string: u64 length, then the bytes. */
export function str(v: string): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(Buffer.byteLength(v)));
  return Buffer.concat([b, Buffer.from(v)]);
}

/** The length of a request made of the opcode and one wire string, once it is all here (else 0). */
export function oneString(buf: Buffer): number {
  const l = buf.length >= 9 ? 9 + Number(buf.readBigUInt64LE(1)) : Infinity;
  return buf.length >= l ? l : 0;
}

/** What the basics answer a request with; the bytes used (0: not all here yet, or not a basic). */
function basics(op: number, buf: Buffer, s: net.Socket): number {
  if (op === 0) return buf.length >= 5 ? 5 : 0; // VALIDATE
  if (op === 13) { // PING: echo the nonce
    if (buf.length < 5) return 0;
    s.write(buf.subarray(1, 5));
    return 5;
  }
  if (op === 5) { // CHECK: only the extension probe is asked of a scripted server
    const l = keyList(buf, 1);
    if (!l) return 0;
    s.write(Buffer.from([0]));
    return l.end;
  }
  if (op === 0xe7) { // LIMITS: maxKeyBytes, maxValueBytes, maxKeysPerRequest, maxRequestBytes
    const b = Buffer.alloc(32);
    [8192, 1 << 20, 1024, 1 << 24].forEach((v, j) => b.writeBigUInt64LE(BigInt(v), 8 * j));
    s.write(b);
    return 1;
  }
  return 0;
}

/**
 * Listens on 127.0.0.1 (a free port). `scriptFor(i)` gives the i-th connection's script, or
 * undefined to leave that connection unanswered (it reads and says nothing).
 */
export async function scriptedServer(scriptFor: (i: number) => Script | undefined): Promise<ScriptedServer> {
  let n = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    const script = scriptFor(n++);
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!script) return;
      while (buf.length > 0) {
        const used = script(buf[0], buf, s) ?? basics(buf[0], buf, s);
        if (!used) return;
        buf = buf.subarray(used);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => n,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
