/**
 * Frame benchmark (part of `groupcomm bench core`): encode + decode of a 32-entry tensor dict
 * (16 tensor descriptors, 16 small values), µs per dict, through the WebAssembly core ('wasm')
 * and through a plain-TypeScript codec of the same format ('ts-baseline'), in the same run.
 *   frame_encode_decode_32  the whole dict path: split, msgpack the values, frame, decode, fill
 *   frame_codec_32          the frame codec alone (entries → bytes → entries), no msgpack
 * The two implementations must produce identical bytes; a mismatch is reported as `wrong`.
 */
import { Packr } from 'msgpackr';
import { encodeTensorDict, decodeTensorDict, fillTensorDict, type TensorDict, type TensorSlot } from '../host/coordinator/tensor_dict.js';
import { encodeFrame, decodeFrame, type FrameEntry } from '../host/core/frame.js';
import { isTensor, numel, itemSize, tensor, type Tensor } from '../host/core/tensor.js';
import { encodeFrameTs, decodeFrameTs } from './frame_baseline.js';
import { median, type Report } from './report.js';

function benchDict(): TensorDict {
  const d: TensorDict = {};
  for (let i = 0; i < 16; i++) {
    if (i % 2 === 0) d[`layer.${i}.weight`] = { dtype: 'bfloat16', shape: [4096, 128 + i], device: `cuda:${i % 4}`, data: { ptr: 0n, nbytes: 4096 * (128 + i) * 2 } } as Tensor;
    else d[`input.${i}`] = tensor(new Int32Array(8 * i), { shape: [8, i] });
    d[`meta.${i}`] = i % 4 === 0 ? { step: i, name: `layer-${i}`, lens: [i, i + 1] } : i % 4 === 1 ? i * 1.5 : i % 4 === 2 ? `value-${i}` : [true, null, i];
  }
  return d;
}

// The baseline's dict layer: the same split as host/coordinator/tensor_dict.ts, over the TS codec.
const packr = new Packr({ useRecords: false, moreTypes: true, copyBuffers: true });

function encodeDictTs(dict: TensorDict): { frame: Uint8Array; tensors: Tensor[] } {
  const tensors: Tensor[] = [];
  const entries: FrameEntry[] = Object.keys(dict).map((key) => {
    const v = dict[key];
    if (!isTensor(v)) return { key, kind: 'value', blob: packr.pack(v) };
    tensors.push(v);
    return { key, kind: 'tensor', dtype: v.dtype, shape: v.shape, device: v.device, nbytes: numel(v.shape) * itemSize(v.dtype) };
  });
  return { frame: encodeFrameTs(entries), tensors };
}

function decodeDictTs(frame: Uint8Array): { dict: TensorDict; slots: TensorSlot[] } {
  const dict: TensorDict = {};
  const slots: TensorSlot[] = [];
  for (const e of decodeFrameTs(frame)) {
    if (e.kind === 'value') dict[e.key] = packr.unpack(e.blob);
    else {
      slots.push({ key: e.key, dtype: e.dtype, shape: e.shape, device: e.device, nbytes: e.nbytes });
      dict[e.key] = undefined;
    }
  }
  return { dict, slots };
}

const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);

/** Runs `fn` in batches; returns the median µs per call. Implementations alternate per sample. */
function measure(fns: Array<() => unknown>, samples: number, batch: number): number[] {
  const times: number[][] = fns.map(() => []);
  for (const fn of fns) for (let i = 0; i < batch; i++) fn(); // warm up (JIT, scratch growth)
  for (let s = 0; s < samples; s++) {
    fns.forEach((fn, k) => {
      const t0 = performance.now();
      for (let i = 0; i < batch; i++) fn();
      times[k].push(((performance.now() - t0) * 1000) / batch);
    });
  }
  return times.map(median);
}

export async function runFrame(report: Report, opts: { quick?: boolean } = {}): Promise<void> {
  const samples = opts.quick ? 5 : 25;
  const batch = opts.quick ? 50 : 400;
  const dict = benchDict();
  report.section('tensor-dict frame: encode + decode of a 32-entry dict (16 tensors, 16 values)');

  const wasm = encodeTensorDict(dict);
  const ts = encodeDictTs(dict);
  let wrong = same(wasm.frame, ts.frame) ? 0 : 1;
  const back = decodeTensorDict(wasm.frame);
  fillTensorDict(back.dict, back.slots, wasm.tensors);
  if (back.slots.length !== 16 || Object.keys(back.dict).length !== 32) wrong = 1;

  const entries = decodeFrame(wasm.frame);
  const [dictWasm, dictTs, codecWasm, codecTs] = measure([
    () => {
      const e = encodeTensorDict(dict);
      const d = decodeTensorDict(e.frame);
      fillTensorDict(d.dict, d.slots, e.tensors);
    },
    () => {
      const e = encodeDictTs(dict);
      const d = decodeDictTs(e.frame);
      fillTensorDict(d.dict, d.slots, e.tensors);
    },
    () => decodeFrame(encodeFrame(entries)),
    () => decodeFrameTs(encodeFrameTs(entries)),
  ], samples, batch);

  const size = wasm.frame.length;
  const row = (name: string, impl: string, us: number) =>
    report.add({ name, impl, size_bytes: size, median_us: us, gbps: size / (us * 1e-6) / 1e9, wrong },
      [{ name: 'frame_encode_decode_32', impl: 'ts-baseline', median_us: 9999.9, gbps: 99.999 }]);
  row('frame_encode_decode_32', 'wasm', dictWasm);
  row('frame_encode_decode_32', 'ts-baseline', dictTs);
  row('frame_codec_32', 'wasm', codecWasm);
  row('frame_codec_32', 'ts-baseline', codecTs);
}
