// Browser test of the dashboard: the real quaerod binary and Debian's headless Chromium,
// driven through playwright-core. Run with `node --test tests/browser/` after
// `npm ci --prefix tests/browser` and `cargo build -p quaerod`.
//
// Env: QUAERO_BIN (default target/debug/quaerod, relative to the repo root), CHROMIUM
// (default /usr/bin/chromium), QUAERO_PAGES_FROM_DISK=1 to serve /assets/ from pages/ in the
// working tree instead of the copy embedded in the binary (for working on the page without
// rebuilding; queue.html itself still comes from the binary, because Chromium's local network
// access checks block a routed document from opening the WebSocket to 127.0.0.1).
// The screenshot goes to tests/browser/artifacts/ (git-ignored).
//
// The page must work under the strict Content-Security-Policy quaerod sends (no inline script
// or style, nothing from another origin): every console error and CSP violation of every page
// is recorded, printed, and checked by the last test.

import { test, describe, before, beforeEach, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, writeFile, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const BIN = path.resolve(REPO, process.env.QUAERO_BIN || 'target/debug/quaerod');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(HERE, 'artifacts');
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const XSS_NAME = '<b>bold</b><img src=x onerror=alert(2)>';
const DEFINITIONS = {
  // Two steps so that the second is still pending (no events) while the first runs.
  'demo.toml': `
id = "demo"
name = "Demo run"
description = "300 events, then a short tail"
[[steps]]
name = "emit"
type = "emit"
description = "emits 300 events, 10 ms apart"
[steps.config]
count = 300
interval_ms = 10
message = "event {i} of {n}"
[[steps]]
name = "tail"
type = "emit"
[steps.config]
count = 3
interval_ms = 10
message = "tail {i} of {n}"
`,
  'xss.toml': `
id = "xss"
name = "${XSS_NAME}"
[[steps]]
name = "inject"
type = "emit"
[steps.config]
count = 20
interval_ms = 20
message = "<img src=x onerror=alert(1)> {i}"
`,
  'slow.toml': `
id = "slow"
name = "Slow"
[[steps]]
name = "crawl"
type = "emit"
[steps.config]
count = 2000
interval_ms = 20
message = "tick {i}"
`,
  'fan.toml': `
id = "fan"
name = "Fan"
[[steps]]
name = "spread"
type = "emit"
description = "three children"
[steps.config]
count = 40
children = 3
interval_ms = 50
message = "child {child}: {i} of {n}"
`,
  'boom.toml': `
id = "boom"
name = "Boom"
[[steps]]
name = "explode"
type = "emit"
[steps.config]
count = 10
interval_ms = 20
message = "boom {i} of {n}"
fail = true
`,
  // More than a page of events (the panel shows the newest 100), one with markup, one long.
  'lines.toml': `
id = "lines"
name = "Lines"
[[steps]]
name = "print"
type = "command"
[steps.config]
run = 'for i in $(seq 1 350); do echo "line $i"; done; echo "<b>x</b> marks the spot"; echo "long $(printf %0400d 0)"'
`,
};

// ------------------------------------------------------------------ the daemon

const daemonHosts = new Set(); // host:port of every daemon started here

async function startDaemon(dir, extraArgs = [], port = 0) {
  assert.ok(existsSync(BIN), `quaerod binary not found at ${BIN}: run \`cargo build -p quaerod\` or set QUAERO_BIN`);
  const args = ['--port', String(port), '--data', path.join(dir, 'data'), '--definitions', path.join(dir, 'jobs'),
    '--time-threshold', '250ms', ...extraArgs];
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`quaerod printed no address within 30 s:\n${output}`)), 30_000);
    const onData = (chunk) => {
      output += chunk;
      const m = /quaerod listening on (http:\/\/[^\s()]+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ''));
      }
    };
    proc.stdout.setEncoding('utf8').on('data', onData);
    proc.stderr.setEncoding('utf8').on('data', (c) => { output += c; });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`quaerod exited with ${code} before listening:\n${output}`));
    });
  });
  daemonHosts.add(new URL(url).host);
  return {
    url,
    proc,
    output: () => output,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function getJSON(base, p, token) {
  const res = await fetch(base + p, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  assert.equal(res.status, 200, `GET ${p}: ${res.status} ${await res.clone().text()}`);
  return res.json();
}

async function postJSON(base, p) {
  const res = await fetch(base + p, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
  assert.ok(res.ok, `POST ${p}: ${res.status} ${await res.clone().text()}`);
  return res.json();
}

// ------------------------------------------------------------------ shared state

let dir;
let daemon;
let browser;
let page;
const dialogs = [];
const pageErrors = [];
const consoleErrors = []; // {page, test, text, expected}
const cspViolations = []; // {page, test, directive, blocked, sample}
const foreignRequests = []; // any request to another origin than the daemon's
// Console errors a test provokes on purpose (a stopped daemon, a missing token): per test.
let expectedConsole = null;
let currentTest = 'before';
const finishedFrames = []; // {step, t}
const logRequests = []; // {step, t}
const overlaps = []; // a logs fetch that started while another for the same step was in flight

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'quaero-browser-'));
  await mkdir(path.join(dir, 'jobs'));
  for (const [name, text] of Object.entries(DEFINITIONS)) await writeFile(path.join(dir, 'jobs', name), text);
  daemon = await startDaemon(dir);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install -y chromium`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await watch(page, 'main');
});

beforeEach((t) => {
  currentTest = t.name;
  expectedConsole = null;
});

after(async () => {
  if (browser) await browser.close();
  if (daemon) await daemon.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function watch(p, label) {
  // Reported through a binding, which the page's CSP does not govern.
  await p.exposeBinding('__quaeroCsp', (_src, v) => cspViolations.push({ page: label, test: currentTest, ...v }));
  await p.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__quaeroCsp({ directive: e.effectiveDirective, blocked: e.blockedURI, sample: e.sample, source: `${e.sourceFile}:${e.lineNumber}` });
    });
  });
  p.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    const text = `${m.type()}: ${m.text()}${m.location()?.url ? ` (${m.location().url})` : ''}`;
    const expected = !!(expectedConsole && m.type() === 'error' && expectedConsole.test(m.text()) && !/Content.Security.Policy/i.test(m.text()));
    consoleErrors.push({ page: label, test: currentTest, text, expected });
    console.log(`# [${label} console, ${currentTest}] ${text}${expected ? ' (expected here)' : ''}`);
  });
  p.on('request', (r) => {
    const u = new URL(r.url());
    if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) return;
    if (daemonHosts.has(u.host)) return;
    foreignRequests.push(r.url());
  });
  if (process.env.QUAERO_PAGES_FROM_DISK === '1') {
    const types = { html: 'text/html', js: 'text/javascript', css: 'text/css', svg: 'image/svg+xml' };
    await p.route(/\/assets\/.+$/, async (route) => {
      const rel = new URL(route.request().url()).pathname.replace(/^\/assets\//, '');
      const file = path.join(REPO, 'pages', rel);
      if (!file.startsWith(path.join(REPO, 'pages'))) return route.abort();
      const body = await readFile(file).catch(() => null);
      if (!body) return route.fulfill({ status: 404, body: '{"error":"no such file"}' });
      route.fulfill({ status: 200, body, contentType: types[rel.split('.').pop()] || 'application/octet-stream' });
    });
  }
  p.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  p.on('pageerror', (e) => {
    pageErrors.push(e.message);
    console.log(`# [${label} pageerror, ${currentTest}] ${e.message}`);
  });
  const inFlight = new Map();
  const stepOf = (r) => {
    const m = /\/api\/jobs\/([^/?]+)\/logs/.exec(r.url());
    return m && decodeURIComponent(m[1]);
  };
  p.on('request', (r) => {
    const step = stepOf(r);
    if (!step) return;
    logRequests.push({ step, t: performance.now() });
    if (inFlight.get(step)) overlaps.push(step);
    inFlight.set(step, (inFlight.get(step) || 0) + 1);
  });
  const done = (r) => {
    const step = stepOf(r);
    if (step) inFlight.set(step, inFlight.get(step) - 1);
  };
  p.on('requestfinished', done);
  p.on('requestfailed', done);
  p.on('websocket', (ws) => {
    ws.on('framereceived', (f) => {
      let msg;
      try {
        msg = JSON.parse(f.payload);
      } catch {
        return;
      }
      if (msg.type === 'refresh_step_events' && msg.payload.finished) {
        for (const step of msg.payload.step_ids) finishedFrames.push({ step, t: performance.now() });
      }
    });
  });
}

// ------------------------------------------------------------------ page helpers

const card = (id) => page.locator(`[data-manager="${id}"]`);
const stepEl = (id) => page.locator(`[data-step="${id}"]`);
const log = (id) => page.locator(`[data-log="${id}"]`);

function waitStatus(id, status, timeout = 30_000) {
  return page.waitForFunction(([id, status]) => {
    const b = document.querySelector(`[data-manager="${id}"] .badge`);
    return b && b.dataset.status === status;
  }, [id, status], { timeout, polling: 'raf' });
}

// Waits until the panel shows exactly the events the API returns for the step now.
async function waitPanelMatchesApi(stepId, timeout = 5000) {
  const api = await getJSON(daemon.url, `/api/jobs/${stepId}/logs?limit=100&order=asc`);
  const want = api.logs.map((e) => String(e.seq));
  await page.waitForFunction(([stepId, want]) => {
    const rows = [...document.querySelectorAll(`[data-log="${stepId}"] .ev`)].map((r) => r.dataset.seq);
    return rows.length === want.length && rows.every((s, i) => s === want[i]);
  }, [stepId, want], { timeout, polling: 100 }).catch(async (e) => {
    const rows = await log(stepId).locator('.ev').count();
    throw new Error(`panel of ${stepId} shows ${rows} rows, API has ${want.length} (last seq ${want.at(-1)}): ${e.message}`);
  });
  return api.logs;
}

async function runFromPage(defId) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(`/api/job-definitions/${defId}/execute`)),
    page.locator(`[data-definition="${defId}"] button.run`).click(),
  ]);
  assert.equal(resp.status(), 202, `execute ${defId}`);
  const { job_id: id } = await resp.json();
  assert.match(id, /^m\d+$/);
  return id;
}

async function confirmModal(expectText) {
  const modal = page.locator('.modal');
  await modal.waitFor({ timeout: 3000 });
  const text = await modal.textContent();
  for (const t of expectText) assert.ok(text.includes(t), `confirmation says ${JSON.stringify(t)}: ${text}`);
  await modal.locator('button.danger').click();
  await modal.waitFor({ state: 'detached', timeout: 3000 });
}

// What a panel shows, top to bottom: each event's seq and message.
function shownEvents(stepId) {
  return log(stepId).locator('.ev').evaluateAll((rows) => rows.map((r) => ({ seq: r.dataset.seq, message: r.querySelector('.ev-msg').textContent })));
}

async function stepIds(managerId) {
  const job = await getJSON(daemon.url, `/api/jobs/${managerId}`);
  assert.ok(Array.isArray(job.steps), 'a started manager lists its steps');
  return job.steps.map((s) => s.id);
}

// ------------------------------------------------------------------ tests

let demoId;
let demoSteps;

test('the page loads, connects and lists the definitions', { timeout: 30_000 }, async () => {
  const res = await page.goto(`${daemon.url}/`);
  assert.ok(res.ok(), `GET / → ${res.status()}`);
  assert.ok(page.url().endsWith('/queue'), `/ redirects to /queue, got ${page.url()}`);
  // The page is served under the strict policy (the last test checks nothing was refused).
  const csp = (await res.allHeaders())['content-security-policy'] || '';
  for (const d of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
    assert.ok(csp.split(';').map((x) => x.trim()).includes(d), `CSP has ${d}: ${csp}`);
  }
  assert.doesNotMatch(csp, /unsafe-|\*|data:|https?:/, `CSP allows nothing loose: ${csp}`);
  await page.locator('.conn-live').waitFor({ timeout: 10_000 });
  for (const id of ['demo', 'xss', 'boom', 'slow']) await page.locator(`[data-definition="${id}"]`).waitFor();
  await page.waitForFunction(() => document.querySelector('[data-stat="total"] .stat-value')?.textContent === '0');
});

test('a run started from the page goes running → completed, live', { timeout: 60_000 }, async () => {
  demoId = await runFromPage('demo');
  await card(demoId).waitFor();
  await waitStatus(demoId, 'running', 10_000);
  demoSteps = await stepIds(demoId);
  assert.equal(demoSteps.length, 2);
  const [s1, s2] = demoSteps;

  // The running step's panel opens by itself and fills while the step runs.
  await log(s1).waitFor({ state: 'visible', timeout: 5000 });
  await stepEl(s1).locator('.s-title').filter({ hasText: 'Step 1/2: emit' }).waitFor();
  await page.waitForFunction((s) => document.querySelectorAll(`[data-log="${s}"] .ev`).length > 5, s1, { timeout: 5000 });
  const midRun = await page.locator(`[data-manager="${demoId}"] .badge`).getAttribute('data-status');
  assert.equal(midRun, 'running', 'events showed while the run was still going');

  // The pending second step has nothing yet.
  await stepEl(s2).locator('.ev-toggle').click();
  await log(s2).getByText('No events yet for this step.').waitFor({ timeout: 3000 });

  await waitStatus(demoId, 'completed', 30_000);
  await stepEl(s1).locator('.st-icon').filter({ hasText: '✓' }).waitFor();
});

test('a finished trigger shows the final events without a reload', { timeout: 30_000 }, async () => {
  const [s1, s2] = demoSteps;
  for (const s of [s1, s2]) {
    const events = await waitPanelMatchesApi(s);
    const lastRow = await log(s).locator('.ev-msg').last().textContent();
    assert.equal(lastRow, events.at(-1).message);
    const fin = finishedFrames.find((f) => f.step === s);
    assert.ok(fin, `a finished trigger named ${s}`);
    assert.ok(logRequests.some((r) => r.step === s && r.t >= fin.t), `the page fetched ${s}'s events after its finished trigger`);
  }
  await log(s1).locator('.ev-msg', { hasText: /^event 300 of 300$/ }).waitFor({ timeout: 1000 });
  await log(s2).locator('.ev-msg', { hasText: /^tail 3 of 3$/ }).waitFor({ timeout: 1000 });
  // While the step ran, triggers came every 250 ms; the page fetched at most once per 500 ms
  // (plus the fetch on opening and the one for the finished trigger), never two at once.
  const fin = finishedFrames.find((f) => f.step === s1).t;
  const during = logRequests.filter((r) => r.step === s1 && r.t < fin);
  const span = during.at(-1).t - during[0].t;
  assert.ok(during.length >= 3, `the open panel refreshed while the step ran (${during.length} fetches)`);
  assert.ok(during.length <= Math.floor(span / 500) + 2, `${during.length} fetches in ${Math.round(span)} ms`);
  assert.deepEqual(overlaps, [], 'never two fetches in flight for one step');
  // Followed the tail: the panel is scrolled to the bottom.
  const gap = await log(s1).evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
  assert.ok(gap < 8, `panel scrolled to the bottom (gap ${gap}px)`);
});

test('opening a step after a reload loads its events on demand', { timeout: 30_000 }, async () => {
  const [s1] = demoSteps;
  await page.reload();
  await card(demoId).waitFor();
  await waitStatus(demoId, 'completed');
  await card(demoId).locator('.caret').click();
  await stepEl(s1).waitFor();
  assert.equal(await log(s1).isVisible(), false, 'a completed step stays closed');
  const before = logRequests.filter((r) => r.step === s1).length;
  await stepEl(s1).locator('.ev-toggle').click();
  const events = await waitPanelMatchesApi(s1);
  assert.ok(logRequests.filter((r) => r.step === s1).length > before, 'opening fetched the events');
  assert.equal(await log(s1).locator('.ev-msg').last().textContent(), events.at(-1).message);
  await log(s1).locator('.ev-msg', { hasText: /^event 300 of 300$/ }).waitFor({ timeout: 1000 });
  // HH:MM:SS.mmm, a coloured level tag and `[step/originator]`, as the TUI and the tail print it.
  const first = log(s1).locator('.ev').first();
  assert.match(await first.locator('.ev-time').textContent(), /^\d\d:\d\d:\d\d\.\d{3}$/);
  assert.match(await first.locator('.ev-lvl').textContent(), /^(DEBUG|INFO|WARN|ERROR)$/);
  const seq = await first.getAttribute('data-seq');
  const shown = events.find((e) => String(e.seq) === seq);
  assert.equal(await first.locator('.ev-orig').textContent(), `[${shown.step_name}/${shown.originator}]`);
});

test('event messages and job names render as text', { timeout: 60_000 }, async () => {
  const id = await runFromPage('xss');
  await card(id).waitFor();
  await waitStatus(id, 'completed', 30_000);
  const [s1] = await stepIds(id);
  await waitPanelMatchesApi(s1);
  await log(s1).locator('.ev-msg', { hasText: /^<img src=x onerror=alert\(1\)> 20$/ }).waitFor({ timeout: 1000 });
  assert.equal(await card(id).locator('.m-name').textContent(), XSS_NAME);
  assert.equal(await page.locator('#managers img, #defs img, #managers b').count(), 0, 'no markup from data in the DOM');
  await page.waitForTimeout(300); // an onerror handler would have fired by now
  assert.deepEqual(dialogs, [], 'no dialog fired');
});

test('child progress updates live; the card counts steps and children apart', { timeout: 60_000 }, async () => {
  const id = await runFromPage('fan');
  const [s1] = await stepIds(id);
  const bar = stepEl(s1).locator('.bar-text');
  // While it runs, the bar says so; it is updated by step_progress, not by a reload.
  await bar.filter({ hasText: /^0\/3 · 3 running$/ }).waitFor({ timeout: 10_000 });
  await waitStatus(id, 'completed', 30_000);
  await bar.filter({ hasText: /^3\/3$/ }).waitFor({ timeout: 5000 });
  const widths = await stepEl(s1).locator('.seg').evaluateAll((els) => els.map((e) => [e.className, e.style.width]));
  assert.deepEqual(widths.find(([c]) => c.includes('seg-completed')), ['seg seg-completed', '100%'], `bar segments: ${JSON.stringify(widths)}`);
  const meta = (label) => card(id).locator('.meta', { hasText: label }).locator('.meta-value');
  await meta('steps').filter({ hasText: /^1\/1$/ }).waitFor({ timeout: 3000 });
  await meta('children').filter({ hasText: /^3\/3$/ }).waitFor({ timeout: 3000 });
  // The same from the listing alone, collapsed, after a reload.
  await page.reload();
  await waitStatus(id, 'completed');
  assert.equal(await card(id).locator('.steps').isVisible(), false);
  assert.equal(await meta('steps').textContent(), '1/1');
  assert.equal(await meta('children').textContent(), '3/3');
  assert.equal(await card(demoId).locator('.meta', { hasText: 'steps' }).locator('.meta-value').textContent(), '2/2');
  assert.equal(await card(demoId).locator('.meta', { hasText: 'children' }).isVisible(), false, 'no children line without children');
});

test('a failed step opens its events panel by itself', { timeout: 60_000 }, async () => {
  // Started behind the page's back: the page learns about it over the WebSocket.
  const { job_id: id } = await postJSON(daemon.url, '/api/job-definitions/boom/execute');
  await card(id).waitFor({ timeout: 10_000 });
  await waitStatus(id, 'failed', 30_000);
  const [s1] = await stepIds(id);
  await log(s1).waitFor({ state: 'visible', timeout: 5000 });
  await waitPanelMatchesApi(s1);
  await log(s1).locator('.ev-msg', { hasText: /^boom 10 of 10$/ }).waitFor({ timeout: 1000 });

  // And after a reload: expanding the failed manager opens the failed step without a click.
  await page.reload();
  await waitStatus(id, 'failed');
  await card(id).locator('.caret').click();
  await log(s1).waitFor({ state: 'visible', timeout: 5000 });
  await waitPanelMatchesApi(s1);
  assert.equal(await stepEl(s1).getAttribute('data-status'), 'failed');

  // A tidy full view for the screenshot: the demo run expanded too.
  await card(demoId).locator('.caret').click();
  await stepEl(demoSteps[0]).locator('.ev-toggle').click();
  await waitPanelMatchesApi(demoSteps[0]);
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
});

test('the status filter is remembered across reloads', { timeout: 30_000 }, async () => {
  const api = await getJSON(daemon.url, '/api/jobs?parent_id=root&limit=50');
  const ids = api.jobs.map((j) => j.id);
  assert.deepEqual(ids, [...ids].sort((a, b) => Number(b.slice(1)) - Number(a.slice(1))), 'the API lists managers newest first');
  const shown = () => page.locator('[data-manager]').evaluateAll((els) => els.map((e) => e.dataset.manager));
  assert.deepEqual(await shown(), ids, 'the page shows them in that order');

  // Two chips on: failed and completed (the xss and demo runs are completed, boom failed).
  const want = ['completed', 'failed'];
  await page.locator('.chip[data-filter="failed"]').click();
  await page.locator('.chip[data-filter="completed"]').click();
  const onlyWanted = () => page.waitForFunction((want) => {
    const b = [...document.querySelectorAll('[data-manager] .badge')].map((x) => x.dataset.status);
    return b.length > 0 && b.every((s) => want.includes(s)) && want.every((s) => b.includes(s));
  }, want, { timeout: 5000 });
  await onlyWanted();
  const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('quaero.statusFilter')));
  assert.deepEqual([...stored].sort(), want, 'the chips are stored in localStorage');
  await page.reload();
  for (const s of want) await page.locator(`.chip[data-filter="${s}"].on`).waitFor();
  assert.equal(await page.locator('.chip.on').count(), 2, 'exactly the two chips are on after a reload');
  await onlyWanted();
  const statuses = await page.locator('[data-manager] .badge').evaluateAll((els) => els.map((e) => e.dataset.status));
  assert.ok(statuses.every((s) => want.includes(s)), `only ${want} managers after a reload: ${statuses}`);
  // "all" clears the filter, and that is remembered too.
  await page.locator('.chip[data-filter=""]').click();
  await card(demoId).waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem('quaero.statusFilter')), '[]');
  await page.locator('.chip[data-filter=""].on').waitFor();
});

test('cancel and rerun from the card, each cancel confirmed', { timeout: 60_000 }, async () => {
  const id = await runFromPage('slow');
  await waitStatus(id, 'running', 10_000);
  await card(id).locator('[data-action="cancel"]').click();
  await confirmModal(['Cancel', id]);
  await waitStatus(id, 'cancelled', 10_000);

  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(`/api/jobs/${id}/rerun`)),
    card(id).locator('[data-action="rerun"]').click(),
  ]);
  assert.equal(resp.status(), 201);
  const { new_job_id: again } = await resp.json();
  await waitStatus(again, 'running', 10_000);
  await card(again).locator('[data-action="cancel"]').click();
  await confirmModal([again]);
  await waitStatus(again, 'cancelled', 10_000);
});

test('bulk delete states the cascade and removes the runs', { timeout: 30_000 }, async () => {
  const victims = (await getJSON(daemon.url, '/api/jobs?parent_id=root&status=cancelled')).jobs.map((j) => j.id);
  assert.equal(victims.length, 2);
  for (const id of victims) await card(id).locator('input[type=checkbox]').check();
  await page.locator('[data-action="bulk-delete"]', { hasText: 'Delete selected (2)' }).click();
  await confirmModal(['Delete 2 managers', ...victims, 'steps', 'child jobs', 'event']);
  for (const id of victims) await card(id).waitFor({ state: 'detached', timeout: 5000 });
  await page.locator('.notice', { hasText: /Deleted 2 managers: \d+ jobs, \d+ events/ }).waitFor({ timeout: 3000 });
  const left = (await getJSON(daemon.url, '/api/jobs?parent_id=root')).jobs.map((j) => j.id);
  for (const id of victims) assert.ok(!left.includes(id), `${id} is gone from the API`);
  await card(demoId).waitFor();
});

let linesStep;
let linesEvents; // every event of that step, oldest first, from the API

test('scrolling an events panel to the top loads the older pages until the first event, keeping the view', { timeout: 60_000 }, async () => {
  const id = await runFromPage('lines');
  await waitStatus(id, 'completed', 30_000);
  [linesStep] = await stepIds(id);
  const s1 = linesStep;
  // Its panel opened by itself if the page saw the step running; open it if it did not.
  const toggle = stepEl(s1).locator('.ev-toggle');
  if ((await toggle.getAttribute('aria-expanded')) !== 'true') await toggle.click();
  assert.equal((await waitPanelMatchesApi(s1)).length, 100, 'the panel starts with the newest 100 events');
  linesEvents = (await getJSON(daemon.url, `/api/jobs/${s1}/logs?after=0&limit=5000`)).logs;
  assert.ok(linesEvents.length > 350, `${linesEvents.length} events`);

  const older = []; // the query of each request for an older page
  const onRequest = (r) => {
    const u = new URL(r.url());
    if (u.pathname === `/api/jobs/${s1}/logs` && u.searchParams.has('before')) older.push(Object.fromEntries(u.searchParams));
  };
  page.on('request', onRequest);
  const edge = log(s1).locator('.ev-edge', { hasText: 'beginning of the log' });
  try {
    for (let pages = 0; (await edge.count()) === 0; pages++) {
      assert.ok(pages < 10, 'the beginning is reached');
      // To the top, as the operator scrolls; where is the event at the top of the view?
      const top = await log(s1).evaluate((el) => {
        el.scrollTop = 0;
        const row = el.querySelector('.ev');
        return { seq: row.dataset.seq, y: row.getBoundingClientRect().top - el.getBoundingClientRect().top };
      });
      // An older page above it, or the news that there is none.
      await page.waitForFunction(([s, seq]) => {
        const el = document.querySelector(`[data-log="${s}"]`);
        return el.querySelector('.ev').dataset.seq !== seq || /beginning of the log/.test(el.querySelector('.ev-edge')?.textContent || '');
      }, [s1, top.seq], { timeout: 5000, polling: 50 });
      // The view did not jump: that event is where it was.
      const y = await log(s1).evaluate((el, seq) => el.querySelector(`.ev[data-seq="${seq}"]`).getBoundingClientRect().top - el.getBoundingClientRect().top, top.seq);
      assert.ok(Math.abs(y - top.y) <= 1, `event ${top.seq} stays in place while a page is added above it (${top.y} → ${y})`);
    }
  } finally {
    page.off('request', onRequest);
  }
  // Scrolled to the top once more: the marker, then the first event of the step, in view.
  const view = await log(s1).evaluate((el) => {
    el.scrollTop = 0;
    const box = el.getBoundingClientRect();
    const inView = (r) => r.getBoundingClientRect().top >= box.top && r.getBoundingClientRect().bottom <= box.bottom;
    const line1 = [...el.querySelectorAll('.ev')].find((r) => r.querySelector('.ev-msg').textContent === 'line 1');
    return { marker: inView(el.querySelector('.ev-edge')), first: el.querySelector('.ev .ev-msg').textContent, line1: !!line1 && inView(line1) };
  });
  assert.deepEqual(view, { marker: true, first: linesEvents[0].message, line1: true });
  // Every event once, in order; every line printed, from the first.
  const rows = await shownEvents(s1);
  assert.deepEqual(rows.map((r) => r.seq), linesEvents.map((e) => String(e.seq)), 'every event of the step once, in order');
  assert.deepEqual(rows.map((r) => r.message).filter((m) => /^line \d+$/.test(m)), Array.from({ length: 350 }, (_, i) => `line ${i + 1}`));
  // Pages of 100 before the oldest event shown, until one came back empty.
  assert.equal(older.length, Math.ceil((linesEvents.length - 100) / 100) + 1, `older pages asked for: ${JSON.stringify(older)}`);
  for (const q of older) assert.deepEqual([q.limit, q.order], ['100', 'asc']);
  assert.equal(older.at(-1).before, String(linesEvents[0].seq), 'the last one asked for what comes before the first event');
});

test('the filter box narrows the loaded events and marks the matches; markup stays text; wrap', { timeout: 30_000 }, async () => {
  const s1 = linesStep;
  const filter = stepEl(s1).getByRole('searchbox', { name: 'filter the loaded events' });
  const waitMessages = (want) => page.waitForFunction(([s, want]) => {
    const shown = [...document.querySelectorAll(`[data-log="${s}"] .ev .ev-msg`)].map((m) => m.textContent);
    return JSON.stringify(shown) === JSON.stringify(want);
  }, [s1, want], { timeout: 3000, polling: 50 }).catch(async (e) => {
    throw new Error(`panel shows ${JSON.stringify((await shownEvents(s1)).map((r) => r.message).slice(0, 20))}…, want ${JSON.stringify(want.slice(0, 20))}…: ${e.message}`);
  });

  // Ignoring case: "LINE 34" finds line 34 and lines 340 to 349, each match marked as written.
  await filter.fill('LINE 34');
  const want = linesEvents.map((e) => e.message).filter((m) => m.toLowerCase().includes('line 34'));
  assert.equal(want.length, 11);
  await waitMessages(want);
  assert.deepEqual(await log(s1).locator('.ev-msg mark').allTextContents(), want.map(() => 'line 34'));
  await stepEl(s1).locator('.ev-info', { hasText: '· 11 matching' }).waitFor({ timeout: 1000 });

  // Markup in a message is found and marked as text, never made into elements.
  await filter.fill('<b>x</b>');
  await waitMessages(['<b>x</b> marks the spot']);
  assert.deepEqual(await log(s1).locator('.ev-msg mark').allTextContents(), ['<b>x</b>']);
  assert.equal(await log(s1).locator('b').count(), 0, 'no <b> element made from the message');

  await filter.fill('no event says this');
  await log(s1).locator('.ev-empty', { hasText: 'No loaded event contains “no event says this”.' }).waitFor({ timeout: 3000 });
  assert.equal(await log(s1).locator('.ev').count(), 0);

  // Wrap, on by default: the long line takes several lines; off: one, and the panel scrolls sideways.
  const long = linesEvents.find((e) => e.message.startsWith('long ')).message;
  await filter.fill('long 0');
  await waitMessages([long]);
  const wrap = stepEl(s1).getByRole('button', { name: 'wrap', exact: true });
  const layout = () => log(s1).evaluate((el) => {
    const msg = el.querySelector('.ev .ev-msg');
    const lines = Math.round(msg.getBoundingClientRect().height / parseFloat(getComputedStyle(msg).lineHeight));
    return { lines, sideways: el.scrollWidth > el.clientWidth };
  });
  assert.equal(await wrap.getAttribute('aria-pressed'), 'true');
  const wrapped = await layout();
  assert.ok(wrapped.lines > 1 && !wrapped.sideways, `wrapped: ${JSON.stringify(wrapped)}`);
  await wrap.click();
  await stepEl(s1).locator('.ev-opt[aria-pressed="false"]', { hasText: 'wrap' }).waitFor({ timeout: 1000 });
  await page.waitForFunction((s) => document.querySelector(`[data-log="${s}"]`).classList.contains('nowrap'), s1, { timeout: 1000 });
  assert.deepEqual(await layout(), { lines: 1, sideways: true });
  await wrap.click();
  await stepEl(s1).locator('.ev-opt[aria-pressed="true"]', { hasText: 'wrap' }).waitFor({ timeout: 1000 });

  // Emptied: every loaded event again, nothing marked.
  await filter.fill('');
  await waitMessages(linesEvents.map((e) => e.message));
  assert.equal(await log(s1).locator('mark').count(), 0);
});

test('follow: scrolling up turns it off and new events leave the view alone; the toggle jumps back', { timeout: 60_000 }, async () => {
  const id = await runFromPage('slow');
  await waitStatus(id, 'running', 10_000);
  const [s1] = await stepIds(id);
  await log(s1).waitFor({ state: 'visible', timeout: 5000 });
  const follow = stepEl(s1).getByRole('button', { name: 'follow', exact: true });
  const gap = () => log(s1).evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
  const lastSeq = () => log(s1).locator('.ev').last().getAttribute('data-seq').then(Number);
  const newerThan = (seq) => page.waitForFunction(([s, seq]) => {
    const rows = document.querySelectorAll(`[data-log="${s}"] .ev`);
    return rows.length && Number(rows[rows.length - 1].dataset.seq) > seq;
  }, [s1, seq], { timeout: 5000, polling: 50 });
  await page.waitForFunction((s) => document.querySelectorAll(`[data-log="${s}"] .ev`).length >= 60, s1, { timeout: 10_000 });
  assert.equal(await follow.getAttribute('aria-pressed'), 'true', 'on by default');
  assert.ok((await gap()) < 8, 'at the newest event');

  // The operator scrolls up with the wheel: follow goes off.
  await log(s1).hover();
  for (let i = 0; (await follow.getAttribute('aria-pressed')) !== 'false'; i++) {
    assert.ok(i < 5, 'scrolling up turns follow off');
    await page.mouse.wheel(0, -400);
    await page.waitForTimeout(300); // the wheel scrolls smoothly
  }
  const where = await log(s1).evaluate((el) => {
    const box = el.getBoundingClientRect();
    const row = [...el.querySelectorAll('.ev')].find((r) => r.getBoundingClientRect().bottom > box.top);
    return { seq: row.dataset.seq, y: row.getBoundingClientRect().top - box.top };
  });
  // New events come in below; the view stays on what the operator reads.
  const seen = await lastSeq();
  await newerThan(seen);
  await newerThan(await lastSeq()); // two refetches at least
  const y = await log(s1).evaluate((el, seq) => el.querySelector(`.ev[data-seq="${seq}"]`).getBoundingClientRect().top - el.getBoundingClientRect().top, where.seq);
  assert.ok(Math.abs(y - where.y) <= 1, `event ${where.seq} stays in place (${where.y} → ${y})`);
  assert.equal(await follow.getAttribute('aria-pressed'), 'false');
  assert.ok((await gap()) > 8, 'not moved to the bottom');

  // Follow again: at the newest event, and staying there as more come.
  await follow.click();
  assert.equal(await follow.getAttribute('aria-pressed'), 'true');
  assert.ok((await gap()) < 8, 'jumped to the newest event');
  await newerThan(await lastSeq());
  await newerThan(await lastSeq());
  await page.waitForTimeout(100); // the frame that renders them
  assert.ok((await gap()) < 8, 'still at the newest event');
  assert.equal(await follow.getAttribute('aria-pressed'), 'true');

  await postJSON(daemon.url, `/api/jobs/${id}/cancel`);
  await waitStatus(id, 'cancelled', 10_000);
});

test('Delete finished… deletes the failed runs (none before a time long past) and keeps the others', { timeout: 60_000 }, async () => {
  // One more failed run, watched by the page (its card opens by itself).
  const { job_id: fresh } = await postJSON(daemon.url, '/api/job-definitions/boom/execute');
  await waitStatus(fresh, 'failed', 30_000);
  const ids = async (status) => (await getJSON(daemon.url, `/api/jobs?parent_id=root&status=${status}`)).jobs.map((j) => j.id);
  const failed = await ids('failed');
  const kept = [...(await ids('completed')), ...(await ids('cancelled'))];
  assert.ok(failed.length >= 2 && failed.includes(fresh), `failed runs: ${failed}`);
  assert.ok(kept.includes(demoId) && kept.length >= 3, `other runs: ${kept}`);
  for (const id of [...failed, ...kept]) await card(id).waitFor({ timeout: 5000 });

  async function deleteFinished(status, before) {
    await page.getByRole('button', { name: 'Delete finished…' }).click();
    const form = page.locator('[data-testid="delete-finished-form"]');
    await form.waitFor({ timeout: 3000 });
    await form.getByLabel('Status').selectOption(status);
    if (before) await form.getByLabel('Finished before').fill(before);
    await form.locator('button[type=submit]').click();
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'DELETE' && new URL(r.url()).pathname === '/api/jobs'),
      confirmModal([`Delete every ${status} run`, 'cannot be undone']),
    ]);
    assert.equal(resp.status(), 202);
    const body = await resp.json();
    // The server's answer, as it said it.
    await page.locator('.notice', { hasText: body.message }).waitFor({ timeout: 3000 });
    return { query: new URL(resp.url()).searchParams, body };
  }

  // Finished before 2000: none.
  const none = await deleteFinished('failed', '2000-01-01T00:00');
  assert.equal(none.query.get('status'), 'failed');
  const localMidnight = await page.evaluate(() => new Date('2000-01-01T00:00').toISOString());
  assert.equal(none.query.get('finished_before'), localMidnight, 'the local time, sent as RFC 3339');
  assert.equal(none.body.count, 0);
  await page.waitForTimeout(500);
  for (const id of failed) assert.equal(await card(id).count(), 1, `${id} finished after 2000: kept`);

  // Whenever they finished: every failed run goes, from the list too, without a reload.
  const all = await deleteFinished('failed');
  assert.equal(all.query.get('status'), 'failed');
  assert.equal(all.query.has('finished_before'), false);
  assert.equal(all.body.count, failed.length);
  for (const id of failed) await card(id).waitFor({ state: 'detached', timeout: 10_000 });
  for (const id of kept) assert.equal(await card(id).count(), 1, `${id} is not failed: kept`);
  assert.deepEqual(await ids('failed'), []);
  assert.deepEqual([...(await ids('completed')), ...(await ids('cancelled'))].sort(), [...kept].sort());
});

test('the page reconnects after the daemon restarts', { timeout: 60_000 }, async () => {
  expectedConsole = /net::ERR_CONNECTION_REFUSED|WebSocket connection to '[^']*' failed/;
  const port = new URL(daemon.url).port;
  await daemon.stop();
  await page.locator('.conn-down').waitFor({ timeout: 10_000 });
  daemon = await startDaemon(dir, [], port);
  await page.locator('.conn-live').waitFor({ timeout: 15_000 });
  // Refetched what it shows: the list still has the demo run.
  await waitStatus(demoId, 'completed');
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
});

test('with an auth token the page asks for it once per tab', { timeout: 60_000 }, async () => {
  const authDir = await mkdtemp(path.join(os.tmpdir(), 'quaero-browser-auth-'));
  await mkdir(path.join(authDir, 'jobs'));
  await writeFile(path.join(authDir, 'jobs', 'demo.toml'), DEFINITIONS['demo.toml']);
  const secured = await startDaemon(authDir, ['--auth-token', 's3cret-token']);
  const p = await browser.newPage();
  try {
    await watch(p, 'auth');
    expectedConsole = /status of 401 \(Unauthorized\)|WebSocket connection to '[^']*' failed: (HTTP Authentication failed|.*response code: 401)/;
    await p.goto(`${secured.url}/queue`);
    const form = p.locator('[data-testid="token-form"]');
    await form.waitFor({ timeout: 10_000 });
    await form.locator('input').fill('s3cret-token');
    await form.locator('button[type=submit]').click();
    await p.locator('[data-definition="demo"]').waitFor({ timeout: 10_000 });
    await p.locator('.conn-live').waitFor({ timeout: 10_000 });
    assert.equal(await p.evaluate(() => sessionStorage.getItem('quaero.token')), 's3cret-token');
    await p.reload();
    await p.locator('[data-definition="demo"]').waitFor({ timeout: 10_000 });
    assert.equal(await p.locator('[data-testid="token-form"]').count(), 0, 'no second prompt in the same tab');
    await p.locator('.conn-live').waitFor({ timeout: 10_000 });
    assert.equal(await p.evaluate(() => Object.keys(localStorage).filter((k) => /token/i.test(k)).length), 0, 'the token is not kept in localStorage');
    // Everything works with the token: run from the page, see it finish live over /ws, read its events.
    expectedConsole = null;
    const [resp] = await Promise.all([
      p.waitForResponse((r) => r.url().endsWith('/api/job-definitions/demo/execute')),
      p.locator('[data-definition="demo"] button.run').click(),
    ]);
    assert.equal(resp.status(), 202);
    const { job_id: id } = await resp.json();
    await p.waitForFunction((id) => document.querySelector(`[data-manager="${id}"] .badge`)?.dataset.status === 'completed', id, { timeout: 30_000 });
    const job = await getJSON(secured.url, `/api/jobs/${id}`, 's3cret-token');
    const s1 = job.steps[0].id;
    // Its panel opened by itself while it ran; open it if it did not.
    const toggle = p.locator(`[data-step="${s1}"] .ev-toggle`);
    if ((await toggle.getAttribute('aria-expanded')) !== 'true') await toggle.click();
    await p.locator(`[data-log="${s1}"] .ev-msg`, { hasText: /^event 300 of 300$/ }).waitFor({ timeout: 5000 });
    // Another tab has its own sessionStorage: it asks again.
    const other = await browser.newPage();
    try {
      await watch(other, 'auth-other-tab');
      expectedConsole = /status of 401 \(Unauthorized\)|WebSocket connection to '[^']*' failed: (HTTP Authentication failed|.*response code: 401)/;
      await other.goto(`${secured.url}/queue`);
      await other.locator('[data-testid="token-form"]').waitFor({ timeout: 10_000 });
      assert.equal(await other.locator('[data-definition="demo"]').count(), 0, 'nothing shown without the token');
    } finally {
      await other.close();
    }
  } finally {
    await p.close();
    await secured.stop();
    await rm(authDir, { recursive: true, force: true });
  }
});

const SCHED_DEFINITIONS = {
  'nightly.toml': `
id = "nightly"
name = "Nightly report"
schedule = "@daily"
timezone = "Europe/Berlin"
tags = ["nightly", "reports"]
[[steps]]
name = "report"
type = "emit"
[steps.config]
count = 5
interval_ms = 10
message = "report line {i} of {n}"
`,
  'deploy.toml': `
id = "deploy"
name = "Deploy"
tags = ["ops"]
params = { env = "staging", target = { description = "host to deploy to" } }
[[steps]]
name = "announce"
type = "emit"
[steps.config]
count = 3
interval_ms = 10
message = "deploy {params.target} to {params.env}: {i} of {n}"
`,
  'plain.toml': `
id = "plain"
name = "Plain"
[[steps]]
name = "tick"
type = "emit"
[steps.config]
count = 3
interval_ms = 10
`,
  // Fails at once, then waits 8 s before its second attempt.
  'flaky.toml': `
id = "flaky"
name = "Flaky"
[[steps]]
name = "try"
type = "emit"
retry = { max_attempts = 3, backoff = "fixed", initial = "8s", jitter = false }
[steps.config]
count = 2
interval_ms = 10
fail = true
`,
};

describe('schedules, params, queues and tags', () => {
  let sdir;
  let sd; // the daemon
  let sp; // the page

  const sdef = (id) => sp.locator(`[data-definition="${id}"]`);
  const scard = (id) => sp.locator(`[data-manager="${id}"]`);
  const runForm = () => sp.locator('[data-testid="run-form"]');
  const executed = (defId) => sp.waitForResponse((r) => r.url().endsWith(`/api/job-definitions/${defId}/execute`));
  const shownManagers = () => sp.locator('[data-manager]').evaluateAll((els) => els.map((e) => e.dataset.manager));

  function sWaitStatus(id, status, timeout = 30_000) {
    return sp.waitForFunction(([id, status]) => {
      const b = document.querySelector(`[data-manager="${id}"] .badge`);
      return b && b.dataset.status === status;
    }, [id, status], { timeout, polling: 'raf' });
  }

  // Until the page lists exactly these managers, in this order.
  function waitShown(ids, timeout = 5000) {
    return sp.waitForFunction((ids) => {
      const shown = [...document.querySelectorAll('[data-manager]')].map((e) => e.dataset.manager);
      return JSON.stringify(shown) === JSON.stringify(ids);
    }, ids, { timeout, polling: 100 }).catch(async (e) => {
      throw new Error(`the page shows ${JSON.stringify(await shownManagers())}, want ${JSON.stringify(ids)}: ${e.message}`);
    });
  }

  before(async () => {
    sdir = await mkdtemp(path.join(os.tmpdir(), 'quaero-browser-sched-'));
    await mkdir(path.join(sdir, 'jobs'));
    for (const [name, text] of Object.entries(SCHED_DEFINITIONS)) await writeFile(path.join(sdir, 'jobs', name), text);
    sd = await startDaemon(sdir);
    sp = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await watch(sp, 'schedules');
    await sp.goto(`${sd.url}/queue`);
    await sp.locator('.conn-live').waitFor({ timeout: 10_000 });
    for (const id of Object.keys(SCHED_DEFINITIONS).map((f) => f.replace('.toml', ''))) await sdef(id).waitFor({ timeout: 10_000 });
  });

  after(async () => {
    if (sp) await sp.close();
    if (sd) await sd.stop();
    if (sdir) await rm(sdir, { recursive: true, force: true });
  });

  test('a definition shows its schedule in words, its next run and its tags; the switch disables it', { timeout: 30_000 }, async () => {
    const info = await getJSON(sd.url, '/api/job-definitions/nightly');
    assert.equal(info.enabled, true);
    assert.ok(info.schedule_text, `the API describes the schedule in words: ${JSON.stringify(info)}`);
    assert.ok(info.next_run_at, 'an enabled schedule has a next run');
    const def = sdef('nightly');
    await def.locator('.def-sched-text', { hasText: info.schedule_text }).waitFor({ timeout: 5000 });
    assert.equal(await def.locator('.def-sched-text').textContent(), `${info.schedule_text} (Europe/Berlin)`);
    // Relative, and at most a day away for @daily.
    assert.match(await def.locator('.def-next').textContent(), /^next in \d+ (s|min|h|d)\b/);
    assert.deepEqual((await def.locator('.def-tags .tag-btn').allTextContents()).sort(), ['nightly', 'reports']);

    const toggle = def.getByRole('switch', { name: 'Nightly report enabled' });
    assert.equal(await toggle.isChecked(), true);
    const [off] = await Promise.all([
      sp.waitForResponse((r) => r.url().endsWith('/api/job-definitions/nightly/disable')),
      toggle.click(),
    ]);
    assert.equal(off.status(), 200);
    assert.equal((await getJSON(sd.url, '/api/job-definitions/nightly')).enabled, false, 'the API says it is disabled');
    await def.locator('.def-next', { hasText: 'off while disabled' }).waitFor({ timeout: 3000 });
    assert.equal(await toggle.isChecked(), false);
    assert.equal(await def.locator('button.run').isDisabled(), true, 'a disabled definition cannot be run from the page');

    // And back on: it has a next run again.
    const [on] = await Promise.all([
      sp.waitForResponse((r) => r.url().endsWith('/api/job-definitions/nightly/enable')),
      toggle.click(),
    ]);
    assert.equal(on.status(), 200);
    assert.equal((await getJSON(sd.url, '/api/job-definitions/nightly')).enabled, true);
    await def.locator('.def-next', { hasText: /^next in / }).waitFor({ timeout: 3000 });
    assert.equal(await def.locator('button.run').isDisabled(), false);
  });

  test('Run asks for the params: the server\'s error stays in the dialog; the run shows its values', { timeout: 30_000 }, async () => {
    expectedConsole = /status of 400 \(Bad Request\)/;
    await sdef('deploy').locator('button.run').click();
    const form = runForm();
    await form.waitFor({ timeout: 3000 });
    const target = form.locator('input[data-param="target"]');
    const env = form.locator('input[data-param="env"]');
    assert.equal(await env.inputValue(), 'staging', 'prefilled with its default');
    assert.equal(await target.inputValue(), '', 'a required param has no default');
    assert.equal(await target.getAttribute('aria-required'), 'true');
    await form.locator('label[for]', { hasText: 'target' }).locator('.req', { hasText: 'required' }).waitFor();
    await form.getByText('host to deploy to').waitFor();

    // Empty: the server refuses it, naming the param; the dialog stays open and says why.
    const [bad] = await Promise.all([executed('deploy'), form.locator('button[type=submit]').click()]);
    assert.equal(bad.status(), 400);
    const { error } = await bad.json();
    assert.match(error, /^params\.target: /);
    await form.locator('.modal-error', { hasText: error }).waitFor({ timeout: 3000 });
    assert.equal(await form.isVisible(), true, 'the dialog stays open');
    assert.equal(await target.getAttribute('aria-invalid'), 'true', 'the field named is marked');
    assert.equal(await env.inputValue(), 'staging', 'what was typed is kept');

    // Filled: the run starts with these values.
    await target.fill('db1');
    const [ok] = await Promise.all([executed('deploy'), form.locator('button[type=submit]').click()]);
    assert.equal(ok.status(), 202);
    const { job_id: id } = await ok.json();
    await form.waitFor({ state: 'detached', timeout: 3000 });
    await scard(id).locator('.meta-params .meta-value', { hasText: /^env=staging target=db1$/ }).waitFor({ timeout: 5000 });
    await scard(id).locator('.meta', { hasText: 'tags' }).locator('.meta-value', { hasText: /^ops$/ }).waitFor();
    await sWaitStatus(id, 'completed');
    assert.deepEqual((await getJSON(sd.url, `/api/jobs/${id}`)).params, { env: 'staging', target: 'db1' });
    const logs = await getJSON(sd.url, `/api/jobs/${id}-s1/logs?order=asc`);
    assert.ok(logs.logs.some((e) => e.message === 'deploy db1 to staging: 3 of 3'), 'the values went into the step');
  });

  test('a delayed run says when it starts', { timeout: 30_000 }, async () => {
    expectedConsole = /status of 400 \(Bad Request\)/;
    // A definition without params runs at once from Run; Later… asks for a delay.
    await sdef('plain').locator('button.later').click();
    const form = runForm();
    await form.waitFor({ timeout: 3000 });
    assert.equal(await form.locator('input[data-param]').count(), 0);
    const delay = form.locator('input[name="delay"]');
    await delay.fill('soon');
    const [bad] = await Promise.all([executed('plain'), form.locator('button[type=submit]').click()]);
    assert.equal(bad.status(), 400);
    await form.locator('.modal-error', { hasText: (await bad.json()).error }).waitFor({ timeout: 3000 });
    assert.equal(await delay.getAttribute('aria-invalid'), 'true');

    await delay.fill('10m');
    const [ok] = await Promise.all([executed('plain'), form.locator('button[type=submit]').click()]);
    assert.equal(ok.status(), 202);
    const { job_id: id } = await ok.json();
    await form.waitFor({ state: 'detached', timeout: 3000 });
    await scard(id).locator('.m-origin', { hasText: /^starts in (9|10) min$/ }).waitFor({ timeout: 5000 });
    const job = await getJSON(sd.url, `/api/jobs/${id}`);
    assert.equal(job.status, 'pending');
    assert.ok(job.scheduled_at, 'the API has its start time');
    assert.equal(await scard(id).locator('.badge').getAttribute('data-status'), 'pending');
    // Cancelled before its time: it never starts.
    await postJSON(sd.url, `/api/jobs/${id}/cancel`);
    await sWaitStatus(id, 'cancelled', 10_000);
    assert.equal(await scard(id).locator('.m-origin').isVisible(), false, 'no start time once it ended');
  });

  test('a step waiting to retry counts down to its next attempt', { timeout: 40_000 }, async () => {
    // Started behind the page's back; the page learns of it over the WebSocket.
    const { job_id: id } = await postJSON(sd.url, '/api/job-definitions/flaky/execute');
    await scard(id).waitFor({ timeout: 10_000 });
    const title = sp.locator(`[data-step="${id}-s1"] .s-title`);
    await title.filter({ hasText: /^Step 1\/1: try \(attempt [12]\/3, next in \d s\)$/ }).waitFor({ timeout: 8000 });
    const first = Number(/next in (\d) s/.exec(await title.textContent())[1]);
    // The countdown moves without a reload, and the step is still `running` while it waits.
    await sp.waitForFunction(([sel, first]) => {
      const m = /next in (\d+) s/.exec(document.querySelector(sel)?.textContent || '');
      return m && Number(m[1]) < first;
    }, [`[data-step="${id}-s1"] .s-title`, first], { timeout: 3000 });
    assert.equal(await sp.locator(`[data-step="${id}-s1"]`).getAttribute('data-status'), 'running');
    await postJSON(sd.url, `/api/jobs/${id}/cancel`);
    await sWaitStatus(id, 'cancelled', 10_000);
  });

  test('the queues strip shows the default queue; pause and resume from the page and over the WebSocket', { timeout: 40_000 }, async () => {
    const queue = sp.locator('[data-queue="default"]');
    await queue.waitFor({ timeout: 5000 });
    const q0 = (await getJSON(sd.url, '/api/queues')).queues.find((q) => q.name === 'default');
    assert.ok(q0 && !q0.paused, 'the default queue exists and runs');
    assert.match(await queue.locator('.q-counts').textContent(), new RegExp(`^\\d+/${q0.concurrency} running · \\d+ pending$`));
    assert.equal(await queue.locator('.q-state').isVisible(), false);

    const [paused] = await Promise.all([
      sp.waitForResponse((r) => r.url().endsWith('/api/queues/default/pause')),
      queue.getByRole('button', { name: 'pause queue default', exact: true }).click(),
    ]);
    assert.equal(paused.status(), 200);
    await queue.locator('.q-state', { hasText: 'paused' }).waitFor({ state: 'visible', timeout: 3000 });
    assert.equal((await getJSON(sd.url, '/api/queues')).queues.find((q) => q.name === 'default').paused, true);

    // A run started now waits, and its card says why.
    const { job_id: id } = await postJSON(sd.url, '/api/job-definitions/plain/execute');
    await scard(id).locator('.m-origin', { hasText: 'queue default paused' }).waitFor({ timeout: 10_000 });
    assert.equal(await scard(id).locator('.badge').getAttribute('data-status'), 'pending');
    await queue.locator('.q-counts', { hasText: /· [1-9]\d* pending$/ }).waitFor({ timeout: 5000 });

    const [resumed] = await Promise.all([
      sp.waitForResponse((r) => r.url().endsWith('/api/queues/default/resume')),
      queue.getByRole('button', { name: 'resume queue default', exact: true }).click(),
    ]);
    assert.equal(resumed.status(), 200);
    await queue.locator('.q-state').waitFor({ state: 'hidden', timeout: 3000 });
    assert.equal((await getJSON(sd.url, '/api/queues')).queues.find((q) => q.name === 'default').paused, false);
    await sWaitStatus(id, 'completed');

    // Paused and resumed behind the page's back: the `queues` message keeps the strip current.
    await postJSON(sd.url, '/api/queues/default/pause');
    await queue.locator('.q-state').waitFor({ state: 'visible', timeout: 5000 });
    await postJSON(sd.url, '/api/queues/default/resume');
    await queue.locator('.q-state').waitFor({ state: 'hidden', timeout: 5000 });
  });

  test('the tag filter narrows the list, combines with the status filter and is remembered', { timeout: 40_000 }, async () => {
    const { job_id: nightlyRun } = await postJSON(sd.url, '/api/job-definitions/nightly/execute');
    await sWaitStatus(nightlyRun, 'completed');
    const ids = async (query) => (await getJSON(sd.url, `/api/jobs?parent_id=root${query}`)).jobs.map((j) => j.id);
    const all = await ids('');
    const nightly = await ids('&tag=nightly');
    const ops = await ids('&tag=ops');
    assert.deepEqual(nightly, [nightlyRun]);
    assert.ok(ops.length >= 1 && all.length > nightly.length + ops.length, `runs of other tags exist: ${all}`);
    await waitShown(all);

    const select = sp.getByRole('combobox', { name: 'tag filter' });
    assert.deepEqual(await select.locator('option').allTextContents(), ['all tags', 'nightly', 'ops', 'reports'], 'every tag of the definitions');
    await select.selectOption('nightly');
    await waitShown(nightly);
    assert.equal(await sp.evaluate(() => localStorage.getItem('quaero.tagFilter')), 'nightly');

    // With a status filter too: none of them failed.
    await sp.locator('.chip[data-filter="failed"]').click();
    await sp.locator('#list-note', { hasText: 'tagged “nightly”' }).waitFor({ timeout: 5000 });
    await waitShown([]);
    await sp.locator('.chip[data-filter=""]').click();
    await waitShown(nightly);

    // Kept across a reload.
    await sp.reload();
    await sp.locator('.conn-live').waitFor({ timeout: 10_000 });
    await waitShown(nightly);
    assert.equal(await select.inputValue(), 'nightly');

    // A definition's tag does the same; “all tags” shows everything again.
    await sdef('deploy').locator('.tag-btn', { hasText: 'ops' }).click();
    await waitShown(ops);
    assert.equal(await select.inputValue(), 'ops');
    await select.selectOption({ label: 'all tags' });
    await waitShown(all);
    assert.equal(await sp.evaluate(() => localStorage.getItem('quaero.tagFilter')), null);
  });
});

test('no console errors, CSP violations or requests leaving the machine', () => {
  const csp = cspViolations.map((v) => `${v.page}/${v.test}: ${v.directive} blocked ${v.blocked} ${v.sample || ''} at ${v.source}`);
  assert.deepEqual(csp, [], 'the page breaks no rule of its Content-Security-Policy');
  const unexpected = consoleErrors.filter((e) => !e.expected).map((e) => `${e.page}/${e.test}: ${e.text}`);
  assert.deepEqual(unexpected, [], 'no console errors or warnings the tests did not provoke');
  assert.deepEqual(foreignRequests, [], 'every request goes to the daemon');
  assert.deepEqual(pageErrors, [], 'no uncaught errors in any page');
});

test('the screenshot is kept out of git', (t) => {
  const shot = path.join(ARTIFACTS, 'dashboard.png');
  assert.ok(existsSync(shot), 'the test took a screenshot');
  try {
    execFileSync('git', ['rev-parse', '--git-dir'], { cwd: REPO, stdio: 'ignore' });
  } catch {
    t.skip('not a git checkout');
    return;
  }
  // exit 0 = ignored; 1 = not ignored
  execFileSync('git', ['check-ignore', '-q', shot], { cwd: REPO });
});
