// Processes: a live table (state, health, restarts, ports, CPU, memory) with
// start, stop, restart and a live log tail; above it, restarts and health
// changes per minute over the last hour.

import { gql, subscribe } from './gql.js';
import { h, fill, bytes, ports, badge, act, toast, coalesce } from './ui.js';
import { perMinute, barChart } from './chart.js';

const LIST = `{ processes { name state health restarts pid source sinceMs
  ports { name port } cpuSeconds memoryBytes lastError { code message } } }`;
const HISTORY = `query($n: Int) { events(last: $n, kinds: ["state", "health"]) {
  nodes { id atMs name kind to detail } } }`;
const LIVE = `subscription($after: Int64!) { events(kinds: ["state", "health"], afterId: $after) {
  id atMs name kind to detail } }`;
const LOGS = `subscription($names: [String!]!) { logs(names: $names, lines: 50) {
  process stream text number atMs skipped } }`;

const SERIES = [
  { key: 'restart', name: 'restarts', cls: 'c-restart' },
  { key: 'unhealthy', name: 'became unhealthy', cls: 'c-bad' },
  { key: 'healthy', name: 'became healthy', cls: 'c-good' },
];
const MAX_LOG_LINES = 500;
const ACTION = (m) => `mutation($p: String!) { ${m}(pattern: $p) {
  names errors { name error { code message hint } } } }`;

function point(ev) {
  const at = Number(ev.atMs);
  if (ev.kind === 'state' && ev.detail && ev.detail.restart) return { at, series: 'restart' };
  if (ev.kind === 'health' && (ev.to === 'unhealthy' || ev.to === 'healthy')) return { at, series: ev.to };
  return null;
}

export function mount(main) {
  const charts = h('div', { class: 'charts' });
  const list = h('div', { 'aria-live': 'off' });
  const logBox = h('section', { class: 'card logs', hidden: true, 'aria-label': 'Log tail' });
  fill(main,
    h('h1', {}, 'Processes'),
    charts,
    h('section', { class: 'card' }, list),
    logBox);

  const points = [];
  let lastId = 0;
  let cpuBefore = new Map();
  let timer = null;
  let stopLogs = null;

  function drawCharts() {
    const b = perMinute(points, SERIES);
    fill(charts,
      barChart('Restarts per minute', [SERIES[0]], { start: b.start, counts: [b.counts[0]] }),
      barChart('Health changes per minute', SERIES.slice(1), { start: b.start, counts: b.counts.slice(1) }));
  }

  function cpuPercent(p, now) {
    const before = cpuBefore.get(p.name);
    if (!before || p.cpuSeconds === null || before.pid !== p.pid) return null;
    const dt = (now - before.at) / 1000;
    if (dt <= 0) return null;
    return Math.max(0, ((p.cpuSeconds - before.cpu) / dt) * 100);
  }

  // Rows are kept by process name and updated in place: a button is never
  // replaced under the pointer or the keyboard focus.
  const rows = new Map();
  let tbody = null;

  function makeRow(name) {
    const cells = Array.from({ length: 7 }, (_, i) => h('td', { class: i >= 2 && i !== 3 ? 'num' : null }));
    const nameCell = h('th', { scope: 'row' }, name);
    const err = h('div', { class: 'muted small' });
    nameCell.append(err);
    const start = h('button', {}, 'Start');
    const stop = h('button', {}, 'Stop');
    const restart = h('button', {}, 'Restart');
    const logs = h('button', { class: 'link' }, 'Logs');
    const run = (b, m) => b.addEventListener('click', () => act(b, () =>
      gql(ACTION(m), { p: name }).then(report).then(draw)));
    run(start, 'startProcesses');
    run(stop, 'stopProcesses');
    run(restart, 'restartProcesses');
    logs.addEventListener('click', () => tail(name));
    const tr = h('tr', { 'data-process': name }, nameCell, cells, h('td', { class: 'actions' }, start, stop, restart, logs));
    return { tr, cells, err, start, stop };
  }

  const draw = coalesce(async () => {
    try {
      const d = await gql(LIST);
      const now = Date.now();
      if (!d.processes.length) {
        rows.clear();
        tbody = null;
        fill(list, h('p', { class: 'empty' }, 'No processes. Add some in the configuration file, or create an instance.'));
        return;
      }
      if (!tbody) {
        tbody = h('tbody');
        fill(list, h('div', { class: 'scroll' }, h('table', {},
          h('caption', { class: 'sr-only' }, 'Processes'),
          h('thead', {}, h('tr', {}, ['Name', 'State', 'Health', 'Restarts', 'Ports', 'CPU', 'Memory', 'PID', '']
            .map((c) => h('th', { scope: 'col' }, c)))),
          tbody)));
      }
      const names = new Set(d.processes.map((p) => p.name));
      for (const [name, r] of rows) {
        if (!names.has(name)) {
          r.tr.remove();
          rows.delete(name);
        }
      }
      let before = null;
      for (const p of d.processes.slice().reverse()) {
        let r = rows.get(p.name);
        if (!r) {
          r = makeRow(p.name);
          rows.set(p.name, r);
        }
        // In name order (the API's), without moving rows already in place.
        if (r.tr.nextSibling !== before || r.tr.parentNode !== tbody) tbody.insertBefore(r.tr, before);
        before = r.tr;
        const pct = cpuPercent(p, now);
        const cpu = p.cpuSeconds === null ? '–'
          : (pct === null ? '' : pct.toFixed(1) + '% · ') + p.cpuSeconds.toFixed(2) + ' s';
        const active = ['running', 'starting', 'backoff', 'stopping'].includes(p.state);
        r.start.disabled = active;
        r.stop.disabled = !active;
        r.err.textContent = p.lastError ? p.lastError.code : '';
        r.err.title = p.lastError ? p.lastError.message : '';
        const texts = [null, null, String(p.restarts), ports(p.ports), cpu, bytes(p.memoryBytes),
          p.pid === null ? '–' : String(p.pid)];
        fill(r.cells[0], badge(p.state));
        fill(r.cells[1], badge(p.health));
        texts.forEach((t, i) => {
          if (t !== null && r.cells[i].textContent !== t) r.cells[i].textContent = t;
        });
      }
      cpuBefore = new Map(d.processes.map((p) => [p.name, { cpu: p.cpuSeconds, pid: p.pid, at: now }]));
    } catch (e) {
      rows.clear();
      tbody = null;
      fill(list, h('p', { class: 'error' }, '[' + e.code + '] ' + e.message));
    }
  });

  function report(r) {
    const a = Object.values(r)[0];
    for (const e of a.errors) toast(`${e.name}: [${e.error.code}] ${e.error.message}`, 'error');
    if (a.names.length) toast(a.names.join(', ') + ': done');
  }

  function tail(name) {
    if (stopLogs) stopLogs();
    const lines = h('pre', { class: 'log', tabindex: '0', 'aria-label': 'Output of ' + name });
    const close = h('button', {}, 'Close');
    close.addEventListener('click', () => {
      if (stopLogs) stopLogs();
      stopLogs = null;
      logBox.hidden = true;
    });
    fill(logBox, h('div', { class: 'row' }, h('h2', {}, 'Output of ', h('code', {}, name)), close), lines);
    logBox.hidden = false;
    stopLogs = subscribe(LOGS, { names: [name] }, {
      next: (d) => {
        const l = d.logs;
        const text = Number(l.skipped) > 0 ? `… ${l.skipped} lines skipped` : l.text;
        const stick = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
        lines.append(h('span', { class: 'line ' + l.stream, 'data-number': String(l.number) }, text + '\n'));
        while (lines.childNodes.length > MAX_LOG_LINES) lines.firstChild.remove();
        if (stick) lines.scrollTop = lines.scrollHeight;
      },
      error: (e) => lines.append(h('span', { class: 'line error' }, '[' + e.code + '] ' + e.message + '\n')),
    });
    logBox.scrollIntoView({ block: 'nearest' });
  }

  let refresh = null;
  const soon = () => {
    if (refresh) return;
    refresh = setTimeout(() => {
      refresh = null;
      draw();
    }, 250);
  };

  let stopLive = null;
  gql(HISTORY, { n: 1000 }).then((d) => {
    for (const ev of d.events.nodes) {
      lastId = Math.max(lastId, Number(ev.id));
      const p = point(ev);
      if (p) points.push(p);
    }
    drawCharts();
    stopLive = subscribe(LIVE, () => ({ after: lastId }), {
      next: (d) => {
        const ev = d.events;
        lastId = Math.max(lastId, Number(ev.id));
        const p = point(ev);
        if (p) {
          points.push(p);
          drawCharts();
        }
        soon();
      },
    });
  }).catch(() => drawCharts());
  draw();
  timer = setInterval(draw, 3000);
  const chartTimer = setInterval(drawCharts, 60000);

  return () => {
    clearInterval(timer);
    clearInterval(chartTimer);
    if (refresh) clearTimeout(refresh);
    if (stopLive) stopLive();
    if (stopLogs) stopLogs();
  };
}
