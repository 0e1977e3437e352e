// Small SVG bar charts: counts per minute over the last hour, stacked by
// series. Each chart also says in words what it shows (for screen readers,
// and for anyone who would rather read).

import { h } from './ui.js';

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** Minute buckets: `count[series][minute]` for the `minutes` before `now`. */
export function perMinute(points, series, minutes = 60, now = Date.now()) {
  const start = now - minutes * 60000;
  const counts = series.map(() => new Array(minutes).fill(0));
  for (const p of points) {
    if (p.at < start || p.at > now) continue;
    const i = Math.min(minutes - 1, Math.floor((p.at - start) / 60000));
    const k = series.findIndex((x) => x.key === p.series);
    if (k >= 0) counts[k][i]++;
  }
  return { start, counts };
}

/**
 * A chart of `perMinute` buckets. `series`: `[{key, name, cls}]`.
 */
export function barChart(title, series, buckets) {
  const n = buckets.counts[0] ? buckets.counts[0].length : 0;
  const totals = new Array(n).fill(0);
  for (const c of buckets.counts) c.forEach((v, i) => (totals[i] += v));
  const max = Math.max(1, ...totals);
  const W = 600;
  const H = 120;
  const bw = W / Math.max(1, n);
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H + 16}`, class: 'chart', role: 'img', 'aria-label': title,
    preserveAspectRatio: 'none',
  });
  svg.append(s('title', {}, title));
  for (let i = 0; i < n; i++) {
    let y = H;
    buckets.counts.forEach((c, k) => {
      const v = c[i];
      if (!v) return;
      const bh = (v / max) * (H - 4);
      y -= bh;
      const minute = new Date(buckets.start + i * 60000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      svg.append(s('rect', {
        x: (i * bw + 1).toFixed(1), y: y.toFixed(1), width: Math.max(1, bw - 2).toFixed(1),
        height: bh.toFixed(1), class: series[k].cls,
      }, s('title', {}, `${minute}: ${v} ${series[k].name}`)));
    });
  }
  svg.append(s('line', { x1: 0, y1: H, x2: W, y2: H, class: 'axis' }));
  svg.append(s('text', { x: 0, y: H + 14, class: 'tick' }, '−60 min'));
  svg.append(s('text', { x: W, y: H + 14, class: 'tick', 'text-anchor': 'end' }, 'now'));
  const words = series.map((x, k) => {
    const total = buckets.counts[k].reduce((a, b) => a + b, 0);
    return `${total} ${x.name}`;
  }).join(', ');
  return h('figure', { class: 'chart-box' },
    h('figcaption', {}, title, ' ', h('span', { class: 'muted' }, '(' + words + ' in the last hour)')),
    svg,
    h('p', { class: 'legend' }, series.map((x) => h('span', { class: 'key ' + x.cls }, x.name))));
}
