/**
 * `groupcomm bench <target> [options]`: each target is `bench/<target>.ts`, exporting
 * `run(argv, report)`; rows go to a table on stdout and, with `--json FILE`, to
 * `{ "rows": [...] }` (the schema of design §9).
 */
import { Report } from '../../bench/report.js';

const TARGETS = ['core', 'store', 'pg', 'cpu', 'device', 'coordinator'];

export async function run(argv: string[]): Promise<number> {
  const [target, ...rest] = argv;
  if (!target || target === '--help' || !TARGETS.includes(target)) {
    console.log(`usage: groupcomm bench <${TARGETS.join('|')}> [--json FILE] [target options]`);
    return target && target !== '--help' ? 2 : 0;
  }
  let json: string | undefined;
  const args: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--json') json = rest[++i];
    else if (rest[i].startsWith('--json=')) json = rest[i].slice(7);
    else args.push(rest[i]);
  }
  const mod = (await import(`../../bench/${target}.js`)) as {
    run(argv: string[], report: Report): Promise<void>;
  };
  const report = new Report(target);
  await mod.run(args, report);
  if (json) report.writeJson(json);
  return report.wrong() > 0 ? 1 : 0;
}
