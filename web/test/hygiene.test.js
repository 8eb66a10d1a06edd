import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

function sources(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : path.endsWith('.js') ? [path] : [];
  });
}

const SRC = new URL('../src/', import.meta.url).pathname;

test('the console never logs to the browser console and keeps nothing in browser storage', () => {
  const files = sources(SRC);
  assert.ok(files.length >= 5, `found ${files.length} source files`);
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    assert.doesNotMatch(text, /console\.(log|debug|info|warn|error)\(/, `${file} logs to the console`);
    assert.doesNotMatch(text, /localStorage|sessionStorage|indexedDB|document\.cookie/,
      `${file}: the gateway keeps the tokens; the browser stores nothing`);
    assert.doesNotMatch(text, /Authorization|Bearer/, `${file}: the console sends no token`);
  }
});

test('only the attach URL (with its single-use ticket) is ever opened as a WebSocket', () => {
  const sockets = sources(SRC).filter((f) => /new WebSocket\(/.test(readFileSync(f, 'utf8')));
  assert.equal(sockets.length, 1, sockets.join(', '));
  assert.match(readFileSync(sockets[0], 'utf8'), /new WebSocket\(socketUrl\(attachUrl, window\.location\)\)/);
});
