/**
 * Every GROUPCOMM_* environment variable groupcomm reads, declared once: its parser, what it
 * accepts, its default and a one-line doc. Nothing else in host/ or plugins/ reads
 * `process.env.GROUPCOMM_*` (scripts/check-source.js, run by the tests, checks), and docs/env.md
 * is generated from this table (`node scripts/gen-env-doc.js`; a test fails when they differ).
 *
 * Rules for every variable: an empty value means unset; a value the variable does not accept is
 * an ERR_GROUPCOMM_CONFIG error naming the variable and what it accepts, thrown by the call that
 * needs it (GROUPCOMM_DEBUG: by loading groupcomm, see log.ts) — except the subsystem filter
 * GROUPCOMM_DEBUG_SUBSYS, which warns once on stderr and uses its default. Options given in code
 * win over the variables.
 */
import { configError } from './errors.js';

/** Turns the raw text of a variable into its value; undefined when the text is not accepted. */
interface Parser<T> {
  /** What it accepts, in words (error messages and docs/env.md). */
  accepts: string;
  parse(raw: string): T | undefined;
}

/** Who the variable is for: operators, groupcomm's own child processes, or its dev tooling. */
export type SettingKind = 'user' | 'internal' | 'tooling';

export interface SettingDecl<T = unknown> {
  parser: Parser<T>;
  /** The value when unset; undefined when the reader computes it (see defaultDoc). */
  default: T | undefined;
  /** How docs/env.md shows the default (default: the value itself). */
  defaultDoc?: string;
  /** Who reads it (docs). */
  readBy: string;
  /**
   * 'call': read each time it is needed (a test may set it between calls); 'process': read once,
   * then cached, where the reader is on a hot path.
   */
  read: 'call' | 'process';
  /** What a bad value does: 'error' (the default) or 'warn' (warn once and use the default). */
  onBad?: 'error' | 'warn';
  kind?: SettingKind;
  /** One line (markdown) for docs/env.md. */
  doc: string;
}

// ---- parsers -------------------------------------------------------------------------------------

const DIGITS = /^\d+$/;

function integer(min: number, max: number, accepts: string): Parser<number> {
  return {
    accepts,
    parse(raw) {
      const t = raw.trim();
      if (!DIGITS.test(t)) return undefined;
      const v = Number(t);
      return v >= min && v <= max ? v : undefined;
    },
  };
}

const positiveInt = (unit: string) => integer(1, Number.MAX_SAFE_INTEGER, `a positive integer (${unit})`);
const nonNegativeInt = (unit: string) => integer(0, Number.MAX_SAFE_INTEGER, `an integer >= 0 (${unit})`);
const u32 = (unit: string) => integer(1, 0xffffffff, `an integer in [1, 2^32) (${unit})`);

function nonNegativeNumber(unit: string): Parser<number> {
  return {
    accepts: `a number >= 0 (${unit})`,
    parse(raw) {
      const t = raw.trim();
      return /^\d+(\.\d+)?$/.test(t) ? Number(t) : undefined;
    },
  };
}

/** A power of two in [min, max] bytes. */
function powerOfTwo(min: number, max: number, accepts: string): Parser<number> {
  const n = integer(min, max, accepts);
  return { accepts, parse: (raw) => { const v = n.parse(raw); return v !== undefined && (v & (v - 1)) === 0 ? v : undefined; } };
}

/** One of `values` (case-insensitive); `aliases` map more spellings to them. */
function oneOf<T extends string>(values: readonly T[], aliases: Record<string, T> = {}): Parser<T> {
  const byTarget = new Map<T, string[]>();
  for (const [a, t] of Object.entries(aliases)) byTarget.set(t, [...(byTarget.get(t) ?? []), a]);
  const extra = [...byTarget].map(([t, as]) => `${as.join('/')} = ${t}`);
  return {
    accepts: `one of ${values.join(', ')}` + (extra.length ? ` (or ${extra.join(', ')})` : ''),
    parse(raw) {
      const t = raw.trim().toLowerCase();
      return (values as readonly string[]).includes(t) ? t as T : aliases[t];
    },
  };
}

/** A comma-separated list of names from `values` (case-insensitive). */
function listOf(values: readonly string[]): Parser<string[]> {
  return {
    accepts: `a comma-separated list of ${values.join(', ')}`,
    parse(raw) {
      const items = raw.split(',').map((s) => s.trim().toUpperCase()).filter(Boolean);
      return items.length > 0 && items.every((i) => values.includes(i)) ? items : undefined;
    },
  };
}

function text(accepts: string): Parser<string> {
  return { accepts, parse: (raw) => raw };
}

// ---- the table -----------------------------------------------------------------------------------

export const LOG_LEVELS = ['off', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevelSetting = (typeof LOG_LEVELS)[number];
export const LOG_SUBSYSTEMS = ['STORE', 'PG', 'CPU', 'DEVICE', 'CORE', 'COORD'] as const;

const decl = <T>(d: SettingDecl<T>) => d;

export const SETTINGS = {
  GROUPCOMM_DEBUG: decl<LogLevelSetting>({
    parser: oneOf(LOG_LEVELS, { '1': 'info', true: 'info', '0': 'off', false: 'off' }),
    default: 'off', readBy: 'all (`host/base/log.ts`)', read: 'process',
    doc: 'log lines on stderr at this level and above, prefixed with a timestamp and `groupcomm host:pid SUBSYS`, after a version banner (info and above); `trace` adds one line per operation (op, bytes, peers, µs). Silent by default; another value fails loading groupcomm with `ERR_GROUPCOMM_CONFIG`.',
  }),
  GROUPCOMM_DEBUG_SUBSYS: decl<string[]>({
    parser: listOf(LOG_SUBSYSTEMS),
    default: undefined, defaultDoc: 'all', readBy: 'all (`host/base/log.ts`)', read: 'process', onBad: 'warn',
    doc: 'log only these subsystems.',
  }),
  GROUPCOMM_RUN_ID: decl<string>({
    parser: text('1–64 characters'),
    default: undefined, defaultDoc: 'unset', readBy: 'env:// helpers (`host/base/launch_env.ts`), coordinator', read: 'call', kind: 'internal',
    doc: 'the job\'s id, set by `groupcomm launch` for its ranks (also as `TORCHELASTIC_RUN_ID`); while it is set, a coordinator refuses `groupRanks` naming ranks ≥ `WORLD_SIZE`. See [multinode.md](multinode.md).',
  }),
  GROUPCOMM_SOCKET_IFNAME: decl<string>({
    parser: text('interface names, comma-separated: prefixes (`eth`), `^` to exclude (`^docker,lo`), `=` for exact names (`=eth0`)'),
    default: undefined, defaultDoc: 'the source address of the route toward MASTER_ADDR (or the rendezvous store), else 127.0.0.1',
    readBy: 'CPU group, coordinator (`host/base/netaddr.ts`)', read: 'call',
    doc: 'which interface listeners bind and advertise, with NCCL_SOCKET_IFNAME\'s rules (prefix match, `^` excludes, `=` exact); the first matching address of the peer\'s family wins. See [multinode.md](multinode.md).',
  }),
  GROUPCOMM_LIVENESS_MS: decl<number>({
    parser: nonNegativeInt('milliseconds; 0 turns detection off'),
    default: 30_000, readBy: 'CPU group, store client, launcher', read: 'call',
    doc: 'bound on noticing a silently cut link (packets dropped, no FIN): a CPU-group peer silent this long, or a store that does not answer a ping within it while a call waits, is lost (`ERR_GROUPCOMM_PEER_LOST` naming the ranks). Heartbeats go every fifth of it. See [multinode.md](multinode.md#liveness).',
  }),
  GROUPCOMM_TCP_KEEPALIVE_MS: decl<number>({
    parser: nonNegativeInt('milliseconds; 0 turns keepalive off'),
    default: 10_000, readBy: 'CPU group, store client and server', read: 'call',
    doc: 'idle time before the kernel sends TCP keepalive probes on long-lived connections (store clients, CPU mesh links), so that dead peers and stale NAT/firewall state are noticed by the kernel too.',
  }),
  GROUPCOMM_TIMEOUT_MS: decl<number>({
    parser: positiveInt('milliseconds'),
    default: 300_000, readBy: 'all (`host/base/deadline.ts`)', read: 'call',
    doc: 'the one default timeout every layer uses when neither the object nor the call gives `timeoutMs`.',
  }),
  GROUPCOMM_CORE_WASM: decl<string>({
    parser: text('a path to a .wasm file'),
    default: undefined, defaultDoc: '`build/core.wasm` under the package root', readBy: 'core loader', read: 'call',
    doc: 'load another build of the WebAssembly core (e.g. the debug build).',
  }),
  GROUPCOMM_STORE_SECRET: decl<string>({
    parser: text('any non-empty text'),
    default: undefined, defaultDoc: 'unset (GROUPCOMM_SECRET)', readBy: '`groupcomm store`', read: 'call',
    doc: 'require groupcomm\'s shared-secret handshake (torch clients cannot connect then); `groupcomm store` falls back to GROUPCOMM_SECRET. See [store.md](store.md).',
  }),
  GROUPCOMM_SECRET: decl<string>({
    parser: text('any non-empty text'),
    default: undefined, defaultDoc: 'unset (`groupcomm launch` generates one for its ranks)', readBy: 'store server and client, CPU group mesh, process group, coordinator', read: 'call',
    doc: 'the job secret: store clients and servers authenticate with it, and CPU-group peers prove it in every handshake (challenge–response, bound to group, epoch and both ranks). Required to listen on a non-loopback address. Options win. See [security.md](security.md).',
  }),
  GROUPCOMM_INSECURE: decl<boolean>({
    parser: { accepts: '1, true, 0 or false', parse: (raw) => (/^(1|true)$/i.test(raw.trim()) ? true : /^(0|false)$/i.test(raw.trim()) ? false : undefined) },
    default: false, readBy: 'store server, CPU group mesh', read: 'call',
    doc: 'allow listening on a non-loopback address without a secret (logged as a warning); same as the `insecure: true` option. See [security.md](security.md).',
  }),
  GROUPCOMM_STORE_HANDSHAKE_TIMEOUT_MS: decl<number>({
    parser: positiveInt('milliseconds'),
    default: 10_000, readBy: 'store server', read: 'call',
    doc: 'a connection that has not completed the handshake (and authentication) within this is closed.',
  }),
  GROUPCOMM_STORE_MAX_CONNECTIONS: decl<number>({
    parser: positiveInt('connections'),
    default: 4096, readBy: 'store server', read: 'call',
    doc: 'connections held at once; further ones are closed at accept (logged).',
  }),
  GROUPCOMM_STORE_MAX_BUFFERED_BYTES: decl<number>({
    parser: positiveInt('bytes'),
    default: 1024 * 1024 * 1024, readBy: 'store server', read: 'call',
    doc: 'server-wide budget for bytes held in partially received requests; a connection that would exceed it is closed.',
  }),
  GROUPCOMM_CPU_MAX_FRAME_BYTES: decl<number>({
    parser: positiveInt('bytes'),
    default: 2 ** 32, readBy: 'CPU group', read: 'call',
    doc: 'largest frame payload a peer may declare (exchanged in the handshake; a larger declared length closes that link with ERR_GROUPCOMM_PROTOCOL before anything is allocated). A call whose frame (a point-to-point tensor, a collective step\'s segment) is above a peer\'s limit fails on the sender with ERR_GROUPCOMM_INVALID_ARGUMENT naming that peer.',
  }),
  GROUPCOMM_MAX_DECODE_BYTES: decl<number>({
    parser: positiveInt('bytes'),
    default: 2 ** 32, readBy: 'coordinator (tensor dicts)', read: 'call',
    doc: 'largest tensor size a received tensor-dict frame may declare for a slot (the receiver allocates it before the data arrives); a larger one is ERR_GROUPCOMM_PROTOCOL.',
  }),
  GROUPCOMM_CHECK_CALLS_EVERY: decl<number>({
    parser: nonNegativeInt('device collectives'),
    default: undefined, defaultDoc: '1 with GROUPCOMM_DEBUG=debug or trace, else 64', readBy: 'coordinator', read: 'call',
    doc: 'a coordinator checks every N-th collective on its device communicator against the other ranks\' calls (collective, dtype, op, root, shape, dim) over the store channel before running it, failing with `ERR_GROUPCOMM_MISMATCH` instead of computing garbage; 0 turns it off. CPU tensors are always checked (a fingerprint in each frame). See [coordinator.md](coordinator.md#failures).',
  }),
  GROUPCOMM_PG_SPIN_US: decl<number>({
    parser: nonNegativeNumber('microseconds'),
    default: undefined, defaultDoc: '100 if worldSize ≤ CPUs (Node), else 0', readBy: 'process group', read: 'call',
    doc: 'µs a receive keeps the event loop turning before its process may sleep (push mode); 0 turns it off. See [process-group.md](process-group.md#spinning-before-sleeping).',
  }),
  GROUPCOMM_CPU_CHUNK_BYTES: decl<number>({
    parser: u32('bytes'),
    default: 512 * 1024, readBy: 'CPU group', read: 'call',
    doc: 'bytes per pipelined ring segment.',
  }),
  GROUPCOMM_CPU_WINDOW: decl<number>({
    parser: u32('segments'),
    default: 4, readBy: 'CPU group', read: 'call',
    doc: 'ring segments in flight.',
  }),
  GROUPCOMM_CPU_SMALL_BYTES: decl<number>({
    parser: u32('bytes'),
    default: 64 * 1024, readBy: 'CPU group', read: 'call',
    doc: 'messages up to this size use the latency algorithms (tree / recursive doubling).',
  }),
  GROUPCOMM_CPU_RECV_BUFFER_BYTES: decl<number>({
    parser: positiveInt('bytes'),
    default: undefined, defaultDoc: '1048576 (the coordinator caps it above 17 ranks)', readBy: 'CPU group, coordinator', read: 'call',
    doc: 'reused receive buffer per peer; when set it also wins over the coordinator\'s cap for large groups.',
  }),
  GROUPCOMM_CPU_TRANSPORT: decl<'auto' | 'tcp' | 'shm'>({
    parser: oneOf(['auto', 'tcp', 'shm'] as const),
    default: 'auto', readBy: 'CPU group', read: 'call',
    doc: '`auto` and `shm`: same-host peers move payloads through shared-memory rings (`shm` logs a failed setup as a warning); `tcp`: sockets only. See [cpu-group.md](cpu-group.md).',
  }),
  GROUPCOMM_CPU_SHM_RING_BYTES: decl<number>({
    parser: powerOfTwo(64 * 1024, 1 << 30, 'a power of two in [65536, 2^30] (bytes)'),
    default: undefined, defaultDoc: '16 MiB/(P−1) as a power of two in [256 KiB, 4 MiB]', readBy: 'CPU group', read: 'call',
    doc: 'payload bytes of each shared-memory ring this rank sends through.',
  }),
  GROUPCOMM_CPU_SHM_MIN_BYTES: decl<number>({
    parser: positiveInt('bytes'),
    default: 8192, readBy: 'CPU group', read: 'call',
    doc: 'smallest frame sent through a ring (smaller ones go over the socket; 1 sends everything through the rings).',
  }),
  GROUPCOMM_CPU_SHM_REDUCE_BYTES: decl<number>({
    parser: nonNegativeInt('bytes'),
    default: 256 * 1024, readBy: 'CPU group', read: 'call',
    doc: 'an allReduce of at least this many bytes, in a group of 3 to 8 ranks all on one host, reduces straight out of every rank\'s shared segment (one copy in, one out) instead of the ring; 0 turns it off. Must be the same on every rank. See [cpu-group.md](cpu-group.md#shared-segment-allreduce).',
  }),
  GROUPCOMM_CPU_SHM_REDUCE_CHUNK_BYTES: decl<number>({
    parser: integer(4096, 1 << 30, 'an integer in [4096, 2^30] (bytes)'),
    default: 1024 * 1024, readBy: 'CPU group', read: 'call',
    doc: 'bytes of each of the three buffers in a rank\'s allReduce segment (lowered so that the P mapped segments stay within 24 MiB). Must be the same on every rank.',
  }),
  GROUPCOMM_INLINE_CPU_BYTES: decl<number>({
    parser: nonNegativeInt('bytes'),
    default: 64 * 1024, readBy: 'coordinator', read: 'process',
    doc: 'tensor dicts whose CPU tensors total at most this ride inside the metadata frame (0: never).',
  }),
  GROUPCOMM_MQ_SLOTS: decl<number>({
    parser: powerOfTwo(2, 1024, 'a power of two in [2, 1024]'),
    default: 8, readBy: 'coordinator (message-queue broadcaster)', read: 'call',
    doc: 'slots in the shared-memory ring of a coordinator created with `useMessageQueueBroadcaster` (the writer waits once this many chunks are unread).',
  }),
  GROUPCOMM_MQ_SLOT_BYTES: decl<number>({
    parser: powerOfTwo(4096, 1 << 28, 'a power of two in [4096, 2^28] (bytes)'),
    default: 1 << 20, readBy: 'coordinator (message-queue broadcaster)', read: 'call',
    doc: 'bytes per slot of that ring (8 of them a header); a larger message takes several slots.',
  }),
  GROUPCOMM_MQ_TRANSPORT: decl<'auto' | 'socket'>({
    parser: oneOf(['auto', 'socket'] as const),
    default: 'auto', readBy: 'coordinator (message-queue broadcaster)', read: 'call',
    doc: '`auto`: same-host ranks read group rank 0\'s broadcasts from shared memory; `socket`: this rank takes them over the CPU group (on rank 0: every rank does).',
  }),
  GROUPCOMM_MQ_SPIN_US: decl<number>({
    parser: nonNegativeInt('microseconds'),
    default: 1000, readBy: 'coordinator (message-queue broadcaster)', read: 'call',
    doc: 'how long a rank waiting on the ring polls it without sleeping; then a reader sleeps until the writer rings its doorbell (a one-byte CPU-group frame), a writer waiting for room polls every millisecond. Polling is what makes the ring fast when every rank has a core; lower it (0: sleep at once) where ranks outnumber cores.',
  }),
  GROUPCOMM_DEVICE_PLUGIN: decl<string>({
    parser: text('a backend name (cpu, cuda) or a module specifier'),
    default: 'cuda', readBy: 'device registry', read: 'call',
    doc: 'backend used when no `backend` option is given.',
  }),
  GROUPCOMM_NCCL_PATH: decl<string>({
    parser: text('a path to libnccl.so.2'),
    default: undefined, defaultDoc: 'discovered', readBy: 'cuda plugin', read: 'call',
    doc: 'path of `libnccl.so.2`; otherwise pip `nvidia/nccl/lib` of any python3 on PATH, then the system loader.',
  }),
  GROUPCOMM_CUDART_PATH: decl<string>({
    parser: text('a path to libcudart.so'),
    default: undefined, defaultDoc: 'discovered', readBy: 'cuda plugin', read: 'call',
    doc: 'path of `libcudart.so`; discovery as above (`nvidia/cuda_runtime/lib`).',
  }),
  GROUPCOMM_CUDA_PROBE_TIMEOUT_MS: decl<number>({
    parser: positiveInt('milliseconds'),
    default: 30_000, readBy: 'cuda plugin', read: 'call',
    doc: 'how long the library probe (in a child process) may take.',
  }),
  GROUPCOMM_DEMO_STORE_PORT: decl<number>({
    parser: integer(1, 65535, 'a port in [1, 65535]'),
    default: undefined, defaultDoc: 'required', readBy: 'demo rank', read: 'call', kind: 'internal',
    doc: 'the port of the demo\'s store.',
  }),
  GROUPCOMM_DEMO_BACKEND: decl<string>({
    parser: text('a backend name'), default: 'cpu', readBy: 'demo rank', read: 'call', kind: 'internal',
    doc: 'the device backend of the demo\'s groups.',
  }),
  GROUPCOMM_DEMO_STEPS: decl<number>({
    parser: positiveInt('steps'), default: 30, readBy: 'demo rank', read: 'call', kind: 'internal',
    doc: 'steps each phase serves.',
  }),
  GROUPCOMM_DEMO_STEP_MS: decl<number>({
    parser: nonNegativeNumber('milliseconds'), default: 5, readBy: 'demo rank', read: 'call', kind: 'internal',
    doc: 'pause between steps.',
  }),
  GROUPCOMM_DEMO_TIMEOUT_MS: decl<number>({
    parser: positiveInt('milliseconds'), default: 30_000, readBy: 'demo rank', read: 'call', kind: 'internal',
    doc: 'timeout of every demo operation.',
  }),
  GROUPCOMM_DEMO_T0: decl<number>({
    parser: nonNegativeInt('ms since the epoch'), default: undefined, defaultDoc: 'the rank\'s start', readBy: 'demo rank', read: 'call', kind: 'internal',
    doc: 'the demo\'s start time (event timestamps are relative to it).',
  }),
  GROUPCOMM_DEMO_DEVICE_EVERY: decl<number>({
    parser: positiveInt('steps'), default: 1, readBy: 'demo rank', read: 'call', kind: 'internal',
    doc: 'device tensors ride along every this many steps.',
  }),
  GROUPCOMM_REQUIRE_GPU: decl<'0' | '1'>({
    parser: oneOf(['0', '1'] as const, { true: '1', false: '0' }), default: '0', readBy: 'GPU tests (test/gpu)', read: 'call', kind: 'tooling',
    doc: '`1`: a GPU test fails, instead of skipping, where the cuda backend is not usable (`npm run test:gpu` sets it).',
  }),
  GROUPCOMM_TEST_FILE_TIMEOUT_MS: decl<number>({
    parser: positiveInt('milliseconds'), default: 300_000, readBy: '`scripts/test.js`', read: 'call', kind: 'tooling',
    doc: 'a test file running longer is killed and counted as a failure (the runner checks the value itself: it runs without a build).',
  }),
} as const;

export type SettingName = keyof typeof SETTINGS;
type ValueOf<N extends SettingName> = (typeof SETTINGS)[N] extends SettingDecl<infer T>
  ? ((typeof SETTINGS)[N]['default'] extends undefined ? T | undefined : T) : never;

type Env = Record<string, string | undefined>;

const cache = new Map<SettingName, unknown>();
const warned = new Set<string>();

/**
 * The value of `name`: parsed from `env` (default: this process's environment), else its
 * default (undefined where the reader computes it). Throws ERR_GROUPCOMM_CONFIG on a value the
 * variable does not accept (GROUPCOMM_DEBUG_SUBSYS warns instead). Settings read 'process' are
 * cached after their first read from process.env.
 */
export function setting<N extends SettingName>(name: N, env: Env = process.env): ValueOf<N> {
  const d = SETTINGS[name] as SettingDecl;
  const own = env === process.env;
  if (own && d.read === 'process' && cache.has(name)) return cache.get(name) as ValueOf<N>;
  const r = resolve(name, d, env);
  if (r.problem && own && !warned.has(`${name}=${env[name]}`)) {
    warned.add(`${name}=${env[name]}`);
    process.stderr.write(`groupcomm: ${r.problem}\n`);
  }
  if (own && d.read === 'process') cache.set(name, r.value);
  return r.value as ValueOf<N>;
}

/** Parses `name` from `env`; throws on a bad value unless the variable only warns. */
function resolve(name: string, d: SettingDecl, env: Env): { value: unknown; source: 'env' | 'default'; problem?: string } {
  const raw = env[name];
  if (raw === undefined || raw === '') return { value: d.default, source: 'default' };
  const v = d.parser.parse(raw);
  if (v !== undefined) return { value: v, source: 'env' };
  const err = configError(name, raw, d.parser.accepts);
  if (d.onBad !== 'warn') throw err;
  return { value: d.default, source: 'default', problem: `${err.message}; using the default (${d.defaultDoc ?? String(d.default)})` };
}

export interface SettingInForce {
  name: SettingName;
  /** The value in force (undefined: unset, the reader computes its default). */
  value: unknown;
  source: 'env' | 'default';
  /** Set when the variable holds a value it does not accept. */
  error?: string;
  /** The variable's text when it is set (what `error` is about; `groupcomm doctor` shows it). */
  raw?: string;
  kind: SettingKind;
}

/** Every declared variable with the value in force and where it came from (never throws). */
export function settingsInForce(env: Env = process.env): SettingInForce[] {
  return (Object.keys(SETTINGS) as SettingName[]).map((name) => {
    const d = SETTINGS[name] as SettingDecl;
    const kind = d.kind ?? 'user';
    const raw = env[name] === undefined || env[name] === '' ? {} : { raw: env[name] };
    try {
      const r = resolve(name, d, env);
      return { name, value: r.value, source: r.source, kind, ...raw, ...(r.problem ? { error: r.problem } : {}) };
    } catch (e) {
      return { name, value: d.default, source: 'default' as const, error: (e as Error).message, kind, ...raw };
    }
  });
}

/** What `name` accepts, in words. */
export function accepts(name: SettingName): string {
  return SETTINGS[name].parser.accepts;
}
