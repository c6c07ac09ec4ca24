/** Typed access to the core's dtype table (assembly/dtype.ts is the source of truth). */
import { getCore } from './loader.js';

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

function load(): void {
  const x = getCore().exports;
  table = new Map();
  byCode = [];
  const count = x.DTYPE_COUNT.value as number;
  if (count !== DTYPE_NAMES.length) throw new Error(`groupcomm core has ${count} dtypes, host knows ${DTYPE_NAMES.length}`);
  DTYPE_NAMES.forEach((name, code) => {
    const info: DTypeInfo = {
      name, code,
      itemSize: x.dtypeItemSize(code),
      ncclType: x.dtypeNcclType(code),
      isFloat: x.dtypeIsFloat(code) === 1,
      isSigned: x.dtypeIsSigned(code) === 1,
    };
    table!.set(name, info);
    byCode!.push(info);
  });
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
