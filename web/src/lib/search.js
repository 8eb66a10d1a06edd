// The Search page's logic: the filters as they live in the address (`#/search?q=…`), the
// query of `GET /api/v1/sessions/search`, and how a hit is shown and opened. Pure.

import { replayHash } from './player.js';

/** The filters, in the order of the form and of the address. */
export const SEARCH_FIELDS = ['q', 'user', 'node', 'since', 'until', 'exit'];

/** Hits asked for per search (the gateway may cap it lower). */
export const SEARCH_LIMIT = 50;

/** A filter the console refuses before asking the gateway. */
export class SearchInputError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SearchInputError';
    this.code = 'E_BAD_REQUEST';
  }
}

/** The filters of a `#/search?…` address (missing ones are ''), or null for another page. */
export function parseSearchRoute(hash) {
  const m = /^#\/search(?:\?(.*))?$/.exec(hash || '');
  if (!m) return null;
  const params = new URLSearchParams(m[1] || '');
  return Object.fromEntries(SEARCH_FIELDS.map((f) => [f, (params.get(f) || '').trim()]));
}

/** The address of a search with `filters` (empty ones left out). */
export function searchHash(filters) {
  const params = new URLSearchParams();
  for (const f of SEARCH_FIELDS) {
    const v = (filters[f] || '').trim();
    if (v) params.set(f, v);
  }
  const query = params.toString();
  return query ? `#/search?${query}` : '#/search';
}

/**
 * A time filter as RFC 3339 (UTC): the value of a `datetime-local` field (the browser's
 * local time) or an RFC 3339 time as typed.
 */
export function toRfc3339(value, name) {
  const ms = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(value) || Number.isNaN(ms)) {
    throw new SearchInputError(`"${value}" is not a time for ${name}; pick one in the field or type e.g. 2026-12-05T10:00.`);
  }
  return new Date(ms).toISOString().replace(/\.000Z$/, 'Z');
}

/** Whether `filters` hold a search (some text or a filter); an empty form asks for nothing. */
export function hasSearch(filters) {
  return SEARCH_FIELDS.some((f) => (filters[f] || '').trim() !== '');
}

/** The query string of `GET /api/v1/sessions/search` for `filters`; throws SearchInputError. */
export function searchQuery(filters) {
  const params = new URLSearchParams();
  const q = (filters.q || '').trim();
  if (!q) throw new SearchInputError('Type the text to look for (a command, or part of its output).');
  params.set('q', q);
  for (const f of ['user', 'node']) {
    const v = (filters[f] || '').trim();
    if (v) params.set(f, v);
  }
  for (const f of ['since', 'until']) {
    const v = (filters[f] || '').trim();
    if (v) params.set(f, toRfc3339(v, f));
  }
  if (params.has('since') && params.has('until') && Date.parse(params.get('since')) > Date.parse(params.get('until'))) {
    throw new SearchInputError('"since" is after "until"; swap them.');
  }
  const exit = (filters.exit || '').trim();
  if (exit) {
    if (exit !== 'failed' && exit !== 'ok' && !/^\d{1,3}$/.test(exit)) {
      throw new SearchInputError(`Exit status "${exit}" is not "failed", "ok" or a number (0-255).`);
    }
    params.set('exit', exit);
  }
  params.set('limit', String(SEARCH_LIMIT));
  return params.toString();
}

/** Where a hit opens: the session's recording at the command's start. */
export function hitLink(hit) {
  return replayHash(hit.session, hit.startSeconds);
}

/** What the results' status line says for an answer. */
export function resultsText(answer) {
  const n = Array.isArray(answer.hits) ? answer.hits.length : 0;
  const found = n === 0 ? 'No command matches.' : `${n} command${n === 1 ? '' : 's'} found.`;
  return answer.truncated
    ? `${found} The gateway stopped early (it scans a bounded number of sessions and bytes per search): narrow the search with user, node or time to see the rest.`
    : found;
}

/** `snippet` split around each case-insensitive occurrence of `q`: `[{ text, match }]`. */
export function snippetParts(snippet, q) {
  const text = String(snippet || '');
  const needle = String(q || '').toLowerCase();
  if (!needle) return text ? [{ text, match: false }] : [];
  const parts = [];
  const lower = text.toLowerCase();
  let at = 0;
  for (;;) {
    const i = lower.indexOf(needle, at);
    if (i < 0) break;
    if (i > at) parts.push({ text: text.slice(at, i), match: false });
    parts.push({ text: text.slice(i, i + needle.length), match: true });
    at = i + needle.length;
  }
  if (at < text.length) parts.push({ text: text.slice(at), match: false });
  return parts;
}
