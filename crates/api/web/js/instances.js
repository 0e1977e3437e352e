// Instances: the list, a create form generated from the feature's option
// schema, and one instance's page with its install progress, steps,
// network, ports and config.

import { gql, subscribe } from './gql.js';
import { h, fill, ports, badge, act, table, toast, fail, when, coalesce } from './ui.js';

const STEPS = ['install', 'ports', 'network', 'config', 'process', 'ready'];
const BUSY = ['queued', 'installing', 'creating', 'starting'];

const FIELDS = `id name feature version mode state desired step
  error { code message hint context { key value } }
  ports { name port } bind process isolation key tenant session options configFile
  createdMs updatedMs
  network { backend namespace hostIf instanceIf hostAddr instanceAddr prefixLen }`;

export function mount(main, rest, params) {
  if (rest[0] === 'new') return form(main, params.feature || '');
  if (rest[0]) return detail(main, rest[0]);
  return list(main);
}

function list(main) {
  const box = h('section', { class: 'card' });
  fill(main,
    h('div', { class: 'row' }, h('h1', {}, 'Instances'),
      h('a', { class: 'button primary', href: '#/instances/new' }, 'New instance')),
    box);
  async function draw() {
    try {
      const d = await gql(`{ instances { name feature version mode state step ports { name port } createdMs
        error { code message } } }`);
      const rows = d.instances.map((i) => h('tr', { 'data-instance': i.name },
        h('th', { scope: 'row' }, h('a', { href: '#/instances/' + encodeURIComponent(i.name) }, i.name)),
        h('td', {}, i.feature + ' ' + i.version, i.mode ? ' (' + i.mode + ')' : ''),
        h('td', {}, badge(i.state), i.error ? h('div', { class: 'muted small' }, i.error.code) : null),
        h('td', {}, i.step || '–'),
        h('td', {}, ports(i.ports)),
        h('td', {}, when(Number(i.createdMs)))));
      fill(box, table('Instances', ['Name', 'Feature', 'State', 'Step', 'Ports', 'Created'], rows,
        'No instances yet. Create one from the catalog.'));
    } catch (e) {
      fill(box, h('p', { class: 'error' }, '[' + e.code + '] ' + e.message));
    }
  }
  draw();
  const stop = subscribe('subscription { instanceState { id } }', {}, { next: () => draw() });
  const timer = setInterval(draw, 10000);
  return () => {
    stop();
    clearInterval(timer);
  };
}

/** One input for an option of the feature's schema. */
function field(o, mode) {
  const id = 'opt-' + o.name;
  const help = o.description ? h('small', { id: id + '-help', class: 'help' }, o.description) : null;
  const required = o.required || (mode && mode.required.includes(o.name));
  const common = { id, name: o.name, 'aria-describedby': help ? id + '-help' : null, required: required || null };
  let input;
  switch (o.type) {
    case 'boolean': {
      input = h('input', { ...common, type: 'checkbox', role: 'switch', required: null, checked: o.default === 'true' });
      return h('div', { class: 'field switch' }, h('label', { for: id }, input, ' ', o.name), help);
    }
    case 'enum': {
      const opts = o.enumValues.map((v) => h('option', { value: v, selected: v === o.default }, v));
      if (!required && o.default === null) opts.unshift(h('option', { value: '' }, '(default)'));
      input = h('select', common, opts);
      break;
    }
    case 'port':
      input = h('input', { ...common, type: 'number', inputmode: 'numeric', min: 1, max: 65535, step: 1,
        placeholder: o.default === null ? 'allocated' : o.default });
      break;
    case 'integer':
    case 'number':
      input = h('input', { ...common, type: 'number', step: o.type === 'integer' ? 1 : 'any',
        min: o.min === null ? null : o.min, max: o.max === null ? null : o.max,
        placeholder: o.default === null ? '' : o.default });
      break;
    case 'list':
      input = h('textarea', { ...common, rows: 3, placeholder: 'one per line' });
      break;
    default:
      input = h('input', { ...common, type: o.secret ? 'password' : 'text',
        autocomplete: o.secret ? 'new-password' : 'off',
        maxlength: o.maxLength === null ? null : o.maxLength,
        placeholder: o.secret || o.default === null ? '' : o.default });
  }
  return h('div', { class: 'field' },
    h('label', { for: id }, o.name, required ? h('span', { class: 'req', title: 'required' }, ' *') : null,
      o.secret ? h('span', { class: 'muted small' }, ' (secret)') : null),
    input, help);
}

/** The value an input holds for the API, or undefined to leave the default. */
function valueOf(o, el) {
  if (o.type === 'boolean') {
    const def = o.default === 'true';
    return el.checked === def ? undefined : el.checked;
  }
  const raw = el.value.trim();
  if (raw === '') return undefined;
  switch (o.type) {
    case 'port':
    case 'integer': {
      const n = Number(raw);
      if (!Number.isInteger(n)) throw new Error(`${o.name}: ${raw} is not a whole number`);
      if (o.type === 'port' && (n < 1 || n > 65535)) throw new Error(`${o.name}: a port is 1–65535`);
      return n;
    }
    case 'number':
      return Number(raw);
    case 'list': {
      const items = raw.split('\n').map((x) => x.trim()).filter(Boolean);
      return o.itemType === 'integer' || o.itemType === 'port' ? items.map(Number) : items;
    }
    default:
      return raw;
  }
}

function form(main, featureId) {
  const pick = h('select', { id: 'feature', name: 'feature', required: true });
  const body = h('div');
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create');
  const f = h('form', { class: 'card', novalidate: true, 'aria-label': 'New instance' },
    h('div', { class: 'field' }, h('label', { for: 'feature' }, 'Feature'), pick),
    body,
    h('div', { class: 'row' }, submit, h('a', { href: '#/instances' }, 'Cancel')));
  fill(main, h('h1', {}, 'New instance'), f);
  let feature = null;

  function drawFields() {
    const modes = feature.modes;
    const modeSel = modes.length
      ? h('select', { id: 'mode', name: 'mode' }, modes.map((m) => h('option', { value: m.id }, m.name || m.id)))
      : null;
    const modeHelp = h('small', { id: 'mode-help', class: 'help' });
    const opts = h('fieldset', {}, h('legend', {}, 'Options'));
    const draw = () => {
      const mode = modeSel ? modes.find((m) => m.id === modeSel.value) : null;
      if (mode) modeHelp.textContent = mode.description;
      fill(opts, h('legend', {}, 'Options'),
        feature.options.length ? feature.options.map((o) => field(o, mode)) : h('p', { class: 'muted' }, 'This feature has no options.'));
    };
    if (modeSel) modeSel.addEventListener('change', draw);
    fill(body,
      h('p', { class: 'muted' }, feature.description),
      h('div', { class: 'field' }, h('label', { for: 'name' }, 'Name'),
        h('input', { id: 'name', name: 'name', type: 'text', pattern: '[A-Za-z0-9][A-Za-z0-9._\\-]{0,62}',
          placeholder: 'made from the feature when empty', 'aria-describedby': 'name-help' }),
        h('small', { id: 'name-help', class: 'help' }, 'Letters, digits, -, _ and . (up to 63).')),
      modeSel ? h('div', { class: 'field' }, h('label', { for: 'mode' }, 'Mode'), modeSel, modeHelp) : null,
      opts);
    draw();
  }

  async function load(id) {
    try {
      const d = await gql(`query($id: String!) { feature(id: $id) { id name version description
        modes { id name description required }
        options { name type default description secret required enumValues min max maxLength itemType } } }`, { id });
      feature = d.feature;
      drawFields();
    } catch (e) {
      fail(e);
    }
  }

  gql('{ catalog { id name version } }').then((d) => {
    fill(pick, d.catalog.map((c) => h('option', { value: c.id, selected: c.id === featureId }, `${c.name} (${c.id} ${c.version})`)));
    if (!d.catalog.length) {
      fill(body, h('p', { class: 'error' }, 'The catalog is empty.'));
      return;
    }
    load(pick.value);
  }).catch(fail);
  pick.addEventListener('change', () => load(pick.value));

  f.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (!feature) return;
    for (const el of f.querySelectorAll('input, select, textarea')) el.setCustomValidity('');
    const options = {};
    for (const o of feature.options) {
      const el = f.elements.namedItem(o.name);
      if (!el) continue;
      try {
        const v = valueOf(o, el);
        if (v !== undefined) options[o.name] = v;
      } catch (e) {
        el.setCustomValidity(e.message);
      }
    }
    if (!f.reportValidity()) return;
    const name = f.elements.namedItem('name').value.trim() || null;
    const modeEl = f.elements.namedItem('mode');
    act(submit, async () => {
      let d;
      try {
        d = await gql(`mutation($f: String!, $n: String, $m: String, $o: JSON) {
          installFeature(featureId: $f, name: $n, mode: $m, options: $o) { instanceId reused instance { name } } }`,
        { f: feature.id, n: name, m: modeEl ? modeEl.value : null, o: options });
      } catch (e) {
        // Mark the option the daemon named, when it named one.
        const el = e.context && e.context.option ? f.elements.namedItem(e.context.option) : null;
        if (el) {
          el.setCustomValidity(e.message);
          el.reportValidity();
        }
        throw e;
      }
      const r = d.installFeature;
      if (r.reused) toast('An instance for this key exists already: ' + r.instance.name);
      location.hash = '#/instances/' + encodeURIComponent(r.instance.name);
    });
  });
  return null;
}

function steps(inst) {
  const at = inst.step ? STEPS.indexOf(inst.step) : -1;
  const up = ['running', 'degraded', 'stopped', 'failed'].includes(inst.state);
  return h('ol', { class: 'steps', 'aria-label': 'Steps' }, STEPS.map((s, i) => {
    let st = 'pending';
    if (up || (at >= 0 && i < at)) st = 'done';
    else if (i === at) st = inst.state === 'error' ? 'failed' : 'current';
    return h('li', { class: 'step ' + st, 'aria-current': st === 'current' ? 'step' : null },
      h('span', { class: 'sr-only' }, st + ': '), s);
  }));
}

function detail(main, name) {
  const head = h('div', { class: 'row' }, h('h1', {}, 'Instance ', h('code', {}, name)));
  const progress = h('section', { class: 'card progress-box', 'aria-label': 'Install progress', hidden: true });
  // The actions are made once and only enabled or disabled as the state
  // changes: a redraw never replaces a button under the pointer.
  const start = h('button', { disabled: true }, 'Start');
  const stop = h('button', { disabled: true }, 'Stop');
  const restart = h('button', { disabled: true }, 'Restart');
  const del = h('button', { class: 'danger', disabled: true }, 'Delete');
  const state = h('span');
  const info = h('div');
  const card = h('section', { class: 'card', hidden: true },
    h('div', { class: 'row' }, state, h('span', { class: 'spacer' }), start, stop, restart, del), info);
  const more = h('div');
  const problem = h('div');
  fill(main, h('p', {}, h('a', { href: '#/instances' }, '← Instances')), head, progress, problem, card, more);
  let stopProgress = null;
  let inst = null;

  const mut = (m) => gql(`mutation($n: String!) { ${m}(idOrName: $n) { state } }`, { n: inst.name });
  start.addEventListener('click', () => act(start, () => mut('startInstance').then(draw)));
  stop.addEventListener('click', () => act(stop, () => mut('stopInstance').then(draw)));
  restart.addEventListener('click', () => act(restart, () => mut('restartInstance').then(draw)));
  del.addEventListener('click', () => {
    if (!confirm(`Delete ${inst.name} and everything it owns (its process, ports, network, config)?`)) return;
    act(del, async () => {
      await gql('mutation($n: String!) { deleteInstance(idOrName: $n) }', { n: inst.name });
      toast(inst.name + ' deleted');
      location.hash = '#/instances';
    });
  });

  function follow(id) {
    if (stopProgress) return;
    const bar = h('progress', { max: 100, 'aria-label': 'Download' });
    const text = h('p', { class: 'status', 'aria-live': 'polite' }, 'queued');
    progress.hidden = false;
    fill(progress, h('h2', {}, 'Progress'), bar, text);
    stopProgress = subscribe(`subscription($id: String!) { installProgress(instanceId: $id) {
      eventId status step percent bytes total error { code message hint } } }`, { id }, {
      next: (d) => {
        const p = d.installProgress;
        if (p.percent !== null) bar.value = p.percent;
        else if (['creating', 'starting', 'running', 'completed'].includes(p.status)) bar.value = 100;
        let t = p.status + (p.step ? ' · step ' + p.step : '');
        if (p.bytes !== null) t += ` · ${p.bytes}${p.total !== null ? ' of ' + p.total : ''} bytes`;
        if (p.error) t += ` · [${p.error.code}] ${p.error.message}`;
        text.textContent = t;
        progress.dataset.status = p.status;
        // Download frames change only the bar; a new state is drawn.
        if (p.percent === null) draw();
      },
      complete: () => {
        stopProgress = null;
        draw();
      },
      error: (e) => {
        stopProgress = null;
        text.textContent = '[' + e.code + '] ' + e.message;
      },
    });
  }

  const draw = coalesce(async () => {
    try {
      const d = await gql(`query($n: String!) { instance(idOrName: $n) { ${FIELDS} configPreview } }`, { n: name });
      inst = d.instance;
      fill(problem);
      render(inst);
    } catch (e) {
      card.hidden = true;
      fill(more);
      fill(problem, h('p', { class: 'error' }, '[' + e.code + '] ' + e.message,
        e.hint ? h('span', { class: 'muted' }, ' — ' + e.hint) : null));
    }
  });

  function render(i) {
    if (BUSY.includes(i.state)) follow(i.id);
    const up = ['running', 'degraded', 'failed'].includes(i.state);
    start.disabled = i.state === 'running' || BUSY.includes(i.state) || i.state === 'deleting';
    stop.disabled = !up;
    restart.disabled = !up;
    del.disabled = i.state === 'deleting';
    fill(state, badge(i.state), ' ', h('span', { class: 'muted' }, 'wanted ' + i.desired));
    const dl = (pairs) => h('dl', { class: 'facts' }, pairs.filter((p) => p[1] !== null && p[1] !== undefined && p[1] !== '')
      .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    const net = i.network;
    fill(info,
      steps(i),
      i.error ? h('p', { class: 'error', role: 'alert' }, `[${i.error.code}] ${i.error.message}`,
        i.error.hint ? h('span', { class: 'muted' }, ' — ' + i.error.hint) : null) : null,
      dl([
        ['Feature', `${i.feature} ${i.version}`], ['Mode', i.mode], ['Process', h('a', { href: '#/processes' }, i.process)],
        ['Ports', ports(i.ports)], ['Bind', i.bind], ['Isolation', `${i.isolation} (${i.key})`],
        ['Config file', i.configFile], ['Created', when(Number(i.createdMs))], ['Changed', when(Number(i.updatedMs))],
      ]));
    card.hidden = false;
    fill(more,
      net ? h('section', { class: 'card' }, h('h2', {}, 'Network'), dl([
        ['Backend', net.backend], ['Namespace', net.namespace],
        ['Host side', `${net.hostIf} ${net.hostAddr}/${net.prefixLen}`],
        ['Instance side', `${net.instanceIf} ${net.instanceAddr}/${net.prefixLen}`],
      ])) : null,
      h('section', { class: 'card' }, h('h2', {}, 'Options'),
        h('pre', { class: 'code' }, JSON.stringify(i.options, null, 2))),
      i.configPreview !== null ? h('section', { class: 'card' }, h('h2', {}, 'Config'),
        h('pre', { class: 'code', tabindex: '0', 'aria-label': 'Config file' }, i.configPreview)) : null);
  }

  draw();
  const stopState = subscribe('subscription($n: String) { instanceState(name: $n) { id } }', { n: name },
    { next: () => draw() });
  return () => {
    stopState();
    if (stopProgress) stopProgress();
  };
}
