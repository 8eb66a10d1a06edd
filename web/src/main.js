// The nodeshell console: signs in (OIDC code flow with PKCE), then shows the Nodes and
// Sessions pages and the terminal drawer.

import { Auth } from './ui/auth.js';
import { h, replace } from './ui/dom.js';
import { ShellDrawer } from './ui/drawer.js';
import { nodesPage } from './ui/nodes.js';
import { sessionsPage, transcriptText } from './ui/sessions.js';
import { createApi, needsSignIn } from './lib/api.js';
import { displayName, safeReturnRoute } from './lib/oidc.js';
import { errorText } from './lib/format.js';

const main = document.getElementById('page');
const signin = document.getElementById('signin');
const user = document.querySelector('[data-testid=user]');

function showFatal(error) {
  replace(main,
    h('div', { class: 'banner error', role: 'alert', dataset: { testid: 'page-error' } }, errorText(error)),
    h('p', {}, h('button', { type: 'button', onclick: () => retrySignIn() }, 'Sign in again')));
}

let auth = null;

function retrySignIn() {
  if (!auth) {
    window.location.reload();
    return;
  }
  auth.forget();
  auth.startLogin(window.location.hash).catch(showFatal);
}

function askSignIn(error) {
  replace(signin,
    h('span', {}, `${errorText(error)} `),
    h('button', { type: 'button', dataset: { testid: 'sign-in-again' }, onclick: () => retrySignIn() }, 'Sign in again'));
  signin.hidden = false;
}

async function start() {
  let config;
  try {
    const response = await fetch('/console/config.json', { cache: 'no-store' });
    if (!response.ok) throw new Error(String(response.status));
    config = await response.json();
  } catch {
    showFatal({ code: 'E_CONSOLE_CONFIG', message: 'Cannot load /console/config.json from the gateway; reload the page.' });
    return;
  }
  auth = new Auth(config);
  if (window.location.pathname === '/callback') {
    let route = '#/nodes';
    try {
      route = await auth.completeLogin(window.location.search);
    } catch (error) {
      window.history.replaceState(null, '', '/');
      showFatal(error);
      return;
    }
    // The one-time code must not stay in the address bar or the history.
    window.history.replaceState(null, '', `/${route}`);
  }
  if (!auth.token()) {
    try {
      await auth.startLogin(safeReturnRoute(window.location.hash));
    } catch (error) {
      showFatal(error);
    }
    return;
  }
  const api = createApi({ token: () => auth.token(), onSignInNeeded: askSignIn });
  const claims = auth.claims();
  user.textContent = displayName(claims || {});
  user.title = claims && claims.email ? claims.email : '';
  const drawer = new ShellDrawer(document.getElementById('drawer'), api, { onSignInNeeded: askSignIn });
  let whoami = null;
  api.whoami().then((who) => {
    whoami = who;
    user.textContent = who.name || who.email || who.sub;
    if (who.tier) user.title = `${who.email || who.sub} · tier ${who.tier}`;
  }).catch((error) => {
    if (!needsSignIn(error)) user.title = errorText(error);
  });

  window.nodeshellConsole = {
    terminalText: () => drawer.text(),
    transcriptText: () => transcriptText(),
    sessionName: () => drawer.sessionName(),
    dropConnection: () => drawer.dropConnection(),
  };

  let leave = null;
  let shown = 0;
  async function route() {
    const mine = ++shown;
    if (leave) leave();
    leave = null;
    const page = (window.location.hash || '#/nodes').replace(/^#\/?/, '').split('/')[0] || 'nodes';
    for (const link of document.querySelectorAll('nav a')) {
      const current = link.getAttribute('href') === `#/${page}`;
      if (current) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    if (page === 'sessions') {
      document.title = 'Sessions · nodeshell';
      const dispose = await sessionsPage(main, { api, whoami, drawer });
      // The person may have moved on while the list loaded.
      if (mine === shown) leave = dispose;
      else dispose();
    } else {
      document.title = 'Nodes · nodeshell';
      await nodesPage(main, { api, drawer });
    }
  }
  window.addEventListener('hashchange', () => route());
  const path = window.location.pathname.replace(/^\/+/, '');
  if (!window.location.hash && (path === 'sessions' || path === 'nodes')) {
    window.history.replaceState(null, '', `/#/${path}`);
  }
  await route();
}

start();
