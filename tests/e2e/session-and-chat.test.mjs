// The everyday paths around the connection-loss story (docs/policy.md), in real browsers:
// sign-in errors, manual picking from a queue, a customer reloading the chat, sign-out refused
// while work is open, a session taken over by a second sign-in (close code 4001), one panel tab
// too many (4409), and a customer leaving the chat.
// Uses its own queue (`sales`) and agent (`dave`) so that it cannot meet the other files' work.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, person, tid, screenshot, story, signIn, card, until,
} from './lib/harness.mjs';

describe('sessions and the customer chat', () => {
  let browser;
  let dave; let dave2; let fay;
  let panel; let chat;
  let convId;
  const step = story(() => [dave, dave2, fay]);

  const sockets = []; // chat page WebSocket URLs, in order
  const customerMessage = (text) => chat.locator(`${tid('message')}[data-from="customer"]:not(.pending)`, { hasText: text });

  before(async () => {
    browser = await launch();
    dave = await person(browser, 'dave');
    dave2 = await person(browser, 'dave-2');
    fay = await person(browser, 'customer');
  });

  after(async () => {
    await browser?.close();
  });

  step('a wrong password is refused on the login page', async () => {
    panel = await dave.context.newPage();
    await panel.goto('/');
    await panel.fill(tid('username'), 'dave');
    await panel.fill(tid('password'), 'not-the-password');
    await panel.click(tid('login-submit'));
    await panel.locator(tid('login-error'), { hasText: 'Wrong username or password' }).waitFor();
    assert.equal(new URL(panel.url()).pathname, '/');
  });

  step('a waiting customer sees the queue position and an agent picks the chat from the queue', async () => {
    await signIn(panel, 'dave');
    await panel.click(tid('presence-not_ready'));
    await panel.locator(`${tid('presence')}[data-presence="not_ready"]`).waitFor();

    chat = await fay.context.newPage();
    chat.on('websocket', (ws) => sockets.push(ws.url()));
    await chat.goto('/chat?queue=sales');
    await chat.fill(tid('chat-name'), 'Fay');
    await chat.fill(tid('chat-first-message'), 'Do you ship to Norway?');
    await chat.click(tid('chat-start'));
    await chat.locator(`${tid('queue-position')}[data-position="1"]`).waitFor();
    convId = JSON.parse(await chat.evaluate(() => sessionStorage.getItem('switchboard.chat.sales'))).conversation_id;

    await panel.fill(tid('pick-queue'), 'sales');
    await panel.click(tid('pick-load'));
    await panel.locator(tid(`pick-${convId}`)).click();
    await panel.locator(`${tid(`conversation-${convId}`)}[data-status="in_process"]`).waitFor();
    await chat.locator(tid('agent-name'), { hasText: 'Dave' }).waitFor();
  });

  step('a reloaded customer page continues the same chat with its transcript', async () => {
    await chat.fill(tid('chat-input'), 'And to Iceland?');
    await chat.press(tid('chat-input'), 'Enter');
    await customerMessage('And to Iceland?').waitFor();
    await card(panel, convId).locator(`${tid('message')}[data-from="customer"]`, { hasText: 'And to Iceland?' }).waitFor();

    await chat.reload();
    await chat.locator(tid('agent-name'), { hasText: 'Dave' }).waitFor();
    await customerMessage('Do you ship to Norway?').waitFor();
    await customerMessage('And to Iceland?').waitFor();
    assert.equal(await chat.locator(tid('chat-start-form')).isVisible(), false);
  });

  step('signing out is refused while a chat is open', async () => {
    await panel.click(tid('logout'));
    await panel.locator(tid('notice-text'), { hasText: 'open conversations' }).waitFor();
    assert.equal(new URL(panel.url()).pathname, '/panel');
    assert.equal(await panel.locator(tid('session-state')).getAttribute('data-state'), 'connected');
  });

  step('a second sign-in takes the session over and the first panel says so', async () => {
    const second = await dave2.context.newPage();
    await signIn(second, 'dave');
    await panel.locator(tid('session-ended'), { hasText: 'Signed in elsewhere' }).waitFor();
    assert.equal(await panel.locator(tid('session-state')).getAttribute('data-state'), 'ended');
    // Same session: the chat moved with it.
    await second.locator(`${tid(`conversation-${convId}`)}[data-status="in_process"]`).waitFor();
    await panel.close();
    panel = second;
  });

  step('a panel tab beyond the per-session limit says so and gets in once another tab closes', async () => {
    // limits.max_sockets_per_session = 4: the current panel plus three more tabs are accepted.
    const extra = [];
    for (let i = 0; i < 3; i += 1) {
      const tab = await dave2.context.newPage();
      await tab.goto('/panel');
      await tab.locator(`${tid('session-state')}[data-state="connected"]`).waitFor();
      extra.push(tab);
    }
    const fifth = await dave2.context.newPage();
    await fifth.goto('/panel');
    await fifth.locator(tid('banner-too-many-tabs')).waitFor();
    assert.equal(await fifth.locator(tid('banner-reconnecting')).count(), 0);
    await screenshot(fifth, '11-panel-too-many-tabs');

    await extra.pop().close();
    await fifth.locator(`${tid('banner-too-many-tabs')} ${tid('reconnect-now')}`).click();
    await fifth.locator(`${tid('session-state')}[data-state="connected"]`).waitFor();
    await fifth.locator(tid('banner-too-many-tabs')).waitFor({ state: 'detached' });
    await card(fifth, convId).waitFor();
    for (const tab of [...extra, fifth]) await tab.close();
  });

  step('a customer who leaves keeps the transcript and the page stops reconnecting', async () => {
    await chat.click(tid('chat-end'));
    await chat.locator(tid('chat-ended')).waitFor();
    // The server closes the chat socket after the final status: the page settles as ended.
    await chat.locator(`${tid('chat-connection')}[data-state="ended"]`).waitFor();
    const opened = sockets.length;
    // Longer than the first reconnect attempt (at most 500 ms) and its token probe.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(sockets.length, opened, 'no new chat socket after the chat ended');
    assert.equal(await chat.locator(tid('chat-start-form')).isVisible(), false);
    assert.equal(await chat.locator(tid('chat-error')).isVisible(), false);
    await customerMessage('And to Iceland?').waitFor();
    assert.equal(await chat.locator(tid('chat-input')).isDisabled(), true);
    await chat.locator(tid('chat-new')).waitFor();

    const c = card(panel, convId);
    await panel.locator(`${tid(`conversation-${convId}`)}[data-status="wrap_up"]`).waitFor();
    assert.equal(await c.locator(tid('disconnect-reason')).textContent(), 'CustomerEnded');
    await c.locator(tid('complete')).click();
    await c.waitFor({ state: 'detached' });
  });

  step('signing out with no open work goes to the login page', async () => {
    await panel.click(tid('logout'));
    await panel.waitForURL((u) => u.pathname === '/');
    await panel.locator(tid('login-message'), { hasText: 'signed out' }).waitFor();
    await until(async () => (await panel.evaluate(() => localStorage.getItem('switchboard.session'))) === null,
      { what: 'the stored session to be removed' });
  });

  test('no page raised an uncaught script error', () => {
    assert.deepEqual([dave, dave2, fay].flatMap((p) => (p ? p.errors : [])), []);
  });
});
