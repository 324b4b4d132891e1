// Drives qbridge's dashboard in headless Chromium (puppeteer-core over the Debian binary) and
// checks what an operator relies on: a wrong password gets 401 and no data; the overview
// shows traffic and the bridge connected; the bridge can be disabled and enabled again from
// the page; client ids and topics are shown as text, never as markup; the client search
// works; secrets are masked; the page notices the appliance going away and coming back.
// Saves a screenshot of each page.
//
//   node dashboard.mjs --url http://127.0.0.1:PORT/dashboard/ --user U --password P
//     --chromium /usr/bin/chromium --shots DIR --stop SCRIPT --start SCRIPT
//     --evil-id ID --evil-topic T
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../interop/package.json', import.meta.url));
const puppeteer = require('puppeteer-core');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const k of ['url', 'user', 'password', 'chromium', 'shots', 'stop', 'start', 'evil-id', 'evil-topic']) {
  if (!args[k]) throw new Error(`missing --${k}`);
}
const base = new URL(args.url);
const origin = base.origin;

let step = '';
function log(s) {
  step = s;
  console.log(`dashboard: ${s}`);
}
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// A click in one step: the page redraws its cards every poll, and a press that straddles a
// redraw would be lost (puppeteer's page.click moves, presses and releases separately).
async function click(p, selector) {
  await p.waitForSelector(selector, { timeout: 30_000 });
  await p.$eval(selector, (b) => b.click());
}

const auth = (user, pass) => ({ Authorization: `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}` });

async function rest(p, pass = args.password) {
  const res = await fetch(`${origin}${p}`, { headers: auth(args.user, pass) });
  return { status: res.status, text: await res.text() };
}

const browser = await puppeteer.launch({
  executablePath: args.chromium,
  headless: true,
  // Root in CI: Chromium's sandbox needs an unprivileged user namespace it may not get.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1280,900'],
  defaultViewport: { width: 1280, height: 900 },
});
const timeout = 30_000;
let page;
try {
  // --- a wrong password -------------------------------------------------------------------
  log('a wrong password gets 401 and no data');
  {
    const bad = await rest('/api/v4/bridges', 'wrong');
    check(bad.status === 401, `REST with a wrong password: status ${bad.status}`);
    check(!bad.text.includes('cloud'), 'a 401 body names no bridge');
    const p = await browser.newPage();
    await p.authenticate({ username: args.user, password: 'wrong' });
    const res = await p.goto(args.url, { waitUntil: 'domcontentloaded', timeout });
    check(res.status() === 401, `the dashboard with a wrong password: status ${res.status()}`);
    const text = await p.evaluate(() => document.body.innerText);
    check(!text.includes('cloud') && !text.includes('Overview'), 'the 401 page shows nothing of the appliance');
    const files = await rest('/dashboard/app.js', 'wrong');
    check(files.status === 401, 'the dashboard files need the password too');
    await p.close();
  }

  // --- overview -----------------------------------------------------------------------------
  log('log in; the overview shows traffic and the bridge connected');
  page = await browser.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`); });
  await page.authenticate({ username: args.user, password: args.password });
  const res = await page.goto(`${args.url}#overview`, { waitUntil: 'load', timeout });
  check(res.status() === 200, `dashboard status ${res.status()}`);
  await page.waitForFunction(() => {
    const v = document.getElementById('rate-in');
    return v && Number(v.textContent.replace(/,/g, '')) > 0;
  }, { timeout });
  await page.waitForFunction(() => document.getElementById('bridges-up')?.textContent === '1 / 1', { timeout });
  check((await page.$eval('#link', (e) => e.className)).includes('up'), 'the link shows up');
  // Enough samples for a line, then the picture.
  await page.waitForFunction(() => document.querySelectorAll('#chart-total canvas').length > 0, { timeout });
  await new Promise((r) => setTimeout(r, 8000));
  const rateOut = await page.$eval('#rate-out', (e) => Number(e.textContent.replace(/,/g, '')));
  check(rateOut > 0, `messages out per second: ${rateOut}`);
  await page.screenshot({ path: path.join(args.shots, 'dashboard-overview.png'), fullPage: true });

  // --- bridges: disable, then enable, from the page -------------------------------------------
  log('bridges: the bridge is connected; disable it and enable it again from the page');
  await page.goto(`${args.url}#bridges`, { waitUntil: 'load', timeout });
  const card = '.bridge[data-bridge="cloud"]';
  await page.waitForSelector(`${card} .state[data-state="connected"]`, { timeout });
  await page.waitForFunction((c) => document.querySelector(`${c}`)?.textContent.includes('PINGRESP RTT'), { timeout }, card);
  // The forward rules, opened, with the topic that is HTML among them.
  await page.waitForSelector(`${card} table.rules`, { timeout });
  await click(page, `${card} details:not([open]) summary`);
  const topics = await page.$$eval(`${card} td.topic`, (tds) => tds.map((td) => td.textContent));
  check(topics.includes(args['evil-topic']), `the HTML topic is shown as written: ${JSON.stringify(topics)}`);
  const bridgeMarkup = await page.evaluate(() => document.querySelectorAll('#page-bridges img, #page-bridges script').length);
  check(bridgeMarkup === 0, 'no markup from a topic on the bridges page');
  await new Promise((r) => setTimeout(r, 2500));  // one more poll: the open rules stay open
  check(await page.$eval(`${card} table.rules`, (t) => t.closest('details').open), 'the rules stay open across polls');
  await page.screenshot({ path: path.join(args.shots, 'dashboard-bridges.png'), fullPage: true });
  await click(page, `${card} button[data-action="switch"]`);
  await page.waitForSelector(`${card} button[data-action="confirm"]`, { timeout });
  await new Promise((r) => setTimeout(r, 2500));  // a poll: the question stays
  let now = JSON.parse((await rest('/api/v4/bridges/cloud')).text).data;
  check(now.enable === true, 'asking for confirmation changes nothing yet');
  await click(page, `${card} button[data-action="confirm"]`);
  await page.waitForFunction((c) => document.querySelector(`${c} .state`)?.textContent === 'disabled', { timeout }, card);
  now = JSON.parse((await rest('/api/v4/bridges/cloud')).text).data;
  check(now.enable === false, 'REST agrees the bridge is disabled');
  await click(page, `${card} button[data-action="switch"]`);
  await click(page, `${card} button[data-action="confirm"]`);
  await page.waitForSelector(`${card} .state[data-state="connected"]`, { timeout });
  now = JSON.parse((await rest('/api/v4/bridges/cloud')).text).data;
  check(now.enable === true && now.connected === true, 'REST agrees the bridge is back');
  // Newest first: the reconnect, the switch on, the close the switch off caused, the switch
  // off, and the first connect.
  await page.waitForFunction((c) => document.querySelectorAll(`${c} .events li`).length >= 5, { timeout }, card);
  const events = await page.$$eval(`${card} .events li`, (lis) => lis.map((li) => li.textContent.replace(/^.* ago: /, '')));
  check(JSON.stringify(events) === JSON.stringify(['connected', 'enabled', 'down: disabled', 'disabled', 'connected']),
    `the events tell the story: ${JSON.stringify(events)}`);

  // --- clients: paging, search, escaping ------------------------------------------------------
  log('clients: a client id that is HTML is shown as text');
  await page.goto(`${args.url}#clients`, { waitUntil: 'load', timeout });
  await page.waitForFunction((id) => [...document.querySelectorAll('#clients td.client-id')]
    .some((td) => td.textContent === id), { timeout }, args['evil-id']);
  const injected = await page.evaluate(() => ({
    markup: document.querySelectorAll('#clients tbody img, #clients tbody script').length,
    xss: window.__xss,
  }));
  check(injected.markup === 0 && injected.xss === undefined, `no markup from a client id: ${JSON.stringify(injected)}`);
  const rows = await page.$$eval('#clients tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  check(rows.some((r) => r[2] === 'TCP') && rows.some((r) => r[2] === 'QUIC'), `both transports listed: ${JSON.stringify(rows)}`);
  await page.type('#client-search', 'EVIL-dev');
  await page.waitForFunction(() => document.querySelectorAll('#clients tbody tr').length === 1 &&
    document.getElementById('client-count').textContent.startsWith('1 matching'), { timeout });
  await page.click('#client-search', { clickCount: 3 });
  await page.keyboard.press('Backspace');
  await page.waitForFunction(() => document.querySelectorAll('#clients tbody tr').length >= 3, { timeout });
  await page.screenshot({ path: path.join(args.shots, 'dashboard-clients.png'), fullPage: true });

  // --- config: secrets masked, topics as text -------------------------------------------------
  log('config: secrets masked, a topic that is HTML shown as text');
  await page.goto(`${args.url}#config`, { waitUntil: 'load', timeout });
  await page.waitForFunction(() => document.getElementById('config-toml').textContent.includes('[bridges'), { timeout });
  const cfg = await page.evaluate(() => ({
    toml: document.getElementById('config-toml').textContent,
    check: document.getElementById('config-check').textContent,
    markup: document.querySelectorAll('#page-config img, #page-config script').length,
    xss: window.__xss,
  }));
  check(cfg.check.includes('OK ('), `the check-config verdict: ${cfg.check}`);
  check(cfg.toml.includes(args['evil-topic']), 'the HTML topic is shown as written');
  check(cfg.markup === 0 && cfg.xss === undefined, `no markup from a topic: ${JSON.stringify(cfg)}`);
  const passwords = cfg.toml.split('\n').filter((l) => /password\s*=/.test(l));
  check(passwords.length === 2 && passwords.every((l) => /= '\*+'$/.test(l.trim())),
    `both passwords (REST's, the bridge's) are masked: ${JSON.stringify(passwords)}`);
  check(!cfg.toml.includes('bridge-s3cret') && !/'demo'/.test(cfg.toml), 'no password is shown');
  await page.screenshot({ path: path.join(args.shots, 'dashboard-config.png'), fullPage: true });

  // --- the appliance restarts -----------------------------------------------------------------
  log('the appliance restarts: the page says it was down, then carries on');
  await page.goto(`${args.url}#overview`, { waitUntil: 'load', timeout });
  await page.waitForFunction(() => document.getElementById('link').className.includes('up'), { timeout });
  execFileSync(args.stop, { stdio: 'inherit' });
  await page.waitForFunction(() => document.getElementById('link').className.includes('down'), { timeout });
  execFileSync(args.start, { stdio: 'inherit' });
  await page.waitForFunction(() => document.getElementById('link').className.includes('up') &&
    /restarted|unreachable from/.test(document.getElementById('notice').textContent), { timeout: 60_000 });
  await page.waitForFunction(() => document.getElementById('bridges-up')?.textContent === '1 / 1', { timeout });

  check(problems.length === 0, `no errors in the page: ${problems.join('; ')}`);
  log('all checks passed');
} catch (e) {
  console.error(`dashboard: FAILED at "${step}": ${e.message}`);
  if (page) {
    await page.screenshot({ path: path.join(args.shots, 'dashboard-failure.png'), fullPage: true }).catch(() => {});
    console.error(await page.evaluate(() => document.body.innerText).catch(() => ''));
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
