// The dtype table: the one place that says what each dtype code means.
// Codes 0..11 deliberately equal NCCL's ncclDataType_t values (nccl.h, NCCL >= 2.24), so the
// device plugin passes them through unchanged; bool and int16 have no NCCL type.

export const DTYPE_INT8: i32 = 0;
export const DTYPE_UINT8: i32 = 1;
export const DTYPE_INT32: i32 = 2;
export const DTYPE_UINT32: i32 = 3;
export const DTYPE_INT64: i32 = 4;
export const DTYPE_UINT64: i32 = 5;
export const DTYPE_FLOAT16: i32 = 6;
export const DTYPE_FLOAT32: i32 = 7;
export const DTYPE_FLOAT64: i32 = 8;
export const DTYPE_BFLOAT16: i32 = 9;
export const DTYPE_FLOAT8_E4M3FN: i32 = 10;
export const DTYPE_FLOAT8_E5M2: i32 = 11;
export const DTYPE_BOOL: i32 = 12;
export const DTYPE_INT16: i32 = 13;
export const DTYPE_COUNT: i32 = 14;

/** Bytes per element, or 0 for an unknown code. */
export function dtypeItemSize(code: i32): i32 {
  switch (code) {
    case DTYPE_INT8: case DTYPE_UINT8: case DTYPE_BOOL:
    case DTYPE_FLOAT8_E4M3FN: case DTYPE_FLOAT8_E5M2: return 1;
    case DTYPE_FLOAT16: case DTYPE_BFLOAT16: case DTYPE_INT16: return 2;
    case DTYPE_INT32: case DTYPE_UINT32: case DTYPE_FLOAT32: return 4;
    case DTYPE_INT64: case DTYPE_UINT64: case DTYPE_FLOAT64: return 8;
    default: return 0;
  }
}

/** ncclDataType_t for the code, or -1 where NCCL has no such type (bool, int16, unknown). */
export function dtypeNcclType(code: i32): i32 {
  if (code >= 0 && code <= DTYPE_FLOAT8_E5M2) return code;
  return -1;
}

/** 1 for floating-point dtypes (reductions follow IEEE rules), else 0. */
export function dtypeIsFloat(code: i32): i32 {
  switch (code) {
    case DTYPE_FLOAT16: case DTYPE_FLOAT32: case DTYPE_FLOAT64: case DTYPE_BFLOAT16:
    case DTYPE_FLOAT8_E4M3FN: case DTYPE_FLOAT8_E5M2: return 1;
    default: return 0;
  }
}

/** 1 for signed integer dtypes, else 0. */
export function dtypeIsSigned(code: i32): i32 {
  switch (code) {
    case DTYPE_INT8: case DTYPE_INT16: case DTYPE_INT32: case DTYPE_INT64: return 1;
    default: return 0;
  }
}
