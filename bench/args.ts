/**
 * The one argument parser of `groupcomm bench <target>`: node:util's parseArgs (the same on Node
 * and Bun) in strict mode, over a table of options that also writes the target's `--help`.
 *
 * Each option names its help group (as gloo's benchmark groups them: participation, transport,
 * parameters; then comparison with peers, and output), the value it takes, and a parser that
 * turns the text into a value or says what it accepts. Anything wrong (an unknown flag, a missing
 * or bad value, a positional argument) is a UsageError: `groupcomm bench` prints its message and
 * exits 2 before anything runs. `-h`/`--help` anywhere prints the help and exits 0.
 */
import { parseArgs } from 'node:util';

export type Group = 'participation' | 'transport' | 'parameters' | 'comparison' | 'output';

const GROUP_TITLES: Record<Group, string> = {
  participation: 'Participation',
  transport: 'Transport',
  parameters: 'Benchmark parameters',
  comparison: 'Comparison (peers run the same cases in the same invocation)',
  output: 'Output',
};

/** A value parser: returns the value, or throws a plain Error saying what it accepts. */
export type Parse<T> = (text: string) => T;

export interface OptionSpec<T = unknown> {
  short?: string;
  /** Placeholder in the help (absent: a flag without a value). */
  arg?: string;
  group: Group;
  help: string;
  /** The text parsed when the option is absent (shown in the help); absent: undefined. */
  default?: string;
  parse?: Parse<T>;
}

export type Spec = Record<string, OptionSpec>;

/** What a spec parses into: each option's parsed value (flags: boolean). */
export type Values<S extends Spec> = {
  [K in keyof S]: S[K] extends { arg: string }
    ? (S[K] extends { parse: Parse<infer T> } ? T : string) | (S[K] extends { default: string } ? never : undefined)
    : boolean;
};

/** A mistake on the command line: exit 2 with this message, nothing run. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function isUsageError(e: unknown): e is UsageError {
  return e instanceof UsageError;
}

export function wantsHelp(argv: readonly string[]): boolean {
  // Up to `--`, so that a value such as `--peer 'x --help'` (one argv entry) never counts.
  for (const a of argv) {
    if (a === '--') break;
    if (a === '-h' || a === '--help') return true;
  }
  return false;
}

/** Parses `argv` against `spec`; throws UsageError naming the flag for anything wrong. */
export function parse<S extends Spec>(spec: S, argv: readonly string[], command: string): Values<S> {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const [name, o] of Object.entries(spec)) options[name] = { type: o.arg ? 'string' : 'boolean', ...(o.short ? { short: o.short } : {}) };
  let raw: Record<string, string | boolean | undefined>;
  try {
    raw = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values as typeof raw;
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message.replace(/\. This command does not take positional arguments$/, ' (this command takes no positional arguments)')}`);
  }
  const out: Record<string, unknown> = {};
  for (const [name, o] of Object.entries(spec)) {
    const given = raw[name];
    if (!o.arg) {
      out[name] = given === true;
      continue;
    }
    const text = typeof given === 'string' ? given : o.default;
    if (text === undefined) {
      out[name] = undefined;
      continue;
    }
    try {
      out[name] = o.parse ? o.parse(text) : text;
    } catch (e) {
      const flag = (o.short ? `-${o.short}/` : '') + `--${name}`;
      throw new UsageError(`${command}: bad value for ${flag}: '${text}' (${(e as Error).message})`);
    }
  }
  return out as Values<S>;
}

/** The `--help` text: usage line, a description, then the options by group. */
export function helpText(command: string, description: string, spec: Spec, epilog = ''): string {
  const lines = [`usage: ${command} [options]`, '', description.trim()];
  const left = (name: string, o: OptionSpec) => `${o.short ? `-${o.short}, ` : '    '}--${name}${o.arg ? ` ${o.arg}` : ''}`;
  const width = Math.max(...Object.entries(spec).map(([n, o]) => left(n, o).length)) + 2;
  for (const g of Object.keys(GROUP_TITLES) as Group[]) {
    const entries = Object.entries(spec).filter(([, o]) => o.group === g);
    if (!entries.length) continue;
    lines.push('', `${GROUP_TITLES[g]}:`);
    for (const [n, o] of entries) {
      const dflt = o.default !== undefined ? ` (default: ${o.default})` : '';
      lines.push(`  ${left(n, o).padEnd(width)}${o.help}${dflt}`);
    }
  }
  if (epilog) lines.push('', epilog.trim());
  return lines.join('\n');
}

// ---- value parsers ---------------------------------------------------------------------------

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1 << 20, G: 1 << 30 };

/** Bytes: 4096, 4K, 4KiB, 64M, 1G (binary units, as nccl-tests reads them). */
export const bytes: Parse<number> = (s) => {
  const m = /^(\d+)\s*([KMG]?)(?:i?B)?$/i.exec(s.trim());
  if (!m) throw new Error('a size in bytes such as 4096, 4K, 64M, 1G');
  return Number(m[1]) * UNITS[m[2].toUpperCase()];
};

export const list = <T>(item: Parse<T>, what: string): Parse<T[]> => (s) => {
  const parts = s.split(',').map((x) => x.trim());
  if (!parts.length || parts.some((p) => p === '')) throw new Error(`a comma-separated list of ${what}`);
  return parts.map((p) => {
    try {
      return item(p);
    } catch {
      throw new Error(`a comma-separated list of ${what}; '${p}' is not one`);
    }
  });
};

export const integer = (min: number, max = Number.MAX_SAFE_INTEGER): Parse<number> => (s) => {
  if (!/^\d+$/.test(s.trim())) throw new Error(max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`);
  const v = Number(s);
  if (v < min || v > max) throw new Error(max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`);
  return v;
};

export const number = (min: number, inclusive = false): Parse<number> => (s) => {
  const v = /^\d+(\.\d*)?$|^\.\d+$/.test(s.trim()) ? Number(s) : NaN;
  if (!(inclusive ? v >= min : v > min)) throw new Error(`a number ${inclusive ? '>=' : '>'} ${min}`);
  return v;
};

/** One of `values` (case-insensitive); `aliases` map other spellings to them. */
export const oneOf = <T extends string>(values: readonly T[], aliases: Record<string, T> = {}): Parse<T> => (s) => {
  const t = s.trim().toLowerCase();
  const hit = values.find((v) => v.toLowerCase() === t) ?? aliases[t];
  if (!hit) throw new Error(`one of ${values.join(', ')}`);
  return hit;
};

/** A file path (any non-empty text). */
export const file: Parse<string> = (s) => {
  if (!s.trim()) throw new Error('a file name');
  return s;
};

// ---- options most targets share ---------------------------------------------------------------

export const OUTPUT_OPTIONS = {
  json: { arg: 'FILE', group: 'output', help: 'also write every row (every round) and the summary to FILE as JSON', parse: file },
} satisfies Spec;

export const PLOT_OPTION = {
  plot: { arg: 'FILE.svg', group: 'output', help: 'draw the size sweep (one line per implementation, peers included) into an SVG file', parse: file },
} satisfies Spec;

/** The peer options of a target whose peer script is `script` (in the peers folder). */
export function peerOptions(script: string) {
  return {
    peer: {
      arg: 'CMD', group: 'comparison', parse: file,
      help: `shell command that runs the peer (${script}); the bench appends the case arguments`,
    },
    'peers-dir': {
      arg: 'DIR', group: 'comparison', parse: file,
      help: `folder holding ${script}: the peer runs as '<python> DIR/${script}'`,
    },
    python: {
      arg: 'CMD', group: 'comparison', default: 'python3', parse: file,
      help: 'python with torch that --peers-dir scripts run with',
    },
    rounds: {
      arg: 'N', group: 'comparison', default: '1', parse: integer(1, 1000),
      help: 'repeat the cases N times, ours and the peer\'s interleaved; report min/median/max over rounds',
    },
  } satisfies Spec;
}
