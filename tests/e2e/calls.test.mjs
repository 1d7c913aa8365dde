// Calls on the Dashboard and the panel (docs/pages.md): the Dashboard's "Calls now" counters
// follow a call from waiting to ringing to talking, live; the panel shows how long the call
// has been going, counted from the server's answered_at (so a reload keeps counting from the
// answer, not from zero), and the call's final length once it has ended. Both pages fit 1280
// and 1024 px wide with a call in progress.
// Uses `bob` (queue `phones`) with a test phone that keeps its registration fresh.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  env, launch, person, tid, screenshot, story, signIn, card, http, until, storedSession,
} from './lib/harness.mjs';
import { SipPhone } from './lib/sip.mjs';

/** "3:07" or "1:02:03" → seconds. */
function seconds(text) {
  const parts = String(text).trim().split(':').map(Number);
  if (parts.length < 2 || parts.some((n) => Number.isNaN(n))) return NaN;
  return parts.reduce((acc, n) => acc * 60 + n, 0);
}

describe('calls: Dashboard counters and the call duration on the panel', () => {
  let browser;
  let bob; let sam;
  let panel; let dash;
  let phone;
  let refreshing = false;
  let refresher = null;
  let call; // the answered call
  let second; // a call waiting behind it
  const step = story(() => [bob, sam]);

  const counter = (name) => dash.locator(tid(`calls-${name}`));
  const count = async (name) => Number(await counter(name).getAttribute('data-count'));
  const counts = async () => ({ waiting: await count('waiting'), ringing: await count('ringing'), talking: await count('talking') });
  const expectCounts = (want, what) => until(async () => {
    const got = await counts();
    return JSON.stringify(got) === JSON.stringify(want) ? got : null;
  }, { what: `${what}: ${JSON.stringify(want)}` });

  /** Keeps the phone registered (max_expires is a few seconds in this run). */
  function keepRegistered() {
    refreshing = true;
    refresher = (async () => {
      while (refreshing) {
        await phone.register(3).catch(() => {});
        await new Promise((r) => setTimeout(r, 1000));
      }
    })();
  }

  before(async () => {
    browser = await launch();
    bob = await person(browser, 'bob');
    sam = await person(browser, 'sam');
    phone = new SipPhone({ server: env.sip, user: 'bob', password: env.sipPassword('bob') });
  });

  after(async () => {
    refreshing = false;
    await refresher;
    phone?.close();
    await browser?.close();
  });

  step('the Dashboard shows the calls strip first, with nothing going on', async () => {
    dash = await sam.context.newPage();
    await signIn(dash, 'sam');
    await dash.locator(tid('calls-section')).waitFor();
    // Calls left over by another file end within the grace period.
    await until(async () => {
      const c = await counts();
      return c.waiting + c.ringing + c.talking === 0;
    }, { timeout: env.graceMs + 10_000, what: 'no calls left over' });
    const first = await dash.evaluate(() => {
      const main = document.querySelector('.dash-main');
      return [...main.children].find((e) => !e.hidden && e.dataset.testid !== 'alert-strip')?.dataset.testid;
    });
    assert.equal(first, 'calls-section', 'the counters are the first thing in the main column');
  });

  step('a call arriving while no phone is registered waits: "1 waiting"', async () => {
    panel = await bob.context.newPage();
    await signIn(panel, 'bob');
    const res = await http('POST', '/api/v1/inbound/calls', { apiKey: env.apiKey, body: { from: '+15550142', queue: 'phones' } });
    assert.ok(res.status === 200 || res.status === 201, `inbound call: ${res.status} ${JSON.stringify(res.data)}`);
    call = res.data.id;
    await expectCounts({ waiting: 1, ringing: 0, talking: 0 }, 'one call waiting');
    assert.match(await counter('waiting').innerText(), /^1\s+waiting/);
    // How long the oldest call has waited, counted by the page.
    await dash.locator(`${tid('calls-oldest-wait')}`, { hasText: /longest \d+:\d\d/ }).waitFor();
  });

  step('once the phone registers the call rings: "1 ringing"', async () => {
    keepRegistered();
    await panel.locator(`${tid('capability-voice')}[data-on="true"]`).waitFor();
    await panel.locator(`${tid(`conversation-${call}`)}[data-status="offered"]`).waitFor();
    await expectCounts({ waiting: 0, ringing: 1, talking: 0 }, 'one call ringing');
  });

  step('accepted, the call talks on the Dashboard and its duration runs on the panel', async () => {
    await card(panel, call).locator(tid('accept')).click();
    const c = card(panel, call);
    await panel.locator(`${tid(`conversation-${call}`)}[data-status="in_process"]`).waitFor();
    await expectCounts({ waiting: 0, ringing: 0, talking: 1 }, 'one call talking');
    const clock = c.locator(`${tid('call-duration')}[data-state="running"]`);
    await clock.waitFor();
    assert.equal(await c.locator(tid('voice-text')).innerText(), 'On the call');
    const t0 = seconds(await clock.innerText());
    assert.ok(t0 >= 0 && t0 <= 3, `just answered: ${await clock.innerText()}`);
    // It counts: a later second shows a later value.
    await until(async () => seconds(await clock.innerText()) > t0, { what: 'the duration to count up' });
  });

  step('the duration is counted from the server\'s answer time: a newly opened panel shows the same', async () => {
    const { token } = await storedSession(panel);
    const state = await http('GET', '/api/v1/agent/state', { token });
    const conv = state.data.conversations.find((x) => x.id === call);
    assert.ok(conv && conv.answered_at, `answered_at in ${JSON.stringify(conv)}`);
    // Let the call run a little, then open the panel in a second tab (reloading the only tab
    // would be a lost connection, which ends a call): its clock must not start at zero.
    await until(async () => Date.now() - Date.parse(conv.answered_at) >= 3000, { what: 'three seconds on the call' });
    const tab = await bob.context.newPage();
    await tab.goto('/panel');
    await tab.locator(`${tid('session-state')}[data-state="connected"]`).waitFor();
    const clock = card(tab, call).locator(`${tid('call-duration')}[data-state="running"]`);
    await clock.waitFor();
    const shown = seconds(await clock.innerText());
    const expected = (Date.now() - Date.parse(conv.answered_at)) / 1000;
    assert.ok(shown >= 3, `a new tab shows ${shown}s, not a fresh count`);
    assert.ok(Math.abs(shown - expected) <= 2, `shown ${shown}s, answered ${expected.toFixed(1)}s ago`);
    const first = seconds(await card(panel, call).locator(tid('call-duration')).innerText());
    assert.ok(Math.abs(first - shown) <= 1, `both tabs agree: ${first}s and ${shown}s`);
    await tab.close();
    await panel.locator(`${tid(`conversation-${call}`)}[data-status="in_process"]`).waitFor();
  });

  step('a second call waits behind it: "1 waiting", "1 talking"', async () => {
    const res = await http('POST', '/api/v1/inbound/calls', { apiKey: env.apiKey, body: { from: '+15550177', queue: 'phones' } });
    assert.ok(res.status === 200 || res.status === 201, `inbound call: ${res.status}`);
    second = res.data.id;
    await expectCounts({ waiting: 1, ringing: 0, talking: 1 }, 'one waiting, one talking');
  });

  for (const [width, height] of [[1280, 800], [1024, 768]]) {
    step(`at ${width} px the panel call and the Dashboard counters fit`, async () => {
      await panel.setViewportSize({ width, height });
      await card(panel, call).locator(`${tid('call-duration')}[data-state="running"]`).waitFor();
      await screenshot(panel, `30-panel-call-${width}`);
      const panelCut = await panel.evaluate((id) => {
        const out = [];
        if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push(`page scrolls sideways (${document.documentElement.scrollWidth}px)`);
        const v = document.querySelector(`[data-testid="conversation-${id}"] [data-testid="voice-state"]`);
        for (const e of [v, ...v.children]) {
          if (!e.hidden && e.scrollWidth > e.clientWidth + 1) out.push(`${e.dataset.testid}: ${e.scrollWidth}px in ${e.clientWidth}px`);
        }
        return out;
      }, call);
      assert.deepEqual(panelCut, []);

      await dash.setViewportSize({ width, height });
      await expectCounts({ waiting: 1, ringing: 0, talking: 1 }, 'counters');
      await screenshot(dash, `31-dashboard-calls-${width}`);
      const dashCut = await dash.evaluate(() => {
        const out = [];
        if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push(`page scrolls sideways (${document.documentElement.scrollWidth}px)`);
        const strip = document.querySelector('[data-testid="calls-section"]');
        if (strip.scrollWidth > strip.clientWidth + 1) out.push(`calls strip ${strip.scrollWidth}px in ${strip.clientWidth}px`);
        const tiles = [...strip.querySelectorAll('.call-counter')];
        for (const t of tiles) {
          if (t.scrollWidth > t.clientWidth + 1) out.push(`${t.dataset.testid} cut`);
        }
        const tops = new Set(tiles.map((t) => Math.round(t.getBoundingClientRect().top)));
        if (tops.size !== 1) out.push(`counters on ${tops.size} lines`);
        return out;
      });
      assert.deepEqual(dashCut, []);
    });
  }

  step('after the call ends the panel shows its final length, which no longer runs', async () => {
    await panel.setViewportSize({ width: 1280, height: 860 });
    const c = card(panel, call);
    await c.locator(tid('end')).click();
    await panel.locator(`${tid(`conversation-${call}`)}[data-status="wrap_up"]`).waitFor();
    const final = c.locator(`${tid('call-duration')}[data-state="final"]`);
    await final.waitFor();
    assert.equal(await c.locator(tid('voice-text')).innerText(), 'The call lasted');
    const details = await http('GET', `/api/v1/conversations/${call}`, { token: (await storedSession(dash)).token });
    const length = Math.floor((Date.parse(details.data.ended_at) - Date.parse(details.data.answered_at)) / 1000);
    assert.equal(seconds(await final.innerText()), length, 'ended_at - answered_at');
    assert.ok(length >= 3);
    await screenshot(panel, '32-panel-call-ended');
    // Conversation Details on the Dashboard give the same length.
    await dash.goto(`/dashboard#conversation/${call}`);
    await dash.locator(tid('conversation-details')).waitFor();
    assert.equal(seconds(await dash.locator(tid('field-length')).innerText()), length);
    assert.notEqual(await dash.locator(tid('field-answered_at')).innerText(), '—');
    await dash.setViewportSize({ width: 1280, height: 900 });
    await screenshot(dash, '33-call-details-1280');
    const before = await final.innerText();
    await new Promise((r) => setTimeout(r, 1500)); // one clock tick: the length stays put
    assert.equal(await final.innerText(), before);
    // In wrap-up bob is still at his voice capacity: the second call keeps waiting.
    await expectCounts({ waiting: 1, ringing: 0, talking: 0 }, 'the ended call no longer talks');
  });

  step('wrapping up rings the waiting call; the caller hangs up; everything back to zero', async () => {
    await card(panel, call).locator(tid('complete')).click();
    await card(panel, call).waitFor({ state: 'detached' });
    await panel.locator(`${tid(`conversation-${second}`)}[data-status="offered"]`).waitFor();
    await expectCounts({ waiting: 0, ringing: 1, talking: 0 }, 'the second call rings');
    const res = await http('POST', `/api/v1/inbound/calls/${second}/hangup`, { apiKey: env.apiKey });
    assert.ok(res.status >= 200 && res.status < 300, `hangup: ${res.status} ${JSON.stringify(res.data)}`);
    await expectCounts({ waiting: 0, ringing: 0, talking: 0 }, 'no calls');
    refreshing = false;
    await refresher;
    assert.equal((await phone.register(0)).status, 200, 'the phone unregisters');
    await panel.click(tid('logout'));
    await panel.waitForURL((u) => u.pathname === '/');
  });

  test('no page raised an uncaught script error', () => {
    assert.deepEqual([...(bob ? bob.errors : []), ...(sam ? sam.errors : [])], []);
  });
});
