// Small DOM helpers. Text from the daemon (names, log lines, event details)
// only ever becomes text nodes: nothing it says is parsed as HTML.

/**
 * Make an element: `h('button', {class: 'x', onclick: f}, 'Stop')`.
 * Attributes starting with `on` are listeners; `null`/`false` ones are left
 * out; children are nodes or strings (as text), arrays are flattened.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A byte count, in binary units. */
export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i ? v.toFixed(1) : String(v)) + ' ' + units[i];
}

/** A time of day for a ms timestamp, with the date when not today. */
export function when(ms) {
  if (!ms) return '–';
  const d = new Date(Number(ms));
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

/** How long ago, short (`5s`, `3m`, `2h`, `4d`). */
export function ago(ms) {
  if (!ms) return '–';
  const s = Math.max(0, Math.round((Date.now() - Number(ms)) / 1000));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm';
  if (s < 86400) return Math.floor(s / 3600) + 'h';
  return Math.floor(s / 86400) + 'd';
}

/** Ports as `name:port` list. */
export function ports(list) {
  return (list || []).map((p) => p.name + ':' + p.port).join(' ') || '–';
}

/** A state as a badge; the class picks the colour, the text says it. */
export function badge(state) {
  const s = String(state || 'unknown');
  return h('span', { class: 'badge s-' + s.replace(/[^a-z-]/g, '') }, s);
}

/** Tell the user something for a few seconds (errors stay until closed). */
export function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  const close = h('button', { class: 'link', 'aria-label': 'Dismiss' }, '×');
  const t = h('div', { class: 'toast ' + kind, role: kind === 'error' ? 'alert' : 'status' },
    h('span', {}, text), close);
  close.addEventListener('click', () => t.remove());
  box.append(t);
  if (kind !== 'error') setTimeout(() => t.remove(), 4000);
}

/** Show an ApiError as a toast: code, message and hint. */
export function fail(e) {
  const parts = [e.code ? '[' + e.code + '] ' : '', e.message || String(e)];
  if (e.hint) parts.push(' — ' + e.hint);
  toast(parts.join(''), 'error');
}

/** Run an action from a button: disabled while it runs, errors shown. */
export async function act(button, f) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await f();
  } catch (e) {
    fail(e);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/**
 * `f` (async) made safe to call at any time: a call while it runs makes it
 * run once more afterwards, never twice at once.
 */
export function coalesce(f) {
  let running = false;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await f();
    } finally {
      running = false;
      if (again) {
        again = false;
        run();
      }
    }
  };
  return run;
}

/** A table with a header row; `rows` are arrays of cells. */
export function table(caption, head, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'scroll' },
    h('table', {},
      h('caption', { class: 'sr-only' }, caption),
      h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)));
}
