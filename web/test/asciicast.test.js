import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { parseCast, outputOf, markersOf, parseSize, gunzipText, GUNZIP_PIECE, CastError } from '../src/lib/asciicast.js';

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

test('concatenated gzip members (one per stored chunk) decompress in order', async () => {
  const parts = [CAST.slice(0, 80), CAST.slice(80, 200), CAST.slice(200)];
  const bytes = new Uint8Array(Buffer.concat(parts.map((p) => zlib.gzipSync(p))));
  assert.equal(await gunzipText(bytes), CAST);
  assert.equal(await gunzipText(new Uint8Array(zlib.gzipSync('one'))), 'one');
});

/**
 * One member as the gateway streams it (src/gateway/transcript/chunks.rs): each flush's
 * text deflated by a compressor of its own and sync-flushed, the blocks appended, then an
 * empty final block (0x03 0x00) and the gzip trailer; header without name or time.
 */
function streamedMember(flushes) {
  const blocks = flushes.map((f) => zlib.deflateRawSync(f, { level: 1, finishFlush: zlib.constants.Z_SYNC_FLUSH }));
  const text = Buffer.concat(flushes.map((f) => Buffer.from(f)));
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(zlib.crc32(text), 0);
  trailer.writeUInt32LE(text.length, 4);
  return Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]), ...blocks, Buffer.from([0x03, 0x00]), trailer]);
}

test('members streamed by flushes (sync-flushed blocks, an empty final block) decompress', async () => {
  const flushes = [CAST.slice(0, 50), CAST.slice(50, 51), CAST.slice(51, 200)];
  const members = [streamedMember(flushes), streamedMember([CAST.slice(200)]), streamedMember([])];
  assert.equal(zlib.gunzipSync(Buffer.concat(members)).toString(), CAST);
  assert.equal(await gunzipText(new Uint8Array(Buffer.concat(members))), CAST);
});

test('a transcript larger than one decompressor piece, with a character split across members', async () => {
  // 3 members of ~100 KB each (more than GUNZIP_PIECE), the middle one starting inside "é".
  const line = `${JSON.stringify([1.5, 'o', 'é'.repeat(40)])}\n`;
  const text = CAST + line.repeat(3000);
  const raw = Buffer.from(text, 'utf8');
  const cut = raw.indexOf(Buffer.from('é')) + 1;
  const members = [raw.subarray(0, cut), raw.subarray(cut, 200_000), raw.subarray(200_000)];
  const bytes = new Uint8Array(Buffer.concat(members.map((m) => zlib.gzipSync(m, { level: 0 }))));
  assert.ok(bytes.length > 2 * GUNZIP_PIECE, `${bytes.length} bytes`);
  assert.equal(await gunzipText(bytes), text);
});

test('bytes that are not gzip, or a cut-off transcript, are refused with what to do', async () => {
  await assert.rejects(gunzipText(new TextEncoder().encode('plain text, not gzip')), /not valid gzip.*SHA-256/);
  await assert.rejects(gunzipText(new Uint8Array(0)), CastError);
  const whole = zlib.gzipSync(CAST.repeat(20));
  await assert.rejects(gunzipText(new Uint8Array(whole.subarray(0, whole.length / 2))), /not valid gzip/);
});
