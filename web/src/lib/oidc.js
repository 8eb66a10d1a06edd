// OpenID Connect sign-in for a public client: Authorization Code with PKCE (S256).
// Pure helpers; the browser glue (redirects, storage) lives in ../ui/auth.js.

/** Errors a person can meet while signing in; `code` is stable, `message` says what to do. */
export class LoginError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'LoginError';
    this.code = code;
  }
}

/** Bytes as unpadded base64url. */
export function base64url(bytes) {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** A random URL-safe string from `size` random bytes (43 characters for 32 bytes). */
export function randomToken(size = 32, cryptoImpl = globalThis.crypto) {
  const bytes = new Uint8Array(size);
  cryptoImpl.getRandomValues(bytes);
  return base64url(bytes);
}

/** The PKCE S256 challenge of a verifier: base64url(SHA-256(verifier)). */
export async function pkceChallenge(verifier, cryptoImpl = globalThis.crypto) {
  const digest = await cryptoImpl.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/** Where the issuer publishes its discovery document. */
export function discoveryUrl(issuer) {
  return `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
}

/** Checks the discovery document has what this client needs. */
export function checkDiscovery(doc) {
  if (!doc || typeof doc.authorization_endpoint !== 'string' || typeof doc.token_endpoint !== 'string') {
    throw new LoginError('E_LOGIN_DISCOVERY',
      'The sign-in provider did not publish authorization and token endpoints; check the gateway\'s oidc.issuerUrl.');
  }
  const methods = doc.code_challenge_methods_supported;
  if (Array.isArray(methods) && !methods.includes('S256')) {
    throw new LoginError('E_LOGIN_DISCOVERY',
      'The sign-in provider does not support PKCE with S256, which the console needs.');
  }
  return doc;
}

/** The authorization request URL (code flow with PKCE S256). */
export function authorizeUrl(endpoint, { clientId, redirectUri, scope, state, nonce, challenge }) {
  const url = new URL(endpoint);
  const params = {
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    scope,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.toString();
}

/** Reads the issuer's answer on /callback; returns the code when `state` matches. */
export function parseCallback(search, expectedState) {
  const params = new URLSearchParams(search);
  if (params.has('error')) {
    const detail = params.get('error_description') || params.get('error');
    throw new LoginError('E_LOGIN_REFUSED', `The sign-in provider refused the sign-in: ${detail}. Sign in again.`);
  }
  const code = params.get('code');
  const state = params.get('state');
  if (!code || !state) {
    throw new LoginError('E_LOGIN_CALLBACK', 'The sign-in answer has no code or state. Sign in again.');
  }
  if (!expectedState || state !== expectedState) {
    throw new LoginError('E_LOGIN_STATE',
      'The sign-in answer does not match a sign-in started here (state mismatch). Sign in again.');
  }
  return code;
}

/** The token request body (application/x-www-form-urlencoded). */
export function tokenRequestBody({ code, redirectUri, clientId, verifier }) {
  return new URLSearchParams({
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri,
    client_id: clientId,
    code_verifier: verifier,
  }).toString();
}

/** The claims of a JWT, without verifying it (the gateway verifies; this is for display). */
export function jwtClaims(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) throw new LoginError('E_LOGIN_TOKEN', 'The sign-in provider returned no usable id_token. Sign in again.');
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new LoginError('E_LOGIN_TOKEN', 'The id_token from the sign-in provider is not readable. Sign in again.');
  }
}

/** Checks the token answer: an id_token whose nonce, audience and issuer are ours. */
export function checkTokenAnswer(answer, { nonce, clientId, issuer }) {
  const idToken = answer && answer.id_token;
  const claims = jwtClaims(idToken);
  if (claims.nonce !== nonce) {
    throw new LoginError('E_LOGIN_NONCE', 'The id_token was not issued for this sign-in (nonce mismatch). Sign in again.');
  }
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(clientId)) {
    throw new LoginError('E_LOGIN_TOKEN', `The id_token is not for the client ${clientId}. Sign in again.`);
  }
  if (issuer && claims.iss && claims.iss.replace(/\/+$/, '') !== issuer.replace(/\/+$/, '')) {
    throw new LoginError('E_LOGIN_TOKEN', `The id_token comes from ${claims.iss}, not ${issuer}. Sign in again.`);
  }
  return { idToken, claims };
}

/** Whether a token with these claims is expired (or about to be) at `nowSeconds`. */
export function isExpired(claims, nowSeconds, skewSeconds = 30) {
  return typeof claims.exp !== 'number' || claims.exp - skewSeconds <= nowSeconds;
}

/** The name to show for a signed-in person. */
export function displayName(claims) {
  return claims.name || claims.preferred_username || claims.email || claims.sub || 'signed in';
}

/** Keeps the return route only when it is an in-app hash route (never an outside URL). */
export function safeReturnRoute(hash) {
  return typeof hash === 'string' && /^#\/[A-Za-z0-9_-]*(\/[A-Za-z0-9_-]+)*$/.test(hash) ? hash : '#/nodes';
}
