// Honest connection state and supervisor rescue (docs/rescue.md, docs/pages.md): the panel
// says "Reconnecting…" and disables its actions at once when the browser goes offline, and
// within the heartbeat timeout when the link dies silently; the customer's chat says the agent
// is reconnecting once the prompt delay has passed; the Dashboard's alert strip shows the agent
// in grace with a one-click release, which requeues the chat at once; and the Dashboard fits
// 1280 and 1024 px wide with every agent row and every column visible.
// Uses its own queue (`returns`) and agents (`frank`, `gina`).

import { describe, before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  env, launch, person, tid, screenshot, story, signIn, setReady, card, until, WAIT,
} from './lib/harness.mjs';
import { startProxy } from './lib/proxy.mjs';

/** The server's heartbeat_timeout in the run's configuration (the default). */
const HEARTBEAT_TIMEOUT_MS = 15_000;

describe('connection state and rescue', () => {
  let browser; let proxy;
  let frank; let gina; let sam; let hal;
  let panel; let chat; let dash; let ginaPanel;
  let convId; let requeued;
  const step = story(() => [frank, gina, sam, hal]);
  // Known defect: after a release the Dashboard does not show the session-lost alert (the
  // release itself works, see tests/api_flows.rs). The steps from there on are skipped until
  // it is fixed.
  const skipped = (name, fn) => test(name, fn);

  before(async () => {
    browser = await launch();
    proxy = await startProxy(env.base);
    frank = await person(browser, 'frank', { baseURL: proxy.base });
    gina = await person(browser, 'gina');
    sam = await person(browser, 'sam');
    hal = await person(browser, 'customer');
  });

  after(async () => {
    await browser?.close();
    await proxy?.close();
  });

  step('an agent takes a chat', async () => {
    panel = await frank.context.newPage();
    await signIn(panel, 'frank');
    await setReady(panel);
    chat = await hal.context.newPage();
    await chat.goto('/chat?queue=returns');
    await chat.fill(tid('chat-name'), 'Hal');
    await chat.fill(tid('chat-first-message'), 'The parcel came back to you.');
    await chat.click(tid('chat-start'));
    await chat.locator(tid('chat-view')).waitFor();
    convId = JSON.parse(await chat.evaluate(() => sessionStorage.getItem('switchboard.chat.returns'))).conversation_id;
    await card(panel, convId).locator(tid('accept')).click();
    await panel.locator(`${tid(`conversation-${convId}`)}[data-status="in_process"]`).waitFor();
    await chat.locator(tid('agent-name'), { hasText: 'Frank' }).waitFor();
  });

  step('offline in the browser: the panel says Reconnecting at once and disables its actions', async () => {
    const c = card(panel, convId);
    assert.equal(await c.locator(tid('end')).isDisabled(), false);
    const t0 = Date.now();
    await frank.context.setOffline(true);
    await panel.locator(`${tid('session-state')}[data-state="reconnecting"]`).waitFor({ timeout: 2000 });
    const took = Date.now() - t0;
    assert.ok(took < 2000, `reconnecting shown after ${took} ms`);
    await panel.locator(tid('banner-reconnecting')).waitFor();
    assert.equal(await c.locator(tid('end')).isDisabled(), true, 'end is disabled while offline');
    assert.equal(await c.locator(tid('send')).isDisabled(), true, 'send is disabled while offline');
    assert.equal(await panel.locator(tid('presence-not_ready')).isDisabled(), true);
    // Past the prompt delay the customer is told, on the chat page itself.
    await chat.locator(tid('agent-reconnecting')).waitFor({ timeout: WAIT });
    await chat.locator(`${tid('message')}[data-from="system"]`, { hasText: env.prompts.reconnecting }).waitFor();
    await screenshot(panel, '12-panel-offline');
    await screenshot(chat, '13-customer-agent-reconnecting');
  });

  step('back online the panel resumes and the customer sees the agent again', async () => {
    await frank.context.setOffline(false);
    await panel.locator(`${tid('session-state')}[data-state="connected"]`).waitFor({ timeout: WAIT });
    const c = card(panel, convId);
    await until(async () => !(await c.locator(tid('end')).isDisabled()), { what: 'end enabled again' });
    await chat.locator(tid('agent-name'), { hasText: 'Frank' }).waitFor();
    assert.equal(await chat.locator(tid('agent-reconnecting')).count(), 0);
  });

  step('a link that dies silently is noticed within the heartbeat timeout', async () => {
    const t0 = Date.now();
    proxy.freeze();
    await panel.locator(`${tid('session-state')}[data-state="reconnecting"]`).waitFor({ timeout: HEARTBEAT_TIMEOUT_MS + 1000 });
    const took = Date.now() - t0;
    assert.ok(took <= HEARTBEAT_TIMEOUT_MS, `dead link noticed after ${took} ms`);
    // New connections through the proxy work: the panel comes back by itself.
    await panel.locator(`${tid('session-state')}[data-state="connected"]`).waitFor({ timeout: WAIT });
  });

  skipped('the Dashboard alert strip shows the agent in grace; one click releases the chat', async () => {
    dash = await sam.context.newPage();
    await dash.setViewportSize({ width: 1280, height: 800 });
    await signIn(dash, 'sam');
    ginaPanel = await gina.context.newPage();
    await signIn(ginaPanel, 'gina');
    await setReady(ginaPanel);
    ginaPanel.setDefaultTimeout(WAIT);

    await panel.close();
    const alert = dash.locator(`${tid('alert-strip')} [data-kind="agent_in_grace"][data-agent="frank"]`);
    await alert.waitFor({ timeout: WAIT });
    await alert.locator(tid('alert-conversation')).first().waitFor();
    await screenshot(dash, '14-dashboard-alert-1280');

    const released = Date.now();
    await alert.locator(tid('alert-release')).click();
    await dash.locator(`${tid('alert-strip')} [data-kind="session_lost"][data-agent="frank"]`).waitFor();
    assert.equal(await alert.count(), 0, 'the grace alert is cleared');
    // Gina is offered the requeued chat long before frank's grace would have run out.
    const offered = ginaPanel.locator('[data-testid^="conversation-"][data-status="offered"]');
    await offered.waitFor();
    assert.ok(Date.now() - released < env.graceMs, 'released before the grace ran out');
    requeued = (await offered.getAttribute('data-testid')).slice('conversation-'.length);
    assert.notEqual(requeued, convId);
    await chat.locator(`${tid('message')}[data-from="system"]`, { hasText: env.prompts.sessionLost }).waitFor();
    await offered.locator(tid('accept')).click();
    await ginaPanel.locator(`${tid(`conversation-${requeued}`)}[data-status="in_process"]`).waitFor();
    // Once the requeued chat is taken, the session-lost alert no longer holds.
    await dash.locator(`${tid('alert-strip')} [data-kind="session_lost"][data-agent="frank"]`).waitFor({ state: 'detached' });
  });

  for (const [width, height] of [[1280, 800], [1024, 768]]) {
    skipped(`the Dashboard fits ${width} px: every agent row and column visible, no table cut`, async () => {
      await dash.setViewportSize({ width, height });
      // One agent in grace, so the countdown column is as wide as it gets.
      await ginaPanel.close();
      await dash.locator(`${tid('agent-gina')} ${tid('grace-countdown')}`).waitFor();
      await dash.click(tid('search-submit'));
      await dash.locator(`${tid('search-results')} [data-testid^="result-"]`).first().waitFor();
      await screenshot(dash, `15-dashboard-${width}`);
      const fit = await dash.evaluate(() => {
        const out = [];
        const wraps = {
          agents: document.querySelector('[data-testid="agents-table"]').parentElement,
          results: document.querySelector('[data-testid="search-results"]').parentElement,
        };
        for (const [name, wrap] of Object.entries(wraps)) {
          const table = wrap.querySelector('table');
          if (table.scrollWidth > wrap.clientWidth + 1) out.push(`${name}: table ${table.scrollWidth}px in ${wrap.clientWidth}px`);
        }
        const a = wraps.agents;
        if (a.scrollHeight > a.clientHeight + 1) out.push(`agents: rows hidden in an inner scroll (${a.scrollHeight} > ${a.clientHeight})`);
        if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push(`page scrolls sideways (${document.documentElement.scrollWidth}px)`);
        return out;
      });
      assert.deepEqual(fit, []);
      const rows = await dash.locator('[data-testid="agents-table"] tbody tr').count();
      assert.equal(rows, 7, 'every configured agent has a row');

      // The group view of the requeued chat, in the side pane (or below it).
      await dash.goto(`/dashboard#group/${await groupOf(dash, requeued)}`);
      await dash.locator(tid('group-table')).waitFor();
      await dash.locator(`${tid('group-row')}`).nth(1).waitFor();
      await screenshot(dash, `16-group-view-${width}`);
      const cut = await dash.evaluate(() => {
        const table = document.querySelector('[data-testid="group-table"]');
        const wrap = table.parentElement;
        const out = [];
        if (table.scrollWidth > wrap.clientWidth + 1) out.push(`group table ${table.scrollWidth}px in ${wrap.clientWidth}px`);
        for (const r of table.querySelectorAll('[data-testid="disconnect-reason"]')) {
          if (r.scrollWidth > r.clientWidth + 1) out.push(`reason clipped: ${r.textContent}`);
        }
        return out;
      });
      assert.deepEqual(cut, []);
      // Back for the next size: gina signs in again.
      ginaPanel = await gina.context.newPage();
      await ginaPanel.goto('/panel');
      await ginaPanel.locator(`${tid('session-state')}[data-state="connected"]`).waitFor();
    });
  }

  skipped('the panel fits 1024 px', async () => {
    await ginaPanel.setViewportSize({ width: 1024, height: 768 });
    await ginaPanel.locator(tid(`conversation-${requeued}`)).waitFor();
    await screenshot(ginaPanel, '17-panel-1024');
    const wide = await ginaPanel.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(wide <= 1, `the panel scrolls sideways by ${wide}px`);
  });
});

async function groupOf(page, conv) {
  const token = await page.evaluate(() => JSON.parse(localStorage.getItem('switchboard.session')).token);
  const res = await fetch(new URL(`/api/v1/conversations/${conv}`, env.base), { headers: { Authorization: `Bearer ${token}` } });
  return (await res.json()).group_id;
}
