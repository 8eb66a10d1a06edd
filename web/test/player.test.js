import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseReplayRoute, replayHash, idleAxis, playerMarkers, currentMarker, commandLabel, exitStatusText,
  playerOptions, ledgerNote, IDLE_LIMIT_S,
} from '../src/lib/player.js';

// The ledger's shape from the shared contract (docs/api.md, GET /api/v1/sessions/{name}/ledger).
const LEDGER = {
  session: 'ip-10-0-1-17-x7k2p',
  trust: 'cooperative',
  commands: [
    { index: 0, command: 'ls -l', cwd: '/root', exitStatus: 0, startedAt: '2026-12-05T10:00:01Z', endedAt: '2026-12-05T10:00:01Z', startSeconds: 1.25, endSeconds: 1.31, outputStart: 10, outputEnd: 200, forged: false },
    { index: 1, command: 'false', cwd: '/root', exitStatus: 1, startedAt: '2026-12-05T10:10:00Z', endedAt: '2026-12-05T10:10:00Z', startSeconds: 600.5, endSeconds: 600.52, outputStart: 200, outputEnd: 220, forged: false },
    { index: 2, command: 'sleep 5', cwd: null, exitStatus: null, startedAt: '2026-12-05T10:10:02Z', endedAt: null, startSeconds: 602, endSeconds: null, outputStart: 220, outputEnd: 220, forged: false },
  ],
  forgedMarks: 0,
  shellExitStatus: null,
};

test('the replay deep link round-trips a session name and a start time', () => {
  assert.deepEqual(parseReplayRoute('#/sessions/ip-10-0-1-17-x7k2p/replay?at=600.5'), { session: 'ip-10-0-1-17-x7k2p', at: 600.5 });
  assert.deepEqual(parseReplayRoute('#/sessions/s1/replay'), { session: 's1', at: 0 });
  assert.deepEqual(parseReplayRoute('#/sessions/s1/replay?at=soon'), { session: 's1', at: 0 });
  assert.deepEqual(parseReplayRoute('#/sessions/s1/replay?at=-3'), { session: 's1', at: 0 });
  assert.equal(parseReplayRoute('#/sessions'), null);
  assert.equal(parseReplayRoute('#/sessions/s1'), null);
  assert.equal(parseReplayRoute('#/sessions/%E0%A4%A/replay'), null, 'a broken escape is not a link');
  assert.equal(replayHash('ip-10-0-1-17-x7k2p', 600.5), '#/sessions/ip-10-0-1-17-x7k2p/replay?at=600.5');
  assert.equal(replayHash('s1', 1 / 3), '#/sessions/s1/replay?at=0.334', 'up to the next millisecond');
  assert.equal(replayHash('s1', 0), '#/sessions/s1/replay');
  assert.equal(replayHash('s 1', null), '#/sessions/s%201/replay');
  assert.deepEqual(parseReplayRoute(replayHash('s 1', 4.5)), { session: 's 1', at: 4.5 });
});

test('a link to a command opens the player on that command, not the one just before it', () => {
  // 'false' starts 0.45 ms after a whole millisecond: a link rounded down would land before it.
  const ledger = { commands: [
    { index: 0, command: 'true', exitStatus: 0, startSeconds: 4.1201 },
    { index: 1, command: 'false', exitStatus: 1, startSeconds: 4.12345 },
  ] };
  const axis = idleAxis([4.1201, 4.12345, 5], 2);
  const markers = playerMarkers({ ledger, axis });
  const { at } = parseReplayRoute(replayHash('s1', 4.12345));
  assert.equal(markers[currentMarker(markers, axis.toPlayer(at))].command.command, 'false');
});

test('skip-idle cuts every pause longer than the limit, and the axis maps both ways', () => {
  // Events at 0.1, 1, 600 (a 599 s pause), 601, 1000 (a 399 s pause).
  const axis = idleAxis([0.1, 1, 600, 601, 1000], 2);
  assert.equal(axis.toPlayer(1), 1);
  assert.equal(axis.toPlayer(600), 3, 'the 599 s pause plays as 2 s');
  assert.equal(axis.toPlayer(600.5), 3.5);
  assert.equal(axis.toPlayer(601), 4);
  assert.equal(axis.toPlayer(700), 6, 'inside a long pause the time stops at the limit');
  assert.equal(axis.toPlayer(1000), 6);
  for (const t of [0, 0.5, 1, 600, 600.5, 601, 1000]) {
    assert.equal(axis.toRecording(axis.toPlayer(t)), t, `round trip of ${t}`);
  }
  const plain = idleAxis([0.1, 600], null);
  assert.equal(plain.toPlayer(600), 600, 'without skip-idle the axis is the recording\'s');
  assert.equal(plain.toRecording(123), 123);
});

test('one marker per ledger command at its start, plus the transcript\'s own markers, in time order', () => {
  const axis = idleAxis([0.5, 1.25, 1.3, 600.5, 600.6, 602, 700], IDLE_LIMIT_S);
  const forged = { ...LEDGER.commands[0], index: 9, command: 'rm -rf /', startSeconds: 2, forged: true };
  const markers = playerMarkers({
    ledger: { ...LEDGER, commands: [...LEDGER.commands, forged] },
    castMarkers: [{ time: 700, data: 'transcript truncated: maxBytes reached' }],
    axis,
  });
  assert.deepEqual(markers.map((m) => m.label), [
    '$ ls -l → exit 0', '$ false → exit 1', '$ sleep 5', 'transcript truncated: maxBytes reached',
  ], 'a forged mark is no command');
  assert.deepEqual(markers.map((m) => Math.round(m.time * 1000) / 1000), [1.25, 3.3, 4.8, 6.8], 'pauses of 598.5 and 98 s cut to 2 s');
  assert.equal(markers[1].command.index, 1);
  assert.equal(markers[3].command, null);
  assert.deepEqual(playerMarkers({ ledger: { commands: [] }, axis }), [], 'no ledger: no command markers');
  assert.deepEqual(playerMarkers({ ledger: null, axis }), []);
  assert.equal(currentMarker(markers, 0), -1);
  assert.equal(currentMarker(markers, 3.3), 1);
  assert.equal(currentMarker(markers, 5), 2);
});

test('labels and exit statuses say what happened', () => {
  assert.equal(commandLabel({ command: 'false', exitStatus: 1 }), '$ false → exit 1');
  assert.equal(commandLabel({ command: 'vim', exitStatus: null }), '$ vim');
  assert.equal(exitStatusText(0), '0 (ok)');
  assert.equal(exitStatusText(127), '127 (failed)');
  assert.equal(exitStatusText(null), 'not reported');
});

test('player options: seek, speed, skip-idle and markers go to asciinema-player', () => {
  const options = playerOptions({ at: 600.5, speed: 2, skipIdle: true, markers: [{ time: 3.3, label: '$ false → exit 1' }], cols: 100, rows: 30 });
  assert.equal(options.startAt, 600.5, 'startAt is on the recording\'s axis (the player cuts idle itself)');
  assert.equal(options.speed, 2);
  assert.equal(options.idleTimeLimit, IDLE_LIMIT_S);
  assert.deepEqual(options.markers, [[3.3, '$ false → exit 1']]);
  assert.equal(options.autoPlay, false);
  assert.equal(options.cols, 100);
  assert.equal(options.fit, 'width');
  assert.equal(playerOptions({ skipIdle: false }).idleTimeLimit, undefined);
  assert.equal(playerOptions({ at: -1 }).startAt, 0);
});

test('the note under the player states the ledger\'s trust, forged marks and the shell\'s exit', () => {
  assert.match(ledgerNote({ commands: [], missing: true }), /No command ledger/);
  const note = ledgerNote({ ...LEDGER, forgedMarks: 2, shellExitStatus: 1 });
  assert.match(note, /cooperative.*authoritative record/);
  assert.match(note, /2 marks in the output did not carry the session's nonce and are not listed/);
  assert.match(note, /The shell exited with 1\./);
  assert.match(ledgerNote({ commands: [], forgedMarks: 0, shellExitStatus: null }), /^No commands were marked\./);
});
