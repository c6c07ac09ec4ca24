/**
 * For the tests that drive host/cpu/mesh.ts without a group above it (cpu_mesh_more, cpu_mesh_b,
 * cpu_mesh_early, cpu_mesh_live): one store server for the file, made in uvu's `before` and
 * closed in its `after`, and a mesh's options over loopback with small buffers.
 */
import { test } from 'uvu';
import type { MeshOptions } from '../../host/cpu/mesh.js';
import { TcpStore } from '../../host/store/client.js';

export interface MeshFile {
  /** The store server (valid once `before` ran). */
  readonly store: TcpStore;
  /** Rank `rank` of `worldSize` in `groupName`, over TCP on 127.0.0.1; `over` replaces any field. */
  opts(groupName: string, rank: number, worldSize: number, over?: Partial<MeshOptions>): MeshOptions;
}

export function meshFile(): MeshFile {
  let store: TcpStore | undefined;
  test.before(async () => {
    store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  });
  test.after(async () => {
    await store?.close();
  });
  return {
    get store() { return store!; },
    opts: (groupName, rank, worldSize, over = {}) => ({
      store: store!, rank, worldSize, groupName, epoch: 0, host: '127.0.0.1', port: 0, timeoutMs: 10_000,
      recvBufferBytes: 4096, framing: { chunkBytes: 4096, smallBytes: 1024 }, transport: 'tcp', shmRingBytes: 1 << 16,
      shmMinBytes: 8192, maxFrameBytes: 1 << 20, ...over,
    } as MeshOptions),
  };
}

/** The store key under which rank `r` of group `g` (epoch 0) publishes its address. */
export const addrKey = (g: string, r: number) => `groupcomm/cpu/${g}/0/addr/${r}`;

/** Polls `cond` every 5 ms until it holds or `ms` pass. */
export async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
}
