/**
 * Unique group names, per process: `dp:0`, `dp:1`, … (vLLM's `_get_unique_name` +
 * `_register_group`). Unlike vLLM, a destroyed group releases its name, and the next group with
 * the same base name takes the lowest free index: a process that scales up and down forever
 * does not count up without bound, and `lookupGroup` never finds a destroyed group.
 *
 * Names are local to the process (two processes may give one group different names); they
 * identify a coordinator in logs and errors, never on the wire.
 */
const taken = new Map<string, Set<number>>();
const groups = new Map<string, WeakRef<object>>();

/** Reserves `base:N` with the lowest free N. */
export function reserveName(base: string): string {
  let used = taken.get(base);
  if (!used) taken.set(base, (used = new Set()));
  let i = 0;
  while (used.has(i)) i++;
  used.add(i);
  return `${base}:${i}`;
}

/** Attaches a live object to a reserved name (held weakly, as vLLM does). */
export function registerName(unique: string, owner: object): void {
  groups.set(unique, new WeakRef(owner));
}

/** Frees `unique` for reuse. Idempotent. */
export function releaseName(unique: string): void {
  groups.delete(unique);
  const cut = unique.lastIndexOf(':');
  const used = taken.get(unique.slice(0, cut));
  if (!used) return;
  used.delete(Number(unique.slice(cut + 1)));
  if (used.size === 0) taken.delete(unique.slice(0, cut));
}

/** The live object registered under `unique`, if any. */
export function lookupName<T extends object>(unique: string): T | undefined {
  return groups.get(unique)?.deref() as T | undefined;
}

/** Every registered name, sorted (for diagnostics and tests). */
export function registeredNames(): string[] {
  return [...groups.keys()].filter((k) => groups.get(k)?.deref() !== undefined).sort();
}
