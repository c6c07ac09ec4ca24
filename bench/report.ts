/**
 * Benchmark rows and their printing: a table line per row as it arrives, notes (`# …`), and at
 * the end, with `--json FILE`, every row of every round plus the summary across rounds.
 * `impl` names what was measured (groupcomm, wasm, ts-baseline, torch-2.6, gloo, …) so ratios
 * can be computed from the file alone; `round` numbers the repetitions (bench/rounds.ts).
 */
import fs from 'node:fs';
import { Table, type Column } from './table.js';
import type { SummaryRow } from './rounds.js';

export interface Row {
  bench: string;
  name: string;
  impl: string;
  round?: number;
  dtype?: string;
  op?: string;
  ranks?: number;
  clients?: number;
  size_bytes?: number;
  count?: number;
  median_us?: number;
  p99_us?: number;
  algbw_gbps?: number;
  busbw_gbps?: number;
  gbps?: number;
  ops_s?: number;
  wrong?: number;
  [extra: string]: unknown;
}

/** The middle value; of an even count, the mean of the two middle ones. NaN for none. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return !s.length ? NaN : s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))] : NaN;
}

/** How a row key shows in a generic table: title, unit and digits, from its suffix. */
function columnFor(key: string): Column {
  const unit = (suffix: string, u: string, decimals: number): Column => ({ key, title: key.slice(0, -suffix.length), unit: u, decimals });
  if (key === 'size_bytes') return { key, title: 'size', unit: 'B' };
  if (key === 'ops_s') return { key, title: 'ops/s' };
  if (key === 'gbps') return { key, title: 'rate', unit: 'GB/s', decimals: 3 };
  if (key === 'wrong') return { key, title: '#wrong' };
  if (key.endsWith('_us')) return unit('_us', 'us', 1);
  if (key.endsWith('_gbps')) return unit('_gbps', 'GB/s', 3);
  if (key.endsWith('_mib')) return unit('_mib', 'MiB', 1);
  if (key.endsWith('_s')) return unit('_s', 's', 2);
  if (key === 'name' || key === 'impl' || key === 'op' || key === 'dtype') return { key, title: key, align: 'left' };
  return { key, title: key };
}

export class Report {
  readonly rows: Row[] = [];
  readonly summary: SummaryRow[] = [];
  readonly notes: string[] = [];
  /** Facts about the machine measured during the run (bench/limits.ts). */
  readonly machine: Record<string, number | string> = {};
  private table: Table | undefined;

  constructor(readonly bench: string, readonly out: (line: string) => void = (l) => console.log(l)) {}

  /** Keeps a row without printing it (its target prints its own table). */
  record(row: Omit<Row, 'bench'>): Row {
    const r = { bench: this.bench, ...row } as Row;
    this.rows.push(r);
    return r;
  }

  /** Keeps a row and prints it; the first row after a section fixes the table's columns. */
  add(row: Omit<Row, 'bench'>, samples: Record<string, unknown>[] = []): void {
    const r = this.record(row);
    if (!this.table) {
      const keys = Object.keys(r).filter((k) => k !== 'bench');
      this.table = new Table(keys.map(columnFor), [r, ...samples], this.out);
    }
    this.table.row(r);
  }

  /** Starts a new table (a different set of columns) under a heading. */
  section(title: string): void {
    this.table = undefined;
    this.out(`\n# ${title}`);
  }

  note(line: string): void {
    this.notes.push(line);
    this.out(`# ${line}`);
  }

  wrong(): number {
    return this.rows.reduce((s, r) => s + (typeof r.wrong === 'number' ? r.wrong : 0), 0);
  }

  writeJson(file: string): void {
    const doc = { bench: this.bench, machine: this.machine, notes: this.notes, rows: this.rows, summary: this.summary };
    fs.writeFileSync(file, JSON.stringify(doc, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
    this.out(`# wrote ${this.rows.length} rows to ${file}`);
  }
}
