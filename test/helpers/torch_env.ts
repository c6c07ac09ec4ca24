/**
 * Finds a PyTorch ≥ 2.2 to run interop scripts with, or says why there is none. In order:
 *   GROUPCOMM_TORCH_PYTHON   a python command on this machine that has torch ≥ 2.2
 *   GROUPCOMM_TORCH_CHROOT   a chroot with python3 + torch (e.g. the Debian trixie one built by
 *                            shared/peers/trixie-torch.sh); /opt/trixie is tried by default
 *   python3                  the system python, if its torch is recent enough
 * Scripts run inside a chroot are copied into its /tmp first. Used by test/interop/torch.test.ts;
 * the benches take their peers from the command line instead (--peer, --peers-dir).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface TorchPython {
  /** Command and arguments that run `script` (a path on this machine). */
  command(script: string): [string, string[]];
  version: string;
  where: string;
}

export type TorchLookup = { ok: true; torch: TorchPython } | { ok: false; reason: string };

function recentEnough(v: string): boolean {
  const [maj, min] = v.split('.').map((x) => parseInt(x, 10));
  return maj > 2 || (maj === 2 && min >= 2);
}

function hostPython(cmd: string): TorchLookup {
  // importlib.metadata reads the version without importing torch (seconds saved per probe).
  const r = spawnSync(cmd, ['-c', 'import importlib.metadata as m; print(m.version("torch"))'], { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) return { ok: false, reason: `${cmd} has no torch` };
  const version = r.stdout.trim();
  if (!recentEnough(version)) return { ok: false, reason: `${cmd} has torch ${version}; the TCPStore protocol needs ≥ 2.2` };
  return { ok: true, torch: { version, where: cmd, command: (script) => [cmd, [script]] } };
}

function chrootPython(dir: string): TorchLookup {
  const vfile = path.join(dir, 'usr/lib/python3/dist-packages/torch/version.py');
  if (!fs.existsSync(vfile)) return { ok: false, reason: `no torch in chroot ${dir}` };
  const m = /__version__\s*=\s*'([^']+)'/.exec(fs.readFileSync(vfile, 'utf8'));
  const version = m?.[1] ?? '?';
  if (!recentEnough(version)) return { ok: false, reason: `chroot ${dir} has torch ${version}; need ≥ 2.2` };
  if (process.getuid?.() !== 0) return { ok: false, reason: `chroot ${dir} needs root to enter` };
  if (!fs.existsSync(path.join(dir, 'proc/self'))) {
    return { ok: false, reason: `chroot ${dir} has no /proc mounted (run: bash shared/peers/trixie-torch.sh ${dir})` };
  }
  return {
    ok: true,
    torch: {
      version,
      where: `chroot ${dir}`,
      command: (script) => {
        const inside = `/tmp/groupcomm-${process.pid}-${path.basename(script)}`;
        fs.copyFileSync(script, path.join(dir, inside));
        return ['chroot', [dir, 'python3', inside]];
      },
    },
  };
}

let cached: TorchLookup | undefined;

export function findTorch(): TorchLookup {
  if (cached) return cached;
  const reasons: string[] = [];
  const tries: Array<() => TorchLookup> = [];
  if (process.env.GROUPCOMM_TORCH_PYTHON) tries.push(() => hostPython(process.env.GROUPCOMM_TORCH_PYTHON!));
  tries.push(() => chrootPython(process.env.GROUPCOMM_TORCH_CHROOT || '/opt/trixie'));
  tries.push(() => hostPython('python3'));
  for (const t of tries) {
    const r = t();
    if (r.ok) return (cached = r);
    reasons.push(r.reason);
  }
  return (cached = { ok: false, reason: reasons.join('; ') });
}
