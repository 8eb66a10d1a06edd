// The Sessions page: sessions (yours, or everyone's for an admin tier) and the recording
// player (`#/sessions/<name>/replay?at=<seconds>` opens it at that time).

import { h, replace } from './dom.js';
import { RecordingPlayer } from './player.js';
import { formatDuration, sessionDuration, exitCodeText, reasonText, errorText, formatTime, isLive } from '../lib/format.js';
import { gunzipText, parseCast, markersOf } from '../lib/asciicast.js';
import { replayHash } from '../lib/player.js';

/** The recording player currently shown (for the test hooks). */
let replay = null;

/** The text on the player's screen now. */
export function transcriptText() {
  return replay ? replay.screenText() : '';
}

/** The player, for the browser test (`window.nodeshellConsole.player()`). */
export function currentPlayer() {
  return replay;
}

/**
 * Renders the Sessions page into `main`; with `open` (`{ session, at }`, from the replay deep
 * link) the recording player opens on that session at `at` recording seconds.
 */
export async function sessionsPage(main, { api, whoami, drawer, open = null }) {
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading sessions…');
  const body = h('div', { class: 'table-wrap' });
  const viewer = h('section', { class: 'transcript', dataset: { testid: 'transcript-view' }, hidden: true, 'aria-label': 'Transcript' });
  const refresh = h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh');
  let disposed = false;
  const scope = whoami && whoami.admin ? 'Every session (your tier may read all of them).' : 'Your sessions.';
  replace(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Sessions'), h('span', { class: 'spacer' }), refresh),
    h('p', { class: 'lede' }, scope, ' Replay a recording, or find a command with ', h('a', { href: '#/search' }, 'Search'), '.'),
    status, body, viewer);
  closeReplay();

  async function load() {
    refresh.disabled = true;
    try {
      const sessions = await api.sessions();
      status.textContent = sessions.length === 0 ? 'No sessions yet.' : `${sessions.length} session${sessions.length === 1 ? '' : 's'}`;
      replace(body, table(sessions));
    } catch (error) {
      status.textContent = '';
      replace(body, h('div', { class: 'banner error', role: 'alert', dataset: { testid: 'page-error' } }, errorText(error)));
    } finally {
      refresh.disabled = false;
    }
  }

  function table(sessions) {
    const cols = ['Session', 'User', 'Node', 'Phase', 'Reason', 'Outcome', 'Duration', 'Exit code', 'Actions'];
    return h('table', { class: 'grid', dataset: { testid: 'sessions-table' } },
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, sessions.map(row)));
  }

  function row(s) {
    const st = s.status || {};
    const user = s.user || {};
    const hasTranscript = Boolean(st.transcript && st.transcript.ref);
    return h('tr', { dataset: { testid: 'session-row', session: s.name } },
      h('th', { scope: 'row' },
        h('div', { class: 'mono' }, s.name),
        h('div', { class: 'sub' }, `started ${formatTime(st.startedAt || s.createdAt)}`)),
      h('td', { dataset: { testid: 'session-user' }, title: user.sub || '' }, user.name || user.email || user.sub || '—'),
      h('td', { class: 'mono', dataset: { testid: 'session-node' } }, s.node),
      h('td', {}, h('span', { class: `pill phase-${(s.phase || '').toLowerCase()}`, dataset: { testid: 'session-phase' } }, s.phase)),
      h('td', { class: 'wrap', dataset: { testid: 'session-reason' } }, s.reason || '—'),
      h('td', { class: 'wrap', dataset: { testid: 'session-outcome' }, title: s.message || '' }, s.statusReason ? reasonText(s.statusReason) : (isLive(s.phase) ? 'running' : '—')),
      h('td', { class: 'nowrap', dataset: { testid: 'session-duration' } }, formatDuration(sessionDuration(s, Date.now()))),
      h('td', { dataset: { testid: 'session-exit-code' } }, exitCodeText(st.exitCode)),
      h('td', { class: 'actions' },
        hasTranscript
          ? h('button', { type: 'button', class: 'secondary', dataset: { testid: 'transcript-open' }, onclick: () => { window.location.hash = replayHash(s.name); } }, 'Replay')
          : h('span', { class: 'muted' }, '—'),
        isLive(s.phase) && !s.terminate
          ? h('button', { type: 'button', class: 'danger', dataset: { testid: 'session-end' }, title: `End ${s.name} now (recorded as ended by you)`, onclick: (e) => end(s, e.target) }, 'End')
          : null));
  }

  async function end(session, button) {
    button.disabled = true;
    try {
      await api.endSession(session.name);
      status.textContent = `Asked to end ${session.name}.`;
    } catch (error) {
      status.textContent = errorText(error);
    }
    await load();
  }

  async function openReplay(name, at) {
    closeReplay();
    if (drawer) drawer.minimise();
    viewer.hidden = false;
    const note = h('p', { class: 'muted', role: 'status', dataset: { testid: 'transcript-note' } }, 'Loading the recording…');
    const screen = h('div', { class: 'player' , dataset: { testid: 'player' } });
    const close = h('button', { type: 'button', class: 'icon', 'aria-label': 'Close the recording', dataset: { testid: 'transcript-close' }, onclick: () => { window.location.hash = '#/sessions'; } }, '✕');
    replace(viewer,
      h('div', { class: 'drawer-bar' }, h('span', { class: 'tab' }, 'recording'), h('span', { class: 'tab-node mono', dataset: { testid: 'transcript-session' } }, name),
        h('span', { class: 'spacer' }), close),
      note, screen);
    viewer.scrollIntoView({ block: 'nearest' });
    let castText;
    let cast;
    let ledger;
    try {
      // The ledger is optional: without it the recording still plays, with no command marks.
      [castText, ledger] = await Promise.all([
        api.transcript(name).then(gunzipText),
        api.ledger(name).catch((error) => ({ commands: [], missing: true, error })),
      ]);
      cast = parseCast(castText);
    } catch (error) {
      note.className = 'banner error';
      note.setAttribute('role', 'alert');
      note.textContent = errorText(error);
      return;
    }
    if (disposed) return;
    const markers = markersOf(cast);
    const recorded = formatTime(cast.header.timestamp ? new Date(cast.header.timestamp * 1000).toISOString() : null);
    note.textContent = [`Recorded ${recorded}, ${cast.header.width}×${cast.header.height}.`, ...markers,
      ledger.error ? `The command list could not be loaded: ${errorText(ledger.error)}` : ''].filter(Boolean).join(' ');
    replay = new RecordingPlayer(screen, { session: name, castText, cast, ledger, at });
  }

  if (open) openReplay(open.session, open.at);
  await load();
  // Keeps phases and durations current while the page is shown.
  const timer = setInterval(() => {
    if (document.visibilityState === 'visible') load();
  }, 10_000);
  return () => {
    disposed = true;
    clearInterval(timer);
    closeReplay();
  };
}

function closeReplay() {
  if (replay) replay.dispose();
  replay = null;
}
