/**
 * Benchmarks worth trusting on a noisy machine: a bench with a peer runs its cases in rounds,
 * ours then the peer's, ours, the peer's … (`--rounds N`), so that a slow minute hurts both
 * sides alike, and summarises each case across rounds: min, median and max of the per-round
 * figure for every implementation, and the ratio of the medians (ours / peer). A ratio from one
 * round is weak evidence; the spread across rounds says how weak.
 */
import { median, type Report, type Row } from './report.js';
import { Table, type Column } from './table.js';

export interface SummaryRow {
  /** The case: the row fields that name it (op, ranks, size_bytes, …). */
  case: Record<string, string | number>;
  impl: string;
  metric: string;
  unit: string;
  rounds: number;
  min: number;
  median: number;
  max: number;
  /** On a peer's rows: each of our implementations' median / this one's. */
  ratios?: Record<string, number>;
}

export interface SummaryOptions {
  /** Row fields that name a case (they become the summary's first columns). */
  caseKeys: string[];
  /** The row field summarised, e.g. 'busbw_gbps' or 'median_us'. */
  metric: string;
  unit: string;
  decimals: number;
  /** Our implementations (e.g. groupcomm-tcp, groupcomm-shm); every other impl is a peer. */
  ours: string[];
  /** How a case key prints (e.g. size_bytes as 4K). */
  show?: Record<string, (v: unknown) => string>;
  title: string;
}

/** Per case and impl: min/median/max of `metric` over the rounds; prints a table and keeps it. */
export function summarize(report: Report, rows: Row[], o: SummaryOptions): SummaryRow[] {
  const cases = new Map<string, { key: Record<string, string | number>; byImpl: Map<string, number[]> }>();
  const impls: string[] = [];
  for (const r of rows) {
    const v = r[o.metric];
    if (typeof v !== 'number' || !Number.isFinite(v)) continue;
    const key = Object.fromEntries(o.caseKeys.map((k) => [k, r[k] as string | number]));
    const id = JSON.stringify(key);
    let c = cases.get(id);
    if (!c) cases.set(id, (c = { key, byImpl: new Map() }));
    if (!c.byImpl.has(r.impl)) c.byImpl.set(r.impl, []);
    c.byImpl.get(r.impl)!.push(v);
    if (!impls.includes(r.impl)) impls.push(r.impl);
  }
  const isOurs = (i: string) => o.ours.includes(i);
  impls.sort((a, b) => Number(isOurs(b)) - Number(isOurs(a)));
  const peers = impls.filter((i) => !isOurs(i));
  const mineOf = impls.filter(isOurs);
  const out: SummaryRow[] = [];
  const printed: Record<string, unknown>[] = [];
  for (const { key, byImpl } of cases.values()) {
    const line: Record<string, unknown> = {};
    for (const k of o.caseKeys) line[k] = o.show?.[k] ? o.show[k](key[k]) : key[k];
    for (const impl of impls) {
      const vs = byImpl.get(impl);
      if (!vs) continue;
      const s: SummaryRow = {
        case: key, impl, metric: o.metric, unit: o.unit, rounds: vs.length,
        min: Math.min(...vs), median: median(vs), max: Math.max(...vs),
      };
      if (!isOurs(impl)) {
        s.ratios = {};
        for (const m of mineOf) {
          const mine = byImpl.get(m);
          if (!mine) continue;
          s.ratios[m] = median(mine) / s.median;
          line[`${m}/${impl}`] = s.ratios[m];
        }
      }
      out.push(s);
      line[`${impl}:min`] = s.min;
      line[`${impl}:median`] = s.median;
      line[`${impl}:max`] = s.max;
    }
    printed.push(line);
  }
  if (!out.length) return out;
  const cols: Column[] = o.caseKeys.map((k) => ({ key: k, title: k === 'size_bytes' ? 'size' : k, align: 'left' as const }));
  for (const impl of impls) {
    for (const stat of ['min', 'median', 'max']) cols.push({ key: `${impl}:${stat}`, title: stat, unit: o.unit, decimals: o.decimals, group: impl });
  }
  for (const peer of peers) {
    for (const m of mineOf) cols.push({ key: `${m}/${peer}`, title: `${m}/${peer}`, unit: 'medians', decimals: 2, group: 'ratio' });
  }
  report.section(o.title);
  const table = new Table(cols, printed, report.out);
  for (const p of printed) table.row(p);
  report.summary.push(...out);
  return out;
}
