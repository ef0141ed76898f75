// What the browser tests share: the stack's addresses (from tests/tests/browser.rs),
// Debian's Chromium driven by playwright-core, an accessibility check with
// axe-core, and a guard that every request stays on the gateway's origin.
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

function required(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run these through tests/tests/browser.rs`);
  return value;
}

export const GATEWAY = required('SECKILL_GATEWAY_URL');
export const ADMIN_TOKEN = required('SECKILL_ADMIN_TOKEN');
export const SHOTS = process.env.SECKILL_SCREENSHOTS_DIR || mkdtempSync(join(tmpdir(), 'seckill-shots-'));
mkdirSync(SHOTS, { recursive: true });

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 860 };
const WAIT_MS = 30000;

/** A browser of its own for one actor: fresh profile, the flags this machine needs. */
export async function launch({ viewport = DESKTOP, skewMs = 0 } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'seckill-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.SECKILL_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'],
  });
  const foreign = [];
  context.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(GATEWAY + '/') && !url.startsWith('data:')) foreign.push(url);
  });
  const problems = [];
  context.on('weberror', (error) => problems.push(String(error.error())));
  if (skewMs) await context.clock.install({ time: Date.now() + skewMs });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(message.text());
  });
  page.setDefaultTimeout(WAIT_MS);
  return {
    context, page,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
      assert.deepEqual(foreign, [], 'the pages loaded something from outside the gateway');
      // 4xx answers the page handles (sold out, ...) log as console errors; a
      // script error would not be one of them.
      assert.deepEqual(problems.filter((p) => !p.includes('Failed to load resource')), [], 'page errors');
    },
  };
}

/** axe-core's WCAG A and AA rules on the page as it is now. */
export async function assertAccessible(page, what) {
  // Evaluated through the devtools protocol: the pages' CSP does not apply.
  await page.evaluate(readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8'));
  const result = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
  }));
  const violations = result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
  assert.deepEqual(violations, [], `${what}: accessibility violations`);
}

export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, name), fullPage: true });
}

/** The gateway's API, from the test itself (not through a page). */
export async function api(method, path, { token, body, headers = {} } = {}) {
  const response = await fetch(GATEWAY + path, {
    method,
    headers: { ...(token ? { Authorization: 'Bearer ' + token } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10000),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null, headers: response.headers };
}

/** A sale starting `inMs` from the server's now. */
export async function createSale({ name, stock, inMs = 0, price = 1999, requireToken = false }) {
  const now = (await api('GET', '/api/v1/time')).body.now_ms;
  const starts = now + inMs;
  const answer = await api('POST', '/api/v1/admin/sales', {
    token: ADMIN_TOKEN,
    body: {
      name, stock, unit_price_cents: price, per_user_limit: 1, require_purchase_token: requireToken,
      starts_at: new Date(starts).toISOString(), ends_at: new Date(starts + 30 * 60000).toISOString(),
    },
  });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return { ...answer.body, startsAtMs: starts };
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function until(what, check, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

export async function signIn(page, user) {
  await page.goto(GATEWAY + '/#/sign-in');
  await page.getByLabel('User name').fill(user);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Signed in as').waitFor();
}

export const unique = (prefix) => `${prefix}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
