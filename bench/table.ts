/**
 * Tables for the bench output: fixed-point numbers (never 2.252e+4), `n/a` where there is no
 * value (never NaN), units in a header line of their own (GB/s, us, B), and column widths taken
 * from the header and from the content the caller knows before the first row (the case list:
 * sizes, counts, names). Rows print as they arrive, so a value wider than its column widens the
 * column from that row on; numbers are right-aligned, names left-aligned.
 */

export interface Column {
  key: string;
  title: string;
  /** Shown under the title, in parentheses: 'GB/s', 'us', 'B', 'elements'. */
  unit?: string;
  /** Digits after the point for numbers (default: 0 for integers, 3 for others). */
  decimals?: number;
  /** A label spanning this and the following columns of the same group ('out-of-place'). */
  group?: string;
  align?: 'left' | 'right';
  /** At least this wide: room for measured values the samples cannot know (times, rates). */
  width?: number;
}

/** A number with `decimals` digits after the point; `n/a` for undefined, null, NaN, ±Infinity. */
export function fixed(v: unknown, decimals = 0): string {
  if (v === undefined || v === null) return 'n/a';
  if (typeof v === 'number') return Number.isFinite(v) ? v.toFixed(decimals) : 'n/a';
  if (typeof v === 'bigint') return v.toString();
  return String(v);
}

/** 4096 → '4K', 67108864 → '64M' (binary units, exact multiples only), else the byte count. */
export function sizeStr(b: number): string {
  if (b >= 1 << 30 && b % (1 << 30) === 0) return `${b / (1 << 30)}G`;
  if (b >= 1 << 20 && b % (1 << 20) === 0) return `${b / (1 << 20)}M`;
  if (b >= 1024 && b % 1024 === 0) return `${b / 1024}K`;
  return `${b}`;
}

export class Table {
  private readonly widths: number[];
  private printed = false;

  /**
   * `samples`: rows whose cells the table already knows (e.g. every case's size and count), so
   * the widths fit them from the first line on.
   */
  constructor(readonly columns: Column[], samples: Record<string, unknown>[] = [], private readonly out: (line: string) => void = (l) => console.log(l)) {
    this.widths = columns.map((c) => Math.max(
      c.title.length, c.unit ? c.unit.length + 2 : 0, c.width ?? 1,
      ...samples.filter((s) => s[c.key] !== undefined).map((s) => this.cell(c, s[c.key]).length)));
    // A group label must fit over its columns: widen the last one if not.
    for (const g of this.groups()) {
      const span = this.span(g.from, g.to);
      if (g.label.length > span) this.widths[g.to] += g.label.length - span;
    }
  }

  private groups(): { label: string; from: number; to: number }[] {
    const gs: { label: string; from: number; to: number }[] = [];
    this.columns.forEach((c, i) => {
      if (!c.group) return;
      const last = gs[gs.length - 1];
      if (last && last.label === c.group && last.to === i - 1) last.to = i;
      else gs.push({ label: c.group, from: i, to: i });
    });
    return gs;
  }

  private span(from: number, to: number): number {
    let w = 0;
    for (let i = from; i <= to; i++) w += this.widths[i] + (i > from ? 2 : 0);
    return w;
  }

  private cell(c: Column, v: unknown): string {
    if (typeof v === 'number') return fixed(v, c.decimals ?? (Number.isInteger(v) ? 0 : 3));
    return v === undefined || v === null ? 'n/a' : String(v);
  }

  private line(cells: string[], first = '  '): string {
    const parts = cells.map((s, i) => (this.columns[i].align === 'left' ? s.padEnd(this.widths[i]) : s.padStart(this.widths[i])));
    return (first + parts.join('  ')).trimEnd();
  }

  /** The header: group labels (if any), titles, units; printed before the first row. */
  header(): void {
    this.printed = true;
    const gs = this.groups();
    if (gs.length) {
      let s = '';
      for (const g of gs) {
        const start = 2 + (g.from > 0 ? this.span(0, g.from - 1) + 2 : 0);
        const w = this.span(g.from, g.to);
        s = s.padEnd(start) + g.label.padStart(Math.floor((w + g.label.length) / 2)).padEnd(w);
      }
      this.out(('#' + s.slice(1)).trimEnd());
    }
    this.out('#' + this.line(this.columns.map((c) => c.title)).slice(1));
    if (this.columns.some((c) => c.unit)) this.out('#' + this.line(this.columns.map((c) => (c.unit ? `(${c.unit})` : ''))).slice(1));
  }

  /** Prints one row (the header first, once); widens columns a value does not fit. */
  row(values: Record<string, unknown>): void {
    if (!this.printed) this.header();
    const cells = this.columns.map((c) => this.cell(c, values[c.key]));
    cells.forEach((s, i) => { if (s.length > this.widths[i]) this.widths[i] = s.length; });
    this.out(this.line(cells));
  }
}
