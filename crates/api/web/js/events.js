// Events: the stored history, newest first, then live, filtered by a name
// glob and kinds. A filter change reloads the history and resubscribes after
// its newest event, so nothing is missed or shown twice.

import { gql, subscribe } from './gql.js';
import { h, fill, when } from './ui.js';

const KINDS = ['state', 'health', 'instance.state', 'instance.failed', 'install.progress', 'install.done',
  'feature.installed', 'feature.uninstalled', 'feature.install_failed', 'store.full', 'events.lost'];
const SHOWN = 300;

function row(ev) {
  let detail = '';
  if (ev.detail && typeof ev.detail === 'object') {
    detail = Object.entries(ev.detail).map(([k, v]) => k + '=' + (typeof v === 'string' ? v : JSON.stringify(v))).join(' ');
  }
  return h('tr', { 'data-event': String(ev.id) },
    h('td', { class: 'num' }, String(ev.id)),
    h('td', {}, when(Number(ev.atMs))),
    h('th', { scope: 'row' }, ev.name),
    h('td', {}, ev.kind),
    h('td', {}, ev.from ? ev.from + ' → ' + ev.to : ev.to),
    h('td', { class: 'detail' }, detail));
}

export function mount(main, rest, params) {
  const name = h('input', { id: 'ev-name', type: 'search', placeholder: 'name glob, e.g. web-*', value: params.name || '' });
  const kinds = KINDS.map((k) => h('label', { class: 'chip' },
    h('input', { type: 'checkbox', value: k, checked: (params.kinds || '').split(',').includes(k) }), ' ', k));
  const live = h('span', { class: 'muted', 'aria-live': 'polite' });
  const tbody = h('tbody');
  const filters = h('form', { class: 'card filters', role: 'search', 'aria-label': 'Filter events' },
    h('div', { class: 'field' }, h('label', { for: 'ev-name' }, 'Name'), name),
    h('fieldset', {}, h('legend', {}, 'Kinds (none: all)'), kinds));
  fill(main, h('div', { class: 'row' }, h('h1', {}, 'Events'), live), filters,
    h('section', { class: 'card' }, h('div', { class: 'scroll' }, h('table', {},
      h('caption', { class: 'sr-only' }, 'Events, newest first'),
      h('thead', {}, h('tr', {}, ['Id', 'Time', 'Name', 'Kind', 'Change', 'Detail'].map((c) => h('th', { scope: 'col' }, c)))),
      tbody))));

  let stop = null;
  let gen = 0;
  async function load() {
    const mine = ++gen;
    if (stop) stop();
    stop = null;
    const vars = {
      name: name.value.trim() || null,
      kinds: kinds.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
    };
    let d;
    try {
      d = await gql(`query($name: String, $kinds: [String!]!) { events(last: 100, name: $name, kinds: $kinds) {
        nodes { id atMs name kind from to detail } } }`, vars);
    } catch (e) {
      fill(tbody, h('tr', {}, h('td', { colspan: 6, class: 'error' }, '[' + e.code + '] ' + e.message)));
      return;
    }
    if (mine !== gen) return;
    const nodes = d.events.nodes;
    let last = nodes.length ? Number(nodes[nodes.length - 1].id) : 0;
    fill(tbody, nodes.slice().reverse().map(row));
    if (!nodes.length) tbody.append(h('tr', { class: 'none' }, h('td', { colspan: 6, class: 'empty' }, 'No events match.')));
    live.textContent = 'live';
    stop = subscribe(`subscription($name: String, $kinds: [String!]!, $after: Int64!) {
      events(name: $name, kinds: $kinds, afterId: $after) { id atMs name kind from to detail } }`,
    () => ({ ...vars, after: last }), {
      next: (x) => {
        const ev = x.events;
        last = Math.max(last, Number(ev.id));
        const none = tbody.querySelector('tr.none');
        if (none) none.remove();
        tbody.prepend(row(ev));
        while (tbody.rows.length > SHOWN) tbody.lastChild.remove();
      },
      error: (e) => {
        live.textContent = '[' + e.code + '] ' + e.message;
      },
    });
  }
  let t = null;
  filters.addEventListener('submit', (e) => e.preventDefault());
  filters.addEventListener('input', () => {
    clearTimeout(t);
    t = setTimeout(load, 250);
  });
  load();
  return () => {
    clearTimeout(t);
    gen++;
    if (stop) stop();
  };
}
