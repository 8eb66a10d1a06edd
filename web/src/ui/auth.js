// Sign-in in the browser: redirects, the callback and sessionStorage. The id_token lives in
// sessionStorage only (gone when the tab closes) and is never put in a URL or logged.

import * as oidc from '../lib/oidc.js';

const PENDING = 'nodeshell.pendingLogin';
const TOKEN = 'nodeshell.idToken';

/** The console's sign-in against the issuer named by /console/config.json. */
export class Auth {
  constructor(config, { storage = window.sessionStorage, location = window.location } = {}) {
    this.config = config;
    this.storage = storage;
    this.location = location;
    this.discoveryDoc = null;
  }

  /** Where the issuer sends the browser back to. */
  get redirectUri() {
    return `${this.location.origin}/callback`;
  }

  async discovery() {
    if (this.discoveryDoc) return this.discoveryDoc;
    let response;
    try {
      response = await fetch(oidc.discoveryUrl(this.config.issuer), { credentials: 'omit', cache: 'no-store' });
    } catch {
      throw new oidc.LoginError('E_LOGIN_DISCOVERY', `Cannot reach the sign-in provider at ${this.config.issuer}; check that it is up and allows this origin (CORS).`);
    }
    if (!response.ok) {
      throw new oidc.LoginError('E_LOGIN_DISCOVERY', `The sign-in provider answered HTTP ${response.status} for its discovery document; check the gateway's oidc.issuerUrl.`);
    }
    this.discoveryDoc = oidc.checkDiscovery(await response.json());
    return this.discoveryDoc;
  }

  /** Starts a sign-in: remembers state, nonce and verifier, then leaves for the issuer. */
  async startLogin(returnRoute) {
    const doc = await this.discovery();
    const pending = {
      state: oidc.randomToken(),
      nonce: oidc.randomToken(),
      verifier: oidc.randomToken(48),
      returnRoute: oidc.safeReturnRoute(returnRoute),
    };
    const challenge = await oidc.pkceChallenge(pending.verifier);
    this.storage.removeItem(TOKEN);
    this.storage.setItem(PENDING, JSON.stringify(pending));
    this.location.assign(oidc.authorizeUrl(doc.authorization_endpoint, {
      clientId: this.config.clientId,
      redirectUri: this.redirectUri,
      scope: this.config.scopes,
      state: pending.state,
      nonce: pending.nonce,
      challenge,
    }));
  }

  /** Finishes a sign-in on /callback; returns the route to show. */
  async completeLogin(search) {
    let pending = null;
    try {
      pending = JSON.parse(this.storage.getItem(PENDING) || 'null');
    } catch {
      pending = null;
    }
    this.storage.removeItem(PENDING);
    const code = oidc.parseCallback(search, pending && pending.state);
    const doc = await this.discovery();
    let response;
    try {
      response = await fetch(doc.token_endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
        body: oidc.tokenRequestBody({ code, redirectUri: this.redirectUri, clientId: this.config.clientId, verifier: pending.verifier }),
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch {
      throw new oidc.LoginError('E_LOGIN_TOKEN', 'Cannot reach the sign-in provider\'s token endpoint; sign in again.');
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = answer.error_description || answer.error || `HTTP ${response.status}`;
      throw new oidc.LoginError('E_LOGIN_TOKEN', `The sign-in provider refused the code: ${detail}. Sign in again.`);
    }
    const { idToken } = oidc.checkTokenAnswer(answer, { nonce: pending.nonce, clientId: this.config.clientId, issuer: this.config.issuer });
    this.storage.setItem(TOKEN, idToken);
    return pending.returnRoute;
  }

  /** The current id_token, or null when there is none or it expired. */
  token() {
    const token = this.storage.getItem(TOKEN);
    if (!token) return null;
    try {
      if (oidc.isExpired(oidc.jwtClaims(token), Date.now() / 1000)) {
        this.storage.removeItem(TOKEN);
        return null;
      }
    } catch {
      this.storage.removeItem(TOKEN);
      return null;
    }
    return token;
  }

  /** Claims of the current token (for the header), or null. */
  claims() {
    const token = this.token();
    return token ? oidc.jwtClaims(token) : null;
  }

  /** Forgets the token. */
  forget() {
    this.storage.removeItem(TOKEN);
  }
}
