/**
 * Benchmark rows (design §9) and their printing: a table as rows arrive, JSON at the end.
 * `impl` names what was measured (groupcomm, wasm, ts-baseline, torch-2.6, gloo, …) so ratios
 * can be computed from the file alone.
 */
import fs from 'node:fs';

export interface Row {
  bench: string;
  name: string;
  impl: string;
  dtype?: string;
  op?: string;
  ranks?: number;
  clients?: number;
  size_bytes?: number;
  count?: number;
  median_us: number;
  p99_us?: number;
  algbw_gbps?: number;
  busbw_gbps?: number;
  gbps?: number;
  ops_s?: number;
  wrong?: number;
  [extra: string]: unknown;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[s.length >> 1] : NaN;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))] : NaN;
}

const fmt = (v: unknown) =>
  v === undefined ? '-' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : String(v);

export class Report {
  readonly rows: Row[] = [];
  private columns: string[] | undefined;
  constructor(readonly bench: string) {}

  /** Adds a row and prints it; the first row fixes the table's columns. */
  add(row: Omit<Row, 'bench'>): void {
    const r = { bench: this.bench, ...row } as Row;
    this.rows.push(r);
    if (!this.columns) {
      this.columns = Object.keys(r).filter((k) => k !== 'bench');
      console.log(this.columns.map((c) => c.padStart(12)).join(' '));
    }
    console.log(this.columns.map((c) => fmt(r[c]).padStart(12)).join(' '));
  }

  /** Starts a new table (a different set of columns) under a heading. */
  section(title: string): void {
    this.columns = undefined;
    console.log(`\n# ${title}`);
  }

  note(line: string): void {
    console.log(`# ${line}`);
  }

  wrong(): number {
    return this.rows.reduce((s, r) => s + (r.wrong ?? 0), 0);
  }

  writeJson(file: string): void {
    fs.writeFileSync(file, JSON.stringify({ rows: this.rows }, null, 2) + '\n');
    console.log(`# wrote ${this.rows.length} rows to ${file}`);
  }
}
