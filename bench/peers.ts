/**
 * Peers: another library's benchmark of the same cases, run in the same invocation so both sides
 * see the same machine (gloo through torch for `bench cpu`, torch's TCPStore for `bench store`,
 * a vLLM-like process group for `bench pg`). Where the peer lives is given on the command line,
 * never assumed:
 *   --peer 'CMD'       a shell command that runs the peer script; the bench appends its case
 *                      arguments (e.g. `--worlds 2 --sizes 4096,65536 --seconds 1`);
 *   --peers-dir DIR    the folder holding the peer scripts: runs `<--python> DIR/<script>`.
 * Without either, the bench prints a note and runs our rows only.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from './args.js';

export interface PeerFlags {
  peer?: string;
  'peers-dir'?: string;
  python: string;
}

const quote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** The shell command that runs `script`, or undefined when no peer was asked for. */
export function peerCommand(f: PeerFlags, script: string, command: string): string | undefined {
  if (f.peer && f['peers-dir']) throw new UsageError(`${command}: give --peer or --peers-dir, not both`);
  if (f.peer) return f.peer;
  if (!f['peers-dir']) return undefined;
  const file = path.resolve(f['peers-dir'], script);
  if (!fs.existsSync(file)) throw new UsageError(`${command}: bad value for --peers-dir: '${f['peers-dir']}' (it has no ${script})`);
  return `${f.python} ${quote(file)}`;
}

export interface PeerRun {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Runs `cmd args…` through bash; `onLine` sees each stdout line as it comes. The whole process
 * group is killed after `timeoutMs` (a peer that hangs must not hang the bench).
 */
export function runPeer(cmd: string, args: string[], timeoutMs: number, onLine?: (line: string) => void): Promise<PeerRun> {
  const full = `${cmd} ${args.map(quote).join(' ')}`;
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', full], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    let partial = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      partial += d;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        onLine?.(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.on('error', (e) => { stderr += String(e); });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (partial) onLine?.(partial);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

/** The last lines of a failed peer's output, for a note. */
export function tail(run: PeerRun, chars = 400): string {
  const t = (run.stderr || run.stdout).trim();
  return t.length > chars ? '…' + t.slice(-chars) : t;
}
