// xterm.js set-up shared by the live shell and the transcript replay.

import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';

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

/** A terminal opened in `container`, fitted to it. */
export function createTerminal(container, { readOnly = false, cols, rows } = {}) {
  const term = new Terminal({
    cursorBlink: !readOnly,
    disableStdin: readOnly,
    convertEol: false,
    fontFamily: '"JetBrains Mono", "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    scrollback: 10000,
    theme: THEME,
    cols: cols || 80,
    rows: rows || 24,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(container);
  return { term, fit };
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
