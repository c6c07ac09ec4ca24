// float32 tensors of an in-process coordinator's device (its backend's memory) and back, for the
// coordinator unit tests (coord_tensors, coord_variable, coord_p2p, coord_objects, coord_premul).
import { tensor, type Tensor } from '../../host/core/tensor.js';
import type { StatelessGroupCoordinator } from '../../host/coordinator/coordinator.js';

/** `v` as a float32 tensor of `shape` on the group's device. */
export function onDevice(g: StatelessGroupCoordinator, v: number[], shape: number[] = [v.length]): Tensor {
  const t = g.empty(shape, 'float32');
  g.backend!.copyFromHost(t.data as never, new Uint8Array(Float32Array.from(v).buffer));
  return t;
}

/** `v` as a float32 tensor of `shape` on the CPU or on the group's device. */
export function make(g: StatelessGroupCoordinator, where: 'cpu' | 'dev', v: number[], shape: number[]): Tensor {
  return where === 'cpu' ? tensor(Float32Array.from(v), { shape }) : onDevice(g, v, shape);
}

/** A float32 tensor's values, wherever it lies. */
export function read(g: StatelessGroupCoordinator, t: Tensor): number[] {
  if (t.device === 'cpu') return [...(t.data as Float32Array)];
  const out = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
  g.backend!.copyToHost(new Uint8Array(out.buffer), t.data as never);
  return [...out];
}
