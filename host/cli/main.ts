/**
 * The `groupcomm` command. Each subcommand lives in its own module (`host/cli/<name>.ts`)
 * exporting `run(argv): Promise<number>` and a one-line `summary`; they load on demand so
 * `groupcomm store` never pulls in koffi. Exit status: 0 ok, 1 failure, 2 usage error.
 */
import { setting } from '../base/config.js';
import { ErrorCode, isGroupcommError } from '../base/errors.js';

/** With GROUPCOMM_DEBUG set, a failing command also prints the error's stack and cause. */
const debugOn = () => {
  try {
    return setting('GROUPCOMM_DEBUG') !== 'off';
  } catch {
    return false; // a bad value is the error being reported
  }
};

const COMMANDS: Record<string, string> = {
  store: 'run a standalone TCPStore-compatible server',
  launch: 'start the ranks of a script on this node; --nnodes for many (torchrun\'s variables)',
  demo: 'elastic scale-up/down demo on local ranks',
  bench: 'benchmarks: core | store | pg | cpu | device | coordinator',
  doctor: 'versions, runtimes, koffi/shm, device probes, settings: what a bug report needs (alias: info)',
};

/** Other names of a command. */
const ALIASES: Record<string, string> = { info: 'doctor' };

export function usage(): string {
  const lines = Object.entries(COMMANDS).map(([k, v]) => `  ${k.padEnd(8)} ${v}`);
  return `usage: groupcomm <command> [options]\n\ncommands:\n${lines.join('\n')}\n\n` +
    `Run \`groupcomm <command> --help\` for a command's options; \`groupcomm --version\` prints the version.`;
}

export async function main(argv: string[]): Promise<number> {
  const [given, ...rest] = argv;
  const cmd = given !== undefined ? ALIASES[given] ?? given : given;
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    // pkgroot, not log.ts: loading log.ts checks GROUPCOMM_DEBUG, and --version must always work.
    const { packageRoot } = await import('../base/pkgroot.js');
    const fs = await import('node:fs');
    const pkg = JSON.parse(fs.readFileSync(`${packageRoot()}/package.json`, 'utf8')) as { version: string };
    console.log(`groupcomm ${pkg.version}`);
    return 0;
  }
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(usage());
    return cmd ? 0 : 2;
  }
  if (!(cmd in COMMANDS)) {
    console.error(`groupcomm: unknown command '${cmd}'\n\n${usage()}`);
    return 2;
  }
  let mod: { run(argv: string[]): Promise<number> };
  try {
    mod = await import(`./${cmd}.js`);
  } catch (e) {
    // A GROUPCOMM_* variable with a bad value fails loading the modules (GROUPCOMM_DEBUG is read
    // as groupcomm loads): that is a configuration error, not a missing command.
    if (isGroupcommError(e, ErrorCode.CONFIG)) {
      console.error(`groupcomm ${cmd}: ${e.code}: ${e.message}`);
      return 2;
    }
    console.error(`groupcomm: command '${cmd}' is not available in this build: ${(e as Error).message}`);
    return 1;
  }
  try {
    return await mod.run(rest);
  } catch (e) {
    const err = e as { code?: string; message?: string };
    console.error(`groupcomm ${cmd}: ${err.code ? err.code + ': ' : ''}${err.message ?? String(e)}`);
    if (debugOn()) console.error(e);
    return 1;
  }
}
