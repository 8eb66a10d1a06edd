import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  base64url, randomToken, pkceChallenge, discoveryUrl, checkDiscovery, authorizeUrl, parseCallback,
  tokenRequestBody, jwtClaims, checkTokenAnswer, isExpired, displayName, safeReturnRoute, LoginError,
} from '../src/lib/oidc.js';

function jwt(claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc({ alg: 'RS256', typ: 'JWT' })}.${enc(claims)}.c2ln`;
}

test('the PKCE challenge is base64url(SHA-256(verifier)) (RFC 7636 appendix B)', async () => {
  const verifier = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk';
  assert.equal(await pkceChallenge(verifier), 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM');
  const other = randomToken(48);
  assert.equal(await pkceChallenge(other), createHash('sha256').update(other).digest('base64url'));
});

test('random tokens are URL-safe, long enough and differ', () => {
  const a = randomToken();
  const b = randomToken();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, b);
  assert.equal(base64url(new Uint8Array([251, 255, 191])), '-_-_');
});

test('the authorization URL carries every code-flow parameter and nothing secret', () => {
  const url = new URL(authorizeUrl('http://127.0.0.1:9000/authorize?tenant=x', {
    clientId: 'nodeshell', redirectUri: 'http://127.0.0.1:8443/callback', scope: 'openid profile email groups',
    state: 'st', nonce: 'no', challenge: 'ch',
  }));
  const p = Object.fromEntries(url.searchParams);
  assert.deepEqual(p, {
    tenant: 'x', response_type: 'code', client_id: 'nodeshell', redirect_uri: 'http://127.0.0.1:8443/callback',
    scope: 'openid profile email groups', state: 'st', nonce: 'no', code_challenge: 'ch', code_challenge_method: 'S256',
  });
  assert.ok(!url.toString().includes('verifier'));
});

test('discovery needs both endpoints and S256 when methods are listed', () => {
  assert.equal(discoveryUrl('http://i.test/realms/a/'), 'http://i.test/realms/a/.well-known/openid-configuration');
  const good = { authorization_endpoint: 'http://i/authorize', token_endpoint: 'http://i/token', code_challenge_methods_supported: ['S256'] };
  assert.equal(checkDiscovery(good), good);
  assert.throws(() => checkDiscovery({ token_endpoint: 'x' }), { code: 'E_LOGIN_DISCOVERY' });
  assert.throws(() => checkDiscovery({ ...good, code_challenge_methods_supported: ['plain'] }), /S256/);
});

test('the callback gives the code only when state matches', () => {
  assert.equal(parseCallback('?code=abc&state=s1', 's1'), 'abc');
  assert.throws(() => parseCallback('?code=abc&state=s2', 's1'), { code: 'E_LOGIN_STATE' });
  assert.throws(() => parseCallback('?code=abc&state=s1', null), { code: 'E_LOGIN_STATE' });
  assert.throws(() => parseCallback('?state=s1', 's1'), { code: 'E_LOGIN_CALLBACK' });
  assert.throws(() => parseCallback('?error=access_denied&error_description=no+way&state=s1', 's1'),
    (e) => e instanceof LoginError && e.code === 'E_LOGIN_REFUSED' && e.message.includes('no way'));
});

test('the token request is the form the contract names', () => {
  const body = new URLSearchParams(tokenRequestBody({ code: 'c', redirectUri: 'http://h/callback', clientId: 'ns', verifier: 'v' }));
  assert.deepEqual(Object.fromEntries(body), {
    grant_type: 'authorization_code', code: 'c', redirect_uri: 'http://h/callback', client_id: 'ns', code_verifier: 'v',
  });
});

test('the token answer is accepted only with our nonce, audience and issuer', () => {
  const claims = { iss: 'http://i.test', aud: 'nodeshell', nonce: 'n1', sub: 'alice', name: 'Alice Ops', exp: 2000 };
  const { idToken, claims: got } = checkTokenAnswer({ id_token: jwt(claims), token_type: 'Bearer' }, { nonce: 'n1', clientId: 'nodeshell', issuer: 'http://i.test/' });
  assert.equal(got.sub, 'alice');
  assert.equal(idToken.split('.').length, 3);
  assert.throws(() => checkTokenAnswer({ id_token: jwt(claims) }, { nonce: 'n2', clientId: 'nodeshell' }), { code: 'E_LOGIN_NONCE' });
  assert.throws(() => checkTokenAnswer({ id_token: jwt({ ...claims, aud: ['other'] }) }, { nonce: 'n1', clientId: 'nodeshell' }), /not for the client nodeshell/);
  assert.throws(() => checkTokenAnswer({ id_token: jwt(claims) }, { nonce: 'n1', clientId: 'nodeshell', issuer: 'http://evil' }), /comes from/);
  assert.throws(() => checkTokenAnswer({}, { nonce: 'n1', clientId: 'nodeshell' }), { code: 'E_LOGIN_TOKEN' });
  assert.throws(() => jwtClaims('a.%%%.c'), { code: 'E_LOGIN_TOKEN' });
});

test('claims: expiry with skew, unicode names, display name fallbacks', () => {
  assert.equal(isExpired({ exp: 1000 }, 900), false);
  assert.equal(isExpired({ exp: 1000 }, 980), true, 'within the 30 s skew counts as expired');
  assert.equal(isExpired({}, 0), true);
  assert.equal(jwtClaims(jwt({ name: 'Zoë Ødegård' })).name, 'Zoë Ødegård');
  assert.equal(displayName({ sub: 's', email: 'e@x' }), 'e@x');
  assert.equal(displayName({ name: 'N', sub: 's' }), 'N');
});

test('only in-app hash routes survive the round trip through the issuer', () => {
  assert.equal(safeReturnRoute('#/sessions'), '#/sessions');
  assert.equal(safeReturnRoute('#/sessions/abc-1'), '#/sessions/abc-1');
  assert.equal(safeReturnRoute('#//evil.example'), '#/nodes');
  assert.equal(safeReturnRoute('https://evil.example'), '#/nodes');
  assert.equal(safeReturnRoute('#/x?token=1'), '#/nodes');
  assert.equal(safeReturnRoute(undefined), '#/nodes');
});
