// One assertion for "this promise rejects with a GroupcommError of that code" (shared by the
// store, process-group and CPU-group tests). Resolves with the error for further checks.
import * as assert from 'uvu/assert';
import { isGroupcommError, type GroupcommError } from '../../host/base/errors.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read arbitrary error fields
export async function rejectsWith(p: Promise<unknown>, code: string): Promise<any> {
  try {
    await p;
  } catch (e) {
    assert.ok(isGroupcommError(e), `not a GroupcommError: ${e}`);
    assert.is((e as { code: string }).code, code, (e as Error).message);
    return e;
  }
  throw new Error(`expected ${code}, but it resolved`);
}

/** The error `p` rejects with, whatever it is (for tests that check its fields themselves). */
export async function failure(p: Promise<unknown>): Promise<GroupcommError> {
  try {
    await p;
  } catch (e) {
    return e as GroupcommError;
  }
  throw new Error('expected a rejection');
}

/** True when `p` settles (either way) within `ms`. */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => { t = setTimeout(() => r(false), ms); });
  const r = await Promise.race([p.then(() => true, () => true), late]);
  clearTimeout(t);
  return r;
}
