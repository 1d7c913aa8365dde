// A real network drop under the agent's panel (docs/sessions.md, docs/pages.md#reconnection):
// the panel's page talks to the server through a TCP proxy that the test cuts and blocks. The
// panel shows that it is reconnecting, retries by itself with backoff and, once the network is
// back, resumes the same session with the chat and the customer's message sent meanwhile. A
// second drop outlasts the grace period: the chat goes back to its queue and the panel, back
// online, ends on the login page.
// Uses its own queue (`billing`) and agent (`erin`).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  env, launch, person, tid, screenshot, story, signIn, card, storedSession, http, apiLogin, until, WAIT,
} from './lib/harness.mjs';
import { startProxy } from './lib/proxy.mjs';

describe('a network drop under the panel', () => {
  let browser; let proxy;
  let erin; let gus;
  let panel; let chat;
  let convId; let sessionId; let supervisor;
  const step = story(() => [erin, gus]);

  const erinOnServer = async () => {
    const res = await http('GET', '/api/v1/agents', { token: supervisor });
    assert.equal(res.status, 200);
    return res.data.find((a) => a.agent_id === 'erin');
  };

  before(async () => {
    browser = await launch();
    proxy = await startProxy(env.base);
    erin = await person(browser, 'erin', { baseURL: proxy.base });
    gus = await person(browser, 'customer');
    supervisor = await apiLogin('sam');
  });

  after(async () => {
    await browser?.close();
    await proxy?.close();
  });

  step('an agent behind the proxy accepts a chat', async () => {
    panel = await erin.context.newPage();
    await signIn(panel, 'erin');
    sessionId = (await storedSession(panel)).session_id;
    assert.ok(sessionId);

    chat = await gus.context.newPage();
    await chat.goto('/chat?queue=billing');
    await chat.fill(tid('chat-name'), 'Gus');
    await chat.fill(tid('chat-first-message'), 'I was charged twice.');
    await chat.click(tid('chat-start'));
    await chat.locator(tid('chat-view')).waitFor();
    convId = JSON.parse(await chat.evaluate(() => sessionStorage.getItem('switchboard.chat.billing'))).conversation_id;
    await card(panel, convId).locator(tid('accept')).click();
    await panel.locator(`${tid(`conversation-${convId}`)}[data-status="in_process"]`).waitFor();
    await chat.locator(tid('agent-name'), { hasText: 'Erin' }).waitFor();
  });

  step('when the network drops the panel says it is reconnecting and the server starts the grace period', async () => {
    proxy.block(true);
    proxy.cut();
    await panel.locator(tid('banner-reconnecting')).waitFor();
    await panel.locator(`${tid('session-state')}[data-state="reconnecting"]`).waitFor();
    await until(async () => (await erinOnServer()).session?.state === 'disconnected', { what: 'erin disconnected on the server' });
    // Without a connection the agent can take no work: the panel shows no channel available.
    const server = await erinOnServer();
    assert.deepEqual(server.capabilities, { voice: false, chat: false, email: false });
    for (const ch of ['voice', 'chat', 'email']) {
      await panel.locator(`${tid(`capability-${ch}`)}[data-on="false"]`).waitFor();
    }
    const s = server.session;
    assert.equal(s.id, sessionId);
    assert.ok(Date.parse(s.deadline) - Date.parse(s.disconnected_at) === env.graceMs, 'deadline = loss + session_grace');

    await chat.fill(tid('chat-input'), 'Hello? Anyone?');
    await chat.press(tid('chat-input'), 'Enter');
    await chat.locator(`${tid('message')}[data-from="customer"]:not(.pending)`, { hasText: 'Hello? Anyone?' }).waitFor();
    await screenshot(panel, '10-panel-reconnecting');
  });

  step('when the network returns the panel reconnects by itself and resumes the same session', async () => {
    // The panel keeps trying while the network is down (backoff 0.5 s, 1 s, … with jitter).
    await until(() => proxy.refused >= 2, { what: 'two reconnection attempts' });
    proxy.block(false);
    await panel.locator(`${tid('session-state')}[data-state="connected"]`).waitFor({ timeout: WAIT + 5000 });
    await panel.locator(tid('banner-reconnecting')).waitFor({ state: 'detached' });
    const c = card(panel, convId);
    await c.locator(`${tid('message')}[data-from="customer"]`, { hasText: 'Hello? Anyone?' }).waitFor();
    assert.equal(await c.getAttribute('data-status'), 'in_process');
    assert.equal(new URL(panel.url()).pathname, '/panel', 'never sent to the login page');
    await panel.locator(`${tid('capability-chat')}[data-on="true"]`).waitFor();
    const s = (await erinOnServer()).session;
    assert.equal(s.state, 'connected');
    assert.equal(s.id, sessionId, 'the same session');

    await c.locator(tid('compose-input')).fill('Back now, sorry. Let me look at the charges.');
    await c.locator(tid('send')).click();
    await chat.locator(`${tid('message')}[data-from="agent"]`, { hasText: 'Back now' }).waitFor();
  });

  step('a drop longer than the grace ends the session: back online, the panel goes to the login page', async () => {
    proxy.block(true);
    proxy.cut();
    await panel.locator(tid('banner-reconnecting')).waitFor();
    // The grace passes while the panel keeps retrying; the chat goes back to its queue.
    await chat.locator(`${tid('queue-position')}[data-position="1"]`).waitFor({ timeout: env.graceMs + WAIT });
    assert.equal((await erinOnServer()).session, null, 'the session ended on the server');
    assert.equal(new URL(panel.url()).pathname, '/panel');
    proxy.block(false);
    // The next retry finds the token revoked.
    await panel.waitForURL((u) => u.pathname === '/', { timeout: WAIT + 8000 });
    await panel.locator(tid('login-message'), { hasText: 'grace period' }).waitFor();
    assert.equal(await storedSession(panel), null);

    await chat.click(tid('chat-end'));
    await chat.locator(`${tid('chat-status')}[data-status="abandoned"]`).waitFor();
  });

  test('no page raised an uncaught script error', () => {
    assert.deepEqual([erin, gus].flatMap((p) => (p ? p.errors : [])), []);
  });
});
