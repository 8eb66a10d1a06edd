import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nextFontSize, writeOnlyClipboard, terminalShortcut, DEFAULT_FONT_SIZE, MIN_FONT_SIZE, MAX_FONT_SIZE } from '../src/lib/terminal_options.js';

test('the font size steps by one pixel within its bounds', () => {
  assert.equal(nextFontSize(DEFAULT_FONT_SIZE, 1), 15);
  assert.equal(nextFontSize(DEFAULT_FONT_SIZE, -1), 13);
  assert.equal(nextFontSize(MAX_FONT_SIZE, 1), MAX_FONT_SIZE);
  assert.equal(nextFontSize(MIN_FONT_SIZE, -1), MIN_FONT_SIZE);
  assert.equal(nextFontSize(undefined, 1), DEFAULT_FONT_SIZE + 1);
});

test('the remote shell may write the clipboard through OSC 52, never read it', async () => {
  const written = [];
  const clipboard = writeOnlyClipboard((text) => { written.push(text); });
  assert.equal(await clipboard.readText('c'), '', 'a node never reads what the person copied');
  assert.equal(await clipboard.readText('p'), '');
  await clipboard.writeText('c', 'copied on the node');
  await clipboard.writeText('p', 'primary selection');
  assert.deepEqual(written, ['copied on the node']);
  const refusing = writeOnlyClipboard(() => Promise.reject(new Error('denied')));
  await refusing.writeText('c', 'x');
});

test('Ctrl+Shift+C copies and Ctrl+Shift+F finds; everything else goes to the shell', () => {
  const key = (key, extra = {}) => ({ type: 'keydown', key, ctrlKey: true, shiftKey: true, altKey: false, metaKey: false, ...extra });
  assert.equal(terminalShortcut(key('C')), 'copy');
  assert.equal(terminalShortcut(key('F')), 'find');
  assert.equal(terminalShortcut(key('c', { shiftKey: false })), null, 'Ctrl+C is the shell\'s interrupt');
  assert.equal(terminalShortcut(key('C', { type: 'keyup' })), null);
  assert.equal(terminalShortcut(key('V')), null);
});
