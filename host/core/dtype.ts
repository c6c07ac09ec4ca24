/**
 * Typed access to the core's dtype table (assembly/dtype.ts is the source of truth): the host
 * knows the names; codes, sizes and NCCL types come from the core.
 */
import { getCore, type CoreConstants } from './loader.js';
import { internalError } from '../base/errors.js';

export const DTYPE_NAMES = [
  'int8', 'uint8', 'int32', 'uint32', 'int64', 'uint64', 'float16', 'float32', 'float64',
  'bfloat16', 'float8_e4m3fn', 'float8_e5m2', 'bool', 'int16',
] as const;
export type DType = (typeof DTYPE_NAMES)[number];

export interface DTypeInfo {
  name: DType;
  /** The dtype code used in frames and by the reduce kernels. */
  code: number;
  itemSize: number;
  /** ncclDataType_t value, or -1 where NCCL has no such type. */
  ncclType: number;
  isFloat: boolean;
  isSigned: boolean;
}

let table: Map<string, DTypeInfo> | undefined;
let byCode: DTypeInfo[] | undefined;

// The core's constant for each name: DTYPE_<NAME> (e.g. DTYPE_FLOAT8_E4M3FN).
const constName = (name: DType) => `DTYPE_${name.toUpperCase()}` as keyof CoreConstants;

function load(): void {
  const { exports: x, consts } = getCore();
  table = new Map();
  byCode = [];
  const count = consts.DTYPE_COUNT;
  if (count !== DTYPE_NAMES.length) throw internalError(`groupcomm core has ${count} dtypes, host knows ${DTYPE_NAMES.length}`);
  for (const name of DTYPE_NAMES) {
    const code = consts[constName(name)];
    if (!Number.isInteger(code) || code < 0 || code >= count || byCode[code]) {
      throw internalError(`groupcomm core: dtype ${name} has code ${code}, which is out of range or taken`);
    }
    const info: DTypeInfo = {
      name, code,
      itemSize: x.dtypeItemSize(code),
      ncclType: x.dtypeNcclType(code),
      isFloat: x.dtypeIsFloat(code) === 1,
      isSigned: x.dtypeIsSigned(code) === 1,
    };
    table.set(name, info);
    byCode[code] = info;
  }
}

/** Info for a dtype name, or undefined when the name is unknown. */
export function dtypeInfo(name: string): DTypeInfo | undefined {
  if (!table) load();
  return table!.get(name);
}

/** Info for a dtype code, or undefined when the code is unknown. */
export function dtypeByCode(code: number): DTypeInfo | undefined {
  if (!byCode) load();
  return byCode![code];
}
