// The Sessions page: sessions (yours, or everyone's for an admin tier) and transcript replay.

import { h, replace } from './dom.js';
import { createTerminal, bufferText } from './terminal.js';
import { formatDuration, sessionDuration, exitCodeText, reasonText, errorText, formatTime, isLive } from '../lib/format.js';
import { gunzipText, parseCast, outputOf, markersOf, replaySteps, parseSize } from '../lib/asciicast.js';

/** The transcript replay currently shown (for the test hook). */
let replay = null;

/** The replay terminal's text. */
export function transcriptText() {
  return replay ? bufferText(replay.term) : '';
}

/** Renders the Sessions page into `main`. */
export async function sessionsPage(main, { api, whoami, drawer }) {
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading sessions…');
  const body = h('div', { class: 'table-wrap' });
  const viewer = h('section', { class: 'transcript', dataset: { testid: 'transcript-view' }, hidden: true, 'aria-label': 'Transcript' });
  const refresh = h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh');
  const scope = whoami && whoami.admin ? 'Every session (your tier may read all of them).' : 'Your sessions.';
  replace(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Sessions'), h('span', { class: 'spacer' }), refresh),
    h('p', { class: 'lede' }, scope, ' Open a transcript to replay what was printed.'),
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
          ? h('button', { type: 'button', class: 'secondary', dataset: { testid: 'transcript-open' }, onclick: () => openReplay(s) }, 'Replay')
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

  async function openReplay(session) {
    closeReplay();
    if (drawer) drawer.minimise();
    viewer.hidden = false;
    const note = h('p', { class: 'muted', role: 'status' }, 'Loading the transcript…');
    const screen = h('div', { class: 'terminal replay' });
    const play = h('button', { type: 'button', class: 'secondary', disabled: true, dataset: { testid: 'transcript-play' } }, 'Play with timing');
    const close = h('button', { type: 'button', class: 'icon', 'aria-label': 'Close the transcript', onclick: () => { closeReplay(); viewer.hidden = true; } }, '✕');
    replace(viewer,
      h('div', { class: 'drawer-bar' }, h('span', { class: 'tab' }, 'transcript'), h('span', { class: 'tab-node mono' }, session.name),
        h('span', { class: 'spacer' }), play, close),
      note, screen);
    viewer.scrollIntoView({ block: 'nearest' });
    let cast;
    try {
      cast = parseCast(await gunzipText(await api.transcript(session.name)));
    } catch (error) {
      note.className = 'banner error';
      note.setAttribute('role', 'alert');
      note.textContent = errorText(error);
      return;
    }
    const { term } = createTerminal(screen, { readOnly: true, cols: cast.header.width, rows: cast.header.height });
    replay = { term, timer: null };
    const markers = markersOf(cast);
    note.textContent = [`Recorded ${formatTime(cast.header.timestamp ? new Date(cast.header.timestamp * 1000).toISOString() : null)}, ${cast.header.width}×${cast.header.height}.`, ...markers].join(' ');
    term.write(outputOf(cast));
    play.disabled = false;
    play.onclick = () => playTimed(cast);
  }

  function playTimed(cast) {
    if (!replay) return;
    clearTimeout(replay.timer);
    const { term } = replay;
    term.reset();
    if (cast.header.width && cast.header.height) term.resize(cast.header.width, cast.header.height);
    const steps = replaySteps(cast);
    const apply = (step) => {
      if (step.code === 'o') {
        term.write(step.data);
      } else {
        const size = parseSize(step.data);
        if (size) term.resize(size.cols, size.rows);
      }
    };
    // Steps closer together than a few milliseconds go in one batch.
    const run = (from) => {
      if (!replay || replay.term !== term) return;
      let i = from;
      apply(steps[i]);
      i++;
      while (i < steps.length && steps[i].delayMs <= 4) {
        apply(steps[i]);
        i++;
      }
      if (i < steps.length) replay.timer = setTimeout(() => run(i), steps[i].delayMs);
    };
    if (steps.length > 0) run(0);
  }

  await load();
  // Keeps phases and durations current while the page is shown.
  const timer = setInterval(() => {
    if (document.visibilityState === 'visible') load();
  }, 10_000);
  return () => {
    clearInterval(timer);
    closeReplay();
  };
}

function closeReplay() {
  if (replay) {
    clearTimeout(replay.timer);
    replay.term.dispose();
  }
  replay = null;
}
