// Signing in through the gateway: the console never sees a token. Sign-in is a navigation to
// the gateway's /auth/login (the gateway is the identity provider's confidential client and
// answers with an HttpOnly session cookie); sign-out is a POST to /auth/logout.

/** Where a sign-in starts. */
export const SIGN_IN_PATH = '/auth/login';

/** The query marker the gateway's callback adds when it sends the browser back. */
export const SIGNED_IN_MARKER = 'signed-in';

/** What to do when the API says the person is not signed in: `redirect` to sign in, or
 * `explain` when the browser just came back from a sign-in (its cookie was not kept, so
 * another redirect would loop). */
export function onSignedOut(search) {
  return new URLSearchParams(search).has(SIGNED_IN_MARKER) ? 'explain' : 'redirect';
}

/** The address bar without the sign-in marker (kept path and hash). */
export function withoutMarker(location) {
  const url = new URL(location.href);
  url.searchParams.delete(SIGNED_IN_MARKER);
  return `${url.pathname}${url.search}${url.hash}`;
}

/** What the header shows for the person `GET /api/v1/whoami` describes. */
export function displayName(who) {
  return (who && (who.name || who.email || who.sub)) || 'signed in';
}
