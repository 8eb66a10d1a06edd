import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseSearchRoute, searchHash, searchQuery, toRfc3339, hitLink, resultsText, snippetParts, hasSearch,
  SearchInputError, SEARCH_LIMIT,
} from '../src/lib/search.js';
import { parseReplayRoute } from '../src/lib/player.js';

// A search answer in the shape of the shared contract (docs/api.md, GET /api/v1/sessions/search).
const ANSWER = {
  hits: [
    { session: 'ip-10-0-1-17-x7k2p', user: 'Demo User', node: 'ip-10-0-1-17.ec2.internal', index: 3, command: 'false', exitStatus: 1, startSeconds: 4.5, match: 'command', snippet: 'false' },
    { session: 'ip-10-0-1-18-a1b2c', user: 'Demo User', node: 'ip-10-0-1-18.ec2.internal', index: 0, command: 'cat /etc/hosts', exitStatus: 0, startSeconds: 1.25, match: 'output', snippet: '127.0.0.1 localhost' },
  ],
  truncated: false,
};

test('the filters live in the address, so Back from the player returns to the results', () => {
  const filters = { q: 'false', user: '', node: 'ip-10-0-1-17.ec2.internal', since: '2026-12-05T10:00', until: '', exit: 'failed' };
  const hash = searchHash(filters);
  assert.equal(hash, '#/search?q=false&node=ip-10-0-1-17.ec2.internal&since=2026-12-05T10%3A00&exit=failed');
  assert.deepEqual(parseSearchRoute(hash), filters);
  assert.deepEqual(parseSearchRoute('#/search'), { q: '', user: '', node: '', since: '', until: '', exit: '' });
  assert.equal(searchHash({}), '#/search');
  assert.equal(parseSearchRoute('#/sessions'), null);
  assert.equal(hasSearch(parseSearchRoute('#/search')), false, 'an empty form asks the gateway nothing');
  assert.equal(hasSearch(filters), true);
});

test('the query carries text, user, node, RFC 3339 times, the exit filter and a limit', () => {
  const query = new URLSearchParams(searchQuery({
    q: ' rm -rf ', user: 'alice@example.com', node: 'n1', since: '2026-12-05T10:00:00Z', until: '2026-12-05T11:30:00+01:00', exit: 'failed',
  }));
  assert.equal(query.get('q'), 'rm -rf');
  assert.equal(query.get('user'), 'alice@example.com');
  assert.equal(query.get('node'), 'n1');
  assert.equal(query.get('since'), '2026-12-05T10:00:00Z');
  assert.equal(query.get('until'), '2026-12-05T10:30:00Z');
  assert.equal(query.get('exit'), 'failed');
  assert.equal(query.get('limit'), String(SEARCH_LIMIT));
  const minimal = new URLSearchParams(searchQuery({ q: 'ls' }));
  assert.deepEqual([...minimal.keys()], ['q', 'limit'], 'empty filters are left out');
  assert.equal(new URLSearchParams(searchQuery({ q: 'x', exit: 'ok' })).get('exit'), 'ok');
  assert.equal(new URLSearchParams(searchQuery({ q: 'x', exit: '127' })).get('exit'), '127');
  // A datetime-local value is the browser's local time; the query says the same instant in UTC.
  const local = '2026-12-05T10:00';
  assert.equal(toRfc3339(local, 'since'), new Date(2026, 11, 5, 10, 0).toISOString().replace('.000Z', 'Z'));
});

test('filters the gateway would refuse are refused here, saying what to type', () => {
  assert.throws(() => searchQuery({ q: '  ' }), SearchInputError);
  assert.throws(() => searchQuery({ q: '' }), /Type the text to look for/);
  assert.throws(() => searchQuery({ q: 'x', exit: 'bad' }), /not "failed", "ok" or a number/);
  assert.throws(() => searchQuery({ q: 'x', exit: '1000' }), /0-255/);
  assert.throws(() => searchQuery({ q: 'x', since: 'yesterday' }), /not a time for since/);
  assert.throws(() => searchQuery({ q: 'x', since: '2026-12-05T12:00:00Z', until: '2026-12-05T10:00:00Z' }), /swap them/);
});

test('a hit opens the recording at its command; the status line says when the gateway stopped early', () => {
  assert.equal(hitLink(ANSWER.hits[0]), '#/sessions/ip-10-0-1-17-x7k2p/replay?at=4.5');
  assert.deepEqual(parseReplayRoute(hitLink(ANSWER.hits[1])), { session: 'ip-10-0-1-18-a1b2c', at: 1.25 });
  assert.equal(resultsText(ANSWER), '2 commands found.');
  assert.equal(resultsText({ hits: [ANSWER.hits[0]], truncated: false }), '1 command found.');
  assert.equal(resultsText({ hits: [], truncated: false }), 'No command matches.');
  assert.match(resultsText({ hits: [], truncated: true }), /stopped early.*narrow the search/);
});

test('the snippet marks every occurrence of the text, whatever its case', () => {
  assert.deepEqual(snippetParts('Error: no error here', 'error'), [
    { text: 'Error', match: true }, { text: ': no ', match: false }, { text: 'error', match: true }, { text: ' here', match: false },
  ]);
  assert.deepEqual(snippetParts('abc', ''), [{ text: 'abc', match: false }]);
  assert.deepEqual(snippetParts('', 'x'), []);
});
