import { test } from 'node:test';
import assert from 'node:assert/strict';
import { onSignedOut, withoutMarker, displayName, SIGN_IN_PATH } from '../src/lib/signin.js';

test('signed out: redirect to the gateway, unless the browser just came back from it', () => {
  assert.equal(SIGN_IN_PATH, '/auth/login');
  assert.equal(onSignedOut(''), 'redirect');
  assert.equal(onSignedOut('?x=1'), 'redirect');
  assert.equal(onSignedOut('?signed-in=1'), 'explain');
});

test('the sign-in marker leaves the address bar, the route stays', () => {
  assert.equal(withoutMarker({ href: 'http://127.0.0.1:8080/?signed-in=1#/sessions' }), '/#/sessions');
  assert.equal(withoutMarker({ href: 'http://127.0.0.1:8080/nodes' }), '/nodes');
});

test('the header names the person from whoami', () => {
  assert.equal(displayName({ name: 'Demo Admin', sub: 'demo' }), 'Demo Admin');
  assert.equal(displayName({ email: 'a@example.com', sub: 'a' }), 'a@example.com');
  assert.equal(displayName({ sub: 'a' }), 'a');
  assert.equal(displayName(null), 'signed in');
});
