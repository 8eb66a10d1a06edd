// asciicast v2 (the transcript format): a JSON header line, then one JSON array per event:
// [seconds, code, data] with code "o" output, "i" input, "r" resize ("COLSxROWS"), "m" marker.

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

/**
 * Replay steps with their delay from the previous step, pauses capped at `maxPauseS` (a
 * recording with a 10-minute idle gap should not replay one).
 */
export function replaySteps(cast, { speed = 1, maxPauseS = 1 } = {}) {
  const steps = [];
  let last = 0;
  for (const e of cast.events) {
    if (e.code !== 'o' && e.code !== 'r') continue;
    const gap = Math.min(Math.max(0, e.time - last), maxPauseS);
    last = e.time;
    steps.push({ delayMs: (gap * 1000) / speed, code: e.code, data: e.data });
  }
  return steps;
}

/** One gzip member with the browser's DecompressionStream; null when it is not exactly one. */
export async function inflateMember(bytes) {
  try {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return await new Response(stream).text();
  } catch {
    return null;
  }
}

/** Offsets at or after `from` where a gzip member header (1f 8b 08) could start. */
export function memberStarts(bytes, from) {
  const starts = [];
  for (let i = from; i + 2 < bytes.length; i++) {
    if (bytes[i] === 0x1f && bytes[i + 1] === 0x8b && bytes[i + 2] === 0x08) starts.push(i);
  }
  return starts;
}

/** The smallest gzip member: 10-byte header, 2 bytes of deflate, 8-byte trailer. */
const MIN_MEMBER = 20;

/**
 * Decompresses a gzip transcript into text. The gateway stores one gzip member per chunk and
 * serves them concatenated; browsers' DecompressionStream stops at the first member's end,
 * so members are split at header candidates, each split confirmed by `inflate` succeeding.
 */
export async function gunzipText(bytes, inflate = inflateMember) {
  let text = '';
  let start = 0;
  while (start < bytes.length) {
    const rest = await inflate(bytes.subarray(start));
    if (rest !== null) return text + rest;
    let next = -1;
    for (const candidate of memberStarts(bytes, start + MIN_MEMBER)) {
      const member = await inflate(bytes.subarray(start, candidate));
      if (member !== null) {
        text += member;
        next = candidate;
        break;
      }
    }
    if (next < 0) {
      throw new CastError('The transcript is not valid gzip; fetch it with the API and compare its SHA-256 with status.transcript.sha256.');
    }
    start = next;
  }
  return text;
}
