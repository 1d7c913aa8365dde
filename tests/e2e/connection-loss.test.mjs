// The connection-loss story (docs/sessions.md, docs/policy.md, docs/pages.md) in real browsers:
// an agent's panel tab is closed during a web chat, reopened within the grace period (resumed
// without signing in), closed again; after the grace the chat goes back to the queue as a new
// conversation of the same group and reaches a second agent, while the customer's page stays
// open throughout. The Dashboard then shows who was blamed and the group.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  env, launch, person, tid, screenshot, story, signIn, setReady, storedSession, card, until, WAIT,
} from './lib/harness.mjs';

const MEMO = 'Order 4711 arrived damaged; customer wants a replacement.';
const FIRST = 'Hello, my parcel arrived damaged.';
const AGENT_REPLY = 'Sorry to hear that, let me check your order.';
const WHILE_AWAY = 'Are you still there?';

describe('agent connection loss during a web chat', () => {
  let browser;
  let alice; let bob; let sam; let carla; // people (browser contexts)
  let panel; // alice's current panel page
  let chat; // carla's chat page (open throughout)
  let bobPanel; let dash;
  let original; // the conversation alice accepted
  let requeued; // the one bob receives
  const step = story(() => [alice, bob, sam, carla]);

  before(async () => {
    browser = await launch();
    alice = await person(browser, 'alice');
    bob = await person(browser, 'bob');
    sam = await person(browser, 'sam');
    carla = await person(browser, 'customer');
  });

  after(async () => {
    await browser?.close();
  });

  step('an agent signs in on the login page and accepts a customer web chat', async () => {
    panel = await alice.context.newPage();
    await signIn(panel, 'alice', { shot: '01-login' });
    assert.equal(await panel.locator(tid('agent-id')).textContent(), 'alice');
    await setReady(panel);

    chat = await carla.context.newPage();
    await chat.goto('/chat?queue=support');
    await chat.fill(tid('chat-name'), 'Carla');
    await chat.fill(tid('chat-first-message'), FIRST);
    await chat.click(tid('chat-start'));
    await chat.locator(tid('chat-view')).waitFor();
    const stored = await chat.evaluate(() => JSON.parse(sessionStorage.getItem('switchboard.chat.support') || 'null'));
    assert.ok(stored && stored.conversation_id, 'the chat page keeps its conversation id');
    original = stored.conversation_id;

    const offer = card(panel, original);
    await offer.locator(tid('accept')).click();
    await panel.locator(`${tid(`conversation-${original}`)}[data-status="in_process"]`).waitFor();
    await offer.locator(`${tid('message')}[data-from="customer"]`, { hasText: FIRST }).waitFor();
    await chat.locator(tid('agent-name'), { hasText: 'Alice' }).waitFor();

    await offer.locator(tid('compose-input')).fill(AGENT_REPLY);
    await offer.locator(tid('send')).click();
    await chat.locator(`${tid('message')}[data-from="agent"]`, { hasText: AGENT_REPLY }).waitFor();
  });

  step('a memo typed on the panel is kept on the server as a draft', async () => {
    const c = card(panel, original);
    await c.locator(tid('memo')).fill(MEMO);
    await c.locator(`${tid('draft-status')}[data-state="synced"]`).waitFor();
    await screenshot(panel, '02-panel-conversation');
  });

  step('closing the panel tab keeps the chat with the agent; the customer hears it is reconnecting', async () => {
    await panel.close();
    await chat.locator(`${tid('message')}[data-from="system"]`, { hasText: env.prompts.reconnecting }).waitFor();
    assert.equal(await chat.locator(tid('chat-status')).getAttribute('data-status'), 'in_process');

    await chat.fill(tid('chat-input'), WHILE_AWAY);
    await chat.press(tid('chat-input'), 'Enter');
    // Stored by the server (no longer the pending local copy).
    await chat.locator(`${tid('message')}[data-from="customer"]:not(.pending)`, { hasText: WHILE_AWAY }).waitFor();
  });

  step('a panel reopened within the grace resumes without signing in, with the new message and the memo', async () => {
    panel = await alice.context.newPage();
    await panel.goto('/panel');
    await panel.locator(`${tid('session-state')}[data-state="connected"]`).waitFor();
    assert.match(panel.url(), /\/panel$/, 'no detour through the login page');
    const c = card(panel, original);
    await panel.locator(`${tid(`conversation-${original}`)}[data-status="in_process"]`).waitFor();
    await c.locator(`${tid('message')}[data-from="customer"]`, { hasText: WHILE_AWAY }).waitFor();
    await c.locator(`${tid('message')}[data-from="agent"]`, { hasText: AGENT_REPLY }).waitFor();
    await until(async () => (await c.locator(tid('memo')).inputValue()) === MEMO, { what: 'the memo draft in the form' });
    await screenshot(panel, '03-panel-resumed');
  });

  step('after the grace the chat is requeued to a second agent and the customer gets the session-lost prompt', async () => {
    bobPanel = await bob.context.newPage();
    await signIn(bobPanel, 'bob');
    await setReady(bobPanel);

    dash = await sam.context.newPage();
    await signIn(dash, 'sam');
    const aliceRow = dash.locator(tid('agent-alice'));
    await aliceRow.locator(`${tid('session-state')}[data-state="connected"]`).waitFor();

    // The chat stays with alice while she is there: bob is offered nothing.
    assert.equal(await bobPanel.locator(`[data-testid^="conversation-"][data-status]`).count(), 0);

    await panel.close();
    const closedAt = Date.now();
    await aliceRow.locator(`${tid('session-state')}[data-state="disconnected"]`).waitFor();
    await aliceRow.locator(tid('grace-countdown')).waitFor();
    await screenshot(dash, '04-dashboard-agents');

    const offered = bobPanel.locator('[data-testid^="conversation-"][data-status="offered"]');
    await offered.waitFor({ timeout: env.graceMs + WAIT });
    const waited = Date.now() - closedAt;
    assert.ok(waited >= env.graceMs - 1000, `requeued only after the grace (${waited} ms)`);
    requeued = (await offered.getAttribute('data-testid')).slice('conversation-'.length);
    assert.notEqual(requeued, original, 'the requeued chat is a new conversation');
    await offered.locator(tid('origin'), { hasText: 'Requeue' }).waitFor();

    await chat.locator(`${tid('message')}[data-from="system"]`, { hasText: env.prompts.sessionLost }).waitFor();

    await offered.locator(tid('accept')).click();
    const taken = card(bobPanel, requeued);
    await bobPanel.locator(`${tid(`conversation-${requeued}`)}[data-status="in_process"]`).waitFor();
    // The thread followed the group: bob sees the whole transcript.
    await taken.locator(`${tid('message')}[data-from="customer"]`, { hasText: WHILE_AWAY }).waitFor();
    await taken.locator(`${tid('message')}[data-from="customer"]`, { hasText: FIRST }).waitFor();
    // The memo draft was discarded with alice's session.
    assert.equal(await taken.locator(tid('memo')).inputValue(), '');

    // The customer's page never reloaded: same socket, now chatting with bob.
    await chat.locator(tid('agent-name'), { hasText: 'Bob' }).waitFor();
    assert.equal(await chat.locator(tid('chat-start-form')).isVisible(), false);
    await screenshot(chat, '05-customer-chat');
  });

  step('a panel opened after the grace goes to the login page saying the session ended', async () => {
    // The closed tab left the (now revoked) token in localStorage.
    const late = await alice.context.newPage();
    await late.goto('/panel');
    await late.waitForURL((u) => u.pathname === '/');
    await late.locator(tid('login-message')).waitFor();
    assert.match(await late.locator(tid('login-message')).textContent(), /grace period/);
    assert.equal(await storedSession(late), null, 'the revoked token is forgotten');
    await late.close();
  });

  step('Conversation Details of the original show AgentSessionLost blamed on the agent', async () => {
    // Tall enough for the whole details pane (events table included) in the screenshots.
    await dash.setViewportSize({ width: 1280, height: 1500 });
    await dash.fill(tid('search-agent'), 'alice');
    await dash.click(tid('search-submit'));
    const row = dash.locator(tid(`result-${original}`));
    await row.waitFor();
    await row.locator(tid('conversation-link')).click();
    const details = dash.locator(`${tid('conversation-details')}[data-conversation-id="${original}"]`);
    await details.waitFor();
    await details.locator(`${tid('disconnect-reason')}[data-reason="AgentSessionLost"]`).waitFor();
    await details.locator(`${tid('disconnect-party')}[data-party="agent"]`).waitFor();
    await details.locator(`${tid('details-status')}[data-status="handled"]`).waitFor();
    for (const ev of ['accepted', 'agent_connection_lost', 'agent_reconnected', 'session_lost', 'requeued']) {
      assert.ok(await details.locator(`${tid('event-row')}[data-event="${ev}"]`).count() > 0, `event ${ev} in the table`);
    }
    await screenshot(dash, '06-conversation-details');
  });

  step('its Group ID link lists the original and the requeued conversation', async () => {
    await dash.locator(tid('group-link')).click();
    const group = dash.locator(tid('group-view'));
    await group.waitFor();
    const rows = group.locator(tid('group-row'));
    await until(async () => (await rows.count()) === 2, { what: 'two conversations in the group' });
    const first = group.locator(`${tid('group-row')}[data-conversation-id="${original}"]`);
    const second = group.locator(`${tid('group-row')}[data-conversation-id="${requeued}"]`);
    assert.equal(await first.getAttribute('data-status'), 'handled');
    assert.equal(await first.locator(tid('agent')).textContent(), 'alice');
    assert.equal(await first.locator(tid('disconnect-reason')).textContent(), 'AgentSessionLost');
    assert.equal(await second.getAttribute('data-status'), 'in_process');
    assert.equal(await second.locator(tid('agent')).textContent(), 'bob');
    assert.equal(await second.locator(tid('origin-kind')).textContent(), 'Requeue');
    // Oldest first, and the requeued chat kept the original queue arrival time.
    assert.equal(await rows.first().getAttribute('data-conversation-id'), original);
    assert.equal(
      await second.locator(tid('queue-arrival')).getAttribute('title'),
      await first.locator(tid('queue-arrival')).getAttribute('title'),
    );
    await screenshot(dash, '07-group-view');
  });

  test('no page raised an uncaught script error', () => {
    const errors = [alice, bob, sam, carla].flatMap((p) => (p ? p.errors : []));
    assert.deepEqual(errors, []);
  });
});
