import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createApi, socketUrl, errorFrom, needsSignIn, ApiError } from '../src/lib/api.js';

function fakeFetch(answers) {
  const calls = [];
  const impl = async (url, init) => {
    calls.push({ url, init });
    const a = answers.shift();
    if (a instanceof Error) throw a;
    return new Response(a.body === undefined ? null : (typeof a.body === 'string' ? a.body : JSON.stringify(a.body)), { status: a.status || 200 });
  };
  return { impl, calls };
}

test('calls ride on the same-origin session cookie: no token, the CSRF header on writes only', async () => {
  const { impl, calls } = fakeFetch([
    { status: 201, body: { session: 's1', attachUrl: '/api/v1/sessions/s1/attach?ticket=t', ticket: 't' } },
    { body: { items: [] } },
    { status: 202, body: {} },
    { status: 204 },
  ]);
  const api = createApi({ fetchImpl: impl });
  const answer = await api.openShell('ip-10-0-1-17.ec2.internal', { cols: 100, rows: 30, reason: 'INC-1' });
  assert.equal(answer.session, 's1');
  assert.equal(calls[0].url, '/api/v1/nodes/ip-10-0-1-17.ec2.internal/shell');
  assert.equal(calls[0].init.method, 'POST');
  assert.equal(calls[0].init.credentials, 'same-origin');
  assert.equal(calls[0].init.headers['X-Nodeshell-Csrf'], '1');
  assert.equal(calls[0].init.headers.Authorization, undefined);
  assert.deepEqual(JSON.parse(calls[0].init.body), { cols: 100, rows: 30, reason: 'INC-1' });
  await api.nodes();
  assert.equal(calls[1].init.headers['X-Nodeshell-Csrf'], undefined, 'reads need no CSRF header');
  assert.equal(calls[1].init.credentials, 'same-origin');
  await api.endSession('s1');
  assert.equal(calls[2].init.method, 'DELETE');
  assert.equal(calls[2].init.headers['X-Nodeshell-Csrf'], '1');
  await api.signOut();
  assert.equal(calls[3].url, '/auth/logout');
  assert.equal(calls[3].init.method, 'POST');
  assert.equal(calls[3].init.headers['X-Nodeshell-Csrf'], '1');
});

test('API errors keep their code and message; E_AUTH asks for a new sign-in', async () => {
  let asked = null;
  const { impl } = fakeFetch([
    { status: 429, body: { code: 'E_CAP_USER', message: 'you hold 2 sessions; close one', limit: 2 } },
    { status: 401, body: { code: 'E_AUTH', message: 'token expired; sign in again' } },
  ]);
  const api = createApi({ fetchImpl: impl, onSignInNeeded: (e) => { asked = e; } });
  await assert.rejects(api.openShell('n', {}), (e) => e instanceof ApiError && e.code === 'E_CAP_USER' && e.status === 429 && e.body.limit === 2);
  assert.equal(asked, null);
  await assert.rejects(api.nodes(), { code: 'E_AUTH' });
  assert.equal(asked.code, 'E_AUTH');
  assert.ok(needsSignIn({ code: 'E_REAUTH_REQUIRED' }) && !needsSignIn({ code: 'E_FORBIDDEN' }));
});

test('answers without a JSON error and unreachable gateways still give a readable error', async () => {
  const e = await errorFrom(new Response('<html>bad gateway</html>', { status: 502 }));
  assert.equal(e.code, 'E_HTTP');
  assert.match(e.message, /HTTP 502/);
  const { impl } = fakeFetch([new TypeError('Failed to fetch')]);
  const api = createApi({ fetchImpl: impl });
  await assert.rejects(api.sessions(), { code: 'E_NETWORK' });
});

test('lists unwrap items; the transcript comes back as bytes', async () => {
  const { impl, calls } = fakeFetch([{ body: { items: [{ name: 'a' }] } }, { body: 'gz' }]);
  const api = createApi({ fetchImpl: impl });
  assert.deepEqual(await api.sessions(), [{ name: 'a' }]);
  const bytes = await api.transcript('a b');
  assert.deepEqual([...bytes], [...new TextEncoder().encode('gz')]);
  assert.equal(calls[1].url, '/api/v1/sessions/a%20b/transcript');
});

test('the WebSocket URL is built on the page host with ws or wss', () => {
  const http = { protocol: 'http:', host: '127.0.0.1:8443' };
  assert.equal(socketUrl('/api/v1/sessions/s1/attach?ticket=abc', http), 'ws://127.0.0.1:8443/api/v1/sessions/s1/attach?ticket=abc');
  const https = { protocol: 'https:', host: 'shell.example.com' };
  assert.equal(socketUrl('/api/v1/sessions/s1/attach?ticket=abc', https), 'wss://shell.example.com/api/v1/sessions/s1/attach?ticket=abc');
  assert.throws(() => socketUrl('https://evil.example/attach?ticket=x', https), { code: 'E_BAD_ATTACH' });
});

test('the ledger and the search are GETs on the contract\'s routes; a session without a ledger has no commands', async () => {
  const ledger = { session: 's1', trust: 'cooperative', commands: [{ index: 0, command: 'false', exitStatus: 1, startSeconds: 4.5 }], forgedMarks: 0, shellExitStatus: 0 };
  const { impl, calls } = fakeFetch([
    { body: ledger },
    { status: 404, body: { code: 'E_NOT_FOUND', message: 'session s2 has no ledger' } },
    { status: 403, body: { code: 'E_FORBIDDEN', message: 'not yours' } },
    { body: { hits: [], truncated: true } },
  ]);
  const api = createApi({ fetchImpl: impl });
  assert.deepEqual((await api.ledger('s1')).commands, ledger.commands);
  assert.equal(calls[0].url, '/api/v1/sessions/s1/ledger');
  assert.equal(calls[0].init.method, 'GET');
  assert.deepEqual(await api.ledger('s2'), { commands: [], missing: true });
  await assert.rejects(api.ledger('s3'), { code: 'E_FORBIDDEN' }, 'other refusals are shown, not hidden');
  assert.deepEqual(await api.search('q=false&exit=failed&limit=50'), { hits: [], truncated: true });
  assert.equal(calls[3].url, '/api/v1/sessions/search?q=false&exit=failed&limit=50');
  assert.equal(calls[3].init.headers['X-Nodeshell-Csrf'], undefined);
});
