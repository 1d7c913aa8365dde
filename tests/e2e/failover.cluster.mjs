// Two nodes on one PostgreSQL database (started by failover.sh): the agent's panel and the
// supervisor's Dashboard are open on the active node when it is killed with SIGKILL. Both
// pages must find the node that took over by themselves and go on with the same session —
// no sign-in, the same presence — and the Dashboard shows the agent connected there.

import { describe, before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, person, tid, screenshot, story, signIn, setReady, storedSession,
} from './lib/harness.mjs';

const nodeB = process.env.E2E_NODE_B_URL;
const pidA = Number(process.env.E2E_NODE_A_PID);
/** Lease (2 s) plus the standby's polling and the page's back-off. */
const TAKEOVER = 30_000;

describe('failover between two nodes', () => {
  let browser; let frank; let sam; let panel; let dash; let token;
  const step = story(() => [frank, sam]);

  before(async () => {
    browser = await launch();
    frank = await person(browser, 'frank');
    sam = await person(browser, 'sam');
  });
  after(async () => { await browser?.close(); });

  step('an agent and a supervisor work on the active node', async () => {
    panel = await frank.context.newPage();
    await signIn(panel, 'frank');
    await setReady(panel);
    token = (await storedSession(panel)).token;
    dash = await sam.context.newPage();
    await signIn(dash, 'sam');
    await dash.locator(`${tid('agent-frank')}`).waitFor();
  });

  step('the active node is killed: both pages move to the other node and carry on', async () => {
    process.kill(pidA, 'SIGKILL');
    await panel.waitForURL((u) => u.origin === nodeB, { timeout: TAKEOVER });
    await panel.locator(`${tid('session-state')}[data-state="connected"]`).waitFor({ timeout: TAKEOVER });
    await panel.locator(`${tid('presence')}[data-presence="ready"]`).waitFor();
    assert.equal((await storedSession(panel)).token, token, 'the same session, no new sign-in');
    assert.ok(!panel.url().includes('#session='), 'the handed-over session leaves the address bar');
    await dash.waitForURL((u) => u.origin === nodeB, { timeout: TAKEOVER });
    await dash.locator(`${tid('live-status')}[data-state="live"]`).waitFor({ timeout: TAKEOVER });
    for (const width of [1280, 1024]) {
      await panel.setViewportSize({ width, height: 800 });
      await screenshot(panel, `20-panel-after-failover-${width}`);
    }
    await dash.setViewportSize({ width: 1280, height: 800 });
    await screenshot(dash, '21-dashboard-after-failover-1280');
  });

  test('no page raised an uncaught script error', () => {
    assert.deepEqual([...(frank?.errors || []), ...(sam?.errors || [])], []);
  });
});
