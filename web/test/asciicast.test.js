import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { parseCast, outputOf, markersOf, replaySteps, parseSize, gunzipText, memberStarts, CastError } from '../src/lib/asciicast.js';

const CAST = [
  JSON.stringify({ version: 2, width: 100, height: 30, timestamp: 1763890000 }),
  JSON.stringify([0.1, 'o', '$ ']),
  JSON.stringify([0.5, 'i', 'echo hi\r']),
  JSON.stringify([0.6, 'o', 'echo hi\r\nhi\r\n']),
  JSON.stringify([0.7, 'r', '120x40']),
  'garbage line',
  JSON.stringify([600.7, 'o', '$ ']),
  JSON.stringify([600.8, 'm', 'transcript truncated: maxBytes reached']),
  '',
].join('\n');

test('asciicast v2 parses into header and events, skipping unreadable lines', () => {
  const cast = parseCast(CAST);
  assert.equal(cast.header.width, 100);
  assert.equal(cast.events.length, 6);
  assert.equal(outputOf(cast), '$ echo hi\r\nhi\r\n$ ');
  assert.deepEqual(markersOf(cast), ['transcript truncated: maxBytes reached']);
  assert.deepEqual(parseSize('120x40'), { cols: 120, rows: 40 });
  assert.equal(parseSize('wide'), null);
});

test('a transcript that is not asciicast v2 is refused with a message', () => {
  assert.throws(() => parseCast(''), CastError);
  assert.throws(() => parseCast('{"version":1}\n'), /not asciicast v2/);
  assert.throws(() => parseCast('[1,"o","x"]\n'), /not asciicast v2/);
  assert.throws(() => parseCast('hello\n'), /header/);
});

test('timed replay keeps output and resizes in order and caps long pauses', () => {
  const steps = replaySteps(parseCast(CAST), { speed: 2, maxPauseS: 1 });
  assert.deepEqual(steps.map((s) => s.code), ['o', 'o', 'r', 'o']);
  assert.equal(steps[0].delayMs, 50);
  assert.equal(steps[3].delayMs, 500, 'a 10-minute gap replays as 1 s at double speed');
});

/** A strict single-member gunzip, like a browser's DecompressionStream: null on trailing data. */
function strictInflate(bytes) {
  try {
    const buf = Buffer.from(bytes);
    if (buf[0] !== 0x1f || buf[1] !== 0x8b || buf[3] !== 0) return null;
    const { buffer, engine } = zlib.inflateRawSync(buf.subarray(10), { info: true });
    return 10 + engine.bytesWritten + 8 === buf.length ? buffer.toString('utf8') : null;
  } catch {
    return null;
  }
}

test('concatenated gzip members (one per stored chunk) decompress in order', async () => {
  const parts = [CAST.slice(0, 80), CAST.slice(80, 200), CAST.slice(200)];
  const bytes = new Uint8Array(Buffer.concat(parts.map((p) => zlib.gzipSync(p))));
  assert.equal(strictInflate(bytes), null, 'the strict inflater refuses more than one member');
  assert.equal(await gunzipText(bytes, async (b) => strictInflate(b)), CAST);
  assert.equal(await gunzipText(bytes), CAST, 'the default (DecompressionStream) inflater too');
  const single = new Uint8Array(zlib.gzipSync('one'));
  assert.equal(await gunzipText(single, async (b) => strictInflate(b)), 'one');
  assert.deepEqual(memberStarts(bytes, 1).length >= 2, true);
});

test('bytes that are not gzip are refused with what to do', async () => {
  await assert.rejects(gunzipText(new TextEncoder().encode('plain text, not gzip'), async (b) => strictInflate(b)), /not valid gzip.*SHA-256/);
});
