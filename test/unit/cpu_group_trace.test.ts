/**
 * GROUPCOMM_DEBUG=trace on a CpuGroup (host/cpu/group.ts): one line per operation naming the
 * group and rank, the operation (`allReduce#0`, `send:tag3`), the bytes (a send's tensor, a
 * result's size, 0 for a barrier), the peers (the one peer, or everyone else), and a failure's
 * code; a rank and a tag of two digits in a point-to-point name. The level is read when host/base/log.ts loads, so this file sets it before importing
 * anything of the library.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';

process.env.GROUPCOMM_DEBUG = 'trace';
process.env.GROUPCOMM_DEBUG_SUBSYS = 'CPU';
const { CpuGroup } = await import('../../host/cpu/group.js');
const { TcpStore } = await import('../../host/store/client.js');
const { empty, tensor } = await import('../../host/core/tensor.js');

/** The trace lines written while `body` runs (stderr is captured, the rest passed through). */
async function traced(body: () => Promise<void>): Promise<string[]> {
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const s = String(chunk);
    if (s.includes(' TRACE op=')) lines.push(s.trim());
    else return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
    return true;
  }) as typeof process.stderr.write;
  try {
    await body();
  } finally {
    process.stderr.write = write;
  }
  return lines;
}

test('one trace line per operation: name, bytes, peers, and a failure\'s code', async () => {
  const store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  const gs = await Promise.all([0, 1, 2].map((rank) => CpuGroup.create({ store, rank, worldSize: 3, groupName: 'traced', timeoutMs: 10_000 })));
  try {
    const lines = await traced(async () => {
      await Promise.all(gs.map((g) => g.allReduce(tensor(new Float32Array(4)))));
      await Promise.all(gs.map((g) => g.barrier()));
      const r = gs[1].recv(empty([2], 'int32'), 0, { tag: 3 });
      await gs[0].send(tensor(new Int32Array([1, 2])), 1, { tag: 3 });
      await r;
      await gs[2].recv(empty([1], 'int32'), 0, { tag: 7, timeoutMs: 50 }).catch(() => {});
      await new Promise((res) => setTimeout(res, 20));
    });
    const of = (rank: number) => lines.filter((l) => l.includes(`CPU traced rank ${rank}/3 TRACE `)).map((l) => l.replace(/^.* TRACE /, '').replace(/ us=\d+/, ''));
    assert.equal(of(0), ['op=allReduce#0 bytes=16 peers=1,2', 'op=barrier#1 bytes=0 peers=1,2', 'op=send:tag3 bytes=8 peers=1']);
    assert.equal(of(1), ['op=allReduce#0 bytes=16 peers=0,2', 'op=barrier#1 bytes=0 peers=0,2', 'op=recv:tag3 bytes=8 peers=0']);
    assert.equal(of(2), ['op=allReduce#0 bytes=16 peers=0,1', 'op=barrier#1 bytes=0 peers=0,1', 'op=recv:tag7 peers=0 failed=ERR_GROUPCOMM_TIMEOUT']);
  } finally {
    await Promise.all(gs.map((g) => g.abort('test over')));
    await store.close();
  }
});

test('a point-to-point op\'s name keeps a rank and a tag of two digits: `send:tag12`, `recv:tag12`', async () => {
  const store = await TcpStore.create({ port: 0, isServer: true, timeoutMs: 10_000 });
  // Eleven ranks for a rank 10; only ranks 0 and 10 take part (pairs connect when first needed).
  const gs = await Promise.all([...Array(11).keys()].map((rank) => CpuGroup.create({ store, rank, worldSize: 11, groupName: 'traced-11', timeoutMs: 10_000 })));
  try {
    const lines = await traced(async () => {
      const r = gs[10].recv(empty([1], 'int32'), 0, { tag: 12 });
      await gs[0].send(tensor(new Int32Array([1])), 10, { tag: 12 });
      await r;
    });
    const ops = lines.map((l) => l.replace(/^.* TRACE /, '').replace(/ us=\d+/, '')).sort();
    assert.equal(ops, ['op=recv:tag12 bytes=4 peers=0', 'op=send:tag12 bytes=4 peers=10']);
  } finally {
    await Promise.all(gs.map((g) => g.abort('test over')));
    await store.close();
  }
});

test.run();
