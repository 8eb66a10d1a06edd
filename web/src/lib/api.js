// The gateway's HTTP API as the console uses it: same-origin calls with the gateway's
// HttpOnly session cookie (the browser never holds a token), and the CSRF header on writes.

/** An error answer of the API (`{code, message}`), or a failure to reach it. */
export class ApiError extends Error {
  constructor(code, message, status = 0, body = {}) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.body = body;
  }
}

/** Codes after which only a new sign-in helps. */
export const REAUTH_CODES = new Set(['E_AUTH', 'E_REAUTH_REQUIRED']);

/** Whether `error` means the person must sign in again. */
export function needsSignIn(error) {
  return Boolean(error && REAUTH_CODES.has(error.code));
}

/** Turns a non-2xx answer into an ApiError, whatever its body. */
export async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (body && typeof body.code === 'string' && typeof body.message === 'string') {
    return new ApiError(body.code, body.message, response.status, body);
  }
  return new ApiError('E_HTTP', `The gateway answered HTTP ${response.status} without details; try again, and check the gateway's logs if it persists.`, response.status);
}

/** The header the gateway wants on every cookie-authenticated write (its CSRF defence). */
export const CSRF_HEADER = 'X-Nodeshell-Csrf';

/** An API client over the session cookie; `fetchImpl` is the browser's fetch. */
export function createApi({ fetchImpl = (...a) => globalThis.fetch(...a), onSignInNeeded = () => {} } = {}) {
  async function call(method, path, { body, raw = false } = {}) {
    const headers = { Accept: raw ? '*/*' : 'application/json' };
    if (method !== 'GET') headers[CSRF_HEADER] = '1';
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetchImpl(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch {
      throw new ApiError('E_NETWORK', 'Cannot reach the gateway; check your connection and try again.');
    }
    if (!response.ok) {
      const error = await errorFrom(response);
      if (needsSignIn(error)) onSignInNeeded(error);
      throw error;
    }
    if (raw) return new Uint8Array(await response.arrayBuffer());
    return response.json();
  }
  const enc = encodeURIComponent;
  return {
    whoami: () => call('GET', '/api/v1/whoami'),
    nodes: () => call('GET', '/api/v1/nodes').then((r) => r.items || []),
    sessions: () => call('GET', '/api/v1/sessions').then((r) => r.items || []),
    openShell: (node, request) => call('POST', `/api/v1/nodes/${enc(node)}/shell`, { body: request }),
    newTicket: (session, size) => call('POST', `/api/v1/sessions/${enc(session)}/ticket`, { body: size }),
    endSession: (session) => call('DELETE', `/api/v1/sessions/${enc(session)}`),
    transcript: (session) => call('GET', `/api/v1/sessions/${enc(session)}/transcript`, { raw: true }),
    ledger: (session) => ledgerOf(call('GET', `/api/v1/sessions/${enc(session)}/ledger`)),
    search: (query) => call('GET', `/api/v1/sessions/search?${query}`),
    signOut: () => call('POST', '/auth/logout', { raw: true }),
  };
}

/**
 * A session's command ledger, or `{ commands: [] }` when it has none (recorded with a
 * document without shell integration, or by a gateway without the ledger: `E_NOT_FOUND`).
 */
export async function ledgerOf(answer) {
  try {
    const ledger = await answer;
    return { ...ledger, commands: Array.isArray(ledger && ledger.commands) ? ledger.commands : [] };
  } catch (error) {
    if (error && error.code === 'E_NOT_FOUND') return { commands: [], missing: true };
    throw error;
  }
}

/** The WebSocket URL of a relative `attachUrl`, on the page's own host. */
export function socketUrl(attachUrl, location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = new URL(attachUrl, `${location.protocol}//${location.host}`);
  if (url.host !== location.host) throw new ApiError('E_BAD_ATTACH', 'The gateway answered an attach URL on another host; refusing to connect.');
  return `${scheme}//${location.host}${url.pathname}${url.search}`;
}
