// The Nodes page: every node with its eligibility and, where eligible, the "node shell" button.

import { h, replace } from './dom.js';
import { eligibilityText, errorText } from '../lib/format.js';

/** Renders the Nodes page into `main`. */
export async function nodesPage(main, { api, drawer }) {
  const reason = h('input', {
    id: 'shell-reason', type: 'text', maxlength: '1024', dataset: { testid: 'shell-reason' },
    placeholder: 'e.g. INC-1234: kubelet not ready', autocomplete: 'off',
  });
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading nodes…');
  const body = h('div', { class: 'table-wrap' });
  const refresh = h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh');
  replace(main,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Nodes'),
      h('span', { class: 'spacer' }),
      refresh),
    h('p', { class: 'lede' }, 'Open an audited shell on the EC2 instance behind a node. Every session is recorded.'),
    h('div', { class: 'reason' },
      h('label', { for: 'shell-reason' }, 'Reason (optional, recorded with the session)'),
      reason),
    status, body);

  async function load() {
    refresh.disabled = true;
    try {
      const nodes = await api.nodes();
      nodes.sort((a, b) => a.name.localeCompare(b.name));
      status.textContent = nodes.length === 0 ? 'No nodes in this cluster.' : `${nodes.length} node${nodes.length === 1 ? '' : 's'}`;
      replace(body, table(nodes));
    } catch (error) {
      status.textContent = '';
      replace(body, h('div', { class: 'banner error', role: 'alert', dataset: { testid: 'page-error' } }, errorText(error)));
    } finally {
      refresh.disabled = false;
    }
  }

  function table(nodes) {
    return h('table', { class: 'grid', dataset: { testid: 'nodes-table' } },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Node'), h('th', { scope: 'col' }, 'Instance'), h('th', { scope: 'col', class: 'optional' }, 'Zone'),
        h('th', { scope: 'col', class: 'optional' }, 'Policy'), h('th', { scope: 'col' }, 'Eligibility'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      h('tbody', {}, nodes.map(row)));
  }

  function row(node) {
    const eligible = Boolean(node.eligible);
    const code = node.error && node.error.code;
    return h('tr', { dataset: { testid: 'node-row', node: node.name } },
      h('th', { scope: 'row', class: 'mono' }, node.name),
      h('td', { class: 'mono' }, node.instanceId || '—'),
      h('td', { class: 'optional' }, node.zone || node.region || '—'),
      h('td', { class: 'optional' }, node.policy || '—'),
      h('td', {},
        h('span', { class: `pill ${eligible ? 'ok' : 'no'}`, dataset: { testid: 'node-eligibility' }, title: code || '' },
          eligibilityText(node))),
      h('td', { class: 'actions' }, eligible
        ? h('button', { type: 'button', dataset: { testid: 'node-shell' }, onclick: () => drawer.open(node.name, reason.value) }, 'node shell')
        : null));
  }

  await load();
}
