// The Search page: commands (and their output) across the recordings the person may read,
// with user, node, time and exit filters; a hit opens the player at its command. The filters
// live in the address (`#/search?q=…`), so Back from the player returns to the results.

import { h, replace } from './dom.js';
import { errorText } from '../lib/format.js';
import { exitStatusText } from '../lib/player.js';
import { SEARCH_FIELDS, searchHash, searchQuery, hasSearch, hitLink, resultsText, snippetParts } from '../lib/search.js';

/** Renders the Search page into `main` for `filters` (from the address). */
export async function searchPage(main, { api, filters }) {
  const field = (name, label, attrs = {}) => {
    const input = h('input', { id: `search-${name}`, name, dataset: { testid: `search-${name}` }, value: filters[name] || '', autocomplete: 'off', ...attrs });
    return { input, el: h('div', { class: 'field' }, h('label', { for: `search-${name}` }, label), input) };
  };
  const q = field('q', 'Text (command or output)', { type: 'search', placeholder: 'e.g. rm -rf, or an error message', required: true });
  const user = field('user', 'User', { type: 'text', placeholder: 'name, e-mail or subject' });
  const node = field('node', 'Node', { type: 'text', placeholder: 'ip-10-0-1-17.ec2.internal' });
  const since = field('since', 'Since', { type: 'datetime-local' });
  const until = field('until', 'Until', { type: 'datetime-local' });
  const exit = h('select', { id: 'search-exit', name: 'exit', dataset: { testid: 'search-exit' } },
    [['', 'any'], ['failed', 'failed (not 0)'], ['ok', 'ok (0)']].map(([value, label]) => h('option', { value, selected: filters.exit === value }, label)));
  if (filters.exit && !['', 'failed', 'ok'].includes(filters.exit)) {
    exit.append(h('option', { value: filters.exit, selected: true }, `exactly ${filters.exit}`));
  }
  const inputs = { q: q.input, user: user.input, node: node.input, since: since.input, until: until.input, exit };
  const status = h('p', { class: 'muted', role: 'status', dataset: { testid: 'search-status' } });
  const body = h('div', { class: 'table-wrap', hidden: true });
  const form = h('form', { class: 'search-form', role: 'search', dataset: { testid: 'search-form' }, onsubmit: (e) => {
    e.preventDefault();
    const wanted = Object.fromEntries(SEARCH_FIELDS.map((f) => [f, inputs[f].value]));
    const hash = searchHash(wanted);
    // Same address: search again (the results may have changed); otherwise the route does it.
    if (hash === window.location.hash) run(wanted);
    else window.location.hash = hash;
  } },
  q.el, user.el, node.el, since.el, until.el,
  h('div', { class: 'field' }, h('label', { for: 'search-exit' }, 'Exit status'), exit),
  h('div', { class: 'field submit' }, h('button', { type: 'submit', dataset: { testid: 'search-submit' } }, 'Search')));
  replace(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Search')),
    h('p', { class: 'lede' }, 'Find who ran what, on which node, and whether it failed, in the recordings you may read. Commands come from the shell\'s own marks; open a hit to see it in the recording.'),
    form, status, body);

  async function run(wanted) {
    let query;
    try {
      query = searchQuery(wanted);
    } catch (error) {
      status.textContent = error.message;
      body.hidden = true;
      return;
    }
    status.textContent = 'Searching…';
    try {
      const answer = await api.search(query);
      status.textContent = resultsText(answer);
      status.dataset.truncated = answer.truncated ? 'true' : 'false';
      replace(body, table(answer.hits || [], wanted.q));
      body.hidden = !(answer.hits || []).length;
    } catch (error) {
      status.textContent = '';
      body.hidden = false;
      replace(body, h('div', { class: 'banner error', role: 'alert', dataset: { testid: 'page-error' } }, errorText(error)));
    }
  }

  if (hasSearch(filters)) await run(filters);
  else q.input.focus();
}

function table(hits, q) {
  const cols = ['Session', 'User', 'Node', 'Command', 'Exit status', 'Found in', ''];
  return h('table', { class: 'grid', dataset: { testid: 'search-results' } },
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, hits.map((hit) => h('tr', { dataset: { testid: 'search-hit', session: hit.session, index: String(hit.index) } },
      h('td', { class: 'mono', dataset: { testid: 'hit-session' } }, hit.session),
      h('td', { dataset: { testid: 'hit-user' } }, hit.user || '—'),
      h('td', { class: 'mono', dataset: { testid: 'hit-node' } }, hit.node || '—'),
      h('td', { class: 'mono wrap', dataset: { testid: 'hit-command' } }, `$ ${hit.command}`),
      h('td', { class: `nowrap ${typeof hit.exitStatus === 'number' && hit.exitStatus !== 0 ? 'failed' : ''}`, dataset: { testid: 'hit-exit', exit: typeof hit.exitStatus === 'number' ? String(hit.exitStatus) : '' } }, exitStatusText(hit.exitStatus)),
      h('td', { class: 'wrap', dataset: { testid: 'hit-snippet', match: hit.match || '' } },
        h('span', { class: 'sub' }, hit.match === 'output' ? 'output: ' : 'command: '),
        h('span', { class: 'mono snippet' }, snippetParts(hit.snippet, q).map((p) => (p.match ? h('mark', {}, p.text) : p.text)))),
      h('td', { class: 'actions' }, h('a', { class: 'button secondary', href: hitLink(hit), dataset: { testid: 'hit-open' } }, 'Open at command'))))));
}
