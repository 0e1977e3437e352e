// The dashboard in a real browser: Playwright (playwright-core from npm)
// driving Debian's Chromium, headless, against a real daemon that
// crates/cli/tests/dashboard.rs started. It logs in with the URL
// `hangar dashboard` printed, installs the demo feature from the catalog,
// creates an instance through the form generated from a feature's options,
// follows it to running, watches its log lines arrive, finds its events,
// stops and deletes it; then checks that a page from another origin and a
// request without the token are refused, that GraphiQL works, and that no
// request ever left the daemon's origin. A screenshot of each page goes to
// $HANGAR_SHOTS.
//
// Environment: HANGAR_PLAYWRIGHT (the playwright-core package directory),
// HANGAR_LOGIN_URL, HANGAR_SHOTS, HANGAR_CHROMIUM (default /usr/bin/chromium).
// Prints one JSON object (what it saw) on success; exits 1 with the reason
// otherwise.

import { createRequire } from 'node:module';
import http from 'node:http';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.HANGAR_PLAYWRIGHT);

const login = process.env.HANGAR_LOGIN_URL;
const shots = process.env.HANGAR_SHOTS;
const origin = new URL(login).origin;
const wsOrigin = origin.replace(/^http/, 'ws');
const seen = {};
const WAIT = 30000;

function check(cond, what) {
  if (!cond) throw new Error(what);
}

const browser = await chromium.launch({
  executablePath: process.env.HANGAR_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
    '--disable-gpu', '--no-first-run', '--disable-sync', '--disable-quic'],
});

// Every request the dashboard's pages make, and every error they log.
const foreign = [];
const problems = [];
function watch(page) {
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin + '/') && !u.startsWith(wsOrigin + '/') && !u.startsWith('data:')) foreign.push(u);
  });
  page.on('websocket', (ws) => {
    if (!ws.url().startsWith(wsOrigin + '/')) foreign.push(ws.url());
  });
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, name + '.png'), fullPage: true });
}

let exitCode = 0;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  watch(page);
  page.on('dialog', (d) => d.accept());

  // Log in: the URL sets the session cookie and lands on the dashboard.
  await page.goto(login);
  check(new URL(page.url()).pathname === '/', 'login did not land on / but ' + page.url());
  check(!page.url().includes('token='), 'the token stayed in the address bar');
  await page.locator('#daemon').filter({ hasText: /hangar .* pid \d+/ }).waitFor({ timeout: WAIT });
  const cookies = await ctx.cookies();
  const session = cookies.find((c) => c.name === 'hangar_session');
  check(session && session.httpOnly && session.sameSite === 'Strict', 'session cookie: ' + JSON.stringify(cookies));

  // Processes: the configured process, live.
  const talker = page.locator('tr[data-process="talker"]');
  await talker.locator('.badge', { hasText: 'running' }).first().waitFor({ timeout: WAIT });
  await page.locator('figure.chart-box svg.chart').first().waitFor({ timeout: WAIT });
  seen.charts = await page.locator('figure.chart-box').count();
  await shot(page, 'processes');

  // The keyboard alone reaches the catalog: Tab through the header, Enter.
  await page.locator('body').focus();
  let onCatalog = false;
  for (let i = 0; i < 12 && !onCatalog; i++) {
    await page.keyboard.press('Tab');
    onCatalog = await page.evaluate(() => document.activeElement && document.activeElement.textContent === 'Catalog');
  }
  check(onCatalog, 'Tab never reached the Catalog link');
  await page.keyboard.press('Enter');
  await page.waitForURL(/#\/catalog$/);

  // Catalog: install the demo feature.
  const demo = page.locator('article[data-feature="demo"]');
  await demo.waitFor({ timeout: WAIT });
  check(await demo.getByText('Not installed.').isVisible(), 'demo is installed already');
  await demo.getByRole('button', { name: /^Install / }).click();
  await demo.locator('.versions .badge', { hasText: 'current' }).waitFor({ timeout: WAIT });
  seen.installed = (await demo.locator('.versions li').first().textContent()).trim();
  await shot(page, 'catalog');

  // A form generated from democonf's options.
  await page.locator('article[data-feature="democonf"]').getByRole('link', { name: 'New instance' }).click();
  await page.waitForURL(/#\/instances\/new\?feature=democonf$/);
  await page.locator('#opt-greeting').waitFor({ timeout: WAIT });
  const kinds = await page.evaluate(() => ({
    style: document.getElementById('opt-style').tagName + ':' +
      [...document.getElementById('opt-style').options].map((o) => o.value).join(','),
    verbose: document.getElementById('opt-verbose').type + ':' + document.getElementById('opt-verbose').getAttribute('role'),
    token: document.getElementById('opt-token').type,
    admin_port: document.getElementById('opt-admin_port').type + ':' + document.getElementById('opt-admin_port').min +
      '-' + document.getElementById('opt-admin_port').max,
    workers: document.getElementById('opt-workers').type,
  }));
  seen.form = kinds;
  check(kinds.style === 'SELECT:plain,fancy', 'enum: ' + kinds.style);
  check(kinds.verbose === 'checkbox:switch', 'boolean: ' + kinds.verbose);
  check(kinds.token === 'password', 'secret: ' + kinds.token);
  check(kinds.admin_port === 'number:1-65535', 'port: ' + kinds.admin_port);
  // A port out of range is refused in the form: nothing is sent.
  await page.fill('#name', 'conf1');
  await page.fill('#opt-admin_port', '70000');
  await page.getByRole('button', { name: 'Create' }).click();
  check(await page.evaluate(() => !document.getElementById('opt-admin_port').validity.valid),
    'port 70000 was accepted by the form');
  check(/#\/instances\/new/.test(page.url()), 'the form was sent with a bad port');
  await page.fill('#opt-admin_port', '');
  await page.selectOption('#opt-style', 'fancy');
  await page.check('#opt-verbose');
  await page.fill('#opt-token', 'hunter2-never-shown');
  await page.fill('#opt-greeting', 'hello from the browser');
  await shot(page, 'instance-form');
  await page.getByRole('button', { name: 'Create' }).click();

  // Its page: progress, then every step done and running.
  await page.waitForURL(/#\/instances\/conf1$/, { timeout: WAIT });
  await page.locator('.progress-box[data-status]').waitFor({ timeout: WAIT });
  await page.locator('.card .badge.s-running').first().waitFor({ timeout: 60000 });
  await page.locator('.steps .step.done').nth(5).waitFor({ timeout: WAIT });
  seen.progress = await page.locator('.progress-box .status').textContent();
  seen.steps = await page.locator('.steps .step').allTextContents();
  const config = await page.locator('pre.code[aria-label="Config file"]').textContent();
  check(config.includes('greeting hello from the browser'), 'config: ' + config);
  check(config.includes('********') && !config.includes('hunter2'), 'the secret was not masked: ' + config);
  check(!(await page.content()).includes('hunter2'), 'the secret is somewhere in the page');
  await shot(page, 'instance');

  // Its process's output: the lines so far, then a new one as it is written.
  await page.goto(origin + '/#/processes');
  const row = page.locator('tr[data-process="democonf.conf1"]');
  await row.waitFor({ timeout: WAIT });
  const port = Number((await row.locator('td').nth(3).textContent()).match(/http:(\d+)/)[1]);
  await row.getByRole('button', { name: 'Logs' }).click();
  const log = page.locator('pre.log');
  await log.getByText(/hangar-demo 1\.1\.0 starting/).waitFor({ timeout: WAIT });
  const probe = '/from-the-browser-test-' + Date.now();
  await fetch(`http://127.0.0.1:${port}${probe}`).catch(() => {});
  await log.getByText(probe).first().waitFor({ timeout: WAIT });
  seen.log_lines = await log.locator('.line').count();
  await shot(page, 'logs');

  // Events: the instance's, by a name filter.
  await page.goto(origin + '/#/events');
  await page.fill('#ev-name', 'conf1');
  // The list is drawn again once the filter settles: only conf1's rows.
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('tbody tr[data-event] th')];
    return rows.length > 0 && rows.every((r) => r.textContent === 'conf1');
  }, null, { timeout: WAIT });
  const names = await page.locator('tbody tr[data-event] th').allTextContents();
  check(names.length > 0 && names.every((n) => n === 'conf1'), 'filter: ' + names.join(','));
  seen.events = names.length;
  await shot(page, 'events');

  // Stop it, then delete it.
  await page.goto(origin + '/#/instances/conf1');
  await page.getByRole('button', { name: 'Stop' }).click();
  await page.locator('.card .badge.s-stopped').first().waitFor({ timeout: WAIT });
  await page.getByRole('button', { name: 'Delete' }).click();
  await page.waitForURL(/#\/instances$/, { timeout: WAIT });
  await page.getByText('No instances yet').waitFor({ timeout: WAIT });

  // A phone's width: nothing wider than the screen but the tables' own scroll.
  const phone = await ctx.newPage();
  watch(phone);
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(origin + '/#/processes');
  await phone.locator('tr[data-process="talker"]').waitFor({ timeout: WAIT });
  seen.phone_width = await phone.evaluate(() => document.documentElement.scrollWidth);
  check(seen.phone_width <= 390, 'the page is ' + seen.phone_width + 'px wide on a 390px screen');
  await shot(phone, 'processes-phone');
  await phone.close();

  // GraphiQL, from the vendored bundles, runs a query.
  await page.goto(origin + '/graphiql');
  await page.locator('.graphiql-container').waitFor({ timeout: WAIT });
  await page.locator('.graphiql-execute-button').click();
  await page.locator('.result-window').getByText('lastEventId').waitFor({ timeout: WAIT });
  await shot(page, 'graphiql');

  // A page from another origin (another port of 127.0.0.1: the same site,
  // so the browser sends the session cookie) tries a mutation: refused.
  const evil = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>elsewhere</title>');
  });
  await new Promise((r) => evil.listen(0, '127.0.0.1', r));
  const evilUrl = `http://127.0.0.1:${evil.address().port}/`;
  const other = await ctx.newPage();
  await other.goto(evilUrl);
  const attempt = await other.evaluate(async (target) => {
    try {
      await fetch(target + '/graphql', {
        method: 'POST', mode: 'no-cors', credentials: 'include',
        headers: { 'content-type': 'text/plain' },
        body: JSON.stringify({ query: 'mutation { stopProcesses(pattern: "*") { names } }' }),
      });
      return 'sent';
    } catch (e) {
      return 'failed: ' + e.message;
    }
  }, origin);
  await other.close();
  evil.close();
  // What the daemon answered such a request, cookie and all:
  const refused = await ctx.request.post(origin + '/graphql', {
    headers: { origin: evilUrl.replace(/\/$/, ''), 'content-type': 'application/json' },
    data: { query: 'mutation { stopProcesses(pattern: "*") { names } }' },
  });
  const refusedBody = await refused.json();
  seen.foreign_origin = { attempt, status: refused.status(), code: refusedBody.errors[0].extensions.code };
  check(refused.status() === 403 && seen.foreign_origin.code === 'FOREIGN_ORIGIN',
    'foreign origin: ' + JSON.stringify(seen.foreign_origin));

  // Without the token or a session: refused, and the page says how to log in.
  const anon = await browser.newContext();
  const none = await anon.request.post(origin + '/graphql', {
    data: { query: 'mutation { stopProcesses(pattern: "*") { names } }' },
  });
  const noneBody = await none.json();
  seen.no_token = { status: none.status(), code: noneBody.errors[0].extensions.code };
  check(none.status() === 401 && seen.no_token.code === 'UNAUTHENTICATED', 'no token: ' + JSON.stringify(seen.no_token));
  const anonPage = await anon.newPage();
  await anonPage.goto(origin + '/');
  await anonPage.getByRole('heading', { name: 'Log in' }).waitFor({ timeout: WAIT });
  await shot(anonPage, 'login');
  await anon.close();

  // The refused mutations stopped nothing.
  await page.goto(origin + '/#/processes');
  await page.locator('tr[data-process="talker"] .badge', { hasText: 'running' }).first().waitFor({ timeout: WAIT });

  check(foreign.length === 0, 'requests left the origin: ' + foreign.join(', '));
  check(problems.length === 0, 'the pages logged errors: ' + problems.join(' | '));
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  console.error('seen so far: ' + JSON.stringify(seen));
  if (problems.length) console.error('page errors: ' + problems.join(' | '));
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
