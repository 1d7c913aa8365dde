// SIP registration loss (docs/sip.md#registration-lost): the agent's phone registers over UDP
// with digest authentication and then stops refreshing; before the binding's expiry has long
// passed the panel shows the `sip_registration_lost` banner and the call controls are disabled;
// registering again clears the banner and restores them.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  env, launch, person, tid, screenshot, story, signIn, setReady, card, http, WAIT,
} from './lib/harness.mjs';
import { SipPhone } from './lib/sip.mjs';

describe('SIP registration loss on the panel', () => {
  let browser;
  let carol;
  let panel;
  let phone;
  let call; // the voice conversation
  let registeredAt;
  const step = story(() => [carol]);

  const voice = () => panel.locator(tid('capability-voice'));

  before(async () => {
    browser = await launch();
    carol = await person(browser, 'carol');
    phone = new SipPhone({ server: env.sip, user: 'carol', password: env.sipPassword('carol') });
  });

  after(async () => {
    phone?.close();
    await browser?.close();
  });

  step('without a registered phone the panel has voice off and no SIP banner', async () => {
    panel = await carol.context.newPage();
    await signIn(panel, 'carol');
    await setReady(panel);
    assert.equal(await voice().getAttribute('data-on'), 'false');
    assert.equal(await panel.locator(tid('banner-sip_registration_lost')).count(), 0);
  });

  step('a digest-authenticated REGISTER turns voice on', async () => {
    const res = await phone.register(3);
    assert.deepEqual(res.seen, [401, 200], 'challenged once, then accepted');
    assert.ok(res.granted >= 1 && res.granted * 1000 <= env.maxExpiresMs, `granted ${res.granted}s within max_expires`);
    // A refresh reuses the nonce with the next nonce count: accepted without a new challenge.
    const refresh = await phone.register(3);
    assert.deepEqual(refresh.seen, [200]);
    registeredAt = Date.now();
    await panel.locator(`${tid('capability-voice')}[data-on="true"]`).waitFor();
  });

  step('an inbound call is offered to the agent and accepted', async () => {
    const res = await http('POST', '/api/v1/inbound/calls', { apiKey: env.apiKey, body: { from: '+15550100', queue: 'phones' } });
    assert.ok(res.status === 200 || res.status === 201, `inbound call: ${res.status} ${JSON.stringify(res.data)}`);
    call = res.data.id || res.data.conversation_id;
    assert.ok(call, `the call's id in ${JSON.stringify(res.data)}`);
    const c = card(panel, call);
    await c.locator(tid('accept')).click();
    await panel.locator(`${tid(`conversation-${call}`)}[data-status="in_process"]`).waitFor();
    assert.equal(await c.locator(tid('end')).isEnabled(), true);
  });

  step('when the phone stops refreshing the panel shows the banner and disables the call controls', async () => {
    const banner = panel.locator(tid('banner-sip_registration_lost'));
    await banner.waitFor({ timeout: env.maxExpiresMs + WAIT });
    const elapsed = Date.now() - registeredAt;
    assert.ok(elapsed <= env.maxExpiresMs + 2500, `banner ${elapsed} ms after the last REGISTER (max_expires ${env.maxExpiresMs} ms)`);
    await panel.locator(`${tid('capability-voice')}[data-on="false"]`).waitFor();

    const c = card(panel, call);
    await panel.locator(`${tid(`conversation-${call}`)}[data-status="wrap_up"]`).waitFor();
    assert.equal(await c.locator(tid('disconnect-reason')).textContent(), 'SipRegistrationLost');
    assert.equal(await c.locator(tid('disconnect-party')).textContent(), 'Agent');
    const callback = c.locator(tid('callback'));
    await callback.waitFor();
    assert.equal(await callback.isDisabled(), true, 'call back is disabled while voice is off');
    await screenshot(panel, '08-sip-loss-banner');
  });

  step('registering again clears the banner and restores the call controls', async () => {
    const res = await phone.register(3);
    assert.equal(res.status, 200);
    await panel.locator(tid('banner-sip_registration_lost')).waitFor({ state: 'detached' });
    await panel.locator(`${tid('capability-voice')}[data-on="true"]`).waitFor();
    const callback = card(panel, call).locator(tid('callback'));
    await panel.waitForFunction((sel) => {
      const b = document.querySelector(sel);
      return b && !b.disabled;
    }, `${tid(`conversation-${call}`)} ${tid('callback')}`);
    assert.equal(await callback.isEnabled(), true);
    await screenshot(panel, '09-sip-restored');
  });

  step('the agent calls the customer back in a new call of the same group, then wraps both up', async () => {
    const dropped = card(panel, call);
    const group = await dropped.locator(tid('group-id')).getAttribute('title');
    await dropped.locator(tid('callback')).click();
    const back = panel.locator('[data-testid^="conversation-"][data-channel="voice"][data-status="in_process"]');
    await back.waitFor();
    assert.equal(await back.locator(tid('group-id')).getAttribute('title'), group);
    await back.locator(tid('origin'), { hasText: 'Callback' }).waitFor();
    await back.locator(tid('end')).click();
    await panel.locator('[data-testid^="conversation-"][data-channel="voice"][data-status="wrap_up"]').nth(1).waitFor();
    const ids = await panel.locator('[data-testid^="conversation-"][data-status="wrap_up"]')
      .evaluateAll((els) => els.map((e) => e.dataset.conversationId));
    assert.equal(ids.length, 2);
    for (const id of ids) {
      await card(panel, id).locator(tid('complete')).click();
      await card(panel, id).waitFor({ state: 'detached' });
    }
    assert.equal((await phone.register(0)).status, 200, 'the phone unregisters');
    await panel.locator(`${tid('capability-voice')}[data-on="false"]`).waitFor();
    await panel.click(tid('logout'));
    await panel.waitForURL((u) => u.pathname === '/');
  });

  test('no page raised an uncaught script error', () => {
    assert.deepEqual(carol ? carol.errors : [], []);
  });
});
