// The nodeshell console: signs in through the gateway (which keeps the tokens and gives the
// browser an HttpOnly cookie), then shows the Nodes and Sessions pages and the terminal drawer.

import { h, replace } from './ui/dom.js';
import { ShellDrawer } from './ui/drawer.js';
import { nodesPage } from './ui/nodes.js';
import { sessionsPage, transcriptText, currentPlayer } from './ui/sessions.js';
import { searchPage } from './ui/search.js';
import { parseReplayRoute } from './lib/player.js';
import { parseSearchRoute } from './lib/search.js';
import { createApi, needsSignIn } from './lib/api.js';
import { SIGN_IN_PATH, displayName, onSignedOut, withoutMarker } from './lib/signin.js';
import { errorText } from './lib/format.js';

const main = document.getElementById('page');
const signin = document.getElementById('signin');
const user = document.querySelector('[data-testid=user]');
const signOutButton = document.querySelector('[data-testid=sign-out]');

function showFatal(error) {
  replace(main,
    h('div', { class: 'banner error', role: 'alert', dataset: { testid: 'page-error' } }, errorText(error)),
    h('p', {}, h('button', { type: 'button', onclick: () => signIn() }, 'Sign in again')));
}

function signIn() {
  window.location.assign(SIGN_IN_PATH);
}

function askSignIn(error) {
  replace(signin,
    h('span', {}, `${errorText(error)} `),
    h('button', { type: 'button', dataset: { testid: 'sign-in-again' }, onclick: () => signIn() }, 'Sign in again'));
  signin.hidden = false;
}

function showSignedOut() {
  user.textContent = '';
  signOutButton.hidden = true;
  replace(main,
    h('p', { dataset: { testid: 'signed-out' } }, 'You are signed out.'),
    h('p', {}, h('button', { type: 'button', onclick: () => signIn() }, 'Sign in')));
}

async function start() {
  const api = createApi({ onSignInNeeded: askSignIn });
  let whoami;
  try {
    whoami = await api.whoami();
  } catch (error) {
    if (!needsSignIn(error)) {
      showFatal(error);
      return;
    }
    if (onSignedOut(window.location.search) === 'redirect') {
      signIn();
      return;
    }
    showFatal({
      code: error.code,
      message: 'You signed in, but this browser did not keep the session cookie (cookies blocked for this site, or the console opened on an address other than the gateway\'s redirect URL). Allow cookies for this site or use that address, then sign in again.',
    });
    return;
  }
  window.history.replaceState(null, '', withoutMarker(window.location));
  user.textContent = displayName(whoami);
  user.title = `${whoami.email || whoami.sub}${whoami.tier ? ` · tier ${whoami.tier}` : ''}`;
  signOutButton.hidden = false;
  signOutButton.addEventListener('click', async () => {
    signOutButton.disabled = true;
    try {
      await api.signOut();
    } catch (error) {
      if (!needsSignIn(error)) {
        askSignIn(error);
        signOutButton.disabled = false;
        return;
      }
    }
    document.getElementById('drawer').hidden = true;
    showSignedOut();
  });
  const drawer = new ShellDrawer(document.getElementById('drawer'), api, { onSignInNeeded: askSignIn });
  window.nodeshellConsole = {
    terminalText: () => drawer.text(),
    transcriptText: () => transcriptText(),
    playerTime: () => (currentPlayer() ? currentPlayer().recordingTime() : null),
    sessionName: () => drawer.sessionName(),
    dropConnection: () => drawer.dropConnection(),
    renderer: () => drawer.renderer(),
    fontSize: () => (drawer.term ? drawer.term.options.fontSize : null),
  };
  // A shell this console session attached before a reload still runs: take it back.
  const shells = Array.isArray(whoami.shells) ? whoami.shells : [];
  if (shells.length > 0) drawer.resume(shells[0], { others: shells.slice(1) });

  let leave = null;
  let shown = 0;
  async function route() {
    const mine = ++shown;
    if (leave) leave();
    leave = null;
    const page = (window.location.hash || '#/nodes').replace(/^#\/?/, '').split(/[/?]/)[0] || 'nodes';
    for (const link of document.querySelectorAll('nav a')) {
      const current = link.getAttribute('href') === `#/${page}`;
      if (current) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    if (page === 'sessions') {
      document.title = 'Sessions · nodeshell';
      const open = parseReplayRoute(window.location.hash);
      const dispose = await sessionsPage(main, { api, whoami, drawer, open });
      // The person may have moved on while the list loaded.
      if (mine === shown) leave = dispose;
      else dispose();
    } else if (page === 'search') {
      document.title = 'Search · nodeshell';
      await searchPage(main, { api, filters: parseSearchRoute(window.location.hash) || {} });
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
