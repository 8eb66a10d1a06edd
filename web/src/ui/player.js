// The recording player: asciinema-player with seek, pause, speed, skip-idle and a marker per
// command of the session's ledger, plus the list of commands beside it. What it shows and
// where it starts are lib/player.js's decisions; this file only does the DOM.

import * as AsciinemaPlayer from 'asciinema-player';
import { h, replace } from './dom.js';
import { idleAxis, playerMarkers, playerOptions, currentMarker, exitStatusText, replayHash, ledgerNote, SPEEDS, IDLE_LIMIT_S } from '../lib/player.js';
import { formatDuration } from '../lib/format.js';

/** The console writes nothing to the browser console; neither does the player. */
const SILENT = { log() {}, debug() {}, info() {}, warn() {}, error() {} };

/** One recording in `root`: `castText` (asciicast v2), its parsed `cast`, the `ledger`. */
export class RecordingPlayer {
  constructor(root, { session, castText, cast, ledger, at = 0 }) {
    this.root = root;
    this.session = session;
    this.castText = castText;
    this.cast = cast;
    this.ledger = ledger;
    this.eventTimes = cast.events.map((e) => e.time);
    this.castMarkers = cast.events.filter((e) => e.code === 'm');
    this.speed = 1;
    this.skipIdle = true;
    this.playing = false;
    this.build();
    this.create(at, false);
    this.timer = setInterval(() => this.tick(), 250);
  }

  build() {
    const els = {};
    els.play = h('button', { type: 'button', class: 'secondary', dataset: { testid: 'player-play' }, onclick: () => this.togglePlay() }, 'Play');
    els.speed = h('select', { dataset: { testid: 'player-speed' }, 'aria-label': 'Playback speed', onchange: () => this.setSpeed(Number(els.speed.value)) },
      SPEEDS.map((s) => h('option', { value: String(s), selected: s === 1 }, `${s}×`)));
    els.skipIdle = h('input', { type: 'checkbox', id: 'player-skip-idle', checked: true, dataset: { testid: 'player-skip-idle' }, onchange: () => this.setSkipIdle(els.skipIdle.checked) });
    els.time = h('span', { class: 'mono player-time', dataset: { testid: 'player-time' }, 'aria-live': 'off' }, '0s');
    els.screen = h('div', { class: 'player-screen', dataset: { testid: 'player-screen' } });
    els.commands = h('ol', { class: 'player-commands', dataset: { testid: 'player-commands' }, 'aria-label': 'Commands' });
    els.note = h('p', { class: 'muted player-note', dataset: { testid: 'ledger-note' } }, ledgerNote(this.ledger));
    replace(this.root,
      h('div', { class: 'player-controls' },
        els.play,
        h('label', {}, 'Speed ', els.speed),
        h('label', { for: 'player-skip-idle', title: `Pauses longer than ${IDLE_LIMIT_S} s play as ${IDLE_LIMIT_S} s` }, els.skipIdle, ' Skip idle'),
        els.time),
      h('div', { class: 'player-body' }, els.screen, h('div', { class: 'player-side' }, els.note, els.commands)));
    this.els = els;
  }

  /** (Re)creates asciinema-player at recording time `at`, playing when `play`. */
  create(at, play) {
    if (this.player) this.player.dispose();
    this.axis = idleAxis(this.eventTimes, this.skipIdle ? IDLE_LIMIT_S : null);
    this.markers = playerMarkers({ ledger: this.ledger, castMarkers: this.castMarkers, axis: this.axis });
    const options = playerOptions({
      at, speed: this.speed, skipIdle: this.skipIdle, markers: this.markers, autoPlay: play,
      cols: this.cast.header.width, rows: this.cast.header.height,
    });
    this.player = AsciinemaPlayer.create({ data: this.castText }, this.els.screen, { ...options, logger: SILENT });
    // Paused, asciinema-player applies startAt only when playback starts: seek there now so
    // the deep link shows that moment at once.
    if (!play && at > 0) this.player.seek(this.axis.toPlayer(at));
    this.playing = play;
    for (const name of ['play', 'playing']) this.player.addEventListener(name, () => this.setPlaying(true));
    for (const name of ['pause', 'ended']) this.player.addEventListener(name, () => this.setPlaying(false));
    this.renderCommands();
    this.setPlaying(play);
  }

  renderCommands() {
    const items = this.markers.map((m, i) => h('li', {},
      h('button', {
        type: 'button', class: 'command', dataset: { testid: m.command ? 'player-command' : 'player-marker', index: m.command ? String(m.command.index) : '', marker: String(i), exit: m.command && typeof m.command.exitStatus === 'number' ? String(m.command.exitStatus) : '' },
        title: m.command && m.command.cwd ? `in ${m.command.cwd}` : '',
        onclick: () => this.seekMarker(i),
      },
      h('span', { class: 'mono' }, m.command ? `$ ${m.command.command}` : m.label),
      m.command ? h('span', { class: `exit ${m.command.exitStatus ? 'failed' : ''}`, dataset: { testid: 'command-exit' } }, exitStatusText(m.command.exitStatus)) : null)));
    replace(this.els.commands, items);
  }

  /** Seeks to marker `i` (its command's start) and keeps the deep link in the address bar. */
  seekMarker(i) {
    const m = this.markers[i];
    if (!m) return;
    this.player.seek(m.time);
    const at = m.command ? m.command.startSeconds : this.axis.toRecording(m.time);
    window.history.replaceState(null, '', replayHash(this.session, at));
    this.tick();
  }

  togglePlay() {
    if (this.playing) this.player.pause();
    else this.player.play();
  }

  setPlaying(playing) {
    this.playing = playing;
    this.els.play.textContent = playing ? 'Pause' : 'Play';
    this.els.play.setAttribute('aria-pressed', playing ? 'true' : 'false');
  }

  setSpeed(speed) {
    this.speed = speed;
    this.create(this.recordingTime(), this.playing);
  }

  setSkipIdle(on) {
    const at = this.recordingTime();
    this.skipIdle = on;
    this.create(at, this.playing);
  }

  /** The current position in recording seconds. */
  recordingTime() {
    return this.axis.toRecording(this.player.getCurrentTime() || 0);
  }

  tick() {
    if (!this.player) return;
    const t = this.player.getCurrentTime() || 0;
    this.els.time.textContent = formatDuration(this.axis.toRecording(t));
    const current = currentMarker(this.markers, t);
    [...this.els.commands.querySelectorAll('button.command')].forEach((b, i) => {
      if (i === current) b.setAttribute('aria-current', 'true');
      else b.removeAttribute('aria-current');
    });
  }

  /** The text on the player's screen now, one line per row. */
  screenText() {
    const lines = [...this.els.screen.querySelectorAll('.ap-line')].map((l) => l.textContent.replace(/\u00a0/g, ' ').trimEnd());
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    return lines.join('\n');
  }

  dispose() {
    clearInterval(this.timer);
    if (this.player) this.player.dispose();
    this.player = null;
  }
}
