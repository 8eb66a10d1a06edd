import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  initialShell, step, backoffMs, idleSecondsLeft, DEFAULT_GRACE_MS, inputMessages, MAX_INPUT_MESSAGE,
  canReconnect, warnBeforeUnload,
} from '../src/lib/shell.js';

const hello = (token = 'tok-1') => JSON.stringify({
  type: 'hello', session: 's1', node: 'n1', instanceId: 'i-0abc', ssmSessionId: 'ssm-1', idleSeconds: 600, resumeToken: token,
});

/** Runs events through the machine; returns the final state and every effect. */
function run(events, state = initialShell('s1')) {
  const effects = [];
  for (const e of events) {
    const out = step(state, e);
    state = out.state;
    effects.push(...out.effects);
  }
  return { state, effects };
}

test('hello makes the shell live and records what the info expander shows', () => {
  const { state, effects } = run([{ type: 'open' }, { type: 'text', text: hello() }]);
  assert.equal(state.phase, 'live');
  assert.deepEqual(state.info, { session: 's1', node: 'n1', instanceId: 'i-0abc', ssmSessionId: 'ssm-1', idleSeconds: 600 });
  assert.deepEqual(effects, [], 'a first attach sends no resume frame');
});

test('output bytes are counted for the resume offset', () => {
  const { state } = run([{ type: 'text', text: hello() }, { type: 'output', length: 10 }, { type: 'output', length: 5 }]);
  assert.equal(state.offset, 15);
});

test('output the terminal consumed is acknowledged with the running total', () => {
  const { state, effects } = run([
    { type: 'text', text: hello() },
    { type: 'output', length: 10 },
    { type: 'output', length: 5 },
    { type: 'consumed', offset: 10 },
    { type: 'consumed', offset: 15 },
  ]);
  assert.deepEqual(effects, [
    { type: 'send', frame: { type: 'ack', bytes: 10 } },
    { type: 'send', frame: { type: 'ack', bytes: 15 } },
  ]);
  assert.equal(state.acked, 15);
});

test('an ack never goes backwards nor beyond what was received', () => {
  const { effects } = run([
    { type: 'text', text: hello() },
    { type: 'output', length: 10 },
    { type: 'consumed', offset: 10 },
    { type: 'consumed', offset: 4 },
    { type: 'consumed', offset: 10 },
    { type: 'consumed', offset: 99 },
  ]);
  assert.deepEqual(effects, [{ type: 'send', frame: { type: 'ack', bytes: 10 } }]);
});

test('no ack while the connection is down; after a reattach the count goes on from hello', () => {
  let { state, effects } = run([
    { type: 'text', text: hello() },
    { type: 'output', length: 42 },
    { type: 'socketClosed', now: 0 },
    { type: 'consumed', offset: 42 },
  ]);
  assert.deepEqual(effects, [{ type: 'reattach', delayMs: backoffMs(0) }]);
  // The gateway no longer held bytes 42..50: output continues at 50.
  const gap = JSON.stringify({ ...JSON.parse(hello()), offset: 50 });
  ({ state, effects } = run([
    { type: 'open' },
    { type: 'text', text: gap },
    { type: 'consumed', offset: 42 },
    { type: 'output', length: 8 },
    { type: 'consumed', offset: 58 },
  ], state));
  assert.equal(state.offset, 58);
  assert.deepEqual(effects, [
    { type: 'send', frame: { type: 'resume', resumeToken: 'tok-1', offset: 42 } },
    { type: 'send', frame: { type: 'ack', bytes: 58 } },
  ]);
});

test('a dropped connection reattaches and resumes from the byte offset with the hello token', () => {
  let { state, effects } = run([{ type: 'text', text: hello('tok-A') }, { type: 'output', length: 42 }, { type: 'socketClosed', now: 1000 }]);
  assert.equal(state.phase, 'reconnecting');
  assert.deepEqual(effects, [{ type: 'reattach', delayMs: backoffMs(0) }]);
  ({ state, effects } = run([{ type: 'open' }], state));
  assert.deepEqual(effects, [{ type: 'send', frame: { type: 'resume', resumeToken: 'tok-A', offset: 42 } }]);
  ({ state, effects } = run([{ type: 'text', text: hello('tok-B') }], state));
  assert.equal(state.phase, 'live');
  assert.equal(state.resumeToken, 'tok-B', 'the newest token is the one to present next time');
  assert.equal(state.notice, 'Reconnected.');
});

test('after a reconnect the terminal size is sent again', () => {
  const { state } = run([{ type: 'text', text: hello() }, { type: 'resize', cols: 100, rows: 30 }, { type: 'socketClosed', now: 0 }]);
  const { effects } = run([{ type: 'text', text: hello() }], state);
  assert.deepEqual(effects, [{ type: 'send', frame: { type: 'resize', cols: 100, rows: 30 } }]);
});

test('reattach retries back off and give up after the grace window with a clear message', () => {
  let { state } = run([{ type: 'text', text: hello() }, { type: 'socketClosed', now: 0 }]);
  let effects;
  ({ state, effects } = run([{ type: 'reattachFailed', now: 1000, error: { code: 'E_NETWORK', message: 'down' } }], state));
  assert.equal(state.phase, 'reconnecting');
  assert.deepEqual(effects, [{ type: 'reattach', delayMs: backoffMs(1) }]);
  assert.ok(backoffMs(1) > backoffMs(0) && backoffMs(10) === 3000);
  // A reattach socket that closes before hello counts as a failed try too.
  ({ state, effects } = run([{ type: 'socketClosed', now: 2000 }], state));
  assert.equal(state.attempts, 2);
  assert.equal(effects[0].type, 'reattach');
  ({ state, effects } = run([{ type: 'reattachFailed', now: DEFAULT_GRACE_MS + 1, error: { code: 'E_NETWORK', message: 'down' } }], state));
  assert.equal(state.phase, 'failed');
  assert.deepEqual(effects, []);
  assert.equal(state.failure.code, 'E_RECONNECT_GAVE_UP');
  assert.match(state.failure.message, /could not be restored within 30 s/);
});

test('a reattach the API refuses for good fails at once with its message', () => {
  let { state } = run([{ type: 'text', text: hello() }, { type: 'socketClosed', now: 0 }]);
  ({ state } = run([{ type: 'reattachFailed', now: 10, error: { code: 'E_BAD_REQUEST', message: 'session s1 is Closed and cannot be attached; open a new shell' } }], state));
  assert.equal(state.phase, 'failed');
  assert.equal(state.failure.code, 'E_BAD_REQUEST');
  assert.match(state.failure.message, /cannot be restored: session s1 is Closed/);
});

test('closed frame ends the shell with exit code and reason; the later socket close changes nothing', () => {
  const { state, effects } = run([
    { type: 'text', text: hello() },
    { type: 'text', text: JSON.stringify({ type: 'closed', exitCode: 0, reason: 'UserExit' }) },
    { type: 'socketClosed', now: 5 },
  ]);
  assert.equal(state.phase, 'closed');
  assert.deepEqual(state.closed, { exitCode: 0, reason: 'UserExit' });
  assert.deepEqual(effects, [], 'no reattach after a clean close');
  const noCode = run([{ type: 'text', text: hello() }, { type: 'text', text: JSON.stringify({ type: 'closed', exitCode: null, reason: 'IdleTimeout' }) }]);
  assert.deepEqual(noCode.state.closed, { exitCode: null, reason: 'IdleTimeout' });
});

test('an error frame followed by the socket closing fails with that error; without a close the shell stays up', () => {
  const error = JSON.stringify({ type: 'error', code: 'E_REAUTH_REQUIRED', message: 'sign in again', retryable: false });
  const fatal = run([{ type: 'text', text: error }, { type: 'socketClosed', now: 0 }]);
  assert.equal(fatal.state.phase, 'failed');
  assert.deepEqual(fatal.state.failure, { code: 'E_REAUTH_REQUIRED', message: 'sign in again', retryable: false });
  const benign = run([
    { type: 'text', text: hello() },
    { type: 'text', text: JSON.stringify({ type: 'error', code: 'E_BAD_REQUEST', message: 'unreadable control frame', retryable: false }) },
    { type: 'output', length: 3 },
    { type: 'socketClosed', now: 0 },
  ]);
  assert.equal(benign.state.phase, 'reconnecting', 'output after the error showed it was not fatal');
});

test('a socket that closes before any hello fails without reattaching', () => {
  const { state, effects } = run([{ type: 'open' }, { type: 'socketClosed', now: 0, origin: 'https://shell.example.com' }]);
  assert.equal(state.phase, 'failed');
  assert.equal(state.failure.code, 'E_ATTACH');
  assert.match(state.failure.message, /allowedOrigins lists https:\/\/shell\.example\.com/);
  assert.deepEqual(effects, []);
});

test('idle warning counts down and clears on input', () => {
  let { state } = run([{ type: 'text', text: hello() }, { type: 'text', text: JSON.stringify({ type: 'idle_warn', secondsRemaining: 30 }), now: 10_000 }]);
  assert.equal(idleSecondsLeft(state.idle, 10_000), 30);
  assert.equal(idleSecondsLeft(state.idle, 22_500), 17.5);
  assert.equal(idleSecondsLeft(state.idle, 99_000), 0);
  ({ state } = run([{ type: 'input' }], state));
  assert.equal(state.idle, null);
  assert.equal(idleSecondsLeft(null, 0), null);
});

test('resize sends a frame only when live and only when the size changed', () => {
  const before = run([{ type: 'resize', cols: 80, rows: 24 }]);
  assert.deepEqual(before.effects, [], 'not live yet: the open request carried the size');
  const { effects } = run([
    { type: 'text', text: hello() },
    { type: 'resize', cols: 120, rows: 40 },
    { type: 'resize', cols: 120, rows: 40 },
    { type: 'resize', cols: 100, rows: 40 },
  ], before.state);
  assert.deepEqual(effects, [
    { type: 'send', frame: { type: 'resize', cols: 120, rows: 40 } },
    { type: 'send', frame: { type: 'resize', cols: 100, rows: 40 } },
  ]);
});

test('closing a live shell sends the close frame; closing while reconnecting disconnects', () => {
  let { state, effects } = run([{ type: 'text', text: hello() }, { type: 'userClose' }]);
  assert.deepEqual(effects, [{ type: 'send', frame: { type: 'close' } }]);
  ({ state } = run([{ type: 'socketClosed', now: 0 }], state));
  assert.equal(state.phase, 'closed', 'a socket closing after our close frame is no drop');
  const dropped = run([{ type: 'text', text: hello() }, { type: 'socketClosed', now: 0 }, { type: 'userClose' }]);
  assert.equal(dropped.state.phase, 'closed');
  assert.deepEqual(dropped.effects.at(-1), { type: 'disconnect' });
});

test('unreadable text frames are ignored', () => {
  const { state } = run([{ type: 'text', text: hello() }, { type: 'text', text: 'not json' }, { type: 'text', text: '{"type":"mystery"}' }]);
  assert.equal(state.phase, 'live');
});

test('a paste goes in messages under the gateway\'s 64 KiB bound, whole and in order', () => {
  assert.ok(MAX_INPUT_MESSAGE <= 64 * 1024);
  const paste = new Uint8Array(200_000).map((_, i) => i % 251);
  const messages = inputMessages(paste);
  assert.equal(messages.length, Math.ceil(paste.length / MAX_INPUT_MESSAGE));
  assert.ok(messages.every((m) => m.length > 0 && m.length <= MAX_INPUT_MESSAGE));
  assert.deepEqual(Buffer.concat(messages), Buffer.from(paste));
  assert.equal(inputMessages(new Uint8Array(3)).length, 1, 'a keystroke is one message');
  assert.deepEqual(inputMessages(new Uint8Array(0)), []);
});

test('a reloaded page resumes its shell from byte 0 with the token the gateway gave with the ticket', () => {
  const start = initialShell('s1', { resumeToken: 'tok-9' });
  const opened = step(start, { type: 'open' });
  assert.deepEqual(opened.effects, [{ type: 'send', frame: { type: 'resume', resumeToken: 'tok-9', offset: 0 } }]);
  const withSize = { ...opened.state, size: { cols: 120, rows: 40 } };
  // The gateway replays from the oldest byte it still holds (here 4096, with a gap notice).
  const { state, effects } = run([
    { type: 'text', text: JSON.stringify({ type: 'hello', session: 's1', node: 'n1', resumeToken: 'tok-9', offset: 4096 }) },
  ], withSize);
  assert.equal(state.phase, 'live');
  assert.equal(state.offset, 4096, 'acks go on from where the replay starts');
  assert.match(state.notice, /after the page reload/);
  assert.deepEqual(effects, [{ type: 'send', frame: { type: 'resize', cols: 120, rows: 40 } }], 'the reloaded page says its size');
  const fresh = initialShell('s2');
  assert.equal(step(fresh, { type: 'open' }).effects.length, 0, 'a new shell still attaches without a resume frame');
});

test('Reconnect retries at once while reconnecting, and once more after a give-up, never after a final refusal', () => {
  const live = run([{ type: 'text', text: hello() }]).state;
  assert.equal(canReconnect(live), false, 'nothing to reconnect while live');
  const dropped = run([{ type: 'socketClosed', now: 1000 }], live).state;
  assert.equal(canReconnect(dropped), true);
  assert.deepEqual(step(dropped, { type: 'reconnectNow', now: 1100 }).effects, [{ type: 'reattach', delayMs: 0 }]);
  const gaveUp = run([{ type: 'reattachFailed', now: 1000 + DEFAULT_GRACE_MS, error: { code: 'E_NETWORK', message: 'down' } }], dropped).state;
  assert.equal(gaveUp.phase, 'failed');
  assert.equal(canReconnect(gaveUp), true);
  const again = step(gaveUp, { type: 'reconnectNow', now: 50_000 });
  assert.equal(again.state.phase, 'reconnecting');
  assert.equal(again.state.failure, null);
  assert.deepEqual(again.effects, [{ type: 'reattach', delayMs: 0 }]);
  assert.equal(again.state.droppedAt, 50_000, 'a new grace window starts');
  const refused = run([{ type: 'reattachFailed', now: 2000, error: { code: 'E_NOT_FOUND', message: 'ended' } }], dropped).state;
  assert.equal(canReconnect(refused), false, 'the gateway said the shell is gone');
  assert.deepEqual(step(refused, { type: 'reconnectNow', now: 3000 }).effects, []);
  const closed = run([{ type: 'text', text: JSON.stringify({ type: 'closed', exitCode: 0, reason: 'UserExit' }) }], live).state;
  assert.equal(canReconnect(closed), false);
});

test('closing the tab asks first only while a shell is open or coming back', () => {
  assert.equal(warnBeforeUnload(null), false);
  assert.equal(warnBeforeUnload(initialShell('s1')), true, 'connecting');
  const live = run([{ type: 'text', text: hello() }]).state;
  assert.equal(warnBeforeUnload(live), true);
  assert.equal(warnBeforeUnload(run([{ type: 'socketClosed', now: 1 }], live).state), true, 'reconnecting');
  assert.equal(warnBeforeUnload(run([{ type: 'text', text: JSON.stringify({ type: 'closed', exitCode: 0, reason: 'UserExit' }) }], live).state), false);
  assert.equal(warnBeforeUnload({ ...initialShell(null), phase: 'failed' }), false, 'a refused open');
});
