// Catalog: each feature with its description and version, the versions
// installed here, install and uninstall, and a way to make an instance.

import { gql } from './gql.js';
import { h, fill, act, toast, bytes } from './ui.js';

export function mount(main, rest, params) {
  const search = h('input', { id: 'q', type: 'search', placeholder: 'Search features', value: params.q || '',
    'aria-label': 'Search features' });
  const box = h('div', { class: 'features' });
  fill(main, h('div', { class: 'row' }, h('h1', {}, 'Catalog'), h('span', { class: 'spacer' }), search), box);

  async function draw() {
    let d;
    try {
      d = await gql(`query($q: String!) { catalog(query: $q) { id name version description license homepage isolation
        modes { id name } protocols }
        installed { id version current bytes verified signed } }`, { q: search.value.trim() });
    } catch (e) {
      fill(box, h('p', { class: 'error' }, '[' + e.code + '] ' + e.message));
      return;
    }
    if (!d.catalog.length) {
      fill(box, h('p', { class: 'empty' }, 'No feature matches.'));
      return;
    }
    fill(box, d.catalog.map((f) => {
      const mine = d.installed.filter((i) => i.id === f.id);
      const install = h('button', {}, mine.some((i) => i.version === f.version) ? 'Reinstall ' + f.version : 'Install ' + f.version);
      install.addEventListener('click', () => act(install, async () => {
        const r = await gql('mutation($id: String!) { install(featureId: $id) { id version } }', { id: f.id });
        toast(`${r.install.id} ${r.install.version} installed`);
        draw();
      }));
      const versions = mine.map((i) => {
        const un = h('button', { class: 'danger small', 'aria-label': `Uninstall ${f.id} ${i.version}` }, 'Uninstall');
        un.addEventListener('click', () => {
          if (!confirm(`Uninstall ${f.id} ${i.version}?`)) return;
          act(un, async () => {
            const r = await gql('mutation($id: String!, $v: String) { uninstall(featureId: $id, version: $v) }',
              { id: f.id, v: i.version });
            toast(`removed ${f.id} ${r.uninstall.join(', ')}`);
            draw();
          });
        });
        return h('li', {}, i.version, i.current ? h('span', { class: 'badge s-running' }, 'current') : null,
          ' ', h('span', { class: 'muted small' }, bytes(i.bytes), i.signed ? ' · signed' : i.verified ? ' · verified' : ''),
          ' ', un);
      });
      return h('article', { class: 'card feature', 'data-feature': f.id, 'aria-labelledby': 'f-' + f.id },
        h('h2', { id: 'f-' + f.id }, f.name, ' ', h('code', { class: 'muted' }, f.id + ' ' + f.version)),
        h('p', {}, f.description),
        h('p', { class: 'muted small' }, [f.license, f.isolation, f.protocols.join(', '),
          f.modes.length ? 'modes: ' + f.modes.map((m) => m.id).join(', ') : ''].filter(Boolean).join(' · ')),
        mine.length ? h('ul', { class: 'versions', 'aria-label': 'Installed versions' }, versions)
          : h('p', { class: 'muted' }, 'Not installed.'),
        h('div', { class: 'row' }, install,
          h('a', { class: 'button primary', href: '#/instances/new?feature=' + encodeURIComponent(f.id) }, 'New instance')));
    }));
  }
  let t = null;
  search.addEventListener('input', () => {
    clearTimeout(t);
    t = setTimeout(draw, 200);
  });
  draw();
  return () => clearTimeout(t);
}
