// What the recording player shows and where it starts: the deep link, the markers (one per
// command of the session's ledger, plus the transcript's own markers) and the time axis once
// idle pauses are cut. Pure; ui/player.js hands the results to asciinema-player.

/** Pauses longer than this many seconds are cut when skip-idle is on (the default). */
export const IDLE_LIMIT_S = 2;

/** Playback speeds offered, in order. */
export const SPEEDS = [0.5, 1, 2, 4, 8];

/**
 * The replay deep link of `#/sessions/<name>/replay?at=<startSeconds>`: `{ session, at }`
 * (`at` in seconds on the recording's own time axis, 0 when absent or unreadable), or null
 * when `hash` is not a replay link.
 */
export function parseReplayRoute(hash) {
  const m = /^#\/sessions\/([^/?]+)\/replay(?:\?(.*))?$/.exec(hash || '');
  if (!m) return null;
  let session;
  try {
    session = decodeURIComponent(m[1]);
  } catch {
    return null;
  }
  if (!session) return null;
  const at = Number(new URLSearchParams(m[2] || '').get('at'));
  return { session, at: Number.isFinite(at) && at > 0 ? at : 0 };
}

/** The deep link that opens `session`'s recording at `at` seconds. */
export function replayHash(session, at) {
  const base = `#/sessions/${encodeURIComponent(session)}/replay`;
  return typeof at === 'number' && Number.isFinite(at) && at > 0 ? `${base}?at=${roundTime(at)}` : base;
}

// Up to the next millisecond: a link rounded down could land just before its command's start
// and open the player on the command before it.
function roundTime(t) {
  return Math.ceil(t * 1000) / 1000;
}

/**
 * The time axis after cutting idle pauses, as asciinema-player does with `idleTimeLimit`:
 * every gap between consecutive event times longer than `limit` is shortened to `limit`.
 * Returns `{ toPlayer(t), toRecording(t) }`, mapping recording seconds to player seconds and
 * back. `limit` null or Infinity: the identity.
 */
export function idleAxis(eventTimes, limit) {
  const cut = typeof limit === 'number' && Number.isFinite(limit) && limit >= 0;
  // Knots: [recording time, player time] at each event.
  const knots = [[0, 0]];
  let prev = 0;
  let shift = 0;
  for (const t of eventTimes) {
    if (t < prev) continue;
    const gap = t - prev;
    if (cut && gap > limit) shift += gap - limit;
    prev = t;
    knots.push([t, t - shift]);
  }
  const toPlayer = (t) => {
    let i = knots.length - 1;
    while (i > 0 && knots[i][0] > t) i--;
    const [rt, pt] = knots[i];
    const into = Math.max(0, t - rt);
    return pt + (cut ? Math.min(into, limit) : into);
  };
  const toRecording = (p) => {
    let i = knots.length - 1;
    while (i > 0 && knots[i][1] > p) i--;
    const [rt, pt] = knots[i];
    return rt + Math.max(0, p - pt);
  };
  return { toPlayer, toRecording };
}

/** A command's marker label: `$ ls -l` and its exit status when known. */
export function commandLabel(command) {
  const exit = typeof command.exitStatus === 'number' ? ` → exit ${command.exitStatus}` : '';
  return `$ ${command.command}${exit}`;
}

/** What the exit status cell says. */
export function exitStatusText(status) {
  if (typeof status !== 'number') return 'not reported';
  return status === 0 ? '0 (ok)' : `${status} (failed)`;
}

/**
 * The player's markers: one per ledger command (at its `startSeconds`) and one per marker
 * event of the transcript itself (e.g. "transcript truncated"), on the player's time axis,
 * in time order. Each is `{ time, label, command }` (`command` null for a transcript marker).
 */
export function playerMarkers({ ledger, castMarkers = [], axis }) {
  const markers = [];
  for (const command of (ledger && Array.isArray(ledger.commands)) ? ledger.commands : []) {
    if (typeof command.startSeconds !== 'number' || command.forged) continue;
    markers.push({ time: axis.toPlayer(command.startSeconds), label: commandLabel(command), command });
  }
  for (const m of castMarkers) markers.push({ time: axis.toPlayer(m.time), label: m.data, command: null });
  markers.sort((a, b) => a.time - b.time);
  return markers;
}

/** The marker to show as current at player time `t` (the last at or before it), or -1. */
export function currentMarker(markers, t) {
  let found = -1;
  for (let i = 0; i < markers.length; i++) {
    if (markers[i].time <= t + 1e-6) found = i;
  }
  return found;
}

/** The player options for a recording opened at `at` recording seconds. */
export function playerOptions({ at = 0, speed = 1, skipIdle = true, markers = [], autoPlay = false, cols, rows }) {
  return {
    cols,
    rows,
    autoPlay,
    preload: true,
    startAt: at > 0 ? at : 0,
    speed,
    idleTimeLimit: skipIdle ? IDLE_LIMIT_S : undefined,
    markers: markers.map((m) => [m.time, m.label]),
    fit: 'width',
  };
}

/** What the ledger note under the player says. */
export function ledgerNote(ledger) {
  if (!ledger || ledger.missing) return 'No command ledger: this session ran without nodeshell\'s shell document, so the recording has no command marks.';
  const parts = [];
  if (ledger.commands.length === 0) parts.push('No commands were marked.');
  parts.push('Commands come from the shell\'s own marks (cooperative); the recording is the authoritative record.');
  if (ledger.forgedMarks > 0) parts.push(`${ledger.forgedMarks} mark${ledger.forgedMarks === 1 ? '' : 's'} in the output did not carry the session's nonce and ${ledger.forgedMarks === 1 ? 'is' : 'are'} not listed.`);
  if (typeof ledger.shellExitStatus === 'number') parts.push(`The shell exited with ${ledger.shellExitStatus}.`);
  return parts.join(' ');
}
