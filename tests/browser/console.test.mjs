// An operator in a real browser: opens the console with the admin token,
// creates a sale, watches it sell during a burst from the load tool
// (deploy/bench's `bench purchase`), and runs reconciliation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADMIN_TOKEN, GATEWAY, api, assertAccessible, launch, shot, unique, until } from './lib.mjs';

const STOCK = 200;
const BUYERS = 600;

/** The load tool, bounded in requests and time, against 127.0.0.1 only. */
function burst(saleId) {
  const bench = process.env.SECKILL_BENCH_BIN;
  assert.ok(bench, 'SECKILL_BENCH_BIN is not set');
  const out = mkdtempSync(join(tmpdir(), 'seckill-burst-'));
  const child = spawn(bench, ['purchase', '--gateway', GATEWAY, '--sale-id', saleId,
    '--jwt-secret', process.env.SECKILL_JWT_SECRET, '--users', String(BUYERS), '--requests', String(BUYERS),
    '--concurrency', '8', '--rate', '150', '--duration-secs', '60', '--out', out, '--no-progress',
    '--user-prefix', unique('crowd')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, output })));
}

test('an operator creates a sale and watches it sell during a burst', { timeout: 240000 }, async () => {
  const operator = await launch();
  try {
    const { page } = operator;
    await page.goto(GATEWAY + '/console');
    await page.getByLabel('Admin token').fill('not-the-token');
    await page.getByRole('button', { name: 'Open the console' }).click();
    await page.getByText('That is not the admin token.').waitFor();
    await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Open the console' }).click();

    const name = unique('Console sale');
    await page.getByLabel('Name').fill(name);
    await page.getByLabel('Units', { exact: true }).fill(String(STOCK));
    await page.getByLabel('Starts in (seconds)').fill('4');
    await page.getByRole('button', { name: 'Create sale' }).click();
    const created = await page.getByText(/^Created /).textContent();
    const saleId = created.match(/\(([^)]+)\)/)[1];
    const stock = page.locator('.stat', { hasText: 'Units left' }).locator('.value');
    await until('the console watches the new sale', async () => (await stock.textContent()) === `${STOCK} of ${STOCK}`);
    await assertAccessible(page, 'the console');

    // The burst starts with the sale (the tool does not wait for it).
    const startsAt = Date.parse((await api('GET', `/api/v1/sales/${saleId}`)).body.starts_at);
    await until('the sale starts', async () => (await api('GET', '/api/v1/time')).body.now_ms >= startsAt, 15000);
    const running = burst(saleId);
    const accepted = page.locator('.stat', { hasText: 'Accepted / s' }).locator('.value');
    const seenSelling = await until('accepted purchases per second show while it sells', async () => {
      const rate = Number(await accepted.textContent());
      return rate > 0 ? rate : null;
    });
    assert.ok(seenSelling > 0);
    const { code, output } = await running;
    assert.equal(code, 0, output);

    await until('the last unit shows as sold', async () => (await stock.textContent()) === `0 of ${STOCK}`);
    const createdOrders = page.getByRole('row', { name: /^created/ }).getByRole('cell');
    await until('every unit shows as an order', async () => (await createdOrders.textContent()) === String(STOCK), 60000);
    const lag = page.locator('.stat', { hasText: 'Consumer lag' }).locator('.value');
    const dead = page.locator('.stat', { hasText: 'Dead letters' }).locator('.value');
    assert.match(await lag.textContent(), /^\d+$/);
    assert.equal(await dead.textContent(), '0');
    await page.getByText('Every service answered.').waitFor();
    await shot(page, 'console-live.png');

    await page.getByRole('button', { name: 'Run reconciliation' }).click();
    await page.getByText(/^Checked \d+ sales: /).waitFor({ timeout: 60000 });
    assert.match(await page.locator('pre.report').textContent(), new RegExp(saleId));
    await shot(page, 'console-reconciled.png');
  } finally {
    await operator.close();
  }
});
