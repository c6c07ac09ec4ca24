/**
 * The collective benches' output in the manner of nccl-tests (`bench cpu`, `bench device`): one
 * line per case as soon as it is measured — size, count, type, redop, root, then time, algbw,
 * busbw and #wrong out of place and in place — "# Avg bus bandwidth" lines at the end, the
 * summary across rounds when there are several rounds or implementations, and the plot.
 * Leading columns name the implementation, the op and the world size, since one run covers
 * several (nccl-tests runs one op per binary).
 */
import { itemSize, type DType } from '../host/core/tensor.js';
import { busFactor, geometry, reduces, rooted, type CollOp } from './collective.js';
import { writePlot, type Panel } from './plot.js';
import { median, type Report, type Row } from './report.js';
import { summarize } from './rounds.js';
import { sizeStr, Table, type Column } from './table.js';

/** One form (out of place or in place) of a measured case. */
export interface Place { us?: number; algbw?: number; busbw?: number; wrong?: number; iters?: number }

/** A form's figures from its median time (µs): algbw = size / time; busbw = algbw × factor. */
export function placeOf(op: CollOp, sizeBytes: number, n: number, p: { us: number; wrong?: number; iters?: number } | undefined): Place {
  if (!p) return {};
  const algbw = op === 'barrier' ? undefined : sizeBytes / (p.us * 1e3);
  return { us: p.us, algbw, busbw: algbw === undefined ? undefined : algbw * busFactor(op, n), wrong: p.wrong, iters: p.iters };
}

export interface CollCase {
  impl: string;
  round: number;
  op: CollOp;
  n: number;
  size: number;
  count: number;
  dtype: string;
  redop: string;
  root: number;
  oop: Place;
  ip: Place;
  extra?: Record<string, unknown>;
}

/** A measured case as a row (JSON and table). `wrong` sums both forms (exit status 1 if any). */
export function collRow(x: CollCase): Omit<Row, 'bench'> {
  return {
    name: `${x.op}/${x.op === 'barrier' ? '-' : sizeStr(x.size)}`, impl: x.impl, round: x.round, op: x.op, ranks: x.n,
    size_bytes: x.size, count: x.count, dtype: x.dtype,
    redop: reduces(x.op) ? x.redop : 'none', root: rooted(x.op) ? x.root : -1,
    oop_us: x.oop.us, oop_algbw_gbps: x.oop.algbw, oop_busbw_gbps: x.oop.busbw, oop_wrong: x.oop.wrong, oop_iters: x.oop.iters,
    ip_us: x.ip.us, ip_algbw_gbps: x.ip.algbw, ip_busbw_gbps: x.ip.busbw, ip_wrong: x.ip.wrong, ip_iters: x.ip.iters,
    wrong: (x.oop.wrong ?? 0) + (x.ip.wrong ?? 0), ...x.extra,
  };
}

export interface Sweep {
  ops: CollOp[];
  sizes: number[];
  ranks: number[];
  dtype: DType;
  redop: string;
  rounds: number;
  /** Implementation names that will appear (for the column width). */
  impls: string[];
}

/** The table, its widths fitted to every case of the sweep before the first row. */
export function ncclTable(report: Report, s: Sweep): Table {
  const form = (p: 'oop' | 'ip', label: string): Column[] => [
    { key: `${p}_us`, title: 'time', unit: 'us', decimals: 1, group: label, width: 9 },
    { key: `${p}_algbw_gbps`, title: 'algbw', unit: 'GB/s', decimals: 3, group: label, width: 7 },
    { key: `${p}_busbw_gbps`, title: 'busbw', unit: 'GB/s', decimals: 3, group: label, width: 7 },
    { key: `${p}_wrong`, title: '#wrong', group: label },
  ];
  const cols: Column[] = [
    { key: 'impl', title: 'impl', align: 'left' },
    ...(s.rounds > 1 ? [{ key: 'round', title: 'round' }] : []),
    { key: 'op', title: 'op', align: 'left' },
    { key: 'ranks', title: 'n' },
    { key: 'size_bytes', title: 'size', unit: 'B' },
    { key: 'count', title: 'count', unit: 'elements' },
    { key: 'dtype', title: 'type', align: 'left' },
    { key: 'redop', title: 'redop', align: 'left' },
    { key: 'root', title: 'root' },
    ...form('oop', 'out-of-place'),
    ...form('ip', 'in-place'),
  ];
  const samples: Record<string, unknown>[] = s.impls.map((impl) => ({ impl, round: s.rounds, redop: s.redop }));
  for (const n of s.ranks) {
    for (const op of s.ops) {
      for (const b of op === 'barrier' ? [0] : s.sizes) {
        const g = geometry(op, b, s.dtype, n);
        samples.push({ op, ranks: n, size_bytes: g.count * itemSize(s.dtype), count: g.count, dtype: s.dtype });
      }
    }
  }
  return new Table(cols, samples, report.out);
}

/** Each row once per form it has, with that form's busbw and time (for averages, summary, plot). */
function flatten(rows: Row[]): Row[] {
  const flat: Row[] = [];
  for (const r of rows) {
    for (const p of ['oop', 'ip'] as const) {
      const us = r[`${p}_us`];
      if (typeof us !== 'number') continue;
      flat.push({ ...r, place: p === 'oop' ? 'out-of-place' : 'in-place', busbw_gbps: r[`${p}_busbw_gbps`] as number | undefined, median_us: us });
    }
  }
  return flat;
}

/** "# Avg bus bandwidth" per implementation, op and world size; the summary; the plot. */
export function finishCollectives(report: Report, o: { rounds: number; ours: string[]; plot?: string; title: string }): void {
  const flat = flatten(report.rows);
  const groups = new Map<string, number[]>();
  for (const r of flat) {
    if (typeof r.busbw_gbps !== 'number') continue;
    const k = `${r.impl}, ${r.op}, ${r.ranks} ranks`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(r.busbw_gbps);
  }
  for (const [k, v] of groups) {
    report.out(`# Avg bus bandwidth    : ${(v.reduce((a, b) => a + b, 0) / v.length).toFixed(3)} GB/s  (${k}; mean of ${v.length}: sizes x forms x rounds)`);
  }
  const impls = new Set(report.rows.map((r) => r.impl));
  if (o.rounds > 1 || impls.size > 1) {
    const show = { size_bytes: (v: unknown) => sizeStr(v as number) };
    summarize(report, flat.filter((r) => r.op !== 'barrier'), {
      caseKeys: ['op', 'ranks', 'size_bytes', 'place'], metric: 'busbw_gbps', unit: 'GB/s', decimals: 3, ours: o.ours, show,
      title: `busbw across ${o.rounds} round(s): min, median, max per implementation; ratio of medians (> 1: ours faster)`,
    });
    summarize(report, flat.filter((r) => r.op === 'barrier'), {
      caseKeys: ['op', 'ranks'], metric: 'median_us', unit: 'us', decimals: 1, ours: o.ours,
      title: `barrier time across ${o.rounds} round(s); ratio of medians (< 1: ours faster)`,
    });
  }
  if (o.plot) {
    writePlot(o.plot, collectivePanels(flat), { title: o.title, yLabel: 'busbw (GB/s)' });
    report.note(`plot: ${o.plot}`);
  }
}

/**
 * One panel per (op, world size), one line per implementation: the median over rounds of busbw
 * at each size, in the form every implementation has (in place for allReduce against gloo),
 * else each one's own form, named in the legend.
 */
export function collectivePanels(flat: Row[]): Panel[] {
  const panels: Panel[] = [];
  const usable = flat.filter((r) => r.op !== 'barrier' && typeof r.busbw_gbps === 'number');
  const keys = [...new Set(usable.map((r) => `${r.op}\u0000${r.ranks}`))];
  for (const key of keys) {
    const [op, n] = key.split('\u0000');
    const rows = usable.filter((r) => r.op === op && String(r.ranks) === n);
    const impls = [...new Set(rows.map((r) => r.impl))];
    const formsOf = (i: string) => new Set(rows.filter((r) => r.impl === i).map((r) => r.place as string));
    const shared = ['in-place', 'out-of-place'].find((p) => impls.every((i) => formsOf(i).has(p)));
    const series = impls.map((impl) => {
      const form = shared ?? (formsOf(impl).has('in-place') ? 'in-place' : 'out-of-place');
      const mine = rows.filter((r) => r.impl === impl && r.place === form);
      const sizes = [...new Set(mine.map((r) => r.size_bytes as number))].sort((a, b) => a - b);
      return {
        name: shared ? impl : `${impl} (${form})`,
        points: sizes.map((s) => [s, median(mine.filter((r) => r.size_bytes === s).map((r) => r.busbw_gbps as number))] as [number, number]),
      };
    });
    panels.push({ title: `${op}, ${n} ranks${shared ? `, ${shared}` : ''}`, series });
  }
  return panels;
}
