// Shared pieces of the browser tests: the server under test (from run.sh's environment),
// headless Chromium, screenshots, page-error capture, sign-in and condition waits.

import { test } from 'node:test';
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the browser tests through tests/e2e/run.sh`);
  return v;
}

/** The server run.sh started and what its configuration holds. */
export const env = {
  get base() { return need('E2E_BASE_URL'); },
  get sip() { return need('E2E_SIP_ADDR'); },
  get apiKey() { return need('E2E_API_KEY'); },
  get graceMs() { return Number(need('E2E_GRACE_MS')); },
  get maxExpiresMs() { return Number(need('E2E_SIP_MAX_EXPIRES_MS')); },
  get shots() { return need('E2E_SCREENSHOT_DIR'); },
  password: (user) => `${user}-e2e-pw`,
  sipPassword: (user) => `${user}-sip-secret`,
  prompts: {
    reconnecting: 'Your agent is reconnecting, please stay with us.',
    sessionLost: 'Sorry for the wait: your agent was disconnected. You keep your place in the queue.',
  },
};

/** Default wait for a UI condition. */
export const WAIT = 10_000;

export const LAUNCH_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic',
];

export async function launch() {
  return chromium.launch({
    executablePath: process.env.E2E_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: LAUNCH_ARGS,
  });
}

/**
 * A browser context (one "person": its own localStorage and cookies) whose pages record
 * uncaught script errors in `errors`. `baseURL` defaults to the server itself.
 */
export async function person(browser, label, { baseURL = env.base } = {}) {
  const context = await browser.newContext({
    baseURL,
    viewport: { width: 1280, height: 860 },
    locale: 'en-GB',
    timezoneId: 'UTC',
  });
  context.setDefaultTimeout(WAIT);
  const errors = [];
  context.on('page', (page) => watch(page, label, errors));
  return { context, errors, label };
}

function watch(page, label, errors) {
  page.on('pageerror', (e) => errors.push(`${label} ${page.url()}: ${e.message}`));
}

/** `data-testid` selector. */
export const tid = (id) => `[data-testid="${id}"]`;

export function shotPath(name) {
  fs.mkdirSync(env.shots, { recursive: true });
  return path.join(env.shots, `${name}.png`);
}

export async function screenshot(page, name) {
  await page.screenshot({ path: shotPath(name), fullPage: true });
}

/** Screenshots of every open page, for a failed test. */
export async function failureShots(prefix, people) {
  for (const p of people) {
    if (!p) continue;
    for (const [i, page] of p.context.pages().entries()) {
      await page.screenshot({ path: shotPath(`failure-${prefix}-${p.label}-${i}`), fullPage: true }).catch(() => {});
    }
  }
}

/** Poll `fn` until it returns a truthy value; that value is returned. */
export async function until(fn, { timeout = WAIT, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** JSON over HTTP against the server (for the integration API and for checks). */
export async function http(method, p, { token, apiKey, body } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(new URL(p, env.base), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  return { status: res.status, data };
}

/** Signs in over the API (for checks made outside the browser); resolves to the token. */
export async function apiLogin(user) {
  const res = await http('POST', '/api/v1/login', { body: { username: user, password: env.password(user) } });
  if (res.status !== 200 || !res.data || !res.data.token) throw new Error(`login ${user}: ${res.status} ${JSON.stringify(res.data)}`);
  return res.data.token;
}

/** Sign in through the login page; resolves when the home page (panel or dashboard) is live. */
export async function signIn(page, user, { shot } = {}) {
  await page.goto('/');
  await page.locator(tid('login-form')).waitFor();
  await page.fill(tid('username'), user);
  await page.fill(tid('password'), env.password(user));
  if (shot) await screenshot(page, shot);
  await page.click(tid('login-submit'));
  await page.waitForURL(/\/(panel|dashboard)$/);
  if (page.url().endsWith('/panel')) {
    await page.locator(`${tid('session-state')}[data-state="connected"]`).waitFor();
  } else {
    await page.locator(`${tid('live-status')}[data-state="live"]`).waitFor();
  }
}

/** On the panel: presence ready, confirmed by the server. */
export async function setReady(page) {
  await page.click(tid('presence-ready'));
  await page.locator(`${tid('presence')}[data-presence="ready"]`).waitFor();
}

/** The stored session of a page's context (token, role, agent_id …). */
export function storedSession(page) {
  return page.evaluate(() => JSON.parse(localStorage.getItem('switchboard.session') || 'null'));
}

/** The panel card of a conversation. */
export function card(page, id) {
  return page.locator(tid(`conversation-${id}`));
}

/**
 * The steps of one story, run in order as tests: once a step fails the later ones are skipped
 * (they build on it), and the failing step leaves screenshots of every open page of
 * `people()` as target/e2e/failure-*.png.
 */
export function story(people) {
  let broken = false;
  return (name, fn) => test(name, async (t) => {
    if (broken) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn(t);
    } catch (e) {
      broken = true;
      await failureShots(name.replace(/\W+/g, '-').slice(0, 40), people());
      throw e;
    }
  });
}
