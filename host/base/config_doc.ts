/**
 * docs/env.md, rendered from the table in config.ts: `node scripts/gen-env-doc.js` writes it and
 * test/unit/config.test.ts fails when the file differs, so the page cannot drift from the code.
 * The prose around the tables lives here.
 */
import { SETTINGS, type SettingDecl, type SettingKind, type SettingName } from './config.js';

function defaultOf(d: SettingDecl): string {
  if (d.defaultDoc !== undefined) return d.defaultDoc;
  const v = d.default;
  return Array.isArray(v) ? v.join(',') : `\`${String(v)}\``;
}

function table(kind: SettingKind): string {
  const rows = (Object.keys(SETTINGS) as SettingName[])
    .filter((n) => ((SETTINGS[n] as SettingDecl).kind ?? 'user') === kind)
    .map((n) => {
      const d = SETTINGS[n] as SettingDecl;
      const when = d.read === 'process' ? 'once' : 'when needed';
      const bad = d.onBad === 'warn' ? ' A bad value warns and uses the default.' : '';
      return `| \`${n}\` | ${d.parser.accepts} | ${defaultOf(d)} | ${d.readBy} | ${when} | ${d.doc}${bad} |`;
    });
  return ['| variable | accepts | default | read by | read | meaning |', '|---|---|---|---|---|---|', ...rows].join('\n');
}

/** The whole of docs/env.md. */
export function renderEnvDoc(): string {
  return `# Environment variables

<!-- Generated from host/base/config.ts by \`node scripts/gen-env-doc.js\` (after \`npm run build\`).
     Edit the table there; test/unit/config.test.ts fails when this file differs. -->

Every knob has an option in code too (the option wins); the variables are for operators who
cannot change the code. All are optional, and an empty value counts as unset.

A value a variable does not accept is an error, \`ERR_GROUPCOMM_CONFIG\` with \`variable\` set,
naming the variable and what it accepts (\`GROUPCOMM_TIMEOUT_MS=5s\`, \`abc\` or \`0\` is refused, not
replaced by the default). It is thrown by the call that needs the value (creating a group, say),
not when the package is imported — except \`GROUPCOMM_DEBUG\`, which is read as groupcomm loads:
a level it does not accept (\`GROUPCOMM_DEBUG=verbose\`) fails the import with that error, before
any socket or group exists, rather than leaving logging silently off. The subsystem filter
\`GROUPCOMM_DEBUG_SUBSYS\` only warns: a bad value is reported once on stderr, and every subsystem
logs. \`groupcomm doctor\` lists every variable in force, bad ones included.

"read" says when the variable is looked at: *when needed* means every time its value is needed
(creating an object, loading the core), so a later change in \`process.env\` counts; *once* means
the first time, then cached for the life of the process (hot paths).

\`settingsInForce()\` (\`host/base/config.ts\`) lists every variable with the value in force and
whether it came from the environment or the default.

${table('user')}

## Set by groupcomm for its own processes

\`groupcomm demo\` starts one process per rank and passes it these; they are not meant to be set
by hand.

${table('internal')}

## Development tooling

${table('tooling')}

The \`GROUPCOMM_BENCH_*\` variables are internal to the benchmarks (\`bench/\` sets them for the
processes it starts). The few variables tests read (\`GROUPCOMM_UPDATE_GOLDEN\`,
\`GROUPCOMM_FUZZ_CASES\`, …) are described in the test files that read them.
`;
}
