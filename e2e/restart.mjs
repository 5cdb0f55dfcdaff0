// The web UI across a daemon restart, in headless Chromium: the page opened
// once with the token keeps working when the daemon is stopped and started
// again on the same address (the daemon keeps its token, the page keeps it in
// localStorage), and a bookmark of the bare address opens without a token.
//
// Protocol with the test that runs it (crates/shoal/tests/web_ui.rs): the
// script prints "READY" on stdout once the page is live, then waits for a line
// "RESTARTED" on stdin, then checks the page came back by itself.
//
// Input (environment):
//   SHOAL_UI               http://127.0.0.1:PORT/#token=TOKEN
//   SHOAL_E2E_SHARE        the name of a file the daemon shares (shown after the restart)
//   SHOAL_E2E_ARTIFACTS    folder for screenshots (created)
//   CHROMIUM               browser binary, default /usr/bin/chromium
// Exit 0 when every check passed; 1 with "FAIL: <step>: <why>" otherwise.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const TOTAL_BUDGET_MS = 100_000;

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`FAIL: setup: environment variable ${name} is not set (see the header of e2e/restart.mjs)`);
    process.exit(1);
  }
  return v;
}

const url = need('SHOAL_UI');
const shareName = need('SHOAL_E2E_SHARE');
const artifacts = need('SHOAL_E2E_ARTIFACTS');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
fs.mkdirSync(artifacts, { recursive: true });

const watchdog = setTimeout(() => {
  console.error(`FAIL: watchdog: the run took longer than ${TOTAL_BUDGET_MS / 1000} s`);
  process.exit(1);
}, TOTAL_BUDGET_MS);

let step = 'setup';
class Failure extends Error {}
function check(cond, why) {
  if (!cond) throw new Failure(why);
}
async function textOf(locator) {
  return (await locator.textContent())?.trim() ?? '';
}
async function until(what, timeoutMs, fn) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Failure(`${what}: not within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Lines from the test, one at a time.
const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
const received = [];
lines.on('line', (l) => {
  const w = waiting.shift();
  if (w) w(l); else received.push(l);
});
function nextLine(timeoutMs) {
  if (received.length) return Promise.resolve(received.shift());
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Failure(`no line from the test within ${timeoutMs / 1000} s`)), timeoutMs);
    waiting.push((l) => { clearTimeout(t); resolve(l); });
  });
}

const browser = await chromium.launch({
  executablePath,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  timeout: 30_000,
});

let code = 0;
try {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await ctx.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(`uncaught ${e.message}`));
  const live = async () => (await textOf(page.getByTestId('connection-state'))) === 'live';

  step = 'open the UI with the token';
  await page.goto(url);
  await until('the event stream is live', 15_000, live);
  await page.getByTestId('tab-shares').click();
  await until(`the share ${shareName} is listed`, 10_000, async () => (await page.getByTestId('share-item').filter({ hasText: shareName }).count()) > 0);
  console.log('READY');

  step = 'the daemon restarts';
  const said = await nextLine(60_000);
  check(said === 'RESTARTED', `the test said ${JSON.stringify(said)}, not RESTARTED`);

  step = 'the open page comes back by itself';
  await until('the page is live again', 30_000, live);
  check(await page.getByTestId('token-missing').isHidden(), 'the page asks for a token after the restart');
  // A request made after the restart goes through with the kept token.
  await page.getByTestId('tab-status').click();
  await until('the status tab shows the peer id', 10_000, async () => (await textOf(page.getByTestId('status-peer-id'))).length > 10);
  await page.getByTestId('tab-shares').click();
  await until(`the share ${shareName} is still listed`, 10_000, async () => (await page.getByTestId('share-item').filter({ hasText: shareName }).count()) > 0);
  await page.screenshot({ path: path.join(artifacts, 'after-restart.png'), fullPage: true });

  step = 'a bookmark of the bare address opens without a token';
  const u = new URL(url);
  const bookmark = await ctx.newPage();
  await bookmark.goto(`${u.protocol}//${u.host}/`);
  await until('the bookmarked page is live', 15_000, async () => (await textOf(bookmark.getByTestId('connection-state'))) === 'live');
  check(await bookmark.getByTestId('token-missing').isHidden(), 'the bookmarked page asks for a token');
  check(pageErrors.length === 0, `page errors: ${pageErrors.join('; ')}`);
  console.log('PASS');
} catch (e) {
  console.error(`FAIL: ${step}: ${e instanceof Failure ? e.message : e.stack || e}`);
  code = 1;
} finally {
  clearTimeout(watchdog);
  lines.close();
  await browser.close().catch(() => {});
}
process.exit(code);
