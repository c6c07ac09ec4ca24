// What a rank worker checks and reports: `check(ok, what)` counts every check and records the
// failing ones (named with the rank, at most `maxFailures` of them, so a broken run stays
// readable); `count` and `failures` go into the worker's reportResult.
export interface Checks {
  readonly check: (ok: boolean, what: string) => void;
  readonly failures: string[];
  readonly count: number;
}

export function checker(rank: number, maxFailures = Infinity): Checks {
  const failures: string[] = [];
  let count = 0;
  return {
    check(ok, what) {
      count++;
      if (!ok && failures.length < maxFailures) failures.push(`rank ${rank}: ${what}`);
    },
    failures,
    get count() { return count; },
  };
}
