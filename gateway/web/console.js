// seckill console: create a sale, watch it sell, run reconciliation. Behind
// the admin token, which stays in this tab's sessionStorage only. The live
// numbers come from the gateway's /api/v1/admin/sales/{id}/live, polled once
// a second; rates and p99 are computed here from the counters' differences.
'use strict';

(function () {
  const S = window.Seckill;
  const { el } = S;
  const view = document.getElementById('view');
  const ADMIN_KEY = 'seckill.admin';
  const POLL_MS = 1000;
  const POINTS = 120;

  const adminToken = () => sessionStorage.getItem(ADMIN_KEY);
  const adminCall = (method, path, body) => S.call(method, path, { token: adminToken(), body });

  function field(id, label, attrs) {
    return el('label', { for: id }, label, el('input', { id, name: id, ...attrs }));
  }

  function renderWho() {
    const who = document.getElementById('who');
    who.replaceChildren(adminToken()
      ? el('button', { type: 'button', class: 'secondary', onclick: () => { sessionStorage.removeItem(ADMIN_KEY); start(); } }, 'Sign out')
      : '');
  }

  // ---- the admin token ----------------------------------------------------

  function signIn() {
    const outcome = el('div', { class: 'notice', role: 'status' });
    const form = el('form', { class: 'stack' },
      field('admin-token', 'Admin token', { type: 'password', autocomplete: 'current-password', required: true }),
      el('button', { type: 'submit' }, 'Open the console'), outcome);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      sessionStorage.setItem(ADMIN_KEY, form.querySelector('input').value.trim());
      // Any admin call proves the token; the live view of no sale is a 404.
      const probe = await adminCall('GET', '/api/v1/admin/sales/-/live');
      if (probe.status === 401 || probe.status === 403) {
        sessionStorage.removeItem(ADMIN_KEY);
        outcome.className = 'notice bad';
        outcome.textContent = 'That is not the admin token.';
        return;
      }
      start();
    });
    view.replaceChildren(el('h1', {}, 'Console'), form);
  }

  // ---- create a sale -------------------------------------------------------

  function createSection(onCreated) {
    const outcome = el('div', { class: 'notice', role: 'status' });
    const form = el('form', { class: 'stack', 'aria-labelledby': 'create-title' },
      field('sale-name', 'Name', { required: true, maxlength: 200, value: 'Flash sale' }),
      field('sale-stock', 'Units', { type: 'number', min: 1, required: true, value: 100 }),
      field('sale-price', 'Price (USD)', { type: 'number', min: 0, step: '0.01', required: true, value: '9.99' }),
      field('sale-starts', 'Starts in (seconds)', { type: 'number', min: 0, required: true, value: 30 }),
      field('sale-minutes', 'Lasts (minutes)', { type: 'number', min: 1, required: true, value: 30 }),
      field('sale-limit', 'Units per shopper', { type: 'number', min: 1, required: true, value: 1 }),
      el('label', { class: 'check', for: 'sale-token' }, el('input', { type: 'checkbox', id: 'sale-token' }), 'Require a purchase token (anti-bot step)'),
      el('button', { type: 'submit' }, 'Create sale'), outcome);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const v = (id) => form.querySelector('#' + id);
      const startsAt = S.now() + Number(v('sale-starts').value) * 1000;
      const body = {
        name: v('sale-name').value.trim(),
        stock: Number(v('sale-stock').value),
        unit_price_cents: Math.round(Number(v('sale-price').value) * 100),
        starts_at: new Date(startsAt).toISOString(),
        ends_at: new Date(startsAt + Number(v('sale-minutes').value) * 60000).toISOString(),
        per_user_limit: Number(v('sale-limit').value),
        require_purchase_token: v('sale-token').checked,
      };
      const answer = await adminCall('POST', '/api/v1/admin/sales', body);
      if (answer.status === 201) {
        outcome.className = 'notice ok';
        outcome.textContent = 'Created ' + answer.body.name + ' (' + answer.body.sale_id + ').';
        onCreated(answer.body.sale_id);
      } else {
        outcome.className = 'notice bad';
        outcome.textContent = (answer.body && answer.body.error && answer.body.error.message) || S.explain(answer);
      }
    });
    return el('section', { 'aria-labelledby': 'create-title' }, el('h2', { id: 'create-title' }, 'Create a sale'), form);
  }

  // ---- watch a sale --------------------------------------------------------

  function stat(label) {
    const value = el('div', { class: 'value' }, '–');
    return { node: el('div', { class: 'stat' }, value, el('div', { class: 'label' }, label)), value };
  }

  // The p99 of the requests between two snapshots of a cumulative histogram.
  function p99(before, after) {
    if (!before) return null;
    const total = after.count - before.count;
    if (total <= 0) return null;
    for (let i = 0; i < after.buckets.length; i++) {
      if (after.buckets[i].count - before.buckets[i].count >= 0.99 * total) return '≤ ' + after.buckets[i].le_ms + ' ms';
    }
    const last = after.buckets[after.buckets.length - 1];
    return '> ' + last.le_ms + ' ms';
  }

  function watchSection() {
    const select = el('select', { id: 'watch-sale' });
    const picked = el('form', { class: 'inline' }, el('label', { for: 'watch-sale' }, 'Sale', select));
    const stats = {
      stock: stat('Units left'), accepted: stat('Accepted / s'), soldOut: stat('Sold out / s'),
      rejected: stat('Rejected / s'), p99: stat('p99 latency (purchases)'), lag: stat('Consumer lag'),
      dead: stat('Dead letters'),
    };
    const states = el('tbody');
    const source = el('p', { class: 'muted' });
    const chartBox = el('div', { class: 'chart', role: 'img', 'aria-label': 'Purchases per second: accepted, sold out and rejected, over the last two minutes' });
    const section = el('section', { 'aria-labelledby': 'watch-title' },
      el('h2', { id: 'watch-title' }, 'Live sale'), picked,
      el('div', { class: 'stats', role: 'status', 'aria-live': 'off' }, Object.values(stats).map((s) => s.node)),
      chartBox,
      el('table', {}, el('caption', {}, 'Orders by state'),
        el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'State'), el('th', { scope: 'col' }, 'Orders'))), states),
      source);

    const series = [[], [], [], []];
    let chart = null;
    let previous = null;
    let watching = null;
    let listed = '';

    function ensureChart() {
      if (chart || !window.uPlot) return;
      const width = Math.max(280, chartBox.clientWidth - 16);
      chart = new window.uPlot({
        width, height: 220,
        series: [{}, { label: 'Accepted/s', stroke: '#1d6b34', width: 2 },
          { label: 'Sold out/s', stroke: '#b3261e', width: 2 }, { label: 'Rejected/s', stroke: '#8a4b00', width: 2 }],
        axes: [{}, { size: 60 }],
      }, series, chartBox);
      new ResizeObserver(() => chart.setSize({ width: Math.max(280, chartBox.clientWidth - 16), height: 220 })).observe(chartBox);
    }

    async function listSales(prefer) {
      const answer = await S.call('GET', '/api/v1/sales?limit=100');
      if (answer.status !== 200) return;
      const id = prefer || select.value;
      const options = answer.body.sales.map((s) => [s.sale_id, s.name + ' (' + s.status + ')']);
      // Rebuilt only when the list changed: an open picker is left alone.
      const shown = JSON.stringify(options);
      if (shown !== listed) {
        listed = shown;
        select.replaceChildren(...options.map(([value, text]) => el('option', { value }, text)));
      }
      if (id) select.value = id;
      watch(select.value);
    }

    function watch(saleId) {
      if (saleId === watching) return;
      watching = saleId;
      previous = null;
      series.forEach((s) => { s.length = 0; });
      if (chart) chart.setData(series);
    }
    select.addEventListener('change', () => watch(select.value));

    async function poll() {
      if (!watching) return;
      const answer = await adminCall('GET', '/api/v1/admin/sales/' + encodeURIComponent(watching) + '/live');
      if (answer.status !== 200) {
        source.textContent = S.explain(answer);
        return;
      }
      const live = answer.body;
      const g = live.gateway;
      stats.stock.value.textContent = live.sale.stock_remaining + ' of ' + live.sale.stock;
      if (previous) {
        const secs = Math.max(0.001, (live.at_ms - previous.at_ms) / 1000);
        const rate = (k) => Math.max(0, (g[k] - previous.gateway[k]) / secs);
        const r = [rate('accepted'), rate('sold_out'), rate('rejected')];
        stats.accepted.value.textContent = r[0].toFixed(0);
        stats.soldOut.value.textContent = r[1].toFixed(0);
        stats.rejected.value.textContent = r[2].toFixed(0);
        stats.p99.value.textContent = p99(previous.gateway.latency, g.latency) || '–';
        series[0].push(live.at_ms / 1000);
        r.forEach((v, i) => series[i + 1].push(v));
        if (series[0].length > POINTS) series.forEach((s) => s.shift());
        ensureChart();
        if (chart) chart.setData(series);
      }
      const consumers = [live.inventory_consumer, live.order_consumer];
      const known = consumers.filter(Boolean);
      stats.lag.value.textContent = known.length ? known.reduce((n, c) => n + c.lag, 0) : '–';
      stats.dead.value.textContent = known.length ? known.reduce((n, c) => n + c.dead_lettered, 0) : '–';
      const counts = live.orders_by_state || {};
      states.replaceChildren(...['created', 'paid', 'cancelled', 'expired', 'failed'].map((s) =>
        el('tr', {}, el('th', { scope: 'row' }, s), el('td', {}, live.orders_by_state ? (counts[s] || 0) : '–'))));
      const missing = [!live.inventory_consumer && 'inventory-service', !live.order_consumer && 'order-service']
        .concat(live.orders_by_state ? [] : ['order counts']).filter(Boolean);
      source.textContent = 'Rates and p99 are those of gateway ' + g.instance + '. '
        + (missing.length ? 'No answer from: ' + missing.join(', ') + '.' : 'Every service answered.');
      previous = live;
    }
    return { section, listSales, poll };
  }

  // ---- reconciliation ------------------------------------------------------

  function reconcileSection() {
    const outcome = el('div', { class: 'notice', role: 'status' });
    const report = el('pre', { class: 'report', hidden: true });
    const run = el('button', { type: 'button' }, 'Run reconciliation');
    run.addEventListener('click', async () => {
      run.disabled = true;
      outcome.className = 'notice';
      outcome.textContent = 'Running…';
      const answer = await adminCall('POST', '/api/v1/admin/reconcile');
      run.disabled = false;
      if (answer.status === 200) {
        const r = answer.body;
        outcome.className = 'notice ' + (r.changes === 0 ? 'ok' : 'warn');
        outcome.textContent = 'Checked ' + r.sales_checked + ' sales: ' + (r.changes === 0 ? 'Redis and PostgreSQL agree.' : r.changes + ' repairs made.');
        report.hidden = false;
        report.textContent = JSON.stringify(r, null, 2);
      } else {
        outcome.className = 'notice bad';
        outcome.textContent = (answer.body && answer.body.error && answer.body.error.message) || S.explain(answer);
      }
    });
    return el('section', { 'aria-labelledby': 'reconcile-title' }, el('h2', { id: 'reconcile-title' }, 'Reconciliation'),
      el('p', {}, 'Compares every sale in Redis with PostgreSQL and repairs what drifted.'), run, outcome, report);
  }

  // ---- the page -----------------------------------------------------------

  let timers = [];
  function start() {
    timers.forEach(clearInterval);
    timers = [];
    renderWho();
    if (!adminToken()) { signIn(); return; }
    const watch = watchSection();
    view.replaceChildren(el('h1', {}, 'Console'), watch.section, createSection((id) => watch.listSales(id)), reconcileSection());
    watch.listSales();
    timers.push(setInterval(watch.poll, POLL_MS), setInterval(() => watch.listSales(), 10000));
  }
  S.syncClock().finally(start);
})();
