// End-to-end test of the shoal web UI in headless Chromium.
//
// Two running daemons, A and B. In A's UI: share a file by path and read its
// ticket off the page. In B's UI: paste the ticket into the add-transfer form
// and wait (bounded) until the page shows the transfer complete, from live
// events only (the page is never reloaded). Also: API errors are shown next to
// the form that caused them, settings are saved and shown after a reload, the
// token is taken out of the address bar, a missing or wrong token gets a clear
// message, a lost event stream shows a banner and reconnects, and no tab
// overflows horizontally at 375 px.
//
// Input (environment):
//   SHOAL_UI_A, SHOAL_UI_B   http://127.0.0.1:PORT/#token=TOKEN of each daemon
//   SHOAL_E2E_FILE           absolute path of the file A shares
//   SHOAL_E2E_OUTPUT         absolute folder B downloads into
//   SHOAL_E2E_ARTIFACTS      folder for screenshots (created)
//   SHOAL_E2E_TIMEOUT_MS     wait for the download, default 60000
//   CHROMIUM                 browser binary, default /usr/bin/chromium
// Exit 0 when every check passed; 1 with "FAIL: <step>: <why>" otherwise.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const TOTAL_BUDGET_MS = 170_000;

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`FAIL: setup: environment variable ${name} is not set (see the header of e2e/ui.mjs)`);
    process.exit(1);
  }
  return v;
}

const urlA = need('SHOAL_UI_A');
const urlB = need('SHOAL_UI_B');
const file = need('SHOAL_E2E_FILE');
const output = need('SHOAL_E2E_OUTPUT');
const artifacts = need('SHOAL_E2E_ARTIFACTS');
const downloadTimeout = Number(process.env.SHOAL_E2E_TIMEOUT_MS || 60_000);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

fs.mkdirSync(artifacts, { recursive: true });

// A hung browser must not hang the test: the whole run is bounded.
const watchdog = setTimeout(() => {
  console.error(`FAIL: watchdog: the run took longer than ${TOTAL_BUDGET_MS / 1000} s`);
  process.exit(1);
}, TOTAL_BUDGET_MS);

let step = 'setup';
const log = (msg) => console.log(`[${(process.uptime()).toFixed(1)}s] ${msg}`);

class Failure extends Error {}
function check(cond, why) {
  if (!cond) throw new Failure(why);
}

const pageErrors = [];
function watch(page, label) {
  page.on('pageerror', (e) => pageErrors.push(`${label}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') log(`${label} console error: ${m.text()}`);
  });
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost' && u.protocol !== 'data:') {
      pageErrors.push(`${label}: the page requested ${r.url()}, outside the daemon (UI must work offline)`);
    }
  });
}

function base(url) {
  const u = new URL(url);
  return `${u.protocol}//${u.host}/`;
}

async function textOf(locator) {
  return (await locator.textContent())?.trim() ?? '';
}

// Polls fn() until it returns a truthy value or the deadline passes.
async function until(what, timeoutMs, fn) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Failure(`${what}: not within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function horizontalOverflow(page) {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    if (document.documentElement.scrollWidth <= width) return null;
    const culprits = [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > width + 0.5 && e.getClientRects().length)
      .slice(0, 5)
      .map((e) => `${e.tagName.toLowerCase()}${e.dataset.testid ? `[data-testid=${e.dataset.testid}]` : ''}`);
    return `scrollWidth ${document.documentElement.scrollWidth} > ${width}; too wide: ${culprits.join(', ')}`;
  });
}

const browser = await chromium.launch({
  executablePath,
  // Playwright gives every launch a fresh temporary profile (user-data-dir).
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  timeout: 30_000,
});

let pageA;
let pageB;
try {
  const ctxA = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const ctxB = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  ctxA.setDefaultTimeout(15_000);
  ctxB.setDefaultTimeout(15_000);
  // Reduced motion: the progress bar is drawn at its value, not mid-animation, in screenshots.
  pageA = await ctxA.newPage();
  pageB = await ctxB.newPage();
  await pageA.emulateMedia({ reducedMotion: 'reduce' });
  await pageB.emulateMedia({ reducedMotion: 'reduce' });
  watch(pageA, 'A');
  watch(pageB, 'B');

  step = 'open A';
  await pageA.goto(urlA);
  check(await pageA.evaluate(() => location.hash) === '', 'the token is still in the address bar after load');
  check(await pageA.evaluate(() => !!sessionStorage.getItem('shoal.token')), 'the token was not kept in sessionStorage');
  await until('A shows its peer id', 15_000, async () => (await textOf(pageA.getByTestId('status-peer-id'))).length > 10);
  await until('A says its event stream is live', 15_000, async () => (await textOf(pageA.getByTestId('connection-state'))) === 'live');
  log(`A peer id ${await textOf(pageA.getByTestId('status-peer-id'))}`);
  await pageA.screenshot({ path: path.join(artifacts, 'status-a.png'), fullPage: true });

  step = 'event-stream parser and formatting';
  const parsed = await pageA.evaluate(() => {
    const events = [];
    const feed = window.shoalUi.sseParser((name, data) => events.push([name, data]));
    // Chunk boundaries inside a line and between \r and \n; a comment; two data lines.
    feed('event: transfer\r\ndata: {"id":');
    feed('"x"}\r');
    feed('\n\r\n: keep-alive\n\nevent: error\ndata: a\ndata: b\n\ndata: plain\n\n');
    return events;
  });
  check(JSON.stringify(parsed) === JSON.stringify([['transfer', '{"id":"x"}'], ['error', 'a\nb'], ['message', 'plain']]),
    `the SSE parser gave ${JSON.stringify(parsed)}`);
  const formatted = await pageA.evaluate(() => {
    const u = window.shoalUi;
    return [u.fmtBytes(0), u.fmtBytes(1536), u.fmtBytes(50 * 1024 * 1024), u.fmtRate(null), u.fmtPercent(0.99999), u.fmtDuration(3725)];
  });
  check(JSON.stringify(formatted) === JSON.stringify(['0 B', '1.5 KiB', '50.0 MiB', 'unlimited', '99.9 %', '1 h 2 min']),
    `formatting gave ${JSON.stringify(formatted)}`);

  step = 'share error is shown by the form';
  await pageA.getByTestId('tab-shares').click();
  await pageA.getByTestId('share-path-input').fill('relative/not/absolute');
  await pageA.getByTestId('share-add-button').click();
  const shareErr = pageA.getByTestId('share-form-error');
  await shareErr.waitFor({ state: 'visible' });
  const shareErrText = await textOf(shareErr);
  check(/path/i.test(shareErrText), `the error under the share form does not name the path: "${shareErrText}"`);
  log(`share form error shown: ${shareErrText}`);

  step = 'share a file in A';
  await pageA.getByTestId('share-path-input').fill(file);
  await pageA.getByTestId('share-add-button').click();
  const shareItem = pageA.getByTestId('share-item').filter({ has: pageA.getByTestId('share-path').getByText(file, { exact: true }) });
  await shareItem.waitFor({ state: 'visible', timeout: 60_000 });
  check(await shareErr.isHidden(), 'the share form still shows the earlier error after a success');
  const ticket = await shareItem.getByTestId('share-ticket').inputValue();
  check(ticket.startsWith('shoal1'), `the ticket field holds "${ticket.slice(0, 40)}", not a shoal1 ticket`);
  check(await textOf(shareItem.getByTestId('share-name')) === path.basename(file), 'the share is not named after the file');
  log(`shared ${path.basename(file)} (${await textOf(shareItem.getByTestId('share-size'))}); ticket ${ticket.slice(0, 24)}…`);
  await shareItem.getByTestId('share-copy-button').click();
  await until('copy ticket gives feedback', 5_000, async () => (await textOf(shareItem.getByTestId('share-note'))).length > 0);

  step = 'open B';
  await pageB.goto(urlB);
  await until('B says its event stream is live', 15_000, async () => (await textOf(pageB.getByTestId('connection-state'))) === 'live');

  step = 'transfer error is shown by the form';
  await pageB.getByTestId('tab-transfers').click();
  await pageB.getByTestId('transfer-ticket-input').fill('shoal1notaticket');
  await pageB.getByTestId('transfer-output-input').fill(output);
  await pageB.getByTestId('transfer-add-button').click();
  const trErr = pageB.getByTestId('transfer-form-error');
  await trErr.waitFor({ state: 'visible' });
  log(`transfer form error shown: ${await textOf(trErr)}`);

  step = 'download in B';
  await pageB.getByTestId('transfer-ticket-input').fill(ticket);
  // Tickets carry no file name: without one the download is named by its id.
  await pageB.getByTestId('transfer-name-input').fill(path.basename(file));
  await pageB.getByTestId('transfer-add-button').click();
  const item = pageB.getByTestId('transfer-item').first();
  await item.waitFor({ state: 'visible' });
  check(await trErr.isHidden(), 'the transfer form still shows the earlier error after a success');
  const started = Date.now();
  await until('B shows the transfer at 100 %, seeding or completed', downloadTimeout, async () => {
    const st = await item.getByTestId('transfer-state').getAttribute('data-state');
    if (st === 'failed') throw new Failure(`the transfer failed: ${await textOf(item.getByTestId('transfer-error'))}`);
    const pct = await textOf(item.getByTestId('transfer-percent'));
    return (st === 'seeding' || st === 'completed') && pct === '100 %';
  });
  log(`B shows ${await textOf(item.getByTestId('transfer-name'))}: ${await textOf(item.getByTestId('transfer-state'))}, `
    + `${await textOf(item.getByTestId('transfer-bytes'))} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  check(await textOf(item.getByTestId('transfer-name')) === path.basename(file), 'the transfer is not named after the shared file');
  await item.getByTestId('transfer-peers').click(); // expands the peer list
  await pageB.screenshot({ path: path.join(artifacts, 'transfers-b.png'), fullPage: true });
  await pageA.screenshot({ path: path.join(artifacts, 'shares-a.png'), fullPage: true });

  step = 'settings are saved, applied and shown';
  await pageA.getByTestId('tab-settings').click();
  await until('A shows the settings in force', 10_000, async () => (await textOf(pageA.getByTestId('settings-saved-max-connections'))) !== '—');
  await pageA.getByTestId('settings-upload-input').fill('50');
  await pageA.getByTestId('settings-upload-unit').selectOption({ label: 'MiB/s' });
  await pageA.getByTestId('settings-save-button').click();
  await until('A shows the saved upload limit', 10_000, async () => (await textOf(pageA.getByTestId('settings-saved-upload'))) === '50.0 MiB/s');
  check(await pageA.getByTestId('settings-form-error').isHidden(), 'saving valid settings showed an error');
  await pageA.reload();
  await until('after a reload A is still signed in and shows the saved limit', 15_000, async () => (await pageA.getByTestId('settings-upload-input').inputValue()) === '50'
    && (await pageA.getByTestId('settings-upload-unit').inputValue()) === String(1024 * 1024));
  await pageA.getByTestId('settings-upload-input').fill('');
  await pageA.getByTestId('settings-save-button').click();
  await until('A shows the upload limit removed', 10_000, async () => (await textOf(pageA.getByTestId('settings-saved-upload'))) === 'unlimited');
  await pageA.getByTestId('settings-max-connections-input').fill('0');
  await pageA.getByTestId('settings-save-button').click();
  await pageA.getByTestId('settings-form-error').waitFor({ state: 'visible' });

  step = 'layout at 375 px';
  for (const [label, page] of [['A', pageA], ['B', pageB]]) {
    await page.setViewportSize({ width: 375, height: 812 });
    for (const tab of ['status', 'shares', 'transfers', 'peers', 'settings']) {
      await page.getByTestId(`tab-${tab}`).click();
      await page.getByTestId(`panel-${tab}`).waitFor({ state: 'visible' });
      const over = await horizontalOverflow(page);
      check(!over, `${label}'s ${tab} tab overflows horizontally at 375 px: ${over}`);
    }
  }
  await pageB.getByTestId('tab-transfers').click();
  await pageB.screenshot({ path: path.join(artifacts, 'transfers-b-375px.png'), fullPage: true });

  step = 'no token and a wrong token';
  const ctxC = await browser.newContext();
  const pageC = await ctxC.newPage();
  watch(pageC, 'C');
  await pageC.goto(base(urlA));
  await pageC.getByTestId('token-missing').waitFor({ state: 'visible' });
  check((await textOf(pageC.getByTestId('token-missing'))).includes('shoal ui'), 'the no-token message does not say to run shoal ui');
  await pageC.goto(`${base(urlA)}#token=${'0'.repeat(64)}`);
  await pageC.reload();
  await until('a wrong token is reported as refused', 10_000, async () => /refused/.test(await textOf(pageC.getByTestId('token-missing'))));
  check(await pageC.evaluate(() => location.hash) === '', 'a wrong token stays in the address bar');

  step = 'connection loss is shown and the stream reconnects';
  const ctxD = await browser.newContext();
  const pageD = await ctxD.newPage();
  watch(pageD, 'D');
  await ctxD.route('**/api/v1/events', (route) => route.abort('connectionreset'));
  await pageD.goto(urlA);
  const banner = pageD.getByTestId('connection-banner');
  await banner.waitFor({ state: 'visible' });
  check(/retrying/.test(await textOf(banner)), `the banner does not say it is retrying: "${await textOf(banner)}"`);
  await ctxD.unroute('**/api/v1/events');
  await banner.waitFor({ state: 'hidden', timeout: 20_000 });
  await until('D is live after the outage', 5_000, async () => (await textOf(pageD.getByTestId('connection-state'))) === 'live');

  check(pageErrors.length === 0, pageErrors.join('; '));
  step = 'done';
  log(`PASS: screenshots in ${artifacts}`);
} catch (e) {
  const why = e instanceof Failure ? e.message : (e && e.stack) || String(e);
  console.error(`FAIL: ${step}: ${why}`);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join('; ')}`);
  for (const [label, page] of [['a', pageA], ['b', pageB]]) {
    if (page) await page.screenshot({ path: path.join(artifacts, `failure-${label}.png`), fullPage: true }).catch(() => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
}
