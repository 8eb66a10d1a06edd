import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatDuration, sessionDuration, exitCodeText, reasonText, closedText, idleText, eligibilityText, errorText, formatTime, isLive,
} from '../src/lib/format.js';

test('durations read naturally', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(59.9), '59s');
  assert.equal(formatDuration(65), '1m 05s');
  assert.equal(formatDuration(3725), '1h 02m');
  assert.equal(formatDuration(null), '—');
  assert.equal(formatDuration(-1), '—');
});

test('a session lasts its recorded duration, or since its start while live', () => {
  assert.equal(sessionDuration({ phase: 'Closed', status: { durationSeconds: 42 } }, 0), 42);
  const now = Date.parse('2026-01-01T00:01:40Z');
  assert.equal(sessionDuration({ phase: 'Active', status: { startedAt: '2026-01-01T00:00:00Z' } }, now), 100);
  assert.equal(sessionDuration({ phase: 'Rejected', status: {} }, now), null);
  assert.equal(sessionDuration({ phase: 'Pending' }, now), null);
  assert.ok(isLive('Active') && !isLive('Closed'));
});

test('the closed banner always states the exit code or that it was not reported, and the reason', () => {
  assert.equal(closedText({ exitCode: 0, reason: 'UserExit' }), 'Session closed — exit code 0: UserExit — the shell exited');
  assert.equal(closedText({ exitCode: 130, reason: 'Weird' }), 'Session closed — exit code 130: Weird');
  const idle = closedText({ exitCode: null, reason: 'IdleTimeout' });
  assert.equal(idle, "Session closed — the shell's exit status was not reported: IdleTimeout — closed after no input for the idle limit");
  assert.match(idle, /IdleTimeout/);
  assert.equal(exitCodeText(0), '0');
  assert.equal(exitCodeText(undefined), 'not reported');
  assert.equal(reasonText(''), '');
  assert.match(reasonText('CredentialsExpired'), /sign in again and reopen/);
});

test('idle banner, eligibility and errors', () => {
  assert.equal(idleText(29.2), 'No input for a while: this shell closes in 30 s unless you type.');
  assert.equal(idleText(-3), 'No input for a while: this shell closes in 0 s unless you type.');
  assert.equal(eligibilityText({ eligible: true }), 'eligible');
  assert.equal(eligibilityText({ eligible: false, error: { code: 'E_NODE_NOT_EC2', message: 'not an EC2 node' } }), 'not an EC2 node');
  assert.equal(eligibilityText({ eligible: false }), 'not eligible');
  assert.equal(errorText({ code: 'E_CAP_USER', message: 'Close one of your sessions.' }), 'Close one of your sessions. (E_CAP_USER)');
  assert.equal(errorText({ message: 'plain' }), 'plain');
  assert.equal(formatTime('not a time'), '—');
  assert.match(formatTime('2026-01-02T03:04:05Z'), /^2026-01-0[12] \d\d:04:05$/);
});
