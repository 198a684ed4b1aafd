// Drives the web console in headless Chromium (Debian's, through playwright-core) against the
// server `console_browser.rs` started: a notification's link through the login, a canary
// watched live, a viewer without the approver's button and refused by the API, approve by
// keyboard, a failing gate, abort, roll back, logout. Screenshots of every page go to
// $ARTIFACTS; every page gets an axe scan (no serious or critical violation allowed).
// Exits non-zero with the reason on the first failed check.
'use strict';
const { chromium } = require('playwright-core');
const AxeBuilder = require('@axe-core/playwright').default;
const fs = require('fs');
const path = require('path');

const URL = process.env.EDGECD_URL;
const ART = process.env.ARTIFACTS;
const T = { approver: process.env.APPROVER_TOKEN, viewer: process.env.VIEWER_TOKEN, admin: process.env.ADMIN_TOKEN };
const A = process.env.ROLLOUT_A;
const SPEC_B = JSON.parse(process.env.SPEC_B);
const LONG = 120000;

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
  console.log('ok - ' + what);
}

const scans = [];
async function axe(page, name) {
  const r = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']).analyze();
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  scans.push({ page: name, violations: r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length })) });
  if (bad.length) {
    console.log(JSON.stringify(bad.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target) })), null, 2));
  }
  check(bad.length === 0, 'axe: no serious or critical violation on the ' + name + ' page (' + r.violations.length + ' minor)');
}
async function shot(page, name) {
  await page.screenshot({ path: path.join(ART, name + '.png'), fullPage: true });
  console.log('screenshot ' + name + '.png');
}
async function login(page, token) {
  await page.fill('#token', token);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
}
async function api(method, p, body) {
  const r = await fetch(URL + p, {
    method,
    headers: { Authorization: 'Bearer ' + T.admin, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json();
  if (!r.ok) throw new Error(method + ' ' + p + ': ' + r.status + ' ' + JSON.stringify(j));
  return j;
}
const phase = (page) => page.locator('#content .ph-completed, #content .ph-aborted, #content .ph-progressing, #content .ph-paused, #content .ph-awaiting_approval').first();

(async () => {
  fs.mkdirSync(ART, { recursive: true });
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  const problems = [];
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(String(e)));

  // A notification's link (the rollout's API URL) leads through the login to the rollout.
  await page.goto(URL + '/api/v1/admin/rollouts/' + A);
  check(new window_URL(page.url()).pathname === '/console/login', 'the notification link leads to the login page: ' + page.url());
  check(new window_URL(page.url()).searchParams.get('next') === '/console/rollouts/' + A, 'with next = the rollout page');
  await shot(page, 'login');
  await axe(page, 'login');
  await login(page, 'edt_not-a-token');
  check((await page.locator('#login-error').textContent()).includes('not valid'), 'a wrong token is refused with a clear message');
  await login(page, T.approver);
  check(new window_URL(page.url()).pathname === '/console/rollouts/' + A, 'after the login the browser is on the rollout page');
  const cookie = (await ctx.cookies()).find((c) => c.name === 'edgecd_session');
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict' && cookie.path === '/', 'the session cookie is HttpOnly, SameSite=Strict, Path=/');
  check(await page.evaluate(() => !document.cookie.includes('edgecd_session')), 'scripts cannot read the session cookie');
  const resp = await page.goto(URL + '/console/rollouts/' + A);
  const csp = resp.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), 'pages carry a strict Content-Security-Policy: ' + csp);

  // Watch the canary live (no reload): the page polls until the approval step.
  await page.waitForSelector('#content figure.chart svg', { timeout: LONG });
  check(true, 'the gate charts render (value, interval and threshold)');
  check(await page.locator('figure.chart line.threshold').count() > 0, 'the charts draw the thresholds');
  await page.waitForSelector('#content .ph-awaiting_approval', { timeout: LONG });
  check(true, 'the canary passed its gates and the rollout waits for approval, seen without reloading');
  await shot(page, 'rollout-awaiting-approval');
  await axe(page, 'rollout');

  // A viewer sees no approve (or abort) button, and the API refuses the approval.
  const vctx = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const vpage = await vctx.newPage();
  await vpage.goto(URL + '/console/rollouts/' + A);
  await login(vpage, T.viewer);
  await vpage.waitForSelector('#content .ph-awaiting_approval', { timeout: LONG });
  check(await vpage.locator('#act-approve').count() === 0, 'a viewer gets no Approve button');
  check(await vpage.locator('#act-abort').count() === 0 && await vpage.locator('#act-rollback').count() === 0, 'nor Abort or Roll back');
  check((await vpage.locator('#who').textContent()).includes('viewer'), 'the header names the viewer');
  const refused = await vpage.evaluate(async (id) => {
    const csrf = document.querySelector('meta[name=csrf-token]').content;
    const r = await fetch('/api/v1/admin/rollouts/' + id + '/approve', { method: 'POST', headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' }, body: '{}' });
    return { status: r.status, body: await r.text() };
  }, A);
  check(refused.status === 403 && refused.body.includes('needs role approver'), 'the API refuses the viewer\'s approval with its cookie: ' + refused.status + ' ' + refused.body);
  const noCsrf = await vpage.evaluate(async () => {
    const r = await fetch('/api/v1/admin/whoami', { method: 'GET' });
    return r.status;
  });
  check(noCsrf === 200, 'the viewer\'s reads work with the cookie');
  await shot(vpage, 'rollout-viewer-phone');
  await axe(vpage, 'rollout (viewer, phone)');
  await vctx.close();

  // Approve with the keyboard: focus the button, Enter, the dialog, Tab to Confirm, Enter.
  await page.focus('#act-approve');
  await page.keyboard.press('Enter');
  await page.waitForSelector('dialog#confirm[open]');
  check(await page.evaluate(() => document.activeElement.id) === 'confirm-cancel', 'the confirmation dialog opens with Cancel focused');
  await shot(page, 'rollout-confirm-approve');
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement.id) === 'confirm-ok', 'Tab reaches Confirm');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#content .ph-completed', { timeout: LONG });
  check(true, 'approved: the rollout completes, seen live');
  await shot(page, 'rollout-completed');

  // A bad release: the failing gate shows, then abort.
  const b = await api('POST', '/api/v1/admin/rollouts', { spec: SPEC_B });
  const B = b.rollout.id;
  await page.goto(URL + '/console/rollouts/' + B);
  await page.waitForSelector('#content .v-fail', { timeout: LONG });
  check(true, 'a failing gate shows on rollout ' + B);
  await page.waitForSelector('#content figure.chart circle.pt-fail', { timeout: LONG });
  check(true, 'its chart marks the failing evaluations');
  await shot(page, 'rollout-failing-gate');
  // The README's picture: the top of this page, at a laptop's size, a few evaluations on.
  await page.waitForFunction(() => document.querySelectorAll('figure.chart circle.pt-fail').length >= 4, null, { timeout: LONG });
  await page.setViewportSize({ width: 1100, height: 1400 });
  await page.screenshot({ path: path.join(ART, 'readme-rollout.png') });
  await page.setViewportSize({ width: 1280, height: 900 });
  // Meanwhile the fleet overview calls out the silent, incompatible Pi 4.
  const fpage = await ctx.newPage();
  fpage.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  await fpage.goto(URL + '/console/');
  await fpage.waitForSelector('#content .tiles', { timeout: LONG });
  await fpage.waitForFunction(() => [...document.querySelectorAll('#content .callout h2')].map((e) => e.textContent).join('|').includes('Offline devices'), null, { timeout: LONG });
  const callouts = await fpage.locator('#content .callout').allTextContents();
  check(callouts.some((c) => c.startsWith('Offline devices')), 'the fleet overview calls out the offline device');
  check(callouts.some((c) => c.startsWith('Incompatible devices') && c.includes('rpi4')), 'and the device the active rollout cannot reach, with why: ' + callouts.join(' | ').slice(0, 300));
  await shot(fpage, 'fleet-during-rollout');
  await axe(fpage, 'fleet (during a rollout)');
  await fpage.close();
  // Cancelling the confirmation (Escape) does nothing.
  await page.click('#act-abort');
  await page.waitForSelector('dialog#confirm[open]');
  await page.keyboard.press('Escape');
  await page.waitForSelector('dialog#confirm', { state: 'hidden' });
  check(await page.locator('#content .ph-progressing').count() === 1, 'a cancelled confirmation changes nothing');
  // Pause and resume.
  await page.click('#act-pause');
  await page.click('#confirm-ok');
  await page.waitForSelector('#content .ph-paused', { timeout: LONG });
  check(await page.locator('#act-resume').count() === 1 && await page.locator('#act-pause').count() === 0, 'paused from the console; Resume is offered instead of Pause');
  await page.click('#act-resume');
  await page.click('#confirm-ok');
  await page.waitForSelector('#content .ph-progressing', { timeout: LONG });
  check(true, 'resumed from the console');
  await page.click('#act-abort');
  await page.click('#confirm-ok');
  await page.waitForSelector('#content .ph-aborted', { timeout: LONG });
  check(true, 'aborted from the console');
  await shot(page, 'rollout-aborted');

  // Roll back the app to the first rollout's baseline.
  await page.goto(URL + '/console/rollouts/' + A);
  await page.waitForSelector('#act-rollback', { timeout: LONG });
  const label = await page.locator('#act-rollback').textContent();
  await page.click('#act-rollback');
  check((await page.locator('#confirm-text').textContent()).startsWith('Assign '), 'the rollback asks for confirmation: ' + label);
  await page.click('#confirm-ok');
  await page.waitForFunction(() => document.getElementById('status').textContent.includes(': done.'), null, { timeout: LONG });
  check(true, 'rolled back from the console: ' + label);

  // The other pages.
  await page.goto(URL + '/console/');
  await page.waitForSelector('#content .tiles', { timeout: LONG });
  check((await page.locator('h1').textContent()) === 'Fleet', 'the fleet overview');
  await shot(page, 'fleet');
  await axe(page, 'fleet');
  // A Pi 5 (not the silent Pi 4) from the devices table.
  const dev = await page.evaluate(() => {
    const rows = [...document.getElementById('h-devices').parentElement.querySelectorAll('tbody tr')];
    return rows.find((r) => !r.textContent.includes('offline')).querySelector('a').getAttribute('href');
  });
  await page.goto(URL + dev);
  await page.waitForSelector('#h-recent-logs', { timeout: LONG });
  check(await page.locator('#h-install-history').count() === 1 && await page.locator('#h-rollouts-that-included-it').count() === 1 && await page.locator('#h-metrics-last-hour-').count() === 1, 'the device page shows install history, its rollouts and metrics');
  const history = await page.locator('#h-install-history').locator('xpath=..').textContent();
  check(history.includes('assigned') && history.includes('committed') && history.includes('by rollout'), 'the install history lists assignments (by rollout) and reported outcomes');
  const logs = await page.locator('#h-recent-logs').locator('xpath=..').textContent();
  check(/not available|Fetch logs|No log lines/.test(logs), 'the recent logs panel renders: ' + logs.slice(0, 80));
  await shot(page, 'device');
  await axe(page, 'device');
  // A device with two apps: both releases in the fleet's devices table and on its own page.
  const TWO = process.env.TWO_APPS;
  await page.goto(URL + '/console/');
  await page.waitForSelector('#h-devices', { timeout: LONG });
  const twoRow = await page.evaluate((id) => {
    const rows = [...document.getElementById('h-devices').parentElement.querySelectorAll('tbody tr')];
    const r = rows.find((x) => x.textContent.includes(id));
    return r ? r.textContent : '';
  }, TWO);
  check(twoRow.includes('receipt-classifier@1.0.0') && twoRow.includes('receipt-detector@2.0.0'), 'the devices table shows every app a device runs: ' + twoRow.slice(0, 200));
  const byApp = await page.locator('#h-by-app').locator('xpath=..').textContent();
  check(byApp.includes('receipt-detector'), 'devices are counted under each app they run: ' + byApp.slice(0, 200));
  await page.goto(URL + '/console/devices/' + encodeURIComponent(TWO));
  await page.waitForSelector('#h-apps-on-this-device', { timeout: LONG });
  const appsCard = await page.locator('#h-apps-on-this-device').locator('xpath=..').textContent();
  check(appsCard.includes('receipt-classifier@1.0.0') && appsCard.includes('receipt-detector@2.0.0'), 'the device page lists each app with its release and state: ' + appsCard.slice(0, 200));
  await shot(page, 'device-two-apps');
  await axe(page, 'device with two apps');
  const rel = SPEC_B.release.replace(/@.*/, '@1.0.0');
  await page.goto(URL + '/console/releases/' + encodeURIComponent(rel));
  await page.waitForSelector('#h-sbom', { timeout: LONG });
  const relText = await page.locator('#content').textContent();
  check(relText.includes('Key id') && relText.includes('CycloneDX') && relText.includes('devices run it'), 'the release page shows signature, SBOM and where it runs');
  await shot(page, 'release');
  await axe(page, 'release');

  // Keyboard: the first Tab reaches the skip link.
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement.className) === 'skip', 'the first Tab reaches "Skip to content"');

  // Logout ends the session: the console sends the browser to the login again.
  await Promise.all([page.waitForNavigation(), page.click('form.logout button')]);
  check(new window_URL(page.url()).pathname === '/console/login', 'logged out');
  await page.goto(URL + '/console/');
  check(new window_URL(page.url()).pathname === '/console/login', 'after logout the console asks for the login again');

  const csp_errors = problems.filter((p) => /Content Security Policy|Refused to/.test(p));
  check(csp_errors.length === 0, 'no Content-Security-Policy violation in the browser: ' + csp_errors.join(' | '));
  fs.writeFileSync(path.join(ART, 'axe.json'), JSON.stringify(scans, null, 2));
  await browser.close();
  console.log('DONE');
})().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});

// Node's URL class (URL is the server's address here).
function window_URL(u) { return new globalThis.URL(u); }
