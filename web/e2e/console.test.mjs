// The web console in a real browser: Debian's Chromium driven by playwright-core (no browser
// download) against a running `nodeshell dev`. e2e/tests/console_browser.rs starts dev and
// runs this script; by hand:
//   NODESHELL_CONSOLE_URL=http://127.0.0.1:8080/ node web/e2e/console.test.mjs
// Environment: NODESHELL_CONSOLE_URL (required), NODESHELL_SCREENSHOTS (directory, default
// target/screenshots), NODESHELL_CHROMIUM (default /usr/bin/chromium), NODESHELL_NODE (the
// node with an Online instance, default ip-10-0-1-17.ec2.internal), NODESHELL_LEDGER_NODE (a
// node whose policy runs the NodeShell-Shell document, default ip-10-0-4-23.ec2.internal).
// It also checks that no JWT is ever readable by the page (localStorage, sessionStorage,
// document.cookie): the console signs in through the gateway, which keeps the tokens.
// On success the last lines are `LEDGER_SESSION <name>` and `SESSION <name>` so the caller can
// check the session objects.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const consoleUrl = process.env.NODESHELL_CONSOLE_URL;
const shots = process.env.NODESHELL_SCREENSHOTS || 'target/screenshots';
const node = process.env.NODESHELL_NODE || 'ip-10-0-1-17.ec2.internal';
const ledgerNode = process.env.NODESHELL_LEDGER_NODE || 'ip-10-0-4-23.ec2.internal';
const STEP_TIMEOUT = 30_000;

if (!consoleUrl) {
  console.error('console.test: set NODESHELL_CONSOLE_URL to the URL `nodeshell dev` printed');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

let page;
let shotCount = 0;

function step(what) {
  console.log(`step: ${what}`);
}

async function screenshot(name) {
  shotCount += 1;
  const path = join(shots, `${String(shotCount).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path, fullPage: false });
  console.log(`screenshot: ${path}`);
}

/** Polls `probe` until it returns a truthy value; fails with `what` and the last value. */
async function until(what, probe, timeout = STEP_TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last saw: ${JSON.stringify(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const terminalLines = async () =>
  (await page.evaluate(() => window.nodeshellConsole.terminalText())).split('\n').map((l) => l.trimEnd());

/** The `rows cols` answers of `stty size` in the terminal so far. */
async function sttyAnswers() {
  return (await terminalLines()).map((l) => l.trim()).filter((l) => /^\d+ \d+$/.test(l));
}

/** The answers so far, or null while there are none (for `until`). */
async function someSttyAnswers() {
  const answers = await sttyAnswers();
  return answers.length > 0 ? answers : null;
}

/** A JWT: three base64url parts, the first starting `eyJ` (`{"`). */
const JWT = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/;

/** Fails when any storage a page script can read holds a JWT (the gateway keeps the tokens). */
async function noTokenInTheBrowser(when) {
  const readable = await page.evaluate(() => {
    const dump = (storage) => Object.keys(storage).map((k) => `${k}=${storage.getItem(k)}`).join('\n');
    return { local: dump(window.localStorage), session: dump(window.sessionStorage), cookie: document.cookie };
  });
  for (const [where, text] of Object.entries(readable)) {
    if (JWT.test(text)) throw new Error(`${when}: a JWT is readable by page scripts in ${where}`);
  }
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name.endsWith('nodeshell-session'));
  if (!session) throw new Error(`${when}: no session cookie (${cookies.map((c) => c.name).join(', ')})`);
  if (!session.httpOnly || session.sameSite !== 'Strict') throw new Error(`${when}: the session cookie is not HttpOnly and SameSite=Strict: ${JSON.stringify({ ...session, value: '…' })}`);
  if (JWT.test(session.value)) throw new Error(`${when}: the session cookie holds a JWT`);
  console.log(`${when}: no JWT in localStorage, sessionStorage or document.cookie; the session cookie is HttpOnly`);
}

/** Types a command line into the terminal. */
async function run(command) {
  await page.locator('[data-testid=terminal]').click();
  await page.keyboard.type(command, { delay: 10 });
  await page.keyboard.press('Enter');
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.NODESHELL_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Root in a container: Chromium's sandbox needs user namespaces it may not have.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT);
    page.on('pageerror', (error) => console.log(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') console.log(`browser console: ${message.text()}`);
    });

    step('open the console; the simulator signs the demo user in');
    await page.goto(consoleUrl);
    await until('the signed-in user in the header', async () =>
      (await page.locator('[data-testid=user]').textContent()).trim());
    const user = (await page.locator('[data-testid=user]').textContent()).trim();
    if (!/demo/i.test(user)) throw new Error(`the header names ${JSON.stringify(user)}, not the demo user`);
    if (new URL(page.url()).search.includes('code=')) throw new Error(`the code stayed in the address bar: ${page.url()}`);
    await noTokenInTheBrowser('after sign-in');
    const row = page.locator(`[data-testid=node-row][data-node="${node}"]`);
    await row.waitFor();
    const eligibility = (await row.locator('[data-testid=node-eligibility]').textContent()).trim();
    if (eligibility !== 'eligible') throw new Error(`${node} shows ${JSON.stringify(eligibility)}, not eligible`);
    await screenshot('nodes');

    step(`click "node shell" on ${node}`);
    const button = row.locator('[data-testid=node-shell]');
    if ((await button.textContent()).trim() !== 'node shell') throw new Error('the button is not labelled "node shell"');
    await button.click();
    await page.locator('[data-testid=terminal-drawer]').waitFor({ state: 'visible' });
    const tab = (await page.locator('[data-testid=terminal-tab]').textContent()).trim();
    if (tab !== 'node shell') throw new Error(`the terminal tab says ${JSON.stringify(tab)}`);

    step('type `echo hello`, see hello');
    // The agent starts the shell a second after the channel opens; wait for its prompt.
    await until('a shell prompt', async () => (await terminalLines()).some((l) => /[$#] ?$/.test(l)));
    await run('echo hello');
    await until('a line reading exactly "hello"', async () => (await terminalLines()).includes('hello'));
    await screenshot('echo-hello');

    step('reload the page: the same shell comes back with its output, and typing goes on');
    const reloaded = await page.evaluate(() => window.nodeshellConsole.sessionName());
    await run('echo before-reload');
    await until('before-reload printed', async () => (await terminalLines()).includes('before-reload'));
    // Closing or reloading a tab with a live shell asks first; the test answers "leave".
    const dialogs = [];
    page.once('dialog', async (dialog) => {
      dialogs.push(dialog.type());
      await dialog.accept();
    });
    await page.reload();
    if (!dialogs.includes('beforeunload')) throw new Error(`no beforeunload warning before the reload (dialogs: ${JSON.stringify(dialogs)})`);
    await page.locator('[data-testid=terminal-drawer]').waitFor({ state: 'visible' });
    await until('the same session back in the drawer', async () =>
      (await page.evaluate(() => window.nodeshellConsole && window.nodeshellConsole.sessionName())) === reloaded);
    await until('the output from before the reload, replayed', async () => (await terminalLines()).includes('before-reload'));
    if (!(await terminalLines()).includes('hello')) throw new Error('the replay after the reload lost the earlier `hello`');
    await run('echo after-reload');
    await until('a line reading exactly "after-reload"', async () => (await terminalLines()).includes('after-reload'));
    const renderer = await page.evaluate(() => window.nodeshellConsole.renderer());
    console.log(`terminal renderer after the reload: ${renderer}`);
    await screenshot('after-reload');

    step('the font size control makes the text larger and the terminal refits');
    const fontBefore = await page.evaluate(() => window.nodeshellConsole.fontSize());
    await page.locator('[data-testid=font-larger]').click();
    await page.locator('[data-testid=font-larger]').click();
    const fontAfter = await page.evaluate(() => window.nodeshellConsole.fontSize());
    if (fontAfter !== fontBefore + 2) throw new Error(`font size ${fontBefore} -> ${fontAfter}, not +2`);
    await page.locator('[data-testid=font-smaller]').click();
    await page.locator('[data-testid=font-smaller]').click();

    step('a dropped connection shows Reconnect while it comes back, then the shell goes on');
    await page.evaluate(() => window.nodeshellConsole.dropConnection());
    await page.locator('[data-testid=reconnect]').waitFor({ state: 'visible', timeout: 5_000 });
    await page.locator('[data-testid=notice-banner]', { hasText: 'Reconnected.' }).waitFor({ state: 'visible' });
    await page.locator('[data-testid=reconnect]').waitFor({ state: 'hidden' });
    await run('echo after-drop');
    await until('a line reading exactly "after-drop"', async () => (await terminalLines()).includes('after-drop'));

    step('a long output arrives whole: the console acknowledges what its terminal wrote');
    // 400 KB, more than the gateway sends a browser that does not acknowledge; carriage
    // returns only, so it stays on one line and scrolls nothing out of the replay below.
    await run("yes x | head -c 400000 | tr '\\n' '\\r'; echo; echo long-end");
    await until('the line after the long output', async () => (await terminalLines()).includes('long-end'), 120_000);

    step('open the session info and see the SSM session id');
    await page.locator('[data-testid=session-info] summary').click();
    const ssmId = await until('the SSM session id', async () => {
      const text = (await page.locator('[data-testid=ssm-session-id]').textContent()).trim();
      return text && text !== '—' ? text : null;
    });
    console.log(`ssm session: ${ssmId}`);
    await screenshot('session-info');

    step('`stty size`, resize the window, `stty size` again');
    await run('stty size');
    const before = (await until('the first `stty size` answer', someSttyAnswers))[0];
    await page.setViewportSize({ width: 900, height: 640 });
    let after;
    await until('`stty size` to change after the resize', async () => {
      const answers = await sttyAnswers();
      after = answers[answers.length - 1];
      if (after !== before) return true;
      // The resize message may still be on its way: ask again.
      await run('stty size');
      await new Promise((resolve) => setTimeout(resolve, 500));
      return false;
    });
    console.log(`stty size: ${before} -> ${after}`);
    await screenshot('resized');

    step('`exit`, see the closed banner say the exit status was not reported');
    const session = await page.evaluate(() => window.nodeshellConsole.sessionName());
    if (!session) throw new Error('window.nodeshellConsole.sessionName() is empty');
    await run('exit');
    const banner = page.locator('[data-testid=closed-banner]');
    await banner.waitFor({ state: 'visible' });
    const bannerText = (await banner.textContent()).trim();
    if (!bannerText.includes("the shell's exit status was not reported")) throw new Error(`closed banner: ${JSON.stringify(bannerText)}`);
    await screenshot('closed');

    step('Sessions page: the session is Closed by UserExit with a transcript');
    await page.locator('[data-testid=nav-sessions]').click();
    const sessionRow = page.locator(`[data-testid=session-row][data-session="${session}"]`);
    await until(`row ${session} Closed, UserExit, with a transcript`, async () => {
      if (await sessionRow.count() === 1) {
        const text = await sessionRow.textContent();
        const hasReplay = await sessionRow.locator('[data-testid=transcript-open]').count() === 1;
        if (text.includes('Closed') && text.includes('UserExit') && hasReplay) return true;
      }
      await page.getByRole('button', { name: 'Refresh' }).click();
      await new Promise((resolve) => setTimeout(resolve, 500));
      return false;
    });
    await screenshot('sessions');

    step('open the recording in the player, play it at 2x and see hello');
    await sessionRow.locator('[data-testid=transcript-open]').click();
    await page.locator('[data-testid=transcript-view]').waitFor({ state: 'visible' });
    await page.locator('[data-testid=player-play]').waitFor({ state: 'visible' });
    if (!page.url().includes(`#/sessions/${session}/replay`)) throw new Error(`the player's address is ${page.url()}`);
    await page.locator('[data-testid=player-speed]').selectOption('2');
    await page.locator('[data-testid=player-play]').click();
    await until('hello on the player\'s screen', async () =>
      (await page.evaluate(() => window.nodeshellConsole.transcriptText())).split('\n').some((l) => l.trim() === 'hello'));
    await screenshot('transcript');

    step('the deep link opens the recording at a time');
    await page.locator('[data-testid=player-play]').click();
    await page.goto(`${new URL(page.url()).origin}/#/sessions/${session}/replay?at=2.5`);
    await page.locator('[data-testid=player-play]').waitFor({ state: 'visible' });
    const at = await until('the player positioned', async () => page.evaluate(() => window.nodeshellConsole.playerTime()));
    if (Math.abs(at - 2.5) > 0.5) throw new Error(`the deep link at=2.5 opened the player at ${at} s`);
    await page.locator('[data-testid=nav-sessions]').click();
    await noTokenInTheBrowser('after the shell and the transcript');

    step(`a shell on ${ledgerNode}, whose policy runs the NodeShell-Shell document: three commands, one failing`);
    await page.locator('[data-testid=nav-nodes]').click();
    const ledgerRow = page.locator(`[data-testid=node-row][data-node="${ledgerNode}"]`);
    await ledgerRow.waitFor();
    await ledgerRow.locator('[data-testid=node-shell]').click();
    await until('the ledger shell to open', async () => {
      const name = await page.evaluate(() => window.nodeshellConsole.sessionName());
      return name && name !== session ? name : null;
    });
    const ledgerSession = await page.evaluate(() => window.nodeshellConsole.sessionName());
    await until('a shell prompt', async () => (await terminalLines()).some((l) => /[$#] ?$/.test(l)));
    await run('true');
    await run('false');
    await run('echo ledger-done');
    await until('a line reading exactly "ledger-done"', async () => (await terminalLines()).includes('ledger-done'));
    await run('exit');
    await page.locator('[data-testid=closed-banner]').waitFor({ state: 'visible' });
    await screenshot('ledger-shell');

    step('search finds the failing command, and its hit opens the player at it');
    const origin = new URL(page.url()).origin;
    await page.goto(`${origin}/#/search?q=false&exit=failed`);
    const hit = page.locator(`[data-testid=search-hit][data-session="${ledgerSession}"]`);
    await until(`a hit in ${ledgerSession}`, async () => {
      if (await hit.count() > 0) return true;
      // The ledger is stored when the session closes: search again until it is there.
      await page.locator('[data-testid=search-submit]').click();
      await new Promise((resolve) => setTimeout(resolve, 500));
      return false;
    });
    if (await hit.count() !== 1) throw new Error(`${await hit.count()} hits in ${ledgerSession} for a failed "false"; want exactly one`);
    const hitCommand = (await hit.locator('[data-testid=hit-command]').textContent()).trim();
    if (hitCommand !== '$ false') throw new Error(`the hit's command reads ${JSON.stringify(hitCommand)}`);
    const hitExit = await hit.locator('[data-testid=hit-exit]').getAttribute('data-exit');
    if (hitExit !== '1') throw new Error(`the hit's exit status is ${JSON.stringify(hitExit)}, not 1`);
    await screenshot('search');
    await hit.locator('[data-testid=hit-open]').click();
    await page.locator('[data-testid=player-play]').waitFor({ state: 'visible' });
    if (!page.url().includes(`#/sessions/${ledgerSession}/replay?at=`)) throw new Error(`the hit opened ${page.url()}`);
    const current = page.locator('[data-testid=player-command][aria-current]');
    await current.waitFor({ state: 'visible' });
    const currentText = (await current.textContent()).trim();
    const currentExit = await current.getAttribute('data-exit');
    if (!currentText.includes('false') || currentExit !== '1') {
      throw new Error(`the player is at ${JSON.stringify(currentText)} (exit ${currentExit}), not the failing "false"`);
    }
    await screenshot('player-at-command');
    console.log(`LEDGER_SESSION ${ledgerSession}`);

    step('sign out: the console says so and the API no longer answers for this browser');
    await page.locator('[data-testid=sign-out]').click();
    await page.locator('[data-testid=signed-out]').waitFor({ state: 'visible' });
    const status = await page.evaluate(async () => (await fetch('/api/v1/whoami', { credentials: 'same-origin' })).status);
    if (status !== 401) throw new Error(`whoami after sign-out answered ${status}, not 401`);
    await screenshot('signed-out');
    console.log(`SESSION ${session}`);
  } catch (error) {
    if (page) await screenshot('failure').catch(() => {});
    throw error;
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(`console.test failed: ${error.stack || error}`);
  process.exit(1);
});
