// xterm.js set-up for the live shell: links, search in scrollback, the clipboard (OSC 52,
// write-only), Unicode 11 widths, and the WebGL renderer with the DOM renderer as fallback.

import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { WebLinksAddon } from '@xterm/addon-web-links';
import { SearchAddon } from '@xterm/addon-search';
import { ClipboardAddon } from '@xterm/addon-clipboard';
import { Unicode11Addon } from '@xterm/addon-unicode11';
import { WebglAddon } from '@xterm/addon-webgl';
import { DEFAULT_FONT_SIZE, writeOnlyClipboard } from '../lib/terminal_options.js';

const THEME = {
  background: '#0d1117',
  foreground: '#d6deeb',
  cursor: '#7fdbca',
  selectionBackground: '#264f78',
  black: '#1b2230', red: '#ef5350', green: '#22da6e', yellow: '#ffd866', blue: '#82aaff',
  magenta: '#c792ea', cyan: '#7fdbca', white: '#d6deeb',
  brightBlack: '#637777', brightRed: '#ff6e6e', brightGreen: '#4be38a', brightYellow: '#ffeb95',
  brightBlue: '#a6c4ff', brightMagenta: '#dfb5ff', brightCyan: '#a3f7ec', brightWhite: '#ffffff',
};

/**
 * A terminal opened in `container`, fitted to it. Returns `{ term, fit, search, renderer }`;
 * `renderer()` says which renderer draws it now ('webgl', or 'dom' when WebGL is missing or
 * its context was lost).
 */
export function createTerminal(container, { readOnly = false, cols, rows, fontSize = DEFAULT_FONT_SIZE } = {}) {
  const term = new Terminal({
    cursorBlink: !readOnly,
    disableStdin: readOnly,
    convertEol: false,
    fontFamily: '"JetBrains Mono", "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize,
    scrollback: 10000,
    theme: THEME,
    cols: cols || 80,
    rows: rows || 24,
    // The Unicode 11 width tables are a proposed API of xterm.js.
    allowProposedApi: true,
  });
  const fit = new FitAddon();
  const search = new SearchAddon();
  term.loadAddon(fit);
  term.loadAddon(search);
  term.loadAddon(new WebLinksAddon((event, uri) => {
    // A link printed by the node opens in a new tab that cannot reach back into this one.
    const opened = window.open(uri, '_blank', 'noopener,noreferrer');
    if (opened) opened.opener = null;
  }));
  term.loadAddon(new ClipboardAddon(undefined, writeOnlyClipboard((text) => navigator.clipboard.writeText(text))));
  term.loadAddon(new Unicode11Addon());
  term.unicode.activeVersion = '11';
  term.open(container);
  let renderer = 'dom';
  try {
    const webgl = new WebglAddon();
    webgl.onContextLoss(() => {
      webgl.dispose();
      renderer = 'dom';
    });
    term.loadAddon(webgl);
    renderer = 'webgl';
  } catch {
    // No WebGL2 here: xterm.js keeps its DOM renderer.
  }
  return { term, fit, search, renderer: () => renderer };
}

/** Fits `fit`'s terminal to its container, when the container has a size. */
export function refit(fit) {
  try {
    const size = fit.proposeDimensions();
    if (size && size.cols > 0 && size.rows > 0) fit.fit();
  } catch {
    // Not laid out yet (hidden drawer); the next resize fits it.
  }
}

/** The terminal's whole buffer (scrollback included) as lines joined by "\n". */
export function bufferText(term) {
  if (!term) return '';
  const buffer = term.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) {
    const line = buffer.getLine(i);
    lines.push(line ? line.translateToString(true) : '');
  }
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines.join('\n');
}
