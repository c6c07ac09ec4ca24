/**
 * A directory-backed Store for CPU-group tests and the cpu bench: ranks in separate processes
 * (Node and Bun) rendezvous through files, with no server to start. Only what a group's setup
 * needs is implemented (set, get, multiGet, wait, check, deleteKey); it polls, so it is for
 * tests, not for production.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { OpOptions } from '../../host/base/deadline.js';
import { simpleTimeout, guard, sleep, effectiveTimeout } from '../../host/base/deadline.js';
import type { Store, StoreValue } from '../../host/store/types.js';

const fileOf = (dir: string, key: string) => path.join(dir, encodeURIComponent(key));

export class FileStore implements Store {
  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  async set(key: string, value: StoreValue): Promise<void> {
    const f = fileOf(this.dir, key);
    const tmp = `${f}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    fs.writeFileSync(tmp, typeof value === 'string' ? Buffer.from(value) : value);
    fs.renameSync(tmp, f); // atomic: readers see all of the value or nothing
  }

  async get(key: string, opts?: OpOptions): Promise<Uint8Array> {
    return (await this.multiGet([key], opts))[0];
  }

  async multiGet(keys: string[], opts?: OpOptions): Promise<Uint8Array[]> {
    await this.wait(keys, opts);
    return keys.map((k) => new Uint8Array(fs.readFileSync(fileOf(this.dir, k))));
  }

  async check(keys: string[]): Promise<boolean> {
    return keys.every((k) => fs.existsSync(fileOf(this.dir, k)));
  }

  async wait(keys: string[], opts?: OpOptions): Promise<void> {
    const timeoutMs = effectiveTimeout(opts);
    const ac = new AbortController();
    const poll = async () => {
      while (!(await this.check(keys))) await sleep(5, ac.signal);
    };
    await guard(poll(), {
      timeoutMs, signal: opts?.signal, what: 'file store wait',
      onTimeout: simpleTimeout(`file store wait for ${keys.join(', ')}`, timeoutMs, { keys }),
      cancel: () => ac.abort(),
    });
  }

  async deleteKey(key: string): Promise<boolean> {
    try {
      fs.unlinkSync(fileOf(this.dir, key));
      return true;
    } catch {
      return false;
    }
  }

  async multiSet(keys: string[], values: StoreValue[]): Promise<void> {
    for (let i = 0; i < keys.length; i++) await this.set(keys[i], values[i]);
  }

  private unsupported(what: string): never {
    throw new Error(`FileStore (test helper) does not implement ${what}`);
  }
  add(): Promise<number> { this.unsupported('add'); }
  compareSet(): Promise<Uint8Array> { this.unsupported('compareSet'); }
  numKeys(): Promise<number> { this.unsupported('numKeys'); }
  append(): Promise<void> { this.unsupported('append'); }
  async ping(): Promise<number> { return 0; }
  async close(): Promise<void> {}
}
