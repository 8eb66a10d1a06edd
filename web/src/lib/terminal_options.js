// Choices about the terminal that hold no DOM: font sizes, and the clipboard the remote
// shell may use. Pure.

/** The font size a terminal opens with, in CSS pixels. */
export const DEFAULT_FONT_SIZE = 14;

/** The smallest and largest font sizes the A− / A+ buttons reach. */
export const MIN_FONT_SIZE = 9;
/** See MIN_FONT_SIZE. */
export const MAX_FONT_SIZE = 28;

/** The font size one step (`delta` = −1 or +1) from `size`, within the bounds. */
export function nextFontSize(size, delta) {
  const current = Number.isFinite(size) ? size : DEFAULT_FONT_SIZE;
  return Math.min(MAX_FONT_SIZE, Math.max(MIN_FONT_SIZE, Math.round(current + delta)));
}

/**
 * The clipboard the remote shell reaches through OSC 52: it may write the system clipboard
 * (e.g. `tmux` or `vim` copying), never read it (a node must not see what the person copied
 * elsewhere), and the X11 primary selection is ignored. `write` is the browser's
 * `navigator.clipboard.writeText`.
 */
export function writeOnlyClipboard(write) {
  return {
    readText: () => '',
    writeText: (selection, text) => (selection === 'c' ? Promise.resolve(write(text)).catch(() => {}) : Promise.resolve()),
  };
}

/** Whether a key event is the terminal's own shortcut rather than input for the shell. */
export function terminalShortcut(event) {
  if (event.type !== 'keydown' || !event.ctrlKey || !event.shiftKey || event.altKey || event.metaKey) return null;
  switch ((event.key || '').toLowerCase()) {
    case 'c': return 'copy';
    case 'f': return 'find';
    default: return null;
  }
}
