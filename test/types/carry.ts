// Trip 2 of issue 17, checked by the compiler: types carry through. This file is never run;
// test/unit/examples_types.test.ts type-checks it (with the examples, under strict) against
// the package as an application sees it: 'groupcomm' through the exports map's "types". Every
// line marked @ts-expect-error must be an error, and every other line must compile.
import {
  CpuGroup, StatelessGroupCoordinator, StatelessProcessGroup, empty, tensor, type CpuTensor, type Tensor,
} from 'groupcomm';

declare const g: CpuGroup;
declare const coord: StatelessGroupCoordinator;
declare const pg: StatelessProcessGroup;

export async function carry(): Promise<void> {
  const f32 = tensor(new Float32Array(4));
  const i32 = tensor(new Int32Array(4));
  // tensor() keeps the array class; data[0] is a number, data is a Float32Array.
  const x: number = f32.data[0];
  const a: Float32Array = f32.data;
  // @ts-expect-error a CpuTensor<Float32Array>'s data is not an Int32Array
  const notInt: Int32Array = f32.data;
  // empty() maps the dtype to its class.
  const e: BigInt64Array = empty([2], 'int64').data;
  const e2: Float32Array = empty([2]).data;

  // The CPU group returns what it was given.
  const s1: CpuTensor<Float32Array> = await g.allReduce(f32);
  const s2: CpuTensor<Int32Array> = await g.allGather(i32);
  const s3: CpuTensor<Float32Array> = await g.broadcast(f32, { src: 0 });
  const s4: CpuTensor<Float32Array> = await g.reduceScatter(f32, { op: 'max' });
  const s5: CpuTensor<Float32Array> | undefined = await g.gather(f32, { dst: 0 });
  const s6: CpuTensor<Int32Array> = await g.allToAll(i32);
  const s7: CpuTensor<Int32Array> = await g.recv(i32, 1);
  // @ts-expect-error allReduce of an Int32Array tensor is not a Float32Array tensor
  const wrong: CpuTensor<Float32Array> = await g.allReduce(i32);
  // @ts-expect-error an out of another array class than the input is refused
  await g.allReduce(f32, { out: i32 });

  // So does the process group, and the coordinator (any Tensor, CPU or device).
  const p1: CpuTensor<Float32Array> = await pg.allReduce(f32, { op: 'avg' });
  const p2: CpuTensor<Int32Array> = await pg.broadcast(i32, { src: 0 });
  const o1: { step: number } = await pg.recvObj<{ step: number }>(0);
  const o2: number[] = await pg.broadcastObj([1, 2], 0);
  const c1: CpuTensor<Float32Array> = await coord.allReduce(f32);
  const c2: CpuTensor<Int32Array> = await coord.allGather(i32, 0);
  const c3: CpuTensor<Float32Array> | undefined = await coord.gather(f32);
  const c4: CpuTensor<Float32Array> = await coord.broadcast(f32, 0, { out: f32 });
  const dev: Tensor = await coord.allReduce(coord.empty([4]));

  // broadcastTensorDict<T>() returns T: from the argument on the source, or as the caller says.
  const d1 = await coord.broadcastTensorDict(coord.rankInGroup === 0 ? { step: 3, ids: i32 } : undefined);
  const step: number = d1.step;
  const ids: Int32Array = d1.ids.data;
  const d2 = await coord.broadcastTensorDict<{ meta: string; x: CpuTensor<Float32Array> }>();
  const m: string = d2.meta;
  const xs: Float32Array = d2.x.data;
  // @ts-expect-error a key the dict does not have
  d2.missing;
  // A dict typed by an interface (no index signature) goes both ways.
  interface Step { step: number; ids: CpuTensor<Int32Array> }
  const st: Step = { step: 1, ids: i32 };
  await coord.sendTensorDict(st);
  const back: Step = await coord.broadcastTensorDict(st);
  const r = await coord.recvTensorDict<{ n: number }>();
  const n: number = r.n;
  void [o1, o2, back, x, a, notInt, e, e2, s1, s2, s3, s4, s5, s6, s7, wrong, p1, p2, c1, c2, c3, c4, dev, step, ids, m, xs, n];
}
