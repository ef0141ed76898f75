// Shoppers in a real browser against the real stack: one waits for the
// countdown (with a browser clock two hours wrong), buys, sees `created`,
// pays and sees `paid`; a second sees sold out; a third cancels, and the
// unit comes back on the list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAY, PHONE, api, assertAccessible, createSale, launch, shot, signIn, unique, until } from './lib.mjs';

const card = (page, name) => page.getByRole('article', { name });
const nav = (page, name) => page.getByRole('navigation', { name: 'Shop' }).getByRole('link', { name, exact: true });

test('a shopper waits for the countdown, buys, pays; the next one sees sold out', { timeout: 180000 }, async () => {
  const sale = await createSale({ name: unique('Lantern'), stock: 1, inMs: 12000, requireToken: true });
  // The browser's clock is two hours behind the server's: the countdown must
  // still say seconds, and the button open at the server's start.
  const alice = await launch({ skewMs: -2 * 3600 * 1000 });
  const bob = await launch({ viewport: PHONE });
  try {
    const { page } = alice;
    await signIn(page, unique('alice'));
    const listed = card(page, sale.name);
    await listed.getByText('1 of 1 left').waitFor();
    const countdown = await listed.locator('.countdown').textContent();
    assert.match(countdown, /^Starts in 00:(0\d|1[0-2])$/, 'counted from the server clock');
    await assertAccessible(page, 'the list of sales');
    await shot(page, 'storefront-sales.png');

    await listed.getByRole('link', { name: /View sale/ }).click();
    const buy = page.getByRole('button', { name: 'Buy now' });
    assert.equal(await buy.isDisabled(), true, 'the button waits for the start');
    assert.ok(Date.now() < sale.startsAtMs, 'the button was seen closed before the start');
    await until('the button opens at the start', () => buy.isEnabled(), 20000);
    assert.ok(Date.now() >= sale.startsAtMs - 1000, 'not opened early');
    await buy.click();
    await page.getByText('Order confirmed.').waitFor();
    await page.getByRole('button', { name: 'Bought' }).waitFor();
    await assertAccessible(page, 'the sale page');
    await shot(page, 'storefront-sale.png');

    // A second shopper, on a phone: the only unit is taken.
    await signIn(bob.page, unique('bob'));
    await bob.page.goto(`${GATEWAY}/#/sales/${sale.sale_id}`);
    await bob.page.getByRole('button', { name: 'Sold out' }).waitFor();
    assert.equal(await bob.page.getByRole('button', { name: 'Sold out' }).isDisabled(), true);
    await bob.page.getByText('Sold out', { exact: true }).first().waitFor();
    await assertAccessible(bob.page, 'a sold-out sale on a phone');
    await shot(bob.page, 'storefront-sold-out-phone.png');

    await nav(page, 'My orders').click();
    const row = page.getByRole('row', { name: new RegExp(sale.name) });
    await row.getByText('Awaiting payment').waitFor();
    assert.match(await row.locator('.countdown').textContent(), /^1[45]:\d\d$/, 'time left to pay');
    await assertAccessible(page, 'my orders');
    await shot(page, 'storefront-orders.png');
    // The first payment's answer is lost on the way: the retry must carry
    // the same Idempotency-Key, so the shop can never charge twice.
    const keys = [];
    await page.route('**/pay', async (route) => {
      keys.push(route.request().headers()['idempotency-key']);
      if (keys.length === 1) await route.abort('connectionreset');
      else await route.continue();
    });
    await row.getByRole('button', { name: /^Pay/ }).click();
    await page.getByText('We could not reach the shop').waitFor();
    await row.getByRole('button', { name: /^Pay/ }).click();
    await row.getByText('Paid', { exact: true }).waitFor();
    assert.equal(keys.length, 2);
    assert.ok(keys[0] && keys[0] === keys[1], `the retry reused the key: ${keys}`);
    await page.getByText('Paid. Thank you!').waitFor();
    assert.equal(await row.getByRole('button').count(), 0, 'nothing left to do on a paid order');
    await shot(page, 'storefront-paid.png');
  } finally {
    await alice.close();
    await bob.close();
  }
});

test('a shopper who cancels puts the unit back on the list (keyboard only)', { timeout: 120000 }, async () => {
  const sale = await createSale({ name: unique('Kettle'), stock: 1 });
  const carol = await launch();
  try {
    const { page } = carol;
    await page.goto(`${GATEWAY}/`);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
    await page.goto(`${GATEWAY}/#/sign-in`);
    await until('the sign-in form takes the focus', () => page.evaluate(() => document.activeElement.id === 'user'));
    await page.keyboard.type(unique('carol'));
    await page.keyboard.press('Enter');
    await page.getByText('Signed in as').waitFor();
    // The list refreshes every two seconds; the focus must stay where she put it.
    const link = card(page, sale.name).getByRole('link', { name: /View sale/ });
    await link.focus();
    let refreshes = 0;
    page.on('response', (r) => { if (r.url().includes('/api/v1/sales?')) refreshes += 1; });
    await until('two refreshes of the list', () => refreshes >= 2, 10000);
    assert.equal(await link.evaluate((a) => a === document.activeElement), true, 'the focus survived the refreshes');
    await page.keyboard.press('Enter');
    const buy = page.getByRole('button', { name: 'Buy now' });
    await until('the button opens', () => buy.isEnabled());
    await buy.focus();
    await page.keyboard.press('Enter');
    await page.getByText('Order confirmed.').waitFor();
    await nav(page, 'Sales').click();
    await card(page, sale.name).getByText('Sold out').waitFor();

    await nav(page, 'My orders').click();
    const row = page.getByRole('row', { name: new RegExp(sale.name) });
    await row.getByRole('button', { name: /^Cancel/ }).focus();
    await page.keyboard.press('Enter');
    await row.getByText('Cancelled').waitFor();
    await page.getByText('Order cancelled.').waitFor();

    await nav(page, 'Sales').click();
    await card(page, sale.name).getByText('1 of 1 left').waitFor();
    const again = await api('GET', `/api/v1/sales/${sale.sale_id}`);
    assert.equal(again.body.stock_remaining, 1, 'the gateway sells it again');
  } finally {
    await carol.close();
  }
});

test('the pages are cached by content and load nothing from elsewhere', async () => {
  const page = await fetch(GATEWAY + '/');
  assert.equal(page.status, 200);
  assert.equal(page.headers.get('cache-control'), 'no-cache');
  assert.match(page.headers.get('content-security-policy'), /default-src 'none'/);
  const html = await page.text();
  const assets = [...html.matchAll(/"(\/assets\/[^"]+)"/g)].map((m) => m[1]);
  assert.ok(assets.length >= 3, html);
  for (const path of assets) {
    assert.match(path, /\.[0-9a-f]{12}\.(js|css)$/, 'named by content');
    const asset = await fetch(GATEWAY + path, { headers: { 'Accept-Encoding': 'gzip' } });
    assert.equal(asset.status, 200, path);
    assert.equal(asset.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.equal(asset.headers.get('content-encoding'), 'gzip', path);
    assert.equal(asset.headers.get('vary'), 'Accept-Encoding', path);
    const plain = await fetch(GATEWAY + path, { headers: { 'Accept-Encoding': 'identity' } });
    assert.equal(plain.headers.get('content-encoding'), null, 'identity for who asks for it');
    assert.equal(await plain.text(), await asset.text(), 'the same file either way');
  }
  const revalidated = await fetch(GATEWAY + '/', { headers: { 'If-None-Match': page.headers.get('etag') } });
  assert.equal(revalidated.status, 304);
});

test('a refused try reads as "try again", and a lost answer still ends in the order', { timeout: 120000 }, async () => {
  const sale = await createSale({ name: unique('Teapot'), stock: 1 });
  const dave = await launch();
  try {
    const { page } = dave;
    await signIn(page, unique('dave'));
    // The first purchase meets the gateway's rate limiter (its answer, as the
    // gateway gives it); the second reaches the gateway and is accepted, but
    // its answer is lost on the way back: the page hears what the gateway
    // says when it cannot tell, 504 order_outcome_unknown with the order id.
    let attempt = 0;
    await page.route(`**/api/v1/sales/${sale.sale_id}/orders`, async (route) => {
      attempt += 1;
      if (attempt === 1) {
        await route.fulfill({ status: 429, headers: { 'Retry-After': '1' }, json: { error: { code: 'rate_limited', message: 'too many requests' } } });
        return;
      }
      const real = await route.fetch();
      assert.equal(real.status(), 202);
      const { order_id: orderId } = await real.json();
      await route.fulfill({ status: 504, json: { error: { code: 'order_outcome_unknown', message: 'no answer yet', order_id: orderId } } });
    });
    await page.goto(`${GATEWAY}/#/sales/${sale.sale_id}`);
    const buy = page.getByRole('button', { name: 'Buy now' });
    await until('the button opens', () => buy.isEnabled());
    await buy.click();
    await page.getByText('Lots of shoppers right now. Wait a moment, then try again.').waitFor();
    await until('the button opens again after a refusal', () => buy.isEnabled());
    await buy.click();
    await page.getByText('Order confirmed.').waitFor();
    assert.equal(attempt, 2);
    const mine = await page.evaluate(async () => {
      const answer = await window.Seckill.call('GET', '/api/v1/users/me/orders', { token: window.Seckill.token() });
      return answer.body.orders.map((o) => o.status);
    });
    assert.deepEqual(mine, ['created'], 'one order, the one whose answer was lost');
  } finally {
    await dave.close();
  }
});
