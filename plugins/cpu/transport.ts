/**
 * How the cpu backend moves bytes between ranks: over the group's bootstrap channel (the store).
 * That is slow (every byte goes through the store server) but needs nothing beyond what every
 * group already has, which is the point of a reference backend: it runs anywhere and is easy to
 * check. Fast host collectives are the CPU group's job (host/cpu/).
 *
 * Every call takes the operation's signal and passes it down, so an aborted communicator stops
 * waiting on the store at once.
 */
import type { OpOptions } from '../../host/deadline.js';
import type { DeviceBootstrap } from '../../host/device/types.js';

export class BootstrapTransport {
  constructor(private readonly boot: DeviceBootstrap) {}

  get rank(): number { return this.boot.rank; }
  get worldSize(): number { return this.boot.worldSize; }

  broadcast(bytes: Uint8Array | undefined, src: number, opts: OpOptions): Promise<Uint8Array> {
    if (this.worldSize === 1) return Promise.resolve(bytes!);
    return this.boot.broadcastBytes(bytes, src, opts);
  }

  /** Every rank's bytes, indexed by rank (ours included, not copied). */
  allGather(bytes: Uint8Array, opts: OpOptions): Promise<Uint8Array[]> {
    // The broadcasts use distinct keys per source, so they can all be in flight at once.
    return Promise.all(Array.from({ length: this.worldSize }, (_, src) =>
      src === this.rank ? this.broadcast(bytes, src, opts) : this.broadcast(undefined, src, opts)));
  }

  send(bytes: Uint8Array, dst: number, opts: OpOptions): Promise<void> {
    return this.boot.sendBytes(bytes, dst, opts);
  }

  recv(src: number, opts: OpOptions): Promise<Uint8Array> {
    return this.boot.recvBytes(src, opts);
  }

  /** On dst: every rank's bytes by rank; elsewhere: undefined after our bytes went out. */
  async gather(bytes: Uint8Array, dst: number, opts: OpOptions): Promise<Uint8Array[] | undefined> {
    if (this.rank !== dst) {
      await this.send(bytes, dst, opts);
      return undefined;
    }
    return Promise.all(Array.from({ length: this.worldSize }, (_, src) =>
      src === dst ? Promise.resolve(bytes) : this.recv(src, opts)));
  }

  /** blocks[j] goes to rank j; returns what each rank i sent us, by i. */
  async allToAll(blocks: Uint8Array[], opts: OpOptions): Promise<Uint8Array[]> {
    const sends = blocks.map((b, j) => (j === this.rank ? Promise.resolve() : this.send(b, j, opts)));
    const recvs = blocks.map((b, i) => (i === this.rank ? Promise.resolve(b) : this.recv(i, opts)));
    const [, got] = await Promise.all([Promise.all(sends), Promise.all(recvs)]);
    return got;
  }

  barrier(opts: OpOptions): Promise<void> {
    return this.boot.barrier(opts);
  }
}
