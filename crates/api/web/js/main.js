// The dashboard: a hash router over four pages. Each page's `mount(main,
// params)` draws it and returns a function that stops what it started
// (timers, subscriptions) when the user goes elsewhere.

import { gql, socket } from './gql.js';
import { h, fill, ago } from './ui.js';
import * as processes from './processes.js';
import * as instances from './instances.js';
import * as catalog from './catalog.js';
import * as events from './events.js';

const PAGES = { processes, instances, catalog, events };
let unmount = null;
let loggedIn = null;

/** `#/instances/new?feature=demo` → `['instances', ['new'], {feature: 'demo'}]` */
function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query] = hash.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(query || ''));
  return [parts[0] || 'processes', parts.slice(1), params];
}

function loginPage(main, e) {
  document.title = 'hangar · log in';
  fill(main,
    h('section', { class: 'card narrow' },
      h('h1', {}, 'Log in'),
      h('p', {}, 'This dashboard needs a session. Run this on the machine hangar runs on, and open the URL it prints:'),
      h('pre', {}, h('code', {}, 'hangar dashboard')),
      h('p', { class: 'muted' }, 'The URL carries the API token from the data dir\'s api.token, and sets a session cookie for this browser.'),
      e ? h('p', { class: 'muted' }, '[' + e.code + '] ' + e.message) : null));
}

async function status() {
  const el = document.getElementById('daemon');
  try {
    const d = await gql('{ status { version pid startedAtMs lastEventId processes { state count } } }');
    loggedIn = true;
    const s = d.status;
    const total = s.processes.reduce((a, p) => a + p.count, 0);
    const running = (s.processes.find((p) => p.state === 'running') || { count: 0 }).count;
    fill(el, `hangar ${s.version} · pid ${s.pid} · up ${ago(Number(s.startedAtMs))} · ${running}/${total} running`);
    return true;
  } catch (e) {
    if (e.code === 'UNAUTHENTICATED') {
      loggedIn = false;
      fill(el, 'not logged in');
      return e;
    }
    fill(el, 'daemon unreachable');
    return true;
  }
}

async function show() {
  if (unmount) {
    unmount();
    unmount = null;
  }
  const main = document.getElementById('main');
  const [page, rest, params] = route();
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (loggedIn !== true) {
    const r = await status();
    if (r !== true) {
      loginPage(main, r);
      return;
    }
  }
  const p = PAGES[page];
  if (!p) {
    fill(main, h('section', { class: 'card' }, h('h1', {}, 'Not found'),
      h('p', {}, 'No page ', h('code', {}, page), '. ', h('a', { href: '#/processes' }, 'Processes'))));
    return;
  }
  document.title = 'hangar · ' + page;
  fill(main);
  unmount = p.mount(main, rest, params) || null;
}

socket.onstate = (up) => document.body.classList.toggle('offline', !up);
window.addEventListener('hashchange', show);
window.addEventListener('DOMContentLoaded', () => {
  show();
  setInterval(() => {
    if (loggedIn) status();
  }, 5000);
});
