// A hand-rolled SVG stacked bar chart: one bar per day, one colour per series. Labels are SVG text nodes, so a
// series name (an agent id, a model name) is never markup.
import { h, s, usd } from './dom.js';

const WIDTH = 760;
const HEIGHT = 280;
const MARGIN = { top: 12, right: 12, bottom: 36, left: 64 };
const COLOURS = ['#2f6fdf', '#e07b24', '#2b9f6a', '#c2415b', '#7a55c7', '#9a7b14', '#1f95a8', '#6b7280'];

/**
 * days: ['2026-11-01', …] in order; series: [{ name, values: [usd per day] }].
 * Returns an <figure> with the chart and its legend.
 */
export function stackedBars({ days, series, title }) {
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const totals = days.map((_, i) => series.reduce((sum, x) => sum + x.values[i], 0));
  const max = niceMax(Math.max(0, ...totals));
  const y = (v) => MARGIN.top + plotH - (max === 0 ? 0 : (v / max) * plotH);
  const slot = plotW / Math.max(1, days.length);
  const barW = Math.max(1, slot * 0.7);

  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) =>
    s('g', { class: 'tick' }, s('line', { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(max * f), y2: y(max * f) }), s('text', { x: MARGIN.left - 6, y: y(max * f) + 4, 'text-anchor': 'end' }, usd(max * f))),
  );
  const labelEvery = Math.ceil(days.length / 10);
  const bars = days.map((day, i) => {
    let base = 0;
    const x = MARGIN.left + i * slot + (slot - barW) / 2;
    const rects = series.map((x2, k) => {
      const v = x2.values[i];
      const rect = s('rect', { x, y: y(base + v), width: barW, height: Math.max(0, y(base) - y(base + v)), fill: COLOURS[k % COLOURS.length] }, s('title', {}, `${day} · ${x2.name}: ${usd(v)}`));
      base += v;
      return v > 0 ? rect : null;
    });
    const label = i % labelEvery === 0 ? s('text', { x: x + barW / 2, y: HEIGHT - MARGIN.bottom + 16, 'text-anchor': 'middle' }, day.slice(5)) : null;
    return s('g', { class: 'bar', 'data-day': day }, rects, label);
  });

  return h(
    'figure',
    { class: 'chart' },
    s('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': title, width: '100%' }, s('g', { class: 'grid' }, grid), bars),
    h(
      'figcaption',
      { class: 'legend' },
      series.map((x, k) => h('span', { class: 'legend-item' }, h('span', { class: 'swatch', 'data-colour': k % COLOURS.length }), `${x.name} ${usd(x.values.reduce((a, b) => a + b, 0))}`)),
    ),
  );
}

/** a round number at or above v, for the axis */
function niceMax(v) {
  if (v <= 0) return 0;
  const step = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 4, 8, 10].map((m) => m * step).find((m) => m >= v);
}

/** the UTC days from `from` through `to`, as YYYY-MM-DD */
export function daysBetween(from, to) {
  const days = [];
  for (let d = new Date(`${from}T00:00:00Z`); d <= new Date(`${to}T00:00:00Z`); d.setUTCDate(d.getUTCDate() + 1)) days.push(d.toISOString().slice(0, 10));
  return days;
}
