// Regenerates the README's pictures: docs/dashboard.png (the browser dashboard) and
// docs/tui.txt (a capture of quaero-tui), both taken while a slowed-down load-demo runs.
//
//   cargo build -p quaerod -p quaero-tui && npm ci --prefix tests/browser
//   node docs/screenshots.mjs
//
// Env: QUAERO_BIN (default target/debug/quaerod), QUAERO_TUI (default target/debug/quaero-tui),
// CHROMIUM (default /usr/bin/chromium). Needs tmux for the TUI capture. The daemon runs in a
// temporary directory on a free port; nothing else is touched.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const require = createRequire(path.join(REPO, 'tests/browser/package.json'));
const { chromium } = require('playwright-core');

const BIN = path.resolve(REPO, process.env.QUAERO_BIN || 'target/debug/quaerod');
const TUI = path.resolve(REPO, process.env.QUAERO_TUI || 'target/debug/quaero-tui');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const TMUX_SESSION = `quaero-shot-${process.pid}`;

// jobs/load-demo.toml, slowed down so that a picture catches it mid-run: a warm-up, then
// 40 children of 40 events 100 ms apart on a pool of 8 workers (about 25 s in all).
const LOAD_DEMO = `
id = "load-demo"
name = "Load demo (slowed down): 40 children x 40 events"
description = "jobs/load-demo.toml at walking pace, for screenshots"

[[steps]]
name = "warm-up"
type = "emit"
description = "A few events from the step itself"
[steps.config]
count = 20
interval_ms = 100
message = "warming up {i}/{n}"

[[steps]]
name = "fan-out"
type = "emit"
description = "40 children x 40 events, 100 ms apart"
[steps.config]
count = 40
children = 40
interval_ms = 100
message = "child {child}: event {i} of {n}"

[[steps]]
name = "wrap-up"
type = "emit"
description = "A closing line"
[steps.config]
count = 3
interval_ms = 100
message = "wrap-up {i}/{n}"
`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startDaemon(dir) {
  const args = ['--port', '0', '--data', path.join(dir, 'data'), '--definitions', path.join(dir, 'jobs'),
    '--concurrency', '8', '--time-threshold', '250ms'];
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`quaerod did not start:\n${out}`)), 30_000);
    const onData = (c) => {
      out += c;
      const m = /quaerod listening on (http:\/\/[^\s()]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ''));
      }
    };
    proc.stdout.setEncoding('utf8').on('data', onData);
    proc.stderr.setEncoding('utf8').on('data', onData);
    proc.on('exit', (code) => reject(new Error(`quaerod exited with ${code}:\n${out}`)));
  });
  return { url, proc };
}

async function api(base, method, p) {
  const res = await fetch(base + p, { method, headers: { 'Content-Type': 'application/json' }, body: method === 'GET' ? undefined : '{}' });
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
  return res.json();
}

async function run(base, def) {
  return (await api(base, 'POST', `/api/job-definitions/${def}/execute`)).job_id;
}

async function waitFor(what, fn, timeoutMs = 60_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

// Resolves when the fan-out step of `id` has at least `done` finished children.
function fanOutAt(base, id, done) {
  return waitFor(`${id}: ${done} children done`, async () => {
    const job = await api(base, 'GET', `/api/jobs/${id}`);
    const s = (job.steps || [])[1];
    const cc = s && s.status === 'running' && s.child_counts;
    return cc && cc.completed >= done ? s : null;
  });
}

const tmux = (...args) => execFileSync('tmux', args, { encoding: 'utf8' });
const tmuxQuiet = (...args) => execFileSync('tmux', args, { stdio: 'ignore' });

async function main() {
  for (const f of [BIN, TUI, CHROMIUM]) if (!existsSync(f)) throw new Error(`${f} not found (see the header of this script)`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'quaero-shots-'));
  await mkdir(path.join(dir, 'jobs'));
  await writeFile(path.join(dir, 'jobs', 'load-demo.toml'), LOAD_DEMO);
  for (const f of ['pipeline.toml', 'self-check.toml']) {
    execFileSync('cp', [path.join(REPO, 'jobs', f), path.join(dir, 'jobs', f)]);
  }
  const { url, proc } = await startDaemon(dir);
  let browser;
  try {
    // Some history first: a finished pipeline run and a load-demo an operator cancelled.
    const pipe = await run(url, 'pipeline');
    await waitFor('pipeline', async () => ['completed', 'failed'].includes((await api(url, 'GET', `/api/jobs/${pipe}`)).status));
    const early = await run(url, 'load-demo');
    await fanOutAt(url, early, 0);
    await sleep(1500);
    await api(url, 'POST', `/api/jobs/${early}/cancel`);
    await waitFor('the cancel', async () => (await api(url, 'GET', `/api/jobs/${early}`)).status === 'cancelled');

    // ---- the browser dashboard
    const demo = await run(url, 'load-demo');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
    await page.goto(`${url}/queue`);
    await page.locator('.conn-live').waitFor({ timeout: 10_000 });
    const step = await fanOutAt(url, demo, 12);
    // The running manager expands and its running step's panel opens by themselves.
    await page.locator(`[data-log="${step.id}"] .ev`).first().waitFor({ timeout: 10_000 });
    // Collapse the warm-up's panel (it opened while the warm-up ran) to make room.
    const warm = page.locator(`[data-step="${demo}-s1"] .ev-toggle[aria-expanded="true"]`);
    if (await warm.count()) await warm.click();
    await sleep(1200);
    await page.screenshot({ path: path.join(HERE, 'dashboard.png') });
    console.log(`wrote docs/dashboard.png (${demo} at ${(await api(url, 'GET', `/api/jobs/${demo}`)).steps[1].child_counts.completed}/40 children)`);
    await browser.close();
    browser = null;

    // ---- the terminal dashboard, on a fresh run
    const demo2 = await run(url, 'load-demo');
    tmux('new-session', '-d', '-s', TMUX_SESSION, '-x', '120', '-y', '35', `${TUI} --server ${url}`);
    try {
      await waitFor('the TUI to list the run', () => tmux('capture-pane', '-p', '-t', TMUX_SESSION).includes(demo2), 15_000);
      await fanOutAt(url, demo2, 12);
      tmux('send-keys', '-t', TMUX_SESSION, 'g', 'Enter'); // the newest manager: its steps
      await sleep(800);
      tmux('send-keys', '-t', TMUX_SESSION, 'j', 'Enter'); // step 2 (fan-out): its events
      await waitFor('events in the TUI', () => /child \d+: event/.test(tmux('capture-pane', '-p', '-t', TMUX_SESSION)), 10_000);
      await sleep(1500);
      const screen = tmux('capture-pane', '-p', '-t', TMUX_SESSION).replace(/[ \t]+$/gm, '').replace(/\n+$/, '\n');
      await writeFile(path.join(HERE, 'tui.txt'), screen);
      console.log(`wrote docs/tui.txt (${demo2})`);
    } finally {
      try {
        tmuxQuiet('send-keys', '-t', TMUX_SESSION, 'q');
        await sleep(300);
        tmuxQuiet('kill-session', '-t', TMUX_SESSION);
      } catch {
        // already gone
      }
    }
  } finally {
    if (browser) await browser.close();
    proc.kill('SIGTERM');
    await new Promise((r) => (proc.exitCode !== null ? r() : proc.once('exit', r)));
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
