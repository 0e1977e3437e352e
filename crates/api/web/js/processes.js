// Processes: a live table (state, health, restarts, ports, CPU, memory) with
// start, stop, restart and a live log tail; above it, restarts and health
// changes per minute over the last hour.

import { gql, subscribe } from './gql.js';
import { h, fill, bytes, ports, badge, act, table, toast } from './ui.js';
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
  let drawing = false;
  let again = false;

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

  async function draw() {
    if (drawing) {
      again = true;
      return;
    }
    drawing = true;
    try {
      const d = await gql(LIST);
      const now = Date.now();
      const rows = d.processes.map((p) => {
        const pct = cpuPercent(p, now);
        const cpu = p.cpuSeconds === null ? '–'
          : (pct === null ? '' : pct.toFixed(1) + '% · ') + p.cpuSeconds.toFixed(2) + ' s';
        const active = ['running', 'starting', 'backoff', 'stopping'].includes(p.state);
        const start = h('button', { disabled: active }, 'Start');
        const stop = h('button', { disabled: !active }, 'Stop');
        const restart = h('button', {}, 'Restart');
        const logs = h('button', { class: 'link' }, 'Logs');
        start.addEventListener('click', () => act(start, () =>
          gql(ACTION('startProcesses'), { p: p.name })
            .then(report).then(draw)));
        stop.addEventListener('click', () => act(stop, () =>
          gql(ACTION('stopProcesses'), { p: p.name })
            .then(report).then(draw)));
        restart.addEventListener('click', () => act(restart, () =>
          gql(ACTION('restartProcesses'), { p: p.name })
            .then(report).then(draw)));
        logs.addEventListener('click', () => tail(p.name));
        return h('tr', { 'data-process': p.name },
          h('th', { scope: 'row' }, p.name,
            p.lastError ? h('div', { class: 'muted small', title: p.lastError.message }, p.lastError.code) : null),
          h('td', {}, badge(p.state)),
          h('td', {}, badge(p.health)),
          h('td', { class: 'num' }, String(p.restarts)),
          h('td', {}, ports(p.ports)),
          h('td', { class: 'num' }, cpu),
          h('td', { class: 'num' }, bytes(p.memoryBytes)),
          h('td', { class: 'num' }, p.pid === null ? '–' : String(p.pid)),
          h('td', { class: 'actions' }, start, stop, restart, logs));
      });
      cpuBefore = new Map(d.processes.map((p) => [p.name, { cpu: p.cpuSeconds, pid: p.pid, at: now }]));
      // Keep focus on the button the user was on across a redraw.
      const focused = document.activeElement;
      const fRow = focused && focused.closest ? focused.closest('tr[data-process]') : null;
      const fKey = fRow ? [fRow.dataset.process, focused.textContent] : null;
      fill(list, table('Processes', ['Name', 'State', 'Health', 'Restarts', 'Ports', 'CPU', 'Memory', 'PID', ''],
        rows, 'No processes. Add some in the configuration file, or create an instance.'));
      if (fKey) {
        const row = [...list.querySelectorAll('tr[data-process]')].find((r) => r.dataset.process === fKey[0]);
        const b = row && [...row.querySelectorAll('button')].find((x) => x.textContent === fKey[1]);
        if (b) b.focus();
      }
    } catch (e) {
      fill(list, h('p', { class: 'error' }, '[' + e.code + '] ' + e.message));
    } finally {
      drawing = false;
      if (again) {
        again = false;
        draw();
      }
    }
  }

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
