// asciicast v2 (the transcript format): a JSON header line, then one JSON array per event:
// [seconds, code, data] with code "o" output, "i" input, "r" resize ("COLSxROWS"), "m" marker.

import { DecodeUTF8, Gunzip } from 'fflate';

/** A transcript that cannot be read. */
export class CastError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CastError';
    this.code = 'E_TRANSCRIPT_FORMAT';
  }
}

/** Parses asciicast v2 text into `{ header, events }`; unreadable event lines are skipped. */
export function parseCast(text) {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new CastError('The transcript is empty.');
  let header;
  try {
    header = JSON.parse(lines[0]);
  } catch {
    throw new CastError('The transcript does not start with an asciicast header.');
  }
  if (!header || header.version !== 2) {
    throw new CastError(`The transcript is not asciicast v2 (version ${header && header.version}).`);
  }
  const events = [];
  for (const line of lines.slice(1)) {
    let e;
    try {
      e = JSON.parse(line);
    } catch {
      continue;
    }
    if (Array.isArray(e) && typeof e[0] === 'number' && typeof e[1] === 'string' && typeof e[2] === 'string') {
      events.push({ time: e[0], code: e[1], data: e[2] });
    }
  }
  return { header, events };
}

/** Parses a "COLSxROWS" resize payload. */
export function parseSize(data) {
  const m = /^(\d+)x(\d+)$/.exec(data);
  return m ? { cols: Number(m[1]), rows: Number(m[2]) } : null;
}

/** Everything printed, in order (what an instant replay writes into the terminal). */
export function outputOf(cast) {
  return cast.events.filter((e) => e.code === 'o').map((e) => e.data).join('');
}

/** Markers (e.g. "transcript truncated: …"), in order. */
export function markersOf(cast) {
  return cast.events.filter((e) => e.code === 'm').map((e) => e.data);
}

/** How much of the compressed transcript goes into the decompressor at a time. */
export const GUNZIP_PIECE = 64 * 1024;

/**
 * Decompresses a gzip transcript into text with fflate's streaming decompressor. The gateway
 * stores one gzip member per chunk and serves them concatenated; the stream decodes every
 * member in order (a browser's DecompressionStream stops after the first one).
 */
export async function gunzipText(bytes) {
  const parts = [];
  const text = new DecodeUTF8((part) => parts.push(part));
  const gunzip = new Gunzip((chunk, final) => text.push(chunk, final));
  try {
    if (bytes.length === 0) throw new Error('empty');
    for (let at = 0; at < bytes.length; at += GUNZIP_PIECE) {
      const end = Math.min(bytes.length, at + GUNZIP_PIECE);
      gunzip.push(bytes.subarray(at, end), end === bytes.length);
    }
  } catch {
    throw new CastError('The transcript is not valid gzip; fetch it with the API and compare its SHA-256 with status.transcript.sha256.');
  }
  return parts.join('');
}
