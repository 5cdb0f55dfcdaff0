// End-to-end test of the shoal web UI in headless Chromium.
//
// Two running daemons, A and B. In A's UI: share a file by path (unlisted by
// default) and read its ticket off the page, then make the share private in its
// access panel. In B's UI: the plain ticket is refused (the transfer fails and
// says the share is private). In A's UI: create an invite for one use and copy
// its ticket. In B's UI: paste the invite ticket into the add-transfer form and
// wait (bounded) until the page shows the transfer complete, from live events
// only (the page is never reloaded). Then A's access panel shows the invite
// used up, B's peer id denied and allowed in the access log; revoking the
// invite shows it revoked; an invalid peer id for the allowlist gets the API's
// error next to the Allow button, B's peer id is allowed and removed again.
// Also: API errors are shown next to the form that caused them, settings are
// saved and shown after a reload, the token is taken out of the address bar
// and a new tab without it in its address is let in, a
// missing or wrong token gets a clear message, a lost event stream shows a
// banner and reconnects, and no tab overflows horizontally at 375 px (with an
// access panel open).
//
// Input (environment):
//   SHOAL_UI_A, SHOAL_UI_B   http://127.0.0.1:PORT/#token=TOKEN of each daemon
//   SHOAL_E2E_FILE           absolute path of the file A shares
//   SHOAL_E2E_FILE2          a second file A shares, picked in the folder browser
//                            (A's browse root is its folder)
//   SHOAL_E2E_FOLDER         a folder A shares by typing its path; B downloads it
//   SHOAL_E2E_FOLDER_FILES   its files, comma-separated relative paths in byte order
//   SHOAL_E2E_FOLDER_EMPTY   the one empty folder in it (a relative path)
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
const file2 = need('SHOAL_E2E_FILE2');
const folder = need('SHOAL_E2E_FOLDER');
// The folder's files, '/'-separated paths in byte order (a manifest's order).
const folderFiles = need('SHOAL_E2E_FOLDER_FILES').split(',');
const emptyFolder = need('SHOAL_E2E_FOLDER_EMPTY');
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
  // The invite's Copy button is checked against the clipboard.
  await ctxA.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(urlA).origin });
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
  check(await pageA.evaluate(() => !!localStorage.getItem('shoal.token')), 'the token was not kept in localStorage');
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

  step = 'share a file in A, unlisted by default';
  check(await pageA.getByTestId('share-visibility-select').inputValue() === 'unlisted',
    `the share form's visibility defaults to "${await pageA.getByTestId('share-visibility-select').inputValue()}", not unlisted`);
  await pageA.getByTestId('share-path-input').fill(file);
  await pageA.getByTestId('share-add-button').click();
  const shareItem = pageA.getByTestId('share-item').filter({ has: pageA.getByTestId('share-path').getByText(file, { exact: true }) });
  await shareItem.waitFor({ state: 'visible', timeout: 60_000 });
  check(await shareErr.isHidden(), 'the share form still shows the earlier error after a success');
  const ticket = await shareItem.getByTestId('share-ticket').inputValue();
  check(ticket.startsWith('shoal1'), `the ticket field holds "${ticket.slice(0, 40)}", not a shoal1 ticket`);
  check(await textOf(shareItem.getByTestId('share-name')) === path.basename(file), 'the share is not named after the file');
  log(`shared ${path.basename(file)} (${await textOf(shareItem.getByTestId('share-size'))}); ticket ${ticket.slice(0, 24)}…`);
  await until('the share shows the badge unlisted', 5_000, async () => (await textOf(shareItem.getByTestId('share-visibility'))) === 'unlisted');
  await shareItem.getByTestId('share-copy-button').click();
  await until('copy ticket gives feedback', 5_000, async () => (await textOf(shareItem.getByTestId('share-note'))).length > 0);

  step = 'open B';
  await pageB.goto(urlB);
  await until('B says its event stream is live', 15_000, async () => (await textOf(pageB.getByTestId('connection-state'))) === 'live');
  const peerB = await until('B shows its peer id on the status tab', 15_000, async () => {
    const t = await textOf(pageB.getByTestId('status-peer-id'));
    return t.length > 10 ? t : null;
  });
  log(`B peer id ${peerB}`);

  step = 'a new tab of A\'s browser needs no token in its address';
  // The page keeps the token in localStorage, and the daemon keeps its token
  // across restarts: new tabs, bookmarks and reloads work.
  const pageA2 = await ctxA.newPage();
  watch(pageA2, 'A2');
  await pageA2.goto(base(urlA));
  await until('the new tab\'s event stream is live', 15_000, async () => (await textOf(pageA2.getByTestId('connection-state'))) === 'live');
  check(await pageA2.getByTestId('token-missing').isHidden(), 'the new tab asks for a token');
  await pageA2.close();

  step = 'make the share private in A\'s access panel';
  const accessButton = shareItem.getByTestId('share-access-button');
  check(await accessButton.getAttribute('aria-expanded') === 'false', 'the Access button says its panel is open before a click');
  await accessButton.click();
  const panel = shareItem.getByTestId('share-access-panel');
  await panel.waitFor({ state: 'visible' });
  check(await accessButton.getAttribute('aria-expanded') === 'true', 'the Access button does not say its panel is open');
  check(await accessButton.getAttribute('aria-controls') === await panel.getAttribute('id'), 'the Access button does not name its panel in aria-controls');
  const policy = panel.getByTestId('access-visibility-select');
  check(await policy.inputValue() === 'unlisted', `the access panel's policy shows "${await policy.inputValue()}", not unlisted`);
  await until('the panel loaded (empty allowlist, no invites, empty log)', 10_000, async () => await panel.getByTestId('access-allow-empty').isVisible()
    && await panel.getByTestId('access-invites-empty').isVisible() && await panel.getByTestId('access-log-empty').isVisible());
  await policy.selectOption('private');
  await until('the share shows the badge private', 10_000, async () => (await textOf(shareItem.getByTestId('share-visibility'))) === 'private');
  await until('the policy switch says it was saved', 10_000, async () => /private/.test(await textOf(panel.getByTestId('access-visibility-note'))));
  check(await panel.getByTestId('access-visibility-error').isHidden(), `switching to private showed an error: ${await textOf(panel.getByTestId('access-visibility-error'))}`);
  check(await policy.inputValue() === 'private', 'the policy switch went back from private');

  step = 'transfer error is shown by the form';
  await pageB.getByTestId('tab-transfers').click();
  await pageB.getByTestId('transfer-ticket-input').fill('shoal1notaticket');
  await pageB.getByTestId('transfer-output-input').fill(output);
  await pageB.getByTestId('transfer-add-button').click();
  const trErr = pageB.getByTestId('transfer-form-error');
  await trErr.waitFor({ state: 'visible' });
  log(`transfer form error shown: ${await textOf(trErr)}`);

  step = 'B is refused the private share with its plain ticket';
  await pageB.getByTestId('transfer-ticket-input').fill(ticket);
  await pageB.getByTestId('transfer-add-button').click();
  const refused = pageB.getByTestId('transfer-item').first();
  await refused.waitFor({ state: 'visible' });
  check(await trErr.isHidden(), 'the transfer form still shows the earlier error after the download was added');
  await until('B shows the transfer failed', 30_000, async () => {
    const st = await refused.getByTestId('transfer-state').getAttribute('data-state');
    check(st !== 'seeding' && st !== 'completed', 'B downloaded the private share with the plain ticket');
    return st === 'failed';
  });
  const refusal = refused.getByTestId('transfer-error');
  await until('B\'s failed transfer shows an error', 5_000, async () => refusal.isVisible());
  const refusalText = await textOf(refusal);
  check(/private/i.test(refusalText), `B's failed transfer does not say that the share is private: "${refusalText}"`);
  check(await textOf(refused.getByTestId('transfer-state')) === 'failed', 'the failed transfer\'s state does not read "failed"');
  log(`B refused: ${refusalText}`);
  await refused.getByTestId('transfer-cancel').click();
  const cancelDialog = pageB.getByRole('dialog');
  await cancelDialog.waitFor({ state: 'visible' });
  await cancelDialog.getByRole('button', { name: 'Cancel download' }).click();
  await until('B removed the failed transfer', 10_000, async () => (await pageB.getByTestId('transfer-item').count()) === 0);

  step = 'create an invite for one use in A and copy its ticket';
  await panel.getByTestId('access-invite-uses').fill('1');
  await panel.getByTestId('access-invite-create').click();
  await panel.getByTestId('access-invite-new').waitFor({ state: 'visible' });
  check(await panel.getByTestId('access-invite-error').isHidden(), `creating an invite showed an error: ${await textOf(panel.getByTestId('access-invite-error'))}`);
  const inviteTicket = await panel.getByTestId('access-invite-ticket').inputValue();
  check(inviteTicket.startsWith('shoal1') && inviteTicket !== ticket, `the invite ticket field holds "${inviteTicket.slice(0, 40)}", not a new shoal1 ticket`);
  await panel.getByTestId('access-invite-copy').click();
  await until('Copy says the invite ticket was copied', 5_000, async () => (await textOf(panel.getByTestId('access-invite-note'))) === 'Copied.');
  const copied = await pageA.evaluate(() => navigator.clipboard.readText());
  check(copied === inviteTicket, `the clipboard holds "${copied.slice(0, 40)}", not the invite ticket`);
  const invite = panel.getByTestId('access-invite-item').first();
  await until('the invite is listed active, used 0 of 1', 10_000, async () => (await invite.getByTestId('access-invite-state').getAttribute('data-state')) === 'active'
    && (await textOf(invite.getByTestId('access-invite-uses'))) === 'uses 0/1');
  check(await panel.getByTestId('access-invite-item').count() === 1, 'one invite was created but the panel lists more');
  check(/^[0-9a-f]{8}$/.test(await textOf(invite.getByTestId('access-invite-id'))), 'the invite is not listed by its id prefix');
  check(await textOf(invite.getByTestId('access-invite-expiry')) === 'no expiry', 'an invite without expiry shows an expiry');
  check(await invite.getByTestId('access-invite-revoke').isVisible(), 'an active invite offers no Revoke button');
  log(`invite ${await textOf(invite.getByTestId('access-invite-id'))} created; ticket ${inviteTicket.slice(0, 24)}…`);

  step = 'download in B with the invite, slowed by a limit, paused and resumed';
  await pageB.getByTestId('transfer-ticket-input').fill(inviteTicket);
  // Tickets carry no file name: without one the download is named by its id.
  await pageB.getByTestId('transfer-name-input').fill(path.basename(file));
  // 256 KiB/s keeps a few MiB busy for seconds: time to pause it.
  await pageB.getByTestId('transfer-limit-input').fill('256');
  await pageB.getByTestId('transfer-limit-unit').selectOption({ label: 'KiB/s' });
  await pageB.getByTestId('transfer-add-button').click();
  const item = pageB.getByTestId('transfer-item').first();
  await item.waitFor({ state: 'visible' });
  check(await trErr.isHidden(), 'the transfer form still shows the earlier error after a success');
  const started = Date.now();
  const stateOf = () => item.getByTestId('transfer-state').getAttribute('data-state');
  await until('B shows the transfer downloading, with some bytes done', 20_000, async () => {
    const st = await stateOf();
    check(st !== 'seeding' && st !== 'completed', 'the transfer finished at once: its 256 KiB/s download limit was not applied');
    return st === 'downloading' && !(await textOf(item.getByTestId('transfer-bytes'))).startsWith('0 B');
  });
  check((await textOf(item.getByTestId('transfer-peers'))).includes('limit 256 KiB/s'), 'the transfer does not show its download limit');

  step = 'A shows B as a peer being served, with a rate, while B downloads';
  const servedB = shareItem.getByTestId('share-peer').filter({ has: pageA.getByTestId('share-peer-id').and(pageA.locator(`[title="${peerB}"]`)) });
  await until('A\'s share lists B being served at a non-zero rate', 20_000, async () => (await servedB.count()) > 0
    && Number(await servedB.first().getAttribute('data-up-rate')) > 0);
  log(`A serves B: ${await textOf(servedB.first())}`);
  check(/^↑ [1-9]/.test(await textOf(servedB.first().getByTestId('share-peer-rate'))), 'the served peer shows no upload rate');
  check(/127\.0\.0\.1/.test(await textOf(servedB.first().getByTestId('share-peer-address'))), 'the served peer shows no address');
  await until('A\'s status bar shows the upload', 10_000, async () => /^↑ [1-9]/.test(await textOf(pageA.getByTestId('bar-up'))));
  await until('A\'s tab title shows the upload rate', 10_000, async () => (await pageA.title()).includes('↑'));
  log(`A's status bar: ${await textOf(pageA.getByTestId('status-bar'))}; title "${await pageA.title()}"`);
  await item.getByTestId('transfer-pause').click();
  await until('B shows the transfer paused', 10_000, async () => (await stateOf()) === 'paused');
  check(await item.getByTestId('transfer-resume').isVisible(), 'a paused transfer offers no Resume button');
  check(await item.getByTestId('transfer-pause').isHidden(), 'a paused transfer still offers Pause');
  const pausedAt = await textOf(item.getByTestId('transfer-bytes'));
  log(`paused at ${pausedAt} (${await textOf(item.getByTestId('transfer-percent'))})`);
  await item.getByTestId('transfer-resume').click();
  await until('B shows the transfer running again', 10_000, async () => ['downloading', 'seeding', 'completed'].includes(await stateOf()));
  // Lift the limit through the transfer's own form, in its details.
  await item.getByTestId('transfer-details-button').click();
  await item.getByTestId('transfer-details').waitFor({ state: 'visible' });
  check(await item.getByTestId('transfer-details-button').getAttribute('aria-expanded') === 'true', 'the details button does not say its row is open');
  await item.getByTestId('transfer-item-limit-input').fill('');
  await item.getByTestId('transfer-item-limit-button').click();
  await until('the limit is lifted', 10_000, async () => !(await textOf(item.getByTestId('transfer-peers'))).includes('limit'));
  await until('B shows the transfer at 100 %, seeding or completed', downloadTimeout, async () => {
    const st = await item.getByTestId('transfer-state').getAttribute('data-state');
    if (st === 'failed') throw new Failure(`the transfer failed: ${await textOf(item.getByTestId('transfer-error'))}`);
    const pct = await textOf(item.getByTestId('transfer-percent'));
    return (st === 'seeding' || st === 'completed') && pct === '100 %';
  });
  log(`B shows ${await textOf(item.getByTestId('transfer-name'))}: ${await textOf(item.getByTestId('transfer-state'))}, `
    + `${await textOf(item.getByTestId('transfer-bytes'))} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  check(await textOf(item.getByTestId('transfer-name')) === path.basename(file), 'the transfer is not named after the shared file');
  step = 'B stops seeding and seeds again';
  await item.getByTestId('transfer-pause').click();
  await until('the transfer shows completed', 10_000, async () => (await stateOf()) === 'completed');
  check(await item.getByTestId('transfer-seed').isVisible(), 'a completed download offers no Seed button');
  await item.getByTestId('transfer-seed').click();
  await until('the transfer seeds again', 15_000, async () => (await stateOf()) === 'seeding');
  check(await item.getByTestId('transfer-seed').isHidden(), 'a seeding download still offers Seed');
  check((await textOf(item.getByTestId('transfer-pause'))) === 'Stop seeding', 'a seeding download does not offer Stop seeding');

  const doneToasts = pageB.getByTestId('toast').filter({ hasText: `Downloaded ${path.basename(file)}` });
  await until('B shows a notice that the download finished', 10_000, async () => (await doneToasts.count()) > 0);
  check(await doneToasts.count() === 1, `the finished download was announced ${await doneToasts.count()} times (seeding again is no news)`);
  await pageB.getByTestId('tab-log').click();
  await until('B\'s log tells the transfer finished', 5_000, async () => (await pageB.getByTestId('log-entry').filter({ hasText: `${path.basename(file)}: downloading → done, seeding` }).count()) > 0);
  await pageB.getByTestId('tab-transfers').click();

  // An honest seeder: no failed pieces reported, nobody marked banned.
  check(await item.getByTestId('transfer-trouble').isHidden(), `a clean transfer reports trouble: "${await textOf(item.getByTestId('transfer-trouble'))}"`);
  check((await item.getByTestId('transfer-peer-banned').count()) === 0, 'a clean transfer marks a peer banned');
  await pageB.screenshot({ path: path.join(artifacts, 'transfers-b.png'), fullPage: true });

  step = 'A\'s access panel shows the invite used up and B in the access log';
  // Invite uses and the log change without an event: the open panel polls.
  await until('the invite shows uses 1/1, used up', 20_000, async () => (await invite.getByTestId('access-invite-state').getAttribute('data-state')) === 'used_up'
    && (await textOf(invite.getByTestId('access-invite-uses'))) === 'uses 1/1');
  check(await textOf(invite.getByTestId('access-invite-state')) === 'used up', 'a used-up invite\'s state does not read "used up"');
  const rowsOfB = panel.getByTestId('access-log-row').filter({ has: pageA.getByTestId('access-log-peer').getByText(peerB, { exact: true }) });
  await until('the access log lists B denied and B allowed', 20_000, async () => (await rowsOfB.filter({ has: pageA.getByTestId('access-log-result').getByText('denied', { exact: true }) }).count()) > 0
    && (await rowsOfB.filter({ has: pageA.getByTestId('access-log-result').getByText('allowed', { exact: true }) }).count()) > 0);
  const allowedRow = rowsOfB.filter({ has: pageA.getByTestId('access-log-result').getByText('allowed', { exact: true }) }).first();
  const deniedRow = rowsOfB.filter({ has: pageA.getByTestId('access-log-result').getByText('denied', { exact: true }) }).first();
  log(`access log: B denied (${await textOf(deniedRow.getByTestId('access-log-reason'))}), `
    + `allowed (${await textOf(allowedRow.getByTestId('access-log-reason'))}, ${await textOf(allowedRow.getByTestId('access-log-bytes'))}) from ${await textOf(allowedRow.getByTestId('access-log-addr'))}`);
  check((await textOf(allowedRow.getByTestId('access-log-time'))).length > 0, 'an access-log row shows no time');
  await pageA.screenshot({ path: path.join(artifacts, 'shares-a.png'), fullPage: true });

  step = 'revoke the invite in A';
  await invite.getByTestId('access-invite-revoke').click();
  await until('the invite shows revoked', 10_000, async () => (await invite.getByTestId('access-invite-state').getAttribute('data-state')) === 'revoked');
  check(await invite.getByTestId('access-invite-revoke').isHidden(), 'a revoked invite still offers Revoke');
  check(await invite.getByTestId('access-invite-item-error').isHidden(), `revoking showed an error: ${await textOf(invite.getByTestId('access-invite-item-error'))}`);

  step = 'the allowlist: an invalid peer id is refused, B\'s is allowed and removed';
  const allowErr = panel.getByTestId('access-allow-error');
  await panel.getByTestId('access-allow-input').fill('not-a-peer-id');
  await panel.getByTestId('access-allow-button').click();
  await allowErr.waitFor({ state: 'visible' });
  const allowErrText = await textOf(allowErr);
  check(/not a peer id/.test(allowErrText) && allowErrText.includes('not-a-peer-id'), `the allowlist error is not the API's: "${allowErrText}"`);
  check(await panel.getByTestId('access-allow-input').getAttribute('aria-invalid') === 'true', 'the refused peer id is not marked invalid');
  log(`allowlist error shown: ${allowErrText}`);
  await panel.getByTestId('access-allow-input').fill(peerB);
  await panel.getByTestId('access-allow-button').click();
  const allowedB = panel.getByTestId('access-allow-item').filter({ has: pageA.getByTestId('access-allow-peer').getByText(peerB, { exact: true }) });
  await allowedB.waitFor({ state: 'visible', timeout: 10_000 });
  check(await allowErr.isHidden(), 'the allowlist still shows the earlier error after a success');
  check(await panel.getByTestId('access-allow-input').inputValue() === '', 'the allow input was not cleared');
  await allowedB.getByTestId('access-allow-remove').click();
  await allowedB.waitFor({ state: 'detached', timeout: 10_000 });
  await panel.getByTestId('access-allow-empty').waitFor({ state: 'visible', timeout: 5_000 });

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
  await pageA.getByRole('spinbutton', { name: /Stop seeding a download at ratio/ }).fill('2.5');
  await pageA.getByRole('spinbutton', { name: /Stop seeding a download after/ }).fill('48');
  await pageA.getByTestId('settings-save-button').click();
  await until('A shows the upload limit removed', 10_000, async () => (await textOf(pageA.getByTestId('settings-saved-upload'))) === 'unlimited');
  check(await textOf(pageA.getByTestId('settings-saved-seed-ratio')) === '2.5', `the seed ratio limit reads "${await textOf(pageA.getByTestId('settings-saved-seed-ratio'))}"`);
  check(await textOf(pageA.getByTestId('settings-saved-seed-time')) === '2 d 0 h', `the seed time limit reads "${await textOf(pageA.getByTestId('settings-saved-seed-time'))}"`);
  await pageA.getByRole('spinbutton', { name: /Stop seeding a download at ratio/ }).fill('');
  await pageA.getByRole('spinbutton', { name: /Stop seeding a download after/ }).fill('');
  await pageA.getByTestId('settings-save-button').click();
  await until('A shows no seed limits', 10_000, async () => (await textOf(pageA.getByTestId('settings-saved-seed-ratio'))) === 'never'
    && (await textOf(pageA.getByTestId('settings-saved-seed-time'))) === 'never');
  await pageA.getByTestId('settings-max-connections-input').fill('0');
  await pageA.getByTestId('settings-save-button').click();
  await pageA.getByTestId('settings-form-error').waitFor({ state: 'visible' });

  step = 'A shares a second file picked in the folder browser, with its QR code';
  await pageA.getByTestId('tab-shares').click();
  await pageA.getByRole('button', { name: 'Browse…' }).click();
  const browseDialog = pageA.getByRole('dialog', { name: 'Choose what to share' });
  await browseDialog.waitFor({ state: 'visible' });
  const pick = browseDialog.getByRole('button', { name: `Choose file ${path.basename(file2)}` });
  await pick.waitFor({ state: 'visible' });
  check(await textOf(browseDialog.getByTestId('browse-path')) === fs.realpathSync(path.dirname(file2)), `the browser opened at "${await textOf(browseDialog.getByTestId('browse-path'))}", not A's browse root`);
  check(await browseDialog.getByTestId('browse-up').isDisabled(), 'the browser offers to go above its root');
  await pick.click();
  await browseDialog.waitFor({ state: 'hidden' });
  check(await pageA.getByTestId('share-path-input').inputValue() === fs.realpathSync(file2), `the picked file did not land in the path field: ${await pageA.getByTestId('share-path-input').inputValue()}`);
  await pageA.getByTestId('share-visibility-select').selectOption('unlisted');
  await pageA.getByTestId('share-add-button').click();
  const share2 = pageA.getByTestId('share-item').filter({ has: pageA.getByTestId('share-name').getByText(path.basename(file2), { exact: true }) });
  await share2.waitFor({ state: 'visible', timeout: 60_000 });
  const ticket2 = await share2.getByTestId('share-ticket').inputValue();
  await share2.getByRole('button', { name: 'QR code' }).click();
  const qr = share2.getByRole('img', { name: /QR code of the ticket/ });
  await qr.waitFor({ state: 'visible' });
  await until('the QR code image is drawn', 10_000, async () => qr.evaluate((img) => img.complete && img.naturalWidth > 100));

  step = 'B takes a pasted ticket, downloads slowly, and the cancel dialog keeps the data';
  await pageB.getByTestId('tab-status').click();
  await pageB.evaluate((t) => {
    const dt = new DataTransfer();
    dt.setData('text/plain', t);
    document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
  }, ticket2);
  await pageB.getByTestId('panel-transfers').waitFor({ state: 'visible' });
  check(await pageB.getByTestId('transfer-ticket-input').inputValue() === ticket2, 'the pasted ticket is not in the download form');
  await pageB.getByTestId('transfer-name-input').fill(path.basename(file2));
  await pageB.getByTestId('transfer-limit-input').fill('128');
  await pageB.getByTestId('transfer-limit-unit').selectOption({ label: 'KiB/s' });
  await pageB.getByTestId('transfer-add-button').click();
  const slow = pageB.getByTestId('transfer-item').filter({ has: pageB.getByTestId('transfer-name').getByText(path.basename(file2), { exact: true }) });
  await until('B downloads the second file', 20_000, async () => (await slow.getByTestId('transfer-state').getAttribute('data-state')) === 'downloading'
    && !(await textOf(slow.getByTestId('transfer-bytes'))).startsWith('0 B'));

  step = 'the transfers table sorts, filters, searches and selects';
  // A content nobody has stays queued: a third row.
  const missing = 'ee'.repeat(32);
  await pageB.getByTestId('transfer-ticket-input').fill(missing);
  await pageB.getByTestId('transfer-name-input').fill('zz-missing.bin');
  await pageB.getByTestId('transfer-add-button').click();
  const names = async () => {
    const out = [];
    for (const row of await pageB.getByTestId('transfer-item').all()) {
      if (await row.isVisible()) out.push(await textOf(row.getByTestId('transfer-name')));
    }
    return out;
  };
  await until('B lists three transfers', 10_000, async () => (await names()).length === 3);
  const byName = [path.basename(file), path.basename(file2), 'zz-missing.bin'].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
  await pageB.getByRole('button', { name: 'Name' }).click();
  await until('sorted by name, ascending', 5_000, async () => JSON.stringify(await names()) === JSON.stringify(byName));
  check(await pageB.locator('th[data-sort="name"]').getAttribute('aria-sort') === 'ascending', 'the Name header does not say it sorts ascending');
  await pageB.getByRole('button', { name: 'Name' }).click();
  await until('sorted by name, descending', 5_000, async () => JSON.stringify(await names()) === JSON.stringify([...byName].reverse()));
  await pageB.getByRole('button', { name: 'Progress' }).click();
  await until('sorted by progress, the finished one first', 5_000, async () => (await names())[0] === path.basename(file));
  await pageB.getByRole('combobox', { name: 'Show transfers' }).selectOption('seeding');
  await until('only the seeding transfer is shown', 5_000, async () => JSON.stringify(await names()) === JSON.stringify([path.basename(file)]));
  await pageB.getByRole('combobox', { name: 'Show transfers' }).selectOption('active');
  await until('only the active transfers are shown', 5_000, async () => (await names()).sort().join() === [path.basename(file2), 'zz-missing.bin'].sort().join());
  await pageB.getByRole('combobox', { name: 'Show transfers' }).selectOption('all');
  await pageB.getByRole('searchbox', { name: 'Search transfers' }).fill('zz-miss');
  await until('the search shows one transfer', 5_000, async () => JSON.stringify(await names()) === JSON.stringify(['zz-missing.bin']));
  await pageB.getByRole('checkbox', { name: 'Select all shown transfers' }).check();
  await until('one selected', 5_000, async () => (await textOf(pageB.getByTestId('transfers-selected'))) === '1 selected');
  await pageB.getByRole('button', { name: 'Pause selected' }).click();
  const zz = pageB.getByTestId('transfer-item').filter({ has: pageB.getByTestId('transfer-name').getByText('zz-missing.bin', { exact: true }) });
  await until('the selected transfer is paused', 10_000, async () => (await zz.getByTestId('transfer-state').getAttribute('data-state')) === 'paused');
  await pageB.getByRole('button', { name: 'Remove selected…' }).click();
  await cancelDialog.waitFor({ state: 'visible' });
  await cancelDialog.getByRole('button', { name: 'Cancel download' }).click();
  await until('the selected transfer is gone', 10_000, async () => (await zz.count()) === 0);
  await pageB.getByRole('searchbox', { name: 'Search transfers' }).fill('');
  await until('two transfers are shown again', 5_000, async () => (await names()).length === 2);
  await pageB.screenshot({ path: path.join(artifacts, 'transfers-table-b.png'), fullPage: true });

  step = 'the cancel dialog: Keep it changes nothing, keeping the data keeps the partial file';
  const part = path.join(output, `${path.basename(file2)}.shoal-part`);
  await slow.getByTestId('transfer-cancel').click();
  await cancelDialog.waitFor({ state: 'visible' });
  check(/partly downloaded data is deleted/.test(await textOf(cancelDialog)), `the cancel dialog does not say what is deleted: "${await textOf(cancelDialog)}"`);
  await cancelDialog.getByRole('button', { name: 'Keep it' }).click();
  await cancelDialog.waitFor({ state: 'hidden' });
  check(await slow.count() === 1, 'Keep it cancelled the transfer');
  await slow.getByTestId('transfer-cancel').click();
  await cancelDialog.getByRole('checkbox', { name: /Keep the downloaded data/ }).check();
  await cancelDialog.getByRole('button', { name: 'Cancel download' }).click();
  await until('the cancelled transfer leaves the table', 10_000, async () => (await slow.count()) === 0);
  check(fs.existsSync(part), `the partial data ${part} was deleted although the dialog was told to keep it`);
  log(`cancelled ${path.basename(file2)} keeping ${fs.statSync(part).size} bytes of partial data`);

  step = 'a folder: A lists its files; B downloads it and shows each file, a ticket and its QR code';
  await pageA.getByTestId('tab-shares').click();
  await pageA.getByTestId('share-path-input').fill(folder);
  await pageA.getByTestId('share-visibility-select').selectOption('unlisted');
  await pageA.getByTestId('share-add-button').click();
  const folderName = path.basename(folder);
  const shareF = pageA.getByTestId('share-item').filter({ has: pageA.getByTestId('share-name').getByText(folderName, { exact: true }) });
  await shareF.waitFor({ state: 'visible', timeout: 60_000 });
  await shareF.getByRole('button', { name: 'Files' }).click();
  const rowPaths = async (scope) => scope.getByTestId('file-row').evaluateAll((rows) => rows.map((r) => r.dataset.path));
  await until('A lists the folder\'s files', 10_000, async () => JSON.stringify(await rowPaths(shareF)) === JSON.stringify(folderFiles));
  const folderRows = async (scope) => scope.getByTestId('folder-row').evaluateAll((rows) => rows.map((r) => r.dataset.path));
  check(JSON.stringify(await folderRows(shareF)) === JSON.stringify([emptyFolder]), `A does not list the empty folder ${emptyFolder}: ${JSON.stringify(await folderRows(shareF))}`);
  const ticketF = await shareF.getByTestId('share-ticket').inputValue();
  await pageB.getByTestId('tab-transfers').click();
  await pageB.getByTestId('transfer-ticket-input').fill(ticketF);
  await pageB.getByRole('button', { name: 'List files' }).click();
  const preview = pageB.getByRole('table', { name: 'Files of the ticket\'s folder' });
  await preview.waitFor({ state: 'visible', timeout: 30_000 });
  await until('B lists the ticket\'s files before downloading', 10_000, async () => JSON.stringify(await rowPaths(pageB.getByTestId('transfer-list-block'))) === JSON.stringify(folderFiles));
  check(JSON.stringify(await folderRows(pageB.getByTestId('transfer-list-block'))) === JSON.stringify([emptyFolder]), 'B\'s list of the ticket\'s files does not show the empty folder');
  check(!fs.existsSync(path.join(output, folderName)), 'listing the files created the folder');
  // The last file is left out: never created, shown as skipped.
  const left = folderFiles[folderFiles.length - 1];
  await pageB.getByRole('textbox', { name: /leave out files matching/ }).fill(left);
  await pageB.getByTestId('transfer-add-button').click();
  const fold = pageB.getByTestId('transfer-item').filter({ has: pageB.getByTestId('transfer-name').getByText(folderName, { exact: true }) });
  await until('B downloads the folder', 30_000, async () => ['seeding', 'completed'].includes(await fold.getByTestId('transfer-state').getAttribute('data-state')));
  await fold.getByRole('button', { name: folderName }).click();
  const table = fold.getByRole('table', { name: 'Files of the folder' });
  await table.waitFor({ state: 'visible' });
  await until('B shows every chosen file of the folder complete, the other skipped', 10_000, async () => {
    const rows = await fold.getByTestId('file-row').evaluateAll((rs) => rs.map((r) => [r.dataset.path, r.querySelector('[data-testid=file-here]').textContent]));
    return JSON.stringify(rows) === JSON.stringify(folderFiles.map((f) => [f, f === left ? 'skipped' : '100 %']));
  });
  check(!fs.existsSync(path.join(output, folderName, left)), `${left} was left out but created`);
  check(fs.statSync(path.join(output, folderName, emptyFolder), { throwIfNoEntry: false })?.isDirectory(), `the empty folder ${emptyFolder} was not made on B`);
  check(JSON.stringify(await folderRows(fold)) === JSON.stringify([emptyFolder]), 'B\'s file list of the transfer does not show the empty folder');
  // Each chosen file has a priority, set from its row (the daemon keeps it);
  // a file left out has none.
  const firstRow = fold.getByTestId('file-row').filter({ has: pageB.getByText(folderFiles[0], { exact: true }) });
  const prio = firstRow.getByRole('combobox', { name: `Priority of ${folderFiles[0]}` });
  check((await prio.inputValue()) === 'normal', `a file's priority is not normal at first: ${await prio.inputValue()}`);
  await prio.selectOption('high');
  await until('the file\'s new priority comes back from the daemon', 10_000, async () => (await firstRow.getAttribute('data-priority')) === 'high');
  const leftRow = fold.getByTestId('file-row').filter({ has: pageB.getByText(left, { exact: true }) });
  check((await leftRow.getByTestId('file-priority').count()) === 0, 'a file left out offers a priority');
  check((await textOf(fold.getByTestId('transfer-choice'))) === `not ${left}`, `the details do not say what was left out: "${await textOf(fold.getByTestId('transfer-choice'))}"`);
  const ticketB = await fold.getByTestId('transfer-ticket').inputValue();
  check(ticketB.startsWith('shoal1') && ticketB !== ticketF, `B's transfer offers no ticket of its own: "${ticketB}"`);
  await fold.getByRole('button', { name: 'QR code' }).click();
  const qrB = fold.getByRole('img', { name: /QR code of the ticket/ });
  await qrB.waitFor({ state: 'visible' });
  await until('the transfer\'s QR code image is drawn', 10_000, async () => qrB.evaluate((img) => img.complete && img.naturalWidth > 100));
  await pageB.screenshot({ path: path.join(artifacts, 'transfer-folder-b.png'), fullPage: true });
  log(`B downloaded the folder ${folderName} (${folderFiles.length} files) and lists them`);

  step = 'the theme switch';
  const bg = () => pageA.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const theme = pageA.getByTestId('theme-toggle');
  await theme.click();
  check(await textOf(theme) === 'Theme: light' && await pageA.evaluate(() => document.documentElement.dataset.theme) === 'light', 'the theme switch did not go to light');
  const light = await bg();
  await theme.click();
  check(await textOf(theme) === 'Theme: dark', 'the theme switch did not go to dark');
  const dark = await bg();
  check(light !== dark, `light and dark have the same background (${light})`);
  await pageA.screenshot({ path: path.join(artifacts, 'shares-a-dark.png'), fullPage: true });
  await theme.click();
  check(await textOf(theme) === 'Theme: auto', 'the theme switch did not come back to auto');

  step = 'every view at 1280 px';
  for (const [label, page] of [['a', pageA], ['b', pageB]]) {
    await page.setViewportSize({ width: 1280, height: 900 });
    for (const tab of ['status', 'shares', 'transfers', 'peers', 'settings', 'log']) {
      await page.getByTestId(`tab-${tab}`).click();
      await page.getByTestId(`panel-${tab}`).waitFor({ state: 'visible' });
      await page.screenshot({ path: path.join(artifacts, `${tab}-${label}-1280.png`), fullPage: true });
    }
  }
  check((await textOf(pageA.getByTestId('speed-graph-max'))).startsWith('top line:'), 'the speed graph was never drawn');

  step = 'layout at 375 px';
  // A's page was reloaded: open the access panel again, so it is measured too.
  await pageA.getByTestId('tab-shares').click();
  await accessButton.click();
  await until('the reopened access panel shows the log', 10_000, async () => (await panel.getByTestId('access-log-row').count()) > 0);
  for (const [label, page] of [['A', pageA], ['B', pageB]]) {
    await page.setViewportSize({ width: 375, height: 812 });
    for (const tab of ['status', 'shares', 'transfers', 'peers', 'settings', 'log']) {
      await page.getByTestId(`tab-${tab}`).click();
      await page.getByTestId(`panel-${tab}`).waitFor({ state: 'visible' });
      const over = await horizontalOverflow(page);
      check(!over, `${label}'s ${tab} tab overflows horizontally at 375 px: ${over}`);
      await page.screenshot({ path: path.join(artifacts, `${tab}-${label.toLowerCase()}-375.png`), fullPage: true });
    }
  }
  await pageB.getByTestId('tab-transfers').click();
  await pageB.screenshot({ path: path.join(artifacts, 'transfers-b-375px.png'), fullPage: true });
  await pageA.getByTestId('tab-shares').click();
  check(await panel.isVisible(), 'the access panel closed when the tab changed');
  check(await panel.getByTestId('access-log-table').isVisible(), 'the access log is not shown at 375 px');
  await pageA.screenshot({ path: path.join(artifacts, 'shares-a-375px.png'), fullPage: true });

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
