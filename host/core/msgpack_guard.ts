/**
 * A structural check of untrusted msgpack before msgpackr decodes it (docs/security.md).
 *
 * msgpackr's extension table is module-global and includes types that must not come from a
 * peer: Error (0x65; its name indexes a module-global table: 'valueOf' hands that table out),
 * RegExp (0x78, a live pattern), structured-clone references (0x69, 0x70) and bundled strings
 * (0x62). Instead of changing that global table (other users of msgpackr in the process share
 * it), every value is walked once here, in linear time and without allocating: only the
 * extension types groupcomm writes are accepted, nesting is bounded, a container cannot claim
 * more elements than bytes remain, and a map key "__proto__" (which msgpackr would silently
 * rename) is refused. It throws a plain Error with the reason; callers wrap it.
 */

/** Extension type → how many msgpack values follow its header when written as fixext1 (msgpackr's convention). */
export type ExtensionRule = Map<number, number>;

/** What msgpackr writes for the types groupcomm sends: undefined, Date, BigInt, typed arrays, Set. */
export const BASE_EXTENSIONS: ReadonlyArray<[number, number]> = [
  [0x00, 0], // undefined
  [0xff, 0], // Date (timestamp, type -1)
  [0x42, 0], // BigInt beyond 64 bits
  [0x74, 0], // typed array / ArrayBuffer / DataView (bytes in the payload)
  [0x73, 1], // Set: its items follow as an array
];

const MAX_DEPTH = 512;
const PROTO = [0x5f, 0x5f, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x5f, 0x5f]; // "__proto__"

export function checkMsgpack(b: Uint8Array, allowed: ExtensionRule): void {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const end = b.length;
  let p = 0;
  const need = (n: number) => {
    if (n < 0 || p + n > end) throw new Error(`truncated msgpack at byte ${p}`);
  };
  const isProto = (at: number, n: number) => {
    if (n !== 9) return false;
    for (let i = 0; i < 9; i++) if (b[at + i] !== PROTO[i]) return false;
    return true;
  };
  // Explicit stack of "values still to read" so hostile nesting cannot overflow the JS stack.
  const stack: number[] = [1];
  const mapLevel: boolean[] = [false];
  while (stack.length) {
    const top = stack.length - 1;
    if (stack[top] === 0) {
      stack.pop();
      mapLevel.pop();
      continue;
    }
    stack[top]--;
    // In a map of 2k values, what is left after taking a key is odd.
    const isKey = mapLevel[top] && (stack[top] % 2 === 1);
    need(1);
    const t = b[p++];
    let children = 0;
    let isMap = false;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) {
      // fixint, nil, bool
    } else if (t >= 0x80 && t <= 0x8f) {
      children = 2 * (t & 0x0f);
      isMap = true;
    } else if (t >= 0x90 && t <= 0x9f) {
      children = t & 0x0f;
    } else if (t >= 0xa0 && t <= 0xbf) {
      const n = t & 0x1f;
      need(n);
      if (isKey && isProto(p, n)) throw new Error('map key "__proto__"');
      p += n;
    } else {
      switch (t) {
        case 0xc4: case 0xd9: { need(1); const n = b[p]; p += 1; need(n); if (t === 0xd9 && isKey && isProto(p, n)) throw new Error('map key "__proto__"'); p += n; break; }
        case 0xc5: case 0xda: { need(2); const n = dv.getUint16(p); p += 2; need(n); if (t === 0xda && isKey && isProto(p, n)) throw new Error('map key "__proto__"'); p += n; break; }
        case 0xc6: case 0xdb: { need(4); const n = dv.getUint32(p); p += 4; need(n); p += n; break; }
        case 0xca: need(4); p += 4; break;
        case 0xcb: need(8); p += 8; break;
        case 0xcc: case 0xd0: need(1); p += 1; break;
        case 0xcd: case 0xd1: need(2); p += 2; break;
        case 0xce: case 0xd2: need(4); p += 4; break;
        case 0xcf: case 0xd3: need(8); p += 8; break;
        case 0xdc: need(2); children = dv.getUint16(p); p += 2; break;
        case 0xdd: need(4); children = dv.getUint32(p); p += 4; break;
        case 0xde: need(2); children = 2 * dv.getUint16(p); p += 2; isMap = true; break;
        case 0xdf: need(4); children = 2 * dv.getUint32(p); p += 4; isMap = true; break;
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        case 0xc7: case 0xc8: case 0xc9: {
          let n: number;
          if (t >= 0xd4 && t <= 0xd8) n = 1 << (t - 0xd4);
          else if (t === 0xc7) { need(1); n = b[p]; p += 1; } else if (t === 0xc8) { need(2); n = dv.getUint16(p); p += 2; } else { need(4); n = dv.getUint32(p); p += 4; }
          need(1 + n);
          const type = b[p];
          p += 1 + n;
          const follows = allowed.get(type);
          if (follows === undefined) throw new Error(`msgpack extension type 0x${type.toString(16)} is not accepted`);
          if (t === 0xd4) children = follows;
          break;
        }
        default:
          throw new Error(`invalid msgpack byte 0x${t.toString(16)}`);
      }
    }
    if (children > 0) {
      // Every element takes at least one byte: a count beyond the bytes left is a lie.
      if (children > end - p) throw new Error(`container claims ${children} elements with ${end - p} bytes left`);
      if (stack.length >= MAX_DEPTH) throw new Error(`msgpack nested deeper than ${MAX_DEPTH}`);
      stack.push(children);
      mapLevel.push(isMap);
    }
  }
  if (p !== end) throw new Error(`${end - p} bytes after the msgpack value`);
}
