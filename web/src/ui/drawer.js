// The terminal drawer: one live node shell, its banners and its reconnects. The connection's
// decisions are lib/shell.js's; this file only does the DOM, the socket and the timers.

import { h, replace } from './dom.js';
import { createTerminal, refit, bufferText } from './terminal.js';
import { initialShell, step, idleSecondsLeft, inputMessages, canReconnect, warnBeforeUnload } from '../lib/shell.js';
import { DEFAULT_FONT_SIZE, nextFontSize, terminalShortcut } from '../lib/terminal_options.js';
import { socketUrl, needsSignIn } from '../lib/api.js';
import { closedText, idleText, errorText } from '../lib/format.js';

/** The drawer at the bottom of the page that holds the live shell. */
export class ShellDrawer {
  constructor(root, api, { onSignInNeeded = () => {}, onChange = () => {} } = {}) {
    this.root = root;
    this.api = api;
    this.onSignInNeeded = onSignInNeeded;
    this.onChange = onChange;
    this.state = null;
    this.socket = null;
    this.term = null;
    this.fit = null;
    this.idleTimer = null;
    this.encoder = new TextEncoder();
    this.fontSize = DEFAULT_FONT_SIZE;
    window.addEventListener('resize', () => this.fitSoon());
    // A reload keeps the shell (the gateway lets this console session resume it), but a
    // closed tab leaves it to end after the reattach grace: ask first.
    window.addEventListener('beforeunload', (event) => {
      if (!warnBeforeUnload(this.state)) return;
      event.preventDefault();
      event.returnValue = '';
    });
  }

  /** Which renderer draws the terminal ('webgl' or 'dom'), for the browser test. */
  renderer() {
    return this.rendererOf ? this.rendererOf() : null;
  }

  /**
   * Resumes `session`, a shell this console session attached before the page was reloaded
   * (`whoami.shells`): a fresh ticket that carries the resume token, then a reattach from
   * byte 0, so the output the gateway still holds is replayed.
   */
  async resume(session, { others = [] } = {}) {
    if (this.busy) return;
    this.teardown();
    this.build('…');
    this.show();
    refit(this.fit);
    this.term.write(`\x1b[2mReconnecting to ${session} after the page reload…\x1b[0m\r\n`);
    const term = this.term;
    let answer;
    this.opening = true;
    try {
      answer = await this.api.newTicket(session, { cols: this.term.cols, rows: this.term.rows });
    } catch (error) {
      if (this.term === term) this.fail(error);
      return;
    } finally {
      this.opening = false;
    }
    if (this.term !== term) return;
    if (!answer.resumeToken) {
      this.fail({ code: 'E_FORBIDDEN', message: `The gateway did not let this page resume ${session}; end it from the Sessions page or open a new shell.` });
      return;
    }
    this.state = initialShell(session, { resumeToken: answer.resumeToken });
    this.state.size = { cols: this.term.cols, rows: this.term.rows };
    if (others.length > 0) this.state.notice = `Also still running from this browser: ${others.join(', ')} (end them from the Sessions page).`;
    this.els.sessionName.textContent = session;
    this.connect(answer.attachUrl);
    this.onChange();
  }

  /** Whether a shell is open and not ended. */
  get busy() {
    return this.opening || Boolean(this.state && !['closed', 'failed'].includes(this.state.phase));
  }

  /** The live (or last) session's name. */
  sessionName() {
    return this.state ? this.state.session : null;
  }

  /** The terminal's text. */
  text() {
    return bufferText(this.term);
  }

  /** Drops the connection as a network failure would (test hook; the shell stays up). */
  dropConnection() {
    if (this.socket) this.socket.close();
  }

  /** Opens a shell on `node`. */
  async open(node, reason) {
    if (this.busy) {
      this.show();
      this.setNotice('A shell is already open; close it (✕) before opening another.');
      return;
    }
    this.teardown();
    this.build(node);
    this.show();
    // Fit now, not on the next frame: the open request carries the terminal's size.
    refit(this.fit);
    this.term.write(`\x1b[2mOpening a node shell on ${node}…\x1b[0m\r\n`);
    const request = { cols: this.term.cols, rows: this.term.rows };
    if (reason && reason.trim()) request.reason = reason.trim();
    const term = this.term;
    let answer;
    this.opening = true;
    try {
      answer = await this.api.openShell(node, request);
    } catch (error) {
      if (this.term === term) this.fail(error);
      return;
    } finally {
      this.opening = false;
    }
    if (this.term !== term) {
      // Closed (✕) while the gateway was still admitting it: end the session it made.
      this.api.endSession(answer.session).catch(() => {});
      return;
    }
    this.state = initialShell(answer.session);
    this.state.size = { cols: this.term.cols, rows: this.term.rows };
    this.els.sessionName.textContent = answer.session;
    this.connect(answer.attachUrl);
    this.onChange();
  }

  build(node) {
    const els = {};
    els.tab = h('span', { class: 'tab', dataset: { testid: 'terminal-tab' } }, 'node shell');
    els.node = h('span', { class: 'tab-node' }, node);
    els.toggle = h('button', { class: 'icon', type: 'button', title: 'Minimise', 'aria-label': 'Minimise the terminal', onclick: () => this.toggle() }, '▾');
    els.close = h('button', { class: 'icon', type: 'button', title: 'Close the shell', 'aria-label': 'Close the shell', dataset: { testid: 'terminal-close' }, onclick: () => this.close() }, '✕');
    els.smaller = h('button', { class: 'icon', type: 'button', title: 'Smaller text', 'aria-label': 'Smaller text', dataset: { testid: 'font-smaller' }, onclick: () => this.setFontSize(-1) }, 'A−');
    els.larger = h('button', { class: 'icon', type: 'button', title: 'Larger text', 'aria-label': 'Larger text', dataset: { testid: 'font-larger' }, onclick: () => this.setFontSize(1) }, 'A+');
    els.findToggle = h('button', { class: 'icon', type: 'button', title: 'Find in the scrollback (Ctrl+Shift+F)', 'aria-label': 'Find in the scrollback', dataset: { testid: 'terminal-find' }, onclick: () => this.toggleFind() }, '⌕');
    els.find = h('input', { type: 'search', class: 'find', placeholder: 'Find in scrollback', 'aria-label': 'Find in the scrollback', dataset: { testid: 'terminal-find-input' }, hidden: true,
      oninput: () => this.find(true), onkeydown: (e) => {
        if (e.key === 'Enter') { e.preventDefault(); this.find(!e.shiftKey, true); }
        if (e.key === 'Escape') { e.preventDefault(); this.toggleFind(false); }
      } });
    els.reconnect = h('button', { type: 'button', class: 'secondary reconnect', dataset: { testid: 'reconnect' }, hidden: true, onclick: () => this.dispatch({ type: 'reconnectNow', now: Date.now() }) }, 'Reconnect');
    els.sessionName = h('dd', { dataset: { testid: 'session-name' } }, '—');
    els.instance = h('dd', { dataset: { testid: 'instance-id' } }, '—');
    els.ssm = h('dd', { dataset: { testid: 'ssm-session-id' } }, '—');
    els.idleLimit = h('dd', {}, '—');
    els.info = h('details', { class: 'session-info', dataset: { testid: 'session-info' } },
      h('summary', { title: 'Session details' }, h('span', { class: 'info-dot', 'aria-hidden': 'true' }, 'i'), els.summaryNode = h('span', {}, node), h('span', { class: 'muted-dark' }, ' (node)')),
      h('dl', {},
        h('div', {}, h('dt', {}, 'Node'), els.infoNode = h('dd', { dataset: { testid: 'info-node' } }, node)),
        h('div', {}, h('dt', {}, 'Instance'), els.instance),
        h('div', {}, h('dt', {}, 'SSM session'), els.ssm),
        h('div', {}, h('dt', {}, 'Session'), els.sessionName),
        h('div', {}, h('dt', {}, 'Idle limit'), els.idleLimit)));
    els.banners = h('div', { class: 'banners', 'aria-live': 'polite' });
    els.terminal = h('div', { class: 'terminal', dataset: { testid: 'terminal' } });
    replace(this.root,
      h('div', { class: 'drawer-bar' }, els.tab, els.node, h('span', { class: 'spacer' }), els.reconnect, els.find, els.findToggle, els.smaller, els.larger, els.toggle, els.close),
      els.info, els.banners, els.terminal);
    this.els = els;
    const { term, fit, search, renderer } = createTerminal(els.terminal, { fontSize: this.fontSize });
    this.term = term;
    this.fit = fit;
    this.search = search;
    this.rendererOf = renderer;
    term.attachCustomKeyEventHandler((event) => {
      const shortcut = terminalShortcut(event);
      if (shortcut === 'copy' && term.hasSelection()) navigator.clipboard.writeText(term.getSelection()).catch(() => {});
      if (shortcut === 'find') this.toggleFind(true);
      if (shortcut) event.preventDefault();
      return shortcut === null;
    });
    term.onData((data) => this.input(data));
    term.onResize(({ cols, rows }) => this.dispatch({ type: 'resize', cols, rows }));
    this.resizeObserver = new ResizeObserver(() => this.fitSoon());
    this.resizeObserver.observe(els.terminal);
  }

  /** A− / A+: one pixel smaller or larger, then the terminal refits (and the shell is told). */
  setFontSize(delta) {
    this.fontSize = nextFontSize(this.fontSize, delta);
    if (!this.term) return;
    this.term.options.fontSize = this.fontSize;
    this.fitSoon();
  }

  toggleFind(open = this.els.find.hidden) {
    this.els.find.hidden = !open;
    if (open) {
      this.els.find.focus();
      this.els.find.select();
    } else {
      this.search.clearDecorations();
      if (this.term) this.term.focus();
    }
  }

  find(forward, next = false) {
    const text = this.els.find.value;
    if (!text) {
      this.search.clearDecorations();
      return;
    }
    const options = { incremental: !next, decorations: { matchOverviewRuler: '#ffd866', activeMatchColorOverviewRuler: '#ff6e6e', matchBackground: '#5c4d00', activeMatchBackground: '#8a2f2f' } };
    const found = forward ? this.search.findNext(text, options) : this.search.findPrevious(text, options);
    this.els.find.classList.toggle('not-found', !found);
  }

  show() {
    this.root.hidden = false;
    this.root.classList.remove('minimised');
    document.body.classList.remove('drawer-minimised');
    document.body.classList.add('with-drawer');
    this.fitSoon();
    if (this.term) this.term.focus();
  }

  /** Folds the drawer down to its bar (it keeps running), e.g. to make room for a replay. */
  minimise() {
    if (!this.root.hidden && !this.root.classList.contains('minimised')) this.toggle();
  }

  toggle() {
    const minimised = this.root.classList.toggle('minimised');
    document.body.classList.toggle('drawer-minimised', minimised);
    this.els.toggle.textContent = minimised ? '▴' : '▾';
    this.els.toggle.setAttribute('aria-label', minimised ? 'Restore the terminal' : 'Minimise the terminal');
    if (!minimised) this.fitSoon();
  }

  fitSoon() {
    if (!this.fit || this.fitPending) return;
    this.fitPending = true;
    requestAnimationFrame(() => {
      this.fitPending = false;
      if (!this.root.hidden && !this.root.classList.contains('minimised')) refit(this.fit);
    });
  }

  connect(attachUrl) {
    let socket;
    try {
      socket = new WebSocket(socketUrl(attachUrl, window.location));
    } catch (error) {
      this.dispatch({ type: 'socketClosed', now: Date.now() });
      return;
    }
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    socket.onopen = () => this.socket === socket && this.dispatch({ type: 'open' });
    socket.onmessage = (event) => {
      if (this.socket !== socket) return;
      if (typeof event.data === 'string') {
        this.dispatch({ type: 'text', text: event.data, now: Date.now() });
      } else {
        const bytes = new Uint8Array(event.data);
        this.dispatch({ type: 'output', length: bytes.length });
        // Acknowledged once the terminal has written it, so a busy tab holds the gateway back.
        const end = this.state ? this.state.offset : 0;
        this.term.write(bytes, () => this.socket === socket && this.dispatch({ type: 'consumed', offset: end }));
      }
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.dispatch({ type: 'socketClosed', now: Date.now(), origin: window.location.origin });
      // A shell that never attached would wait for its attach timeout; end it now.
      if (this.state && this.state.phase === 'failed' && this.state.failure.code === 'E_ATTACH') {
        this.api.endSession(this.state.session).catch(() => {});
      }
    };
  }

  input(data) {
    if (!this.state || this.state.phase !== 'live' || !this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    for (const message of inputMessages(this.encoder.encode(data))) this.socket.send(message);
    if (this.state.idle) this.dispatch({ type: 'input' });
  }

  dispatch(event) {
    if (!this.state) return;
    const before = this.state.phase;
    const firstHello = !this.state.info;
    const { state, effects } = step(this.state, event);
    this.state = state;
    if (firstHello && state.info && state.info.ssmSessionId) {
      // What AWS's own client prints first, so the session id is in the scrollback too.
      this.term.write(`\x1b[2mStarting session with SessionId: ${state.info.ssmSessionId}\x1b[0m\r\n`);
    }
    for (const effect of effects) {
      if (effect.type === 'send' && this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify(effect.frame));
      } else if (effect.type === 'reattach') {
        clearTimeout(this.reattachTimer);
        if (this.socket) {
          // Reconnect pressed while a reattach socket waits for its hello: start over.
          const socket = this.socket;
          this.socket = null;
          socket.close();
        }
        this.reattachTimer = setTimeout(() => this.reattach(), effect.delayMs);
      } else if (effect.type === 'disconnect' && this.socket) {
        const socket = this.socket;
        this.socket = null;
        socket.close();
      }
    }
    if (state.phase === 'failed' && needsSignIn(state.failure)) this.onSignInNeeded(state.failure);
    this.render();
    if (before !== state.phase) this.onChange();
  }

  async reattach() {
    if (!this.state || this.state.phase !== 'reconnecting') return;
    try {
      const answer = await this.api.newTicket(this.state.session, { cols: this.term.cols, rows: this.term.rows });
      this.connect(answer.attachUrl);
    } catch (error) {
      this.dispatch({ type: 'reattachFailed', error: { code: error.code, message: error.message }, now: Date.now() });
    }
  }

  render() {
    const s = this.state;
    if (!s || !this.els) return;
    if (s.info) {
      this.els.instance.textContent = s.info.instanceId || '—';
      this.els.ssm.textContent = s.info.ssmSessionId || '—';
      this.els.sessionName.textContent = s.info.session || s.session;
      this.els.idleLimit.textContent = s.info.idleSeconds ? `${s.info.idleSeconds} s without input` : '—';
      if (s.info.node && this.els.node.textContent !== s.info.node) {
        // A shell resumed after a reload learns its node from the hello frame.
        for (const el of [this.els.node, this.els.summaryNode, this.els.infoNode]) el.textContent = s.info.node;
      }
    }
    this.els.reconnect.hidden = !canReconnect(s);
    const banners = [];
    if (s.phase === 'reconnecting') {
      banners.push({ testid: 'reconnecting-banner', kind: 'warn', role: 'status', text: 'Connection lost — reconnecting to the same shell…' });
    }
    const left = idleSecondsLeft(s.idle, Date.now());
    if (left !== null && s.phase === 'live') {
      // role=timer is not a live region: the countdown is announced once, not every second.
      banners.push({ testid: 'idle-banner', kind: 'warn', role: 'timer', text: idleText(left) });
    }
    if (s.phase === 'closed') {
      banners.push({ testid: 'closed-banner', kind: 'closed', role: 'status', text: closedText(s.closed) });
    }
    if (s.phase === 'failed') {
      banners.push({ testid: 'error-banner', kind: 'error', role: 'alert', text: errorText(s.failure) });
    } else if (s.notice && s.phase === 'live') {
      banners.push({ testid: 'notice-banner', kind: 'info', role: 'status', text: s.notice });
    }
    this.syncBanners(banners);
    this.tickIdle(left !== null && s.phase === 'live');
    if (s.phase === 'closed' || s.phase === 'failed') {
      this.term.options.cursorBlink = false;
      this.els.close.title = 'Hide the terminal';
      this.els.close.setAttribute('aria-label', 'Hide the terminal');
    }
    this.fitSoon();
  }

  /** Shows exactly `banners`, keeping the elements that stay so they are not re-announced. */
  syncBanners(banners) {
    const box = this.els.banners;
    const existing = new Map([...box.children].map((el) => [el.dataset.testid, el]));
    const wanted = banners.map((b) => {
      const el = existing.get(b.testid) || h('div', { class: `banner ${b.kind}`, role: b.role, dataset: { testid: b.testid } });
      if (el.textContent !== b.text) el.textContent = b.text;
      return el;
    });
    const same = wanted.length === box.children.length && wanted.every((el, i) => box.children[i] === el);
    if (!same) box.replaceChildren(...wanted);
  }

  tickIdle(counting) {
    if (counting && !this.idleTimer) {
      this.idleTimer = setInterval(() => this.render(), 1000);
    } else if (!counting && this.idleTimer) {
      clearInterval(this.idleTimer);
      this.idleTimer = null;
    }
  }

  setNotice(text) {
    if (this.state) {
      this.state = { ...this.state, notice: text };
      this.render();
    }
  }

  /** A failure before any session existed (the open was refused). */
  fail(error) {
    this.state = { ...initialShell(null), phase: 'failed', failure: { code: error.code, message: error.message } };
    this.term.write(`\x1b[31m${errorText(error)}\x1b[0m\r\n`);
    if (needsSignIn(error)) this.onSignInNeeded(error);
    this.render();
    this.onChange();
  }

  /** ✕: ends a live shell (the gateway closes it as UserClosed); hides an ended one. */
  close() {
    if (this.state && this.busy) {
      // Without a socket the close frame cannot go; ask the API to end the session instead.
      if (this.state.phase !== 'live' && this.state.session) {
        this.api.endSession(this.state.session).catch(() => {});
      }
      this.dispatch({ type: 'userClose' });
      return;
    }
    this.teardown();
    this.root.hidden = true;
    document.body.classList.remove('with-drawer', 'drawer-minimised');
  }

  teardown() {
    clearTimeout(this.reattachTimer);
    this.tickIdle(false);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close();
    }
    if (this.resizeObserver) this.resizeObserver.disconnect();
    if (this.term) this.term.dispose();
    this.term = null;
    this.fit = null;
    this.state = null;
  }
}
