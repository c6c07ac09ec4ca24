/**
 * `--plot FILE.svg`: the size sweep as a picture, the way libraries are compared — busbw (or
 * latency) against message size, log-scaled sizes, one line per implementation (peers
 * included), one panel per (op, world size), axes labelled with units, a legend per panel.
 * Hand-written SVG 1.1 with no dependency: polylines, circles for the measured points, text.
 */
import fs from 'node:fs';
import path from 'node:path';
import { sizeStr } from './table.js';

export interface Series {
  name: string;
  /** [size in bytes, value], sizes > 0. */
  points: [number, number][];
}

export interface Panel {
  title: string;
  series: Series[];
}

export interface PlotOptions {
  title: string;
  /** The y axis' label with its unit, e.g. 'busbw (GB/s)'. */
  yLabel: string;
  xLabel?: string;
  /** Log-scaled y (latencies spanning decades); default linear from 0. */
  logY?: boolean;
}

const W = 820;
const PANEL_H = 320;
const M = { left: 80, right: 230, top: 56, bottom: 64 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (v: number) => (Math.round(v * 10) / 10).toFixed(1);

/** Round tick steps (1, 2, 5 × 10^k) for a linear axis from 0 to at least `max`. */
function linearTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let t = 0; t < max + step * 0.999; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function decimalsFor(ticks: number[]): number {
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  return step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
}

function panelSvg(p: Panel, top: number, o: PlotOptions): string {
  const x0 = M.left;
  const x1 = W - M.right;
  const y0 = top + PANEL_H - M.bottom;
  const y1 = top + M.top;
  const pts = p.series.flatMap((s) => s.points).filter(([x, y]) => x > 0 && Number.isFinite(y) && (!o.logY || y > 0));
  let lo = Math.log2(Math.min(...pts.map(([x]) => x)));
  let hi = Math.log2(Math.max(...pts.map(([x]) => x)));
  if (hi - lo < 1) {
    lo -= 1;
    hi += 1;
  }
  const sx = (b: number) => x0 + ((Math.log2(b) - lo) / (hi - lo)) * (x1 - x0);
  let yTicks: number[];
  let sy: (v: number) => number;
  if (o.logY) {
    const a = Math.floor(Math.log10(Math.min(...pts.map(([, y]) => y))));
    const b = Math.max(a + 1, Math.ceil(Math.log10(Math.max(...pts.map(([, y]) => y)))));
    yTicks = Array.from({ length: b - a + 1 }, (_, i) => 10 ** (a + i));
    sy = (v) => y0 - ((Math.log10(v) - a) / (b - a)) * (y0 - y1);
  } else {
    yTicks = linearTicks(Math.max(...pts.map(([, y]) => y)));
    const top = yTicks[yTicks.length - 1];
    sy = (v) => y0 - (v / top) * (y0 - y1);
  }
  const out: string[] = [];
  out.push(`<g class="panel">`);
  out.push(`<text x="${num((x0 + x1) / 2)}" y="${num(top + 36)}" text-anchor="middle" font-size="15" font-weight="bold">${esc(p.title)}</text>`);
  // grid and y ticks
  const yd = decimalsFor(yTicks);
  for (const t of yTicks) {
    const y = num(sy(t));
    out.push(`<line x1="${x0}" y1="${y}" x2="${x1}" y2="${y}" stroke="#dddddd" stroke-width="1"/>`);
    const label = o.logY ? (t >= 1 ? t.toFixed(0) : t.toFixed(Math.min(6, Math.ceil(-Math.log10(t))))) : t.toFixed(yd);
    out.push(`<text x="${x0 - 8}" y="${num(sy(t) + 4)}" text-anchor="end" font-size="12">${label}</text>`);
  }
  // x ticks: powers of two, at most ~8 labels
  const first = Math.ceil(lo - 1e-9);
  const last = Math.floor(hi + 1e-9);
  const every = Math.max(1, Math.ceil((last - first + 1) / 8));
  for (let e = first; e <= last; e += every) {
    const x = num(sx(2 ** e));
    out.push(`<line x1="${x}" y1="${y0}" x2="${x}" y2="${y0 + 5}" stroke="#000000" stroke-width="1"/>`);
    out.push(`<text x="${x}" y="${y0 + 20}" text-anchor="middle" font-size="12">${sizeStr(2 ** e)}</text>`);
  }
  // axes and their labels
  out.push(`<line x1="${x0}" y1="${y0}" x2="${x1}" y2="${y0}" stroke="#000000" stroke-width="1.5"/>`);
  out.push(`<line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y1}" stroke="#000000" stroke-width="1.5"/>`);
  out.push(`<text x="${num((x0 + x1) / 2)}" y="${y0 + 44}" text-anchor="middle" font-size="13">${esc(o.xLabel ?? 'message size (bytes, log scale)')}</text>`);
  const ym = num((y0 + y1) / 2);
  out.push(`<text x="${x0 - 58}" y="${ym}" text-anchor="middle" font-size="13" transform="rotate(-90 ${x0 - 58} ${ym})">${esc(o.yLabel)}</text>`);
  // series and legend
  p.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const good = s.points.filter(([x, y]) => x > 0 && Number.isFinite(y) && (!o.logY || y > 0)).sort((a, b) => a[0] - b[0]);
    if (!good.length) return;
    const coords = good.map(([x, y]) => `${num(sx(x))},${num(sy(y))}`).join(' ');
    out.push(`<polyline class="series" data-name="${esc(s.name)}" fill="none" stroke="${color}" stroke-width="2.5" points="${coords}"/>`);
    for (const [x, y] of good) out.push(`<circle cx="${num(sx(x))}" cy="${num(sy(y))}" r="3.5" fill="${color}"/>`);
    const ly = y1 + 8 + i * 22;
    out.push(`<line x1="${x1 + 16}" y1="${ly}" x2="${x1 + 44}" y2="${ly}" stroke="${color}" stroke-width="3"/>`);
    out.push(`<text x="${x1 + 50}" y="${ly + 4}" font-size="12">${esc(s.name)}</text>`);
  });
  out.push(`</g>`);
  return out.join('\n');
}

/** The SVG document for `panels` (one below the other). */
export function renderSvg(panels: Panel[], o: PlotOptions): string {
  const drawn = panels.filter((p) => p.series.some((s) => s.points.some(([x, y]) => x > 0 && Number.isFinite(y) && (!o.logY || y > 0))));
  const h = 40 + Math.max(1, drawn.length) * PANEL_H;
  const body = drawn.map((p, i) => panelSvg(p, 40 + i * PANEL_H, o));
  if (!drawn.length) body.push(`<text x="${W / 2}" y="${num(40 + PANEL_H / 2)}" text-anchor="middle" font-size="14">no sized rows to plot</text>`);
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="sans-serif">`,
    `<rect x="0" y="0" width="${W}" height="${h}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="26" text-anchor="middle" font-size="17">${esc(o.title)}</text>`,
    ...body,
    `</svg>`,
    '',
  ].join('\n');
}

export function writePlot(file: string, panels: Panel[], o: PlotOptions): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, renderSvg(panels, o));
}
