// seckill: what the storefront and the console share. The gateway's JSON API
// with a deadline on every call, the server's clock, the shopper's token,
// and plain words for every error code a person can meet.
'use strict';

(function () {
  const TOKEN_KEY = 'seckill.token';
  const TOKEN_COOKIE = 'seckill_token';
  const CALL_TIMEOUT_MS = 10000;

  // Server time minus browser time, learned from /api/v1/time. Countdowns
  // use the server's clock: a browser's may be minutes off.
  let offsetMs = 0;

  async function call(method, path, { body, token, headers = {} } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), CALL_TIMEOUT_MS);
    const sent = { method, headers: { Accept: 'application/json', ...headers }, signal: controller.signal, cache: 'no-store' };
    if (token) sent.headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) {
      sent.headers['Content-Type'] = 'application/json';
      sent.body = JSON.stringify(body);
    }
    try {
      const response = await fetch(path, sent);
      let json = null;
      try { json = await response.json(); } catch (_) { json = null; }
      return { status: response.status, body: json, headers: response.headers };
    } catch (_) {
      return { status: 0, body: { error: { code: 'network', message: 'no answer' } }, headers: new Headers() };
    } finally {
      clearTimeout(timer);
    }
  }

  // Halfway between sending and hearing back is when the server read its clock.
  async function syncClock() {
    const sent = Date.now();
    const answer = await call('GET', '/api/v1/time');
    const heard = Date.now();
    if (answer.status === 200 && answer.body && typeof answer.body.now_ms === 'number') {
      offsetMs = answer.body.now_ms - (sent + heard) / 2;
    }
    return offsetMs;
  }

  const now = () => Date.now() + offsetMs;

  // The shop's identity provider sets the JWT as the cookie `seckill_token`
  // (not HttpOnly: this page sends it as a bearer) or in localStorage under
  // `seckill.token`; the development sign-in stores it there too.
  function token() {
    const cookie = document.cookie.split('; ').find((c) => c.startsWith(TOKEN_COOKIE + '='));
    if (cookie) return decodeURIComponent(cookie.slice(TOKEN_COOKIE.length + 1));
    return localStorage.getItem(TOKEN_KEY);
  }
  function setToken(value) {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  }
  // The user id the token names (its `sub`), for display only: the gateway
  // verifies the token, not this page.
  function userOf(jwt) {
    try {
      const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part)).sub || null;
    } catch (_) {
      return null;
    }
  }

  const MESSAGES = {
    sold_out: 'Sold out: every unit has been taken.',
    already_purchased: 'You already have an order for this sale. See My orders.',
    quantity_over_limit: 'That is more than one shopper may buy in this sale.',
    rate_limited: 'Lots of shoppers right now. Wait a moment, then try again.',
    overloaded: 'Lots of shoppers right now. Wait a moment, then try again.',
    service_unavailable: 'The shop is busy. Please try again in a moment.',
    circuit_open: 'The shop is busy. Please try again in a moment.',
    request_timeout: 'That took too long. Please try again.',
    network: 'We could not reach the shop. Check your connection and try again.',
    sale_not_started: 'This sale has not started yet.',
    sale_ended: 'This sale has ended.',
    sale_not_found: 'We could not find this sale.',
    purchase_token_required: 'Please try again: the page needed a fresh check.',
    invalid_purchase_token: 'Please try again: the page needed a fresh check.',
    unauthorized: 'Please sign in again.',
    forbidden: 'You are not allowed to do that.',
    order_not_found: 'We could not find that order.',
    order_not_payable: 'This order can no longer be paid.',
    order_not_cancellable: 'This order can no longer be cancelled.',
    payment_declined: 'Your payment was declined. You can try again.',
    payment_timeout: 'The payment did not answer in time. Try again: you will not be charged twice.',
    order_outcome_unknown: 'We are still confirming your order. Keep this page open.',
  };
  function explain(answer) {
    const code = answer.body && answer.body.error && answer.body.error.code;
    if (code && MESSAGES[code]) return MESSAGES[code];
    if (answer.status === 429) return MESSAGES.rate_limited;
    if (answer.status >= 500 || answer.status === 0) return MESSAGES.service_unavailable;
    return 'Something went wrong. Please try again.';
  }

  const money = (cents) => (cents / 100).toLocaleString(undefined, { style: 'currency', currency: 'USD' });

  function duration(ms) {
    const total = Math.max(0, Math.ceil(ms / 1000));
    const d = Math.floor(total / 86400);
    const h = Math.floor((total % 86400) / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    const two = (n) => String(n).padStart(2, '0');
    return (d > 0 ? d + 'd ' : '') + (d > 0 || h > 0 ? two(h) + ':' : '') + two(m) + ':' + two(s);
  }

  // Builds an element: el('p', { class: 'x' }, 'text', child, ...).
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === false || value === null || value === undefined) continue;
      if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  // Puts `node` at `index` in `parent`, moving it only when it is elsewhere:
  // a moved node loses the keyboard focus, and refreshes must not do that.
  function place(parent, node, index) {
    const there = parent.children[index] || null;
    if (there !== node) parent.insertBefore(node, there);
  }

  window.Seckill = { call, syncClock, now, token, setToken, userOf, explain, money, duration, el, place };
})();
