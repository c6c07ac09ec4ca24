// Tensor-dict metadata frames: encode, decode, validate. docs/wire-format.md is the byte-by-byte
// description; this file is its executable form. Version 1.
//
// Decoding treats its input as hostile. Every load is preceded by a bounds check against the
// input's end, every size is computed in u64 with an explicit limit, and every failure returns a
// distinct error code (FRAME_ERR_*) instead of trapping: a trap would leave the host with a
// RuntimeError and no idea which byte was wrong.
//
// The host and the core exchange fixed-size records in core memory (no managed arrays):
//   encode: the host writes one FRAME_SPEC_BYTES spec per entry, pointing at key / device-type /
//           blob bytes and f64 dims it wrote into its scratch region; the core writes the frame's
//           metadata part into its own output buffer and the payload offsets back into the specs.
//   decode: the host copies the frame in; the core writes one FRAME_RECORD_BYTES record per entry
//           into its own table (offsets are relative to the frame start).
import { dtypeItemSize, DTYPE_COUNT } from './dtype';

// ---- format constants ------------------------------------------------------------------------
/** The bytes 'G' 'C' 'T' 'D' read as a little-endian u32. */
export const FRAME_MAGIC: u32 = 0x44544347;
export const FRAME_VERSION: i32 = 1;
export const FRAME_HEADER_BYTES: i32 = 12;
export const FRAME_KIND_TENSOR: i32 = 0;
export const FRAME_KIND_VALUE: i32 = 1;
/** Tensor flag bit 0: the CPU tensor's bytes are in the frame's payload section. */
export const FRAME_FLAG_INLINE: i32 = 1;
/** Inline payloads start at multiples of this, counted from the frame's first byte. */
export const FRAME_PAYLOAD_ALIGN: i32 = 8;

// ---- limits ------------------------------------------------------------------------------------
export const FRAME_MAX_NDIM: i32 = 16;
export const FRAME_MAX_ENTRIES: i32 = 1 << 20;
export const FRAME_MAX_KEY_BYTES: i32 = 0xffff;
export const FRAME_MAX_DEVICE_TYPE_BYTES: i32 = 16;
export const FRAME_MAX_DEVICE_INDEX: i32 = 0xffff;
/** Largest dim and largest tensor byte size: 2^53 - 1, so both stay exact as JS numbers. */
export const FRAME_MAX_DIM: f64 = 9007199254740991;
export const FRAME_MAX_TENSOR_BYTES: f64 = 9007199254740991;
/** Largest whole frame (metadata + inline payloads); offsets in the decode table are u32. */
export const FRAME_MAX_FRAME_BYTES: f64 = 2147483647;
const MAX_DIM: u64 = <u64>FRAME_MAX_DIM;
const MAX_BYTES: u64 = <u64>FRAME_MAX_TENSOR_BYTES;
const MAX_FRAME: u64 = <u64>FRAME_MAX_FRAME_BYTES;
// Smallest possible entry (a value with an empty key and an empty blob): kind + key len + blob len.
const MIN_ENTRY_BYTES: u32 = 7;

// ---- error codes (never reused; a new check gets a new number) --------------------------------
export const FRAME_OK: i32 = 0;
export const FRAME_ERR_TRUNCATED: i32 = 1;
export const FRAME_ERR_BAD_MAGIC: i32 = 2;
export const FRAME_ERR_BAD_VERSION: i32 = 3;
export const FRAME_ERR_BAD_FLAGS: i32 = 4;
export const FRAME_ERR_TOO_MANY_ENTRIES: i32 = 5;
export const FRAME_ERR_BAD_KIND: i32 = 6;
export const FRAME_ERR_BAD_UTF8: i32 = 7;
export const FRAME_ERR_DUPLICATE_KEY: i32 = 8;
export const FRAME_ERR_BAD_DTYPE: i32 = 9;
export const FRAME_ERR_BAD_DEVICE: i32 = 10;
export const FRAME_ERR_NDIM_LIMIT: i32 = 11;
export const FRAME_ERR_DIM_TOO_LARGE: i32 = 12;
export const FRAME_ERR_SIZE_OVERFLOW: i32 = 13;
export const FRAME_ERR_NBYTES_MISMATCH: i32 = 14;
export const FRAME_ERR_INLINE_NOT_CPU: i32 = 15;
export const FRAME_ERR_PAYLOAD_OUT_OF_BOUNDS: i32 = 16;
export const FRAME_ERR_BAD_PADDING: i32 = 17;
export const FRAME_ERR_TRAILING_BYTES: i32 = 18;
export const FRAME_ERR_KEY_TOO_LONG: i32 = 19;
export const FRAME_ERR_FRAME_TOO_LARGE: i32 = 20;
/** Reserved here, raised by the host: a value blob is not valid msgpack (the core never looks). */
export const FRAME_ERR_BAD_VALUE: i32 = 21;

// ---- host <-> core records ---------------------------------------------------------------------
// Spec (host -> core, encode), 48 bytes:
//   0 kind u8 | 1 dtype u8 | 2 ndim u8 | 3 flags u8 | 4 keyPtr u32 | 8 keyLen u32
//   12 devTypePtr u32 | 16 devTypeLen u32 | 20 devIndex u32 | 24 dimsPtr (f64[ndim]) or blobPtr u32
//   28 blobLen u32 | 32 nbytes f64 | 40 payloadOffset u32 (written by the core) | 44 unused
export const FRAME_SPEC_BYTES: i32 = 48;
// Record (core -> host, decode), 48 bytes; offsets are from the frame's first byte:
//   0 keyOff u32 | 4 keyLen u32 | 8 kind u8 | 9 dtype u8 | 10 ndim u8 | 11 flags u8
//   12 devIndex u32 | 16 devTypeOff u32 | 20 devTypeLen u32 | 24 dimsOff or blobOff u32
//   28 blobLen u32 | 32 nbytes f64 | 40 payloadOff u32 | 44 unused
export const FRAME_RECORD_BYTES: i32 = 48;

// ---- state -------------------------------------------------------------------------------------
// Grow-only work areas owned by the core, so that steady-state calls allocate nothing.
let table: usize = 0;    // decode records
let tableCap: usize = 0;
let keys: usize = 0;     // per entry: key ptr u32, key len u32, key hash u32 (for the duplicate check)
let order: usize = 0;    // two u32 index arrays for the merge sort
let keysCap: usize = 0;  // entries that `keys` and `order` can hold
let out: usize = 0;      // encode output (metadata part only)
let outCap: usize = 0;
let errOffset: i32 = 0;
let errEntry: i32 = -1;
let totalLength: f64 = 0;

// The old contents are never needed again, so free + alloc instead of realloc (no copy).
function grow(ptr: usize, need: usize): usize {
  if (ptr) heap.free(ptr);
  return heap.alloc(need);
}

function ensureTable(n: usize): void {
  const need = n * <usize>FRAME_RECORD_BYTES;
  if (need > tableCap) {
    const cap = max(need, max(tableCap << 1, <usize>1024));
    table = grow(table, cap);
    tableCap = cap;
  }
}

function ensureKeys(n: usize): void {
  if (n > keysCap) {
    const cap = max(n, max(keysCap << 1, <usize>64));
    keys = grow(keys, cap * 12);
    order = grow(order, cap * 8);
    keysCap = cap;
  }
}

function ensureOut(n: usize): void {
  if (n > outCap) {
    const cap = max(n, max(outCap << 1, <usize>1024));
    out = grow(out, cap);
    outCap = cap;
  }
}

/** Byte offset (from the frame start) where the last decode failed, or where the entry began. */
export function frameErrorOffset(): i32 { return errOffset; }
/** Entry index of the last failure, or -1 when it was not inside an entry (header, trailer). */
export function frameErrorEntry(): i32 { return errEntry; }
/** Decode: address of the record table. Encode: address of the metadata bytes. */
export function frameTablePtr(): usize { return table; }
export function frameOutPtr(): usize { return out; }
/** Encode: the whole frame's length, metadata plus inline payloads. */
export function frameTotalLength(): f64 { return totalLength; }

// ---- shared validation -------------------------------------------------------------------------

/** 1 when [p, p+n) is well-formed UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF). */
function utf8Valid(p: usize, n: usize): i32 {
  const end = p + n;
  while (p < end) {
    const b0 = <u32>load<u8>(p);
    if (b0 < 0x80) { p++; continue; }
    let need: usize;
    let lo: u32 = 0x80;
    let hi: u32 = 0xbf;
    if (b0 >= 0xc2 && b0 <= 0xdf) need = 1;
    else if (b0 >= 0xe0 && b0 <= 0xef) {
      need = 2;
      if (b0 == 0xe0) lo = 0xa0;      // overlong 3-byte forms
      else if (b0 == 0xed) hi = 0x9f; // UTF-16 surrogates
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      need = 3;
      if (b0 == 0xf0) lo = 0x90;      // overlong 4-byte forms
      else if (b0 == 0xf4) hi = 0x8f; // above U+10FFFF
    } else return 0;                  // continuation byte, 0xc0/0xc1 or 0xf5..0xff
    if (end - p - 1 < need) return 0; // truncated sequence
    const b1 = <u32>load<u8>(p + 1);
    if (b1 < lo || b1 > hi) return 0;
    for (let k: usize = 2; k <= need; k++) {
      const b = <u32>load<u8>(p + k);
      if ((b & 0xc0) != 0x80) return 0;
    }
    p += need + 1;
  }
  return 1;
}

/** 1 when the device type is 1..16 bytes of [a-z][a-z0-9_]*. */
function deviceTypeValid(p: usize, n: u32): bool {
  if (n == 0 || n > <u32>FRAME_MAX_DEVICE_TYPE_BYTES) return false;
  for (let k: u32 = 0; k < n; k++) {
    const c = <u32>load<u8>(p + k);
    const lower = c >= 0x61 && c <= 0x7a;
    if (k == 0 ? !lower : !(lower || (c >= 0x30 && c <= 0x39) || c == 0x5f)) return false;
  }
  return true;
}

function isCpu(p: usize, n: u32): bool {
  return n == 3 && load<u8>(p) == 0x63 && load<u8>(p + 1) == 0x70 && load<u8>(p + 2) == 0x75;
}

function fnv1a(p: usize, n: u32): u32 {
  let h: u32 = 0x811c9dc5;
  for (let k: u32 = 0; k < n; k++) h = (h ^ <u32>load<u8>(p + k)) * 0x01000193;
  return h;
}

// Orders entries by (hash, length, bytes); equal keys are then neighbours.
function keyCompare(a: u32, b: u32): i32 {
  const ka = keys + (<usize>a) * 12;
  const kb = keys + (<usize>b) * 12;
  const ha = load<u32>(ka, 8), hb = load<u32>(kb, 8);
  if (ha != hb) return ha < hb ? -1 : 1;
  const la = load<u32>(ka, 4), lb = load<u32>(kb, 4);
  if (la != lb) return la < lb ? -1 : 1;
  const pa = <usize>load<u32>(ka), pb = <usize>load<u32>(kb);
  return memory.compare(pa, pb, la);
}

/**
 * Index of an entry whose key equals an earlier entry's key, or -1. Keys are in `keys` (filled
 * by the caller for n entries). A merge sort keeps the worst case at O(n log n) comparisons, so
 * a frame full of colliding hashes cannot make the check quadratic.
 */
function findDuplicate(n: u32): i32 {
  if (n < 2) return -1;
  let src = order;
  let dst = order + (<usize>keysCap) * 4;
  for (let i: u32 = 0; i < n; i++) store<u32>(src + (<usize>i) * 4, i);
  for (let width: u32 = 1; width < n; width <<= 1) {
    for (let lo: u32 = 0; lo < n; lo += width << 1) {
      const mid = min(lo + width, n);
      const hi = min(lo + (width << 1), n);
      let i = lo, j = mid, k = lo;
      while (i < mid && j < hi) {
        const a = load<u32>(src + (<usize>i) * 4);
        const b = load<u32>(src + (<usize>j) * 4);
        if (keyCompare(a, b) <= 0) { store<u32>(dst + (<usize>k) * 4, a); i++; }
        else { store<u32>(dst + (<usize>k) * 4, b); j++; }
        k++;
      }
      while (i < mid) { store<u32>(dst + (<usize>k) * 4, load<u32>(src + (<usize>i) * 4)); i++; k++; }
      while (j < hi) { store<u32>(dst + (<usize>k) * 4, load<u32>(src + (<usize>j) * 4)); j++; k++; }
    }
    const t = src; src = dst; dst = t;
  }
  for (let i: u32 = 1; i < n; i++) {
    const a = load<u32>(src + (<usize>(i - 1)) * 4);
    const b = load<u32>(src + (<usize>i) * 4);
    if (keyCompare(a, b) == 0) return <i32>max(a, b);
  }
  return -1;
}

function setKey(i: u32, p: usize, n: u32): void {
  const k = keys + (<usize>i) * 12;
  store<u32>(k, <u32>p);
  store<u32>(k, n, 4);
  store<u32>(k, fnv1a(p, n), 8);
}

function fail(code: i32, offset: usize): i32 {
  errOffset = <i32>offset;
  return -code;
}

// ---- decode ------------------------------------------------------------------------------------

/**
 * Validates and decodes the frame at [base, base+len). Returns the entry count (records are at
 * frameTablePtr()) or -FRAME_ERR_*; frameErrorOffset()/frameErrorEntry() then say where.
 * Checks run in stream order: header, then each entry field by field, then duplicate keys, then
 * the payload section, then trailing bytes; the first failure wins.
 */
export function frameDecode(base: usize, len: u32): i32 {
  errEntry = -1;
  errOffset = 0;
  const end = base + <usize>len;
  if (len < 4) return fail(FRAME_ERR_TRUNCATED, len);
  if (load<u32>(base) != FRAME_MAGIC) return fail(FRAME_ERR_BAD_MAGIC, 0);
  if (len < 6) return fail(FRAME_ERR_TRUNCATED, len);
  if (<i32>load<u16>(base, 4) != FRAME_VERSION) return fail(FRAME_ERR_BAD_VERSION, 4);
  if (len < <u32>FRAME_HEADER_BYTES) return fail(FRAME_ERR_TRUNCATED, len);
  if (load<u16>(base, 6) != 0) return fail(FRAME_ERR_BAD_FLAGS, 6);
  const count = load<u32>(base, 8);
  if (count > <u32>FRAME_MAX_ENTRIES) return fail(FRAME_ERR_TOO_MANY_ENTRIES, 8);
  // Reject impossible counts before sizing the table from them.
  if (count > (len - <u32>FRAME_HEADER_BYTES) / MIN_ENTRY_BYTES) return fail(FRAME_ERR_TRUNCATED, len);
  ensureTable(count);
  ensureKeys(count);

  let p = base + <usize>FRAME_HEADER_BYTES;
  let anyInline = false;
  for (let i: u32 = 0; i < count; i++) {
    errEntry = <i32>i;
    const rec = table + (<usize>i) * <usize>FRAME_RECORD_BYTES;
    memory.fill(rec, 0, <usize>FRAME_RECORD_BYTES);
    if (end - p < 3) return fail(FRAME_ERR_TRUNCATED, len);
    const kind = <u32>load<u8>(p);
    const keyLen = <u32>load<u16>(p, 1);
    if (kind > 1) return fail(FRAME_ERR_BAD_KIND, p - base);
    p += 3;
    if (end - p < <usize>keyLen) return fail(FRAME_ERR_TRUNCATED, len);
    if (!utf8Valid(p, keyLen)) return fail(FRAME_ERR_BAD_UTF8, p - base);
    store<u32>(rec, <u32>(p - base));
    store<u32>(rec, keyLen, 4);
    store<u8>(rec, <u8>kind, 8);
    setKey(i, p, keyLen);
    p += keyLen;

    if (kind == <u32>FRAME_KIND_VALUE) {
      if (end - p < 4) return fail(FRAME_ERR_TRUNCATED, len);
      const blobLen = load<u32>(p);
      p += 4;
      if (<u64>(end - p) < <u64>blobLen) return fail(FRAME_ERR_TRUNCATED, len);
      store<u32>(rec, <u32>(p - base), 24);
      store<u32>(rec, blobLen, 28);
      p += <usize>blobLen;
      continue;
    }

    // Tensor descriptor: dtype, flags, device type (length-prefixed), device index, ndim, dims, nbytes.
    if (end - p < 3) return fail(FRAME_ERR_TRUNCATED, len);
    const dtype = <u32>load<u8>(p);
    const flags = <u32>load<u8>(p, 1);
    const devLen = <u32>load<u8>(p, 2);
    if (dtype >= <u32>DTYPE_COUNT) return fail(FRAME_ERR_BAD_DTYPE, p - base);
    if ((flags & ~<u32>FRAME_FLAG_INLINE) != 0) return fail(FRAME_ERR_BAD_FLAGS, p + 1 - base);
    p += 3;
    if (end - p < <usize>devLen + 3) return fail(FRAME_ERR_TRUNCATED, len);
    if (!deviceTypeValid(p, devLen)) return fail(FRAME_ERR_BAD_DEVICE, p - base);
    const cpu = isCpu(p, devLen);
    store<u32>(rec, <u32>(p - base), 16);
    store<u32>(rec, devLen, 20);
    p += devLen;
    const devIndex = <u32>load<u16>(p);
    if (cpu && devIndex != 0) return fail(FRAME_ERR_BAD_DEVICE, p - base);
    if ((flags & <u32>FRAME_FLAG_INLINE) != 0 && !cpu) return fail(FRAME_ERR_INLINE_NOT_CPU, p - base);
    const ndim = <u32>load<u8>(p, 2);
    if (ndim > <u32>FRAME_MAX_NDIM) return fail(FRAME_ERR_NDIM_LIMIT, p + 2 - base);
    p += 3;
    if (end - p < (<usize>ndim) * 8 + 8) return fail(FRAME_ERR_TRUNCATED, len);
    store<u32>(rec, <u32>(p - base), 24);
    const expected = tensorBytes(p, ndim, dtypeItemSize(<i32>dtype), false);
    if (expected < 0) return fail(<i32>-expected, p - base);
    p += (<usize>ndim) * 8;
    const nbytes = load<u64>(p);
    if (nbytes != <u64>expected) return fail(FRAME_ERR_NBYTES_MISMATCH, p - base);
    p += 8;
    store<u8>(rec, <u8>dtype, 9);
    store<u8>(rec, <u8>ndim, 10);
    store<u8>(rec, <u8>flags, 11);
    store<u32>(rec, devIndex, 12);
    store<f64>(rec, <f64>nbytes, 32);
    if (flags & <u32>FRAME_FLAG_INLINE) anyInline = true;
  }

  errEntry = -1;
  const dup = findDuplicate(count);
  if (dup >= 0) {
    errEntry = dup;
    return fail(FRAME_ERR_DUPLICATE_KEY, <usize>load<u32>(table + (<usize>dup) * <usize>FRAME_RECORD_BYTES));
  }

  // Payload section: each inline payload at the next multiple of 8, zero padding in between,
  // the frame ends with the last payload.
  let cur: u64 = <u64>(p - base);
  if (anyInline) {
    for (let i: u32 = 0; i < count; i++) {
      const rec = table + (<usize>i) * <usize>FRAME_RECORD_BYTES;
      if (load<u8>(rec, 8) != <u8>FRAME_KIND_TENSOR || (load<u8>(rec, 11) & <u8>FRAME_FLAG_INLINE) == 0) continue;
      errEntry = <i32>i;
      const off = (cur + 7) & ~<u64>7;
      const nb = <u64>load<f64>(rec, 32);
      if (off + nb > <u64>len) return fail(FRAME_ERR_PAYLOAD_OUT_OF_BOUNDS, <usize>min(off, <u64>len));
      for (let q = cur; q < off; q++) {
        if (load<u8>(base + <usize>q) != 0) return fail(FRAME_ERR_BAD_PADDING, <usize>q);
      }
      store<u32>(rec, <u32>off, 40);
      cur = off + nb;
    }
    errEntry = -1;
  }
  if (cur != <u64>len) return fail(FRAME_ERR_TRAILING_BYTES, <usize>cur);
  return <i32>count;
}

/**
 * Bytes of a tensor with `ndim` dims at p, or -FRAME_ERR_* (as i64). The dims are u64 as in a
 * frame, or (hostDims, encode) f64 from the host, which must be integers in [0, 2^53). A zero dim
 * makes the tensor empty whatever the other dims are (as in PyTorch), but each dim is still limited.
 */
function tensorBytes(p: usize, ndim: u32, itemSize: i32, hostDims: bool): i64 {
  let acc: u64 = <u64>itemSize;
  let zero = false;
  let over = false;
  for (let k: u32 = 0; k < ndim; k++) {
    let d: u64;
    if (hostDims) {
      const f = load<f64>(p + (<usize>k) * 8);
      // `!(f >= 0)` also catches NaN.
      if (!(f >= 0) || f > FRAME_MAX_DIM || f != Math.floor(f)) return -<i64>FRAME_ERR_DIM_TOO_LARGE;
      d = <u64>f;
    } else {
      d = load<u64>(p + (<usize>k) * 8);
      if (d > MAX_DIM) return -<i64>FRAME_ERR_DIM_TOO_LARGE;
    }
    if (d == 0) zero = true;
    else if (!over) {
      if (acc > MAX_BYTES / d) over = true;
      else acc *= d;
    }
  }
  if (zero) return 0;
  if (over) return -<i64>FRAME_ERR_SIZE_OVERFLOW;
  return <i64>acc;
}

// ---- encode ------------------------------------------------------------------------------------

/**
 * Encodes `count` specs at `spec`. Returns the length of the metadata part, written at
 * frameOutPtr(), or -FRAME_ERR_* with frameErrorEntry() naming the spec. On success
 * frameTotalLength() is the whole frame's length and each inline spec's payloadOffset field
 * says where the host must copy that tensor's bytes (the padding in between is zero).
 */
export function frameEncode(spec: usize, count: u32): i32 {
  errEntry = -1;
  errOffset = 0;
  totalLength = 0;
  if (count > <u32>FRAME_MAX_ENTRIES) return fail(FRAME_ERR_TOO_MANY_ENTRIES, 0);
  ensureKeys(count);

  // Pass 1: validate and size.
  let size: u64 = <u64>FRAME_HEADER_BYTES;
  for (let i: u32 = 0; i < count; i++) {
    errEntry = <i32>i;
    const s = spec + (<usize>i) * <usize>FRAME_SPEC_BYTES;
    const kind = <u32>load<u8>(s);
    const keyPtr = <usize>load<u32>(s, 4);
    const keyLen = load<u32>(s, 8);
    if (kind > 1) return fail(FRAME_ERR_BAD_KIND, 0);
    if (keyLen > <u32>FRAME_MAX_KEY_BYTES) return fail(FRAME_ERR_KEY_TOO_LONG, 0);
    if (!utf8Valid(keyPtr, keyLen)) return fail(FRAME_ERR_BAD_UTF8, 0);
    setKey(i, keyPtr, keyLen);
    size += 3 + <u64>keyLen;
    if (kind == <u32>FRAME_KIND_VALUE) {
      size += 4 + <u64>load<u32>(s, 28);
      continue;
    }
    const dtype = <u32>load<u8>(s, 1);
    const ndim = <u32>load<u8>(s, 2);
    const flags = <u32>load<u8>(s, 3);
    const devPtr = <usize>load<u32>(s, 12);
    const devLen = load<u32>(s, 16);
    const devIndex = load<u32>(s, 20);
    if (dtype >= <u32>DTYPE_COUNT) return fail(FRAME_ERR_BAD_DTYPE, 0);
    if ((flags & ~<u32>FRAME_FLAG_INLINE) != 0) return fail(FRAME_ERR_BAD_FLAGS, 0);
    if (!deviceTypeValid(devPtr, devLen) || devIndex > <u32>FRAME_MAX_DEVICE_INDEX) return fail(FRAME_ERR_BAD_DEVICE, 0);
    const cpu = isCpu(devPtr, devLen);
    if (cpu && devIndex != 0) return fail(FRAME_ERR_BAD_DEVICE, 0);
    if ((flags & <u32>FRAME_FLAG_INLINE) != 0 && !cpu) return fail(FRAME_ERR_INLINE_NOT_CPU, 0);
    if (ndim > <u32>FRAME_MAX_NDIM) return fail(FRAME_ERR_NDIM_LIMIT, 0);
    const expected = tensorBytes(<usize>load<u32>(s, 24), ndim, dtypeItemSize(<i32>dtype), true);
    if (expected < 0) return fail(<i32>-expected, 0);
    if (load<f64>(s, 32) != <f64>expected) return fail(FRAME_ERR_NBYTES_MISMATCH, 0);
    size += 3 + <u64>devLen + 3 + (<u64>ndim) * 8 + 8;
  }
  errEntry = -1;
  const dup = findDuplicate(count);
  if (dup >= 0) {
    errEntry = dup;
    return fail(FRAME_ERR_DUPLICATE_KEY, 0);
  }
  const metaLen = size;
  let total = metaLen;
  for (let i: u32 = 0; i < count; i++) {
    const s = spec + (<usize>i) * <usize>FRAME_SPEC_BYTES;
    if (load<u8>(s) != <u8>FRAME_KIND_TENSOR || (load<u8>(s, 3) & <u8>FRAME_FLAG_INLINE) == 0) continue;
    total = (total + 7) & ~<u64>7;
    if (total > MAX_FRAME) break;
    store<u32>(s, <u32>total, 40);
    total += <u64>load<f64>(s, 32);
  }
  if (total > MAX_FRAME) return fail(FRAME_ERR_FRAME_TOO_LARGE, 0);

  // Pass 2: write the metadata part.
  ensureOut(<usize>metaLen);
  let p = out;
  store<u32>(p, FRAME_MAGIC);
  store<u16>(p, <u16>FRAME_VERSION, 4);
  store<u16>(p, 0, 6);
  store<u32>(p, count, 8);
  p += <usize>FRAME_HEADER_BYTES;
  for (let i: u32 = 0; i < count; i++) {
    const s = spec + (<usize>i) * <usize>FRAME_SPEC_BYTES;
    const kind = load<u8>(s);
    const keyLen = load<u32>(s, 8);
    store<u8>(p, kind);
    store<u16>(p, <u16>keyLen, 1);
    p += 3;
    memory.copy(p, <usize>load<u32>(s, 4), keyLen);
    p += keyLen;
    if (kind == <u8>FRAME_KIND_VALUE) {
      const blobLen = load<u32>(s, 28);
      store<u32>(p, blobLen);
      p += 4;
      memory.copy(p, <usize>load<u32>(s, 24), blobLen);
      p += blobLen;
      continue;
    }
    const ndim = <u32>load<u8>(s, 2);
    const devLen = load<u32>(s, 16);
    store<u8>(p, load<u8>(s, 1));
    store<u8>(p, load<u8>(s, 3), 1);
    store<u8>(p, <u8>devLen, 2);
    p += 3;
    memory.copy(p, <usize>load<u32>(s, 12), devLen);
    p += devLen;
    store<u16>(p, <u16>load<u32>(s, 20));
    store<u8>(p, <u8>ndim, 2);
    p += 3;
    const dims = <usize>load<u32>(s, 24);
    for (let k: u32 = 0; k < ndim; k++) {
      store<u64>(p, <u64>load<f64>(dims + (<usize>k) * 8));
      p += 8;
    }
    store<u64>(p, <u64>load<f64>(s, 32));
    p += 8;
  }
  totalLength = <f64>total;
  return <i32>metaLen;
}
