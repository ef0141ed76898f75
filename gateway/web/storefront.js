// seckill storefront: the sales, one sale's buy button, and the shopper's
// orders. Plain JavaScript over the gateway's JSON API (api.js). Views are
// built once and updated in place, so focus and screen-reader announcements
// survive the refreshes.
'use strict';

(function () {
  const S = window.Seckill;
  const { el } = S;
  const view = document.getElementById('view');
  const REFRESH_MS = { list: 2000, sale: 1000, orders: 2000 };
  const FOLLOW_MS = 500;
  const FOLLOW_FOR_MS = 60000;

  let refreshTimer = null;
  let current = null; // the view's { tick(), refresh() }

  // ---- shared pieces -------------------------------------------------------

  function statusOf(sale, at) {
    if (at < Date.parse(sale.starts_at)) return 'upcoming';
    if (at >= Date.parse(sale.ends_at)) return 'ended';
    return 'active';
  }
  const STATUS_TEXT = { upcoming: 'Starts soon', active: 'On sale now', ended: 'Ended' };

  function countdownText(sale, at) {
    switch (statusOf(sale, at)) {
      case 'upcoming': return 'Starts in ' + S.duration(Date.parse(sale.starts_at) - at);
      case 'active': return 'Ends in ' + S.duration(Date.parse(sale.ends_at) - at);
      default: return 'This sale has ended';
    }
  }

  // A stock bar: "37 of 100 left" and a filled bar (decorative: the text says it).
  function stockBar() {
    const text = el('span');
    const fill = el('div', { class: 'fill' });
    const node = el('div', { class: 'stock' }, text, el('div', { class: 'bar', 'aria-hidden': 'true' }, fill));
    return {
      node,
      set(sale) {
        const left = Math.max(0, sale.stock_remaining);
        text.textContent = left === 0 ? 'Sold out' : left + ' of ' + sale.stock + ' left';
        fill.style.width = (sale.stock > 0 ? (100 * left) / sale.stock : 0) + '%';
      },
    };
  }

  function notice(kind, ...children) {
    return el('p', { class: 'notice ' + kind }, ...children);
  }

  function needsSignIn(what) {
    view.replaceChildren(
      el('h1', {}, what),
      notice('warn', 'Please ', el('a', { href: '#/sign-in' }, 'sign in'), ' first.'),
    );
  }

  function renderWho() {
    const who = document.getElementById('who');
    const token = S.token();
    const user = token && S.userOf(token);
    if (user) {
      who.replaceChildren(
        'Signed in as ', el('strong', {}, user), ' ',
        el('button', { class: 'secondary', type: 'button', onclick: () => { S.setToken(null); route(); } }, 'Sign out'),
      );
    } else {
      who.replaceChildren(el('a', { href: '#/sign-in' }, 'Sign in'));
    }
  }

  // ---- the list of sales ---------------------------------------------------

  function listView() {
    const grid = el('div', { class: 'grid' });
    const status = el('p', { class: 'notice', role: 'status' });
    view.replaceChildren(el('h1', {}, 'Flash sales'), status, grid);
    const cards = new Map();

    function card(sale) {
      const badge = el('span', { class: 'badge' });
      const countdown = el('p', { class: 'countdown' });
      const stock = stockBar();
      const node = el('article', { class: 'card', 'aria-labelledby': 'sale-' + sale.sale_id },
        el('h2', { id: 'sale-' + sale.sale_id }, sale.name),
        badge,
        el('p', { class: 'price' }, S.money(sale.unit_price_cents)),
        countdown,
        stock.node,
        el('a', { class: 'button', href: '#/sales/' + encodeURIComponent(sale.sale_id) }, 'View sale', el('span', { class: 'skip' }, ': ' + sale.name)),
      );
      return { node, badge, countdown, stock, sale };
    }

    function tick() {
      const at = S.now();
      for (const c of cards.values()) {
        const s = statusOf(c.sale, at);
        c.badge.className = 'badge ' + s;
        c.badge.textContent = STATUS_TEXT[s];
        c.countdown.textContent = countdownText(c.sale, at);
      }
    }

    async function refresh() {
      const answer = await S.call('GET', '/api/v1/sales?limit=100');
      if (answer.status !== 200) {
        status.textContent = S.explain(answer);
        return;
      }
      const { sales } = answer.body;
      status.textContent = sales.length === 0 ? 'No sales right now. Come back soon.' : '';
      const seen = new Set();
      sales.forEach((sale, index) => {
        seen.add(sale.sale_id);
        let c = cards.get(sale.sale_id);
        if (!c) {
          c = card(sale);
          cards.set(sale.sale_id, c);
        }
        c.sale = sale;
        c.stock.set(sale);
        S.place(grid, c.node, index); // the server's order, never rebuilt
      });
      for (const [id, c] of cards) {
        if (!seen.has(id)) { c.node.remove(); cards.delete(id); }
      }
      tick();
    }
    return { tick, refresh, every: REFRESH_MS.list };
  }

  // ---- one sale ------------------------------------------------------------

  function saleView(saleId) {
    const title = el('h1', {}, 'Sale');
    const badge = el('span', { class: 'badge' });
    const price = el('p', { class: 'price' });
    const countdown = el('p', { class: 'countdown', id: 'countdown' });
    const stock = stockBar();
    const buy = el('button', { class: 'big', type: 'button', disabled: true, 'aria-describedby': 'countdown' }, 'Buy now');
    const outcome = el('div', { class: 'notice', role: 'status', 'aria-live': 'polite' });
    view.replaceChildren(
      el('p', {}, el('a', { href: '#/' }, 'All sales')),
      el('article', { class: 'card' }, title, badge, price, countdown, stock.node, buy, outcome),
    );
    let sale = null;
    let busy = false;
    let done = false; // bought, or sold out: the button stays off
    let bought = false;

    function tick() {
      if (!sale) return;
      const at = S.now();
      const s = statusOf(sale, at);
      badge.className = 'badge ' + s;
      badge.textContent = STATUS_TEXT[s];
      countdown.textContent = countdownText(sale, at);
      const soldOut = sale.stock_remaining <= 0;
      buy.disabled = busy || done || s !== 'active' || soldOut;
      if (!busy && !done) buy.textContent = soldOut ? 'Sold out' : 'Buy now';
    }

    async function refresh() {
      const answer = await S.call('GET', '/api/v1/sales/' + encodeURIComponent(saleId));
      if (answer.status !== 200) {
        if (!sale) outcome.replaceChildren(notice('bad', S.explain(answer)));
        return;
      }
      sale = answer.body;
      title.textContent = sale.name;
      price.textContent = S.money(sale.unit_price_cents);
      stock.set(sale);
      tick();
    }

    function say(kind, ...children) {
      outcome.className = 'notice ' + kind;
      outcome.replaceChildren(...children);
    }

    async function follow(orderId) {
      const until = Date.now() + FOLLOW_FOR_MS;
      while (Date.now() < until && current && current.saleId === saleId) {
        const answer = await S.call('GET', '/api/v1/orders/' + encodeURIComponent(orderId), { token: S.token() });
        const order = answer.status === 200 ? answer.body : null;
        if (order && order.status === 'created') {
          say('ok', el('strong', {}, 'Order confirmed. '),
            'Pay within ' + S.duration(Date.parse(order.expires_at) - S.now()) + ' in ',
            el('a', { href: '#/orders' }, 'My orders'), '.');
          return;
        }
        if (order && order.status === 'paid') {
          say('ok', el('strong', {}, 'Paid. '), 'Thank you!');
          return;
        }
        if (order && order.status === 'failed') {
          say('bad', 'We could not get a unit for you: ' + (order.reason === 'insufficient_stock' ? 'it sold out first.' : 'the order was not placed.'));
          done = bought = false;
          return;
        }
        if (order && order.status !== 'queued') {
          say('warn', 'This order is ' + order.status + '. See ', el('a', { href: '#/orders' }, 'My orders'), '.');
          return;
        }
        await new Promise((r) => setTimeout(r, FOLLOW_MS));
      }
      say('warn', 'We are still confirming your order. Check ', el('a', { href: '#/orders' }, 'My orders'), ' in a minute.');
    }

    async function purchase() {
      const token = S.token();
      if (!token) {
        say('warn', 'Please ', el('a', { href: '#/sign-in' }, 'sign in'), ' to buy.');
        return;
      }
      busy = true;
      buy.textContent = 'Buying…';
      tick();
      try {
        const headers = {};
        if (sale.require_purchase_token) {
          const pt = await S.call('GET', '/api/v1/sales/' + encodeURIComponent(saleId) + '/purchase-token', { token });
          if (pt.status !== 200) {
            say('bad', S.explain(pt));
            return;
          }
          headers[pt.body.header] = pt.body.purchase_token;
        }
        const answer = await S.call('POST', '/api/v1/sales/' + encodeURIComponent(saleId) + '/orders', { token, headers, body: { quantity: 1 } });
        const code = answer.body && answer.body.error && answer.body.error.code;
        if (answer.status === 202) {
          done = bought = true;
          say('ok', el('strong', {}, 'Queued. '), 'Your unit is held while we confirm your order…');
          await follow(answer.body.order_id);
        } else if (code === 'order_outcome_unknown' && answer.body.error.order_id) {
          done = bought = true;
          say('warn', S.explain(answer));
          await follow(answer.body.error.order_id);
        } else if (code === 'sold_out') {
          done = true;
          sale.stock_remaining = 0;
          stock.set(sale);
          say('bad', S.explain(answer));
        } else if (code === 'already_purchased') {
          done = bought = true;
          say('warn', 'You already have an order for this sale. See ', el('a', { href: '#/orders' }, 'My orders'), '.');
        } else {
          say('bad', S.explain(answer));
        }
      } finally {
        busy = false;
        if (done) buy.textContent = bought ? 'Bought' : 'Sold out';
        tick();
      }
    }
    buy.addEventListener('click', purchase);
    return { tick, refresh, every: REFRESH_MS.sale, saleId };
  }

  // ---- my orders -----------------------------------------------------------

  const ORDER_TEXT = {
    queued: 'Confirming', created: 'Awaiting payment', paid: 'Paid',
    cancelled: 'Cancelled', expired: 'Expired: not paid in time', failed: 'Not placed',
  };

  // One Idempotency-Key per payment attempt, kept until a final answer, so a
  // retry after a timeout or a lost answer can never charge twice.
  function payKey(orderId) {
    const name = 'seckill.pay.' + orderId;
    let key = sessionStorage.getItem(name);
    if (!key) {
      key = crypto.randomUUID ? crypto.randomUUID()
        : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
      sessionStorage.setItem(name, key);
    }
    return key;
  }

  function ordersView() {
    const token = S.token();
    if (!token) { needsSignIn('My orders'); return null; }
    const status = el('div', { class: 'notice', role: 'status', 'aria-live': 'polite' });
    const body = el('tbody');
    const table = el('table', { class: 'orders' },
      el('caption', { class: 'skip' }, 'Your orders, newest first'),
      el('thead', {}, el('tr', {}, ['Sale', 'Status', 'Amount', 'Pay within', 'Actions'].map((h) => el('th', { scope: 'col' }, h)))),
      body);
    view.replaceChildren(el('h1', {}, 'My orders'), status, table);
    const names = new Map();
    const rows = new Map();

    function say(kind, text) {
      status.className = 'notice ' + kind;
      status.textContent = text;
    }

    async function act(order, what) {
      const path = '/api/v1/orders/' + encodeURIComponent(order.order_id) + '/' + what;
      const headers = what === 'pay' ? { 'Idempotency-Key': payKey(order.order_id) } : {};
      const answer = await S.call('POST', path, { token: S.token(), headers });
      if (answer.status === 200) {
        if (what === 'pay') sessionStorage.removeItem('seckill.pay.' + order.order_id);
        say('ok', what === 'pay' ? 'Paid. Thank you!' : 'Order cancelled. The unit is back on sale.');
      } else {
        // A final refusal ends this attempt; a timeout or outage keeps the key.
        if (what === 'pay' && answer.status >= 400 && answer.status < 500) sessionStorage.removeItem('seckill.pay.' + order.order_id);
        say('bad', S.explain(answer));
      }
      await refresh();
    }

    function row(order) {
      const cells = { sale: el('td'), status: el('td'), amount: el('td'), due: el('td', { class: 'countdown' }), actions: el('div', { class: 'actions' }) };
      const tr = el('tr', {}, cells.sale, cells.status, cells.amount, cells.due, el('td', {}, cells.actions));
      return { tr, cells, order, shown: null };
    }

    function tick() {
      const at = S.now();
      for (const r of rows.values()) {
        const o = r.order;
        r.cells.due.textContent = o.status === 'created' && o.expires_at ? S.duration(Date.parse(o.expires_at) - at) : '';
      }
    }

    async function refresh() {
      const [mine, sales] = await Promise.all([
        S.call('GET', '/api/v1/users/me/orders', { token: S.token() }),
        names.size === 0 ? S.call('GET', '/api/v1/sales?limit=100') : Promise.resolve(null),
      ]);
      if (sales && sales.status === 200) for (const s of sales.body.sales) names.set(s.sale_id, s.name);
      if (mine.status !== 200) { say('bad', S.explain(mine)); return; }
      const { orders } = mine.body;
      if (orders.length === 0 && !status.textContent) say('', 'No orders yet.');
      const seen = new Set();
      orders.forEach((order, index) => {
        seen.add(order.order_id);
        let r = rows.get(order.order_id);
        if (!r) { r = row(order); rows.set(order.order_id, r); }
        r.order = order;
        S.place(body, r.tr, index);
        const name = names.get(order.sale_id) || order.sale_id;
        r.cells.sale.textContent = name;
        r.cells.status.textContent = ORDER_TEXT[order.status] || order.status;
        r.cells.amount.textContent = order.amount_cents !== undefined ? S.money(order.amount_cents) : '';
        if (r.shown !== order.status) {
          r.shown = order.status;
          r.cells.actions.replaceChildren(...(order.status === 'created' ? [
            el('button', { type: 'button', onclick: () => act(r.order, 'pay') }, 'Pay', el('span', { class: 'skip' }, ' for ' + name)),
            el('button', { type: 'button', class: 'secondary', onclick: () => act(r.order, 'cancel') }, 'Cancel', el('span', { class: 'skip' }, ' order for ' + name)),
          ] : []));
        }
      });
      for (const [id, r] of rows) if (!seen.has(id)) { r.tr.remove(); rows.delete(id); }
      tick();
    }
    return { tick, refresh, every: REFRESH_MS.orders };
  }

  // ---- sign-in ------------------------------------------------------------

  function signInView() {
    const name = el('input', { id: 'user', name: 'user', autocomplete: 'username', required: true, maxlength: 64 });
    const outcome = el('div', { class: 'notice', role: 'status' });
    const form = el('form', { class: 'stack' },
      el('label', { for: 'user' }, 'User name'), name,
      el('button', { type: 'submit' }, 'Sign in'),
      outcome);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const answer = await S.call('POST', '/api/v1/dev/sign-in', { body: { user: name.value.trim() } });
      if (answer.status === 200) {
        S.setToken(answer.body.token);
        location.hash = '#/';
      } else if (answer.status === 404) {
        outcome.className = 'notice warn';
        outcome.textContent = 'Sign in on the shop\u2019s account page: it brings you back here signed in. (The development sign-in is off on this server.)';
      } else {
        outcome.className = 'notice bad';
        outcome.textContent = S.explain(answer);
      }
    });
    view.replaceChildren(el('h1', {}, 'Sign in'), form);
    name.focus();
    return null;
  }

  // ---- routing ----------------------------------------------------------

  function route() {
    clearInterval(refreshTimer);
    renderWho();
    const hash = location.hash || '#/';
    const sale = hash.match(/^#\/sales\/([^/]+)$/);
    if (sale) current = saleView(decodeURIComponent(sale[1]));
    else if (hash === '#/orders') current = ordersView();
    else if (hash === '#/sign-in') current = signInView();
    else current = listView();
    if (current) {
      current.refresh();
      refreshTimer = setInterval(() => current && current.refresh(), current.every);
    }
  }

  // A new view takes the focus (unless it placed it itself), so keyboard and
  // screen-reader users start reading it from the top.
  window.addEventListener('hashchange', () => {
    route();
    if (!view.contains(document.activeElement)) document.getElementById('main').focus();
  });
  setInterval(() => current && current.tick(), 250);
  S.syncClock().finally(route);
  setInterval(S.syncClock, 60000);
})();
