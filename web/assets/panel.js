// switchboard: agent Communication Panel (/panel).
//
// data-testid on this page
//   static (panel.html):
//     agent-id, session-state (data-state: connecting|connected|reconnecting|ended),
//     presence (data-presence), presence-ready, presence-not_ready (aria-pressed),
//     capabilities, capability-voice, capability-chat, capability-email (data-on="true|false"),
//     logout, banner-strip, notice, notice-text, notice-close,
//     worklist, work-count, conversations, no-conversations,
//     pick-form, pick-queue, pick-load, pick-error, pick-list,
//     session-ended (overlay when the session was taken over), session-ended-text, login-link
//   banners (inside banner-strip):
//     banner-<code> for every server banner (e.g. banner-sip_registration_lost),
//     banner-reconnecting (local, while the panel socket is down), reconnect-now,
//     banner-too-many-tabs (local, instead of banner-reconnecting while the server refuses
//     another panel socket for this session)
//   worklist: worklist-item-<conversation id>
//   pick list: pick-item-<conversation id>, pick-<conversation id> (button)
//   each conversation card: conversation-<id> (data-status, data-channel), and inside it:
//     customer-name, customer-address, channel, queue, status (data-status), conv-age,
//     offer, offer-countdown, accept, reject,
//     disconnect, disconnect-party, disconnect-reason,
//     voice-state, voice-text ("On the call" / "The call lasted"), call-duration (data-state:
//     running, counted from answered_at | final, ended_at - answered_at), voice-note, email-subject,
//     end, complete, transfer, consult, callback,
//     target-form (data-mode: transfer|consult), target-kind, target-input, target-submit, target-cancel,
//     transcript, message (data-from, data-message-id), compose-input, send,
//     script-reason, script-resolution, memo, save-metadata, draft-status (data-state),
//     group-id, conv-id (short id; full id in title), origin

import {
  api, ApiError, loadSession, clearSession, gotoLogin, wsUrl, LiveSocket, tokenProbe,
  CLOSE_TAKEN_OVER, CLOSE_TOO_MANY_SOCKETS, h, setText, humanize, fmtTime, fmtDuration, countdown,
  elapsed, startClocks, refreshClock, debounce, errorText, shortId,
} from './api.js';

const stored = loadSession();
// Not signed in as an agent: go where this browser belongs instead.
const redirect = !stored ? '/' : stored.role === 'supervisor' ? '/dashboard' : null;
if (redirect) location.replace(redirect);

const me = { token: stored ? stored.token : '', agentId: (stored && stored.agent_id) || null };

const SCRIPT_FIELDS = [
  { key: 'reason', label: 'Reason for contact' },
  { key: 'resolution', label: 'Resolution' },
];
const CALLBACK_REASONS = new Set(['AgentConnectionLost', 'SipRegistrationLost', 'AgentEnded', 'CustomerEnded']);
const AGENT_FAULT = new Set(['AgentConnectionLost', 'SipRegistrationLost', 'AgentSessionLost']);
const ACTIVE = new Set(['offered', 'in_process', 'wrap_up']);

const REASON_TEXT = {
  CustomerEnded: 'The customer ended the conversation.',
  CustomerAbandoned: 'The customer left before it was answered.',
  AgentEnded: 'You ended the conversation.',
  AgentConnectionLost: 'The call dropped because the panel lost its connection. Finish the wrap-up and call the customer back if needed.',
  SipRegistrationLost: 'The call dropped because the phone (SIP) registration expired. Call the customer back once voice is available again.',
  AgentSessionLost: 'The session ended without the agent returning; the chat went back to the queue.',
  Transferred: 'The conversation was transferred; the work continues in a new conversation.',
  Reassigned: 'A supervisor reassigned the conversation.',
};

const ERROR_TEXT = {
  not_offered_to_you: 'This offer is no longer yours: it was withdrawn or timed out.',
  answer_on_phone: 'This call is ringing on your phone: pick up the phone to answer it.',
  capacity_reached: 'You are at your capacity for this channel.',
  conversations_open: 'You still have open conversations. End, complete or transfer them before signing out.',
  forbidden: 'You are not allowed to do that.',
  not_found: 'That conversation, queue or agent does not exist.',
  rate_limited: 'Too many requests. Wait a moment and try again.',
};

// ---------------------------------------------------------------------------
// State

const state = {
  link: 'connecting', // connecting | up | down | ended
  sessionState: null,
  presence: null,
  capabilities: { voice: false, chat: false, email: false },
  banners: [],
  downCode: null, // close code of the last socket loss
};
/** conversation id → ConvView */
const views = new Map();
const knownQueues = new Set();
const knownAgents = new Set();

const el = {
  agentId: document.getElementById('agent-id'),
  sessionState: document.getElementById('session-state'),
  presence: document.getElementById('presence'),
  caps: {
    voice: document.getElementById('cap-voice'),
    chat: document.getElementById('cap-chat'),
    email: document.getElementById('cap-email'),
  },
  logout: document.getElementById('logout'),
  banners: document.getElementById('banners'),
  notice: document.getElementById('notice'),
  noticeText: document.getElementById('notice-text'),
  grid: document.getElementById('conv-grid'),
  noWork: document.getElementById('no-work'),
  worklist: document.getElementById('worklist'),
  worklistEmpty: document.getElementById('worklist-empty'),
  workCount: document.getElementById('work-count'),
  queueIds: document.getElementById('queue-ids'),
  agentIds: document.getElementById('agent-ids'),
  overlay: document.getElementById('overlay'),
  overlayTitle: document.getElementById('overlay-title'),
  overlayText: document.getElementById('overlay-text'),
  overlayLogin: document.getElementById('overlay-login'),
};

// ---------------------------------------------------------------------------
// Notices and errors

let noticeTimer = null;
function notify(text, kind = 'error') {
  clearTimeout(noticeTimer);
  el.noticeText.textContent = text;
  el.notice.classList.toggle('info', kind === 'info');
  el.notice.hidden = false;
  if (kind === 'info') noticeTimer = setTimeout(() => { el.notice.hidden = true; }, 6000);
}
document.getElementById('notice-close').addEventListener('click', () => { el.notice.hidden = true; });

function failed(e) {
  if (e instanceof ApiError && e.status === 401) {
    sessionOver('session_lost');
    return;
  }
  if (e instanceof ApiError && ERROR_TEXT[e.code]) {
    notify(ERROR_TEXT[e.code] + (e.message && e.message !== e.code ? ` (${e.message})` : ''));
    return;
  }
  notify(errorText(e));
}

function call(method, path, body) {
  return api(method, path, { token: me.token, body });
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------
// Top bar, banners

const SESSION_PILL = {
  connecting: ['Connecting…', 'tone-gray'],
  up: ['Connected', 'tone-green'],
  down: ['Reconnecting…', 'tone-amber'],
  ended: ['Session ended', 'tone-red'],
};

function renderTop() {
  setText(el.agentId, me.agentId || '…');
  const [label, tone] = SESSION_PILL[state.link];
  setText(el.sessionState, label);
  el.sessionState.className = `pill ${tone}`;
  el.sessionState.dataset.state = state.link === 'up' ? 'connected' : state.link === 'down' ? 'reconnecting' : state.link;

  el.presence.dataset.presence = state.presence || '';
  for (const b of el.presence.querySelectorAll('button')) {
    b.setAttribute('aria-pressed', String(b.dataset.value === state.presence));
    // Presence changes need the server: only while the link is up.
    b.disabled = state.link !== 'up';
  }
  for (const [ch, node] of Object.entries(el.caps)) {
    const on = !!state.capabilities[ch];
    node.dataset.on = String(on);
    node.className = `cap ${on ? 'on' : 'off'}`;
    node.title = `${humanize(ch)} ${on ? 'available' : 'unavailable'}`;
  }
}

/** The banner strip: every server banner, plus the local "Reconnecting…" one. */
function renderBanners() {
  const want = [];
  for (const b of state.banners) {
    if (!b || !b.code) continue;
    want.push({
      key: `server:${b.code}`,
      testid: `banner-${b.code}`,
      tone: b.code === 'sip_registration_lost' ? 'tone-red' : 'tone-amber',
      text: b.text || humanize(b.code),
    });
  }
  if (state.link === 'down' && state.downCode === CLOSE_TOO_MANY_SOCKETS) {
    want.push({
      key: 'local:too-many-tabs',
      testid: 'banner-too-many-tabs',
      tone: 'tone-amber',
      text: 'The Communication Panel is already open in too many tabs or windows. Close one of them; this tab keeps trying.',
      action: h('button', { type: 'button', class: 'btn btn-sm', testid: 'reconnect-now', onclick: () => sock.retryNow() }, 'Retry now'),
    });
  } else if (state.link === 'down') {
    want.push({
      key: 'local:reconnecting',
      testid: 'banner-reconnecting',
      tone: 'tone-amber',
      text: 'Connection to the server lost. Reconnecting… Your session, chats and drafts are kept for a short while.',
      action: h('button', { type: 'button', class: 'btn btn-sm', testid: 'reconnect-now', onclick: () => sock.retryNow() }, 'Retry now'),
    });
  }
  const existing = new Map([...el.banners.children].map((n) => [n.dataset.key, n]));
  for (const w of want) {
    let node = existing.get(w.key);
    if (node) {
      existing.delete(w.key);
      setText(node.querySelector('.banner-text'), w.text);
      node.className = `banner ${w.tone}`;
    } else {
      node = h('div', { class: `banner ${w.tone}`, testid: w.testid, dataset: { key: w.key } },
        h('span', { class: 'icon', 'aria-hidden': 'true' }, '!'),
        h('span', { class: 'banner-text' }, w.text),
        w.action || null);
    }
    el.banners.appendChild(node); // keeps the order of `want`
  }
  for (const stale of existing.values()) stale.remove();
}

// ---------------------------------------------------------------------------
// Conversation cards

const CHANNEL_CHIP = {
  voice: ['Tel', 'chan-voice'],
  email: ['@', 'chan-email'],
  webchat: ['Web', 'chan-chat'],
  sms: ['SMS', 'chan-chat'],
  social: ['Soc', 'chan-chat'],
};

function chip(conv) {
  const [label, cls] = CHANNEL_CHIP[conv.channel === 'chat' ? conv.medium : conv.channel] || ['?', 'chan-chat'];
  return h('span', { class: `chan ${cls}`, 'aria-hidden': 'true' }, label);
}

function statusTone(status) {
  return {
    in_queue: 'tone-gray', offered: 'tone-blue', in_process: 'tone-green',
    wrap_up: 'tone-violet', handled: 'tone-gray', abandoned: 'tone-red',
  }[status] || 'tone-gray';
}

function channelLabel(conv) {
  if (conv.channel === 'chat' && conv.medium && conv.medium !== 'chat') {
    return `Chat · ${conv.medium === 'webchat' ? 'Web chat' : conv.medium === 'sms' ? 'SMS' : humanize(conv.medium)}`;
  }
  return humanize(conv.channel);
}

function customerName(conv) {
  const c = conv.customer || {};
  return c.name || c.address || 'Unknown customer';
}

class ConvView {
  constructor(conv) {
    this.id = conv.id;
    this.conv = { id: conv.id }; // filled by update()
    this.messageIds = new Set();
    this.editGen = 0; // bumped on every script/memo edit
    this.syncedGen = 0; // edit generation the server has as draft or metadata
    this.inFlight = false;
    this.retryTimer = null;
    this.queueDraft = debounce(() => this.syncDraft(), 400);
    this.build();
  }

  get dirty() {
    return this.editGen !== this.syncedGen;
  }

  build() {
    const id = this.id;
    const b = (testid, label, cls, onclick) =>
      h('button', { type: 'button', class: `btn btn-sm ${cls || ''}`.trim(), testid, onclick }, label);

    this.chip = h('span');
    this.title = h('h3', { id: `conv-title-${id}`, testid: 'customer-name' });
    this.address = h('span', { testid: 'customer-address' });
    this.channel = h('span', { testid: 'channel' });
    this.queue = h('span', { testid: 'queue' });
    this.status = h('span', { class: 'pill', testid: 'status' });
    this.age = h('span', { class: 'small muted', title: 'Time since the conversation was created' });

    this.offerCountdown = countdown('', { testid: 'offer-countdown' });
    this.offerExpiry = h('span', null, 'Respond within ', this.offerCountdown);
    this.acceptBtn = b('accept', 'Accept', 'btn-success', () => this.accept());
    this.rejectBtn = b('reject', 'Reject', '', () => this.reject());
    this.offerLabel = h('span');
    this.offerBar = h('div', { class: 'offer-bar', testid: 'offer', role: 'group', 'aria-label': 'Incoming offer' },
      h('span', { class: 'grow' }, this.offerLabel, ' ', this.offerExpiry), this.acceptBtn, this.rejectBtn);

    this.discParty = h('b', { testid: 'disconnect-party' });
    this.discReason = h('b', { testid: 'disconnect-reason' });
    this.discExplain = h('span', { class: 'small' });
    this.disc = h('div', { class: 'disc', testid: 'disconnect' },
      h('span', null, 'Disconnected by ', this.discParty), h('span', null, 'Reason ', this.discReason), this.discExplain);

    this.voiceText = h('span', { class: 'voice-text', testid: 'voice-text' });
    // The call's running time (in process) or its final length (wrap-up), counted from the
    // server's answered_at: right after a reload or a reconnection too.
    this.callTime = h('span', { class: 'clock call-time', testid: 'call-duration' });
    this.voiceNote = h('span', { class: 'small muted grow', testid: 'voice-note' });
    this.voice = h('div', { class: 'voice-state', testid: 'voice-state' }, this.voiceText, this.callTime, this.voiceNote);
    this.subject = h('div', { class: 'email-subject', testid: 'email-subject' });

    this.endBtn = b('end', 'End', 'btn-danger', () => this.end());
    this.completeBtn = b('complete', 'Complete wrap-up', 'btn-primary', () => this.complete());
    this.transferBtn = b('transfer', 'Transfer…', '', () => this.openTarget('transfer'));
    this.consultBtn = b('consult', 'Consult…', '', () => this.openTarget('consult'));
    this.callbackBtn = b('callback', 'Call back', 'btn-success', () => this.callback());
    this.actions = h('div', { class: 'conv-actions', role: 'group', 'aria-label': 'Conversation actions' },
      this.endBtn, this.completeBtn, this.transferBtn, this.consultBtn, this.callbackBtn);

    // Transfer / consult target form
    this.targetKind = h('select', { id: `tk-${id}`, testid: 'target-kind' },
      h('option', { value: 'queue' }, 'Queue'), h('option', { value: 'agent' }, 'Agent'));
    this.targetKindField = h('div', { class: 'field' }, h('label', { for: `tk-${id}` }, 'To'), this.targetKind);
    this.targetInput = h('input', { type: 'text', id: `ti-${id}`, testid: 'target-input', autocomplete: 'off', spellcheck: 'false', list: 'queue-ids' });
    this.targetLabel = h('label', { for: `ti-${id}` }, 'Queue id');
    this.targetSubmit = h('button', { type: 'submit', class: 'btn btn-sm btn-primary', testid: 'target-submit' }, 'Transfer');
    this.targetForm = h('form', { class: 'target-form', testid: 'target-form', hidden: true, onsubmit: (e) => { e.preventDefault(); this.submitTarget(); } },
      this.targetKindField,
      h('div', { class: 'field' }, this.targetLabel, this.targetInput),
      this.targetSubmit,
      h('button', { type: 'button', class: 'btn btn-sm', testid: 'target-cancel', onclick: () => this.closeTarget() }, 'Cancel'));
    this.targetKind.addEventListener('change', () => this.syncTargetKind());

    // Transcript and composer
    this.transcript = h('ol', { class: 'transcript', testid: 'transcript', 'aria-live': 'polite', 'aria-label': 'Transcript', tabindex: '0' });
    this.composeInput = h('textarea', { id: `ci-${id}`, testid: 'compose-input', rows: '1', placeholder: 'Type a message' });
    this.sendBtn = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'send' }, 'Send');
    this.composer = h('form', { class: 'composer', onsubmit: (e) => { e.preventDefault(); this.send(); } },
      h('label', { class: 'visually-hidden', for: `ci-${id}` }, 'Message'), this.composeInput, this.sendBtn);
    this.composeInput.addEventListener('keydown', (e) => {
      const isEmail = this.conv.channel === 'email';
      if (e.key === 'Enter' && ((!isEmail && !e.shiftKey) || (isEmail && (e.ctrlKey || e.metaKey)))) {
        e.preventDefault();
        this.send();
      }
    });

    // Script and memo
    this.fields = {};
    const grid = h('div', { class: 'script-grid' });
    for (const f of SCRIPT_FIELDS) {
      const input = h('input', { type: 'text', id: `sf-${f.key}-${id}`, testid: `script-${f.key}`, autocomplete: 'off' });
      input.addEventListener('input', () => this.edited());
      this.fields[f.key] = input;
      grid.appendChild(h('div', { class: 'field' }, h('label', { for: input.id }, f.label), input));
    }
    this.memo = h('textarea', { id: `memo-${id}`, testid: 'memo', rows: '2' });
    this.memo.addEventListener('input', () => this.edited());
    this.draftStatus = h('span', { class: 'draft-status', testid: 'draft-status', role: 'status' });
    this.saveBtn = h('button', { type: 'submit', class: 'btn btn-sm', testid: 'save-metadata' }, 'Save');
    this.script = h('form', { class: 'script', 'aria-label': 'Script and memo', onsubmit: (e) => { e.preventDefault(); this.save(); } },
      h('div', { class: 'script-head' }, h('h3', null, 'Script & memo'), this.draftStatus, this.saveBtn),
      grid,
      h('div', { class: 'field' }, h('label', { for: this.memo.id }, 'Internal memo'), this.memo));

    this.groupId = h('span', { class: 'mono', testid: 'group-id' });
    this.origin = h('span', { testid: 'origin' });
    this.started = h('span');
    this.foot = h('div', { class: 'conv-foot' },
      h('span', null, 'Group ', this.groupId), this.origin, this.started,
      h('span', { title: id }, 'Conversation ', h('span', { class: 'mono', testid: 'conv-id', title: id }, shortId(id))));

    this.root = h('article', {
      class: 'card conv', id: `conv-${id}`, testid: `conversation-${id}`,
      'aria-labelledby': `conv-title-${id}`, dataset: { conversationId: id },
    },
    h('div', { class: 'conv-head' }, this.chip,
      h('div', { class: 'conv-title' }, this.title,
        h('div', { class: 'meta' }, this.address, this.channel, this.queue)),
      h('div', { class: 'conv-status' }, this.status, this.age)),
    this.offerBar, this.disc, this.voice, this.subject, this.actions, this.targetForm,
    this.transcript, this.composer, this.script, this.foot);
  }

  /** Apply a new version of the conversation. */
  update(conv) {
    const prev = this.conv;
    this.conv = { ...prev, ...conv };
    if (!conv.messages && prev.messages) this.conv.messages = prev.messages;
    const c = this.conv;
    if (c.queue) knownQueues.add(c.queue);

    this.root.dataset.status = c.status;
    this.root.dataset.channel = c.channel;
    for (const s of ACTIVE) this.root.classList.toggle(`is-${s}`, c.status === s);

    const newChip = chip(c);
    this.chip.replaceWith(newChip);
    this.chip = newChip;
    setText(this.title, customerName(c));
    const cu = c.customer || {};
    const addr = cu.name && cu.address && cu.address !== cu.name ? cu.address : '';
    setText(this.address, addr);
    this.address.hidden = !addr;
    setText(this.channel, channelLabel(c));
    setText(this.queue, c.queue ? `Queue ${c.queue}` : '');
    setText(this.status, humanize(c.status));
    this.status.className = `pill ${statusTone(c.status)}`;
    this.status.dataset.status = c.status;
    if (c.created_at && this.age.dataset.elapsedSince !== c.created_at) {
      const a = elapsed(c.created_at, { class: 'small muted', testid: 'conv-age', title: 'Time since the conversation was created' });
      this.age.replaceWith(a);
      this.age = a;
    }

    // Offer
    const offered = c.status === 'offered';
    this.offerBar.hidden = !offered;
    const caller = c.customer && c.customer.address ? c.customer.address : 'an unknown number';
    setText(this.offerLabel, c.channel === 'voice'
      ? `Incoming call from ${caller}: answer on your phone.`
      : `Incoming ${channelLabel(c).toLowerCase()}${c.origin && c.origin.kind && c.origin.kind !== 'inbound' ? ` (${humanize(c.origin.kind).toLowerCase()})` : ''}.`);
    if (offered && c.offer_expires_at) {
      this.offerCountdown.dataset.countdownTo = c.offer_expires_at;
      refreshClock(this.offerCountdown);
      this.offerExpiry.hidden = false;
    } else {
      delete this.offerCountdown.dataset.countdownTo;
      this.offerExpiry.hidden = true;
    }

    // Disconnect info
    const reason = c.disconnect_reason;
    this.disc.hidden = !reason && !c.disconnect_party;
    setText(this.discParty, humanize(c.disconnect_party));
    setText(this.discReason, reason || '—');
    setText(this.discExplain, REASON_TEXT[reason] || '');
    this.disc.className = `disc ${AGENT_FAULT.has(reason) ? 'tone-red' : 'tone-gray'}`;

    // Channel specific parts
    const isVoice = c.channel === 'voice';
    const isEmail = c.channel === 'email';
    this.voice.hidden = !isVoice || offered;
    this.subject.hidden = !isEmail || !c.subject;
    setText(this.subject, c.subject ? `Subject: ${c.subject}` : '');
    const hasTranscript = !isVoice;
    this.transcript.hidden = !hasTranscript || (offered && this.messageIds.size === 0);
    this.composer.hidden = !hasTranscript || c.status !== 'in_process';
    this.composer.classList.toggle('email', isEmail);
    this.composeInput.placeholder = isEmail ? 'Write a reply (Ctrl+Enter to send)' : 'Type a message (Enter to send, Shift+Enter for a new line)';
    this.sendBtn.textContent = isEmail ? 'Send reply' : 'Send';
    this.script.hidden = offered;
    if (c.messages) this.setMessages(c.messages);

    // Footer
    setText(this.groupId, shortId(c.group_id));
    this.groupId.title = c.group_id || '';
    const o = c.origin || {};
    setText(this.origin, o.kind && o.kind !== 'inbound'
      ? `${humanize(o.kind)}${o.previous ? ` of …${shortId(o.previous)}` : ''}` : 'Inbound');
    this.origin.title = o.previous || '';
    setText(this.started, c.created_at ? `Started ${fmtTime(c.created_at)}` : '');

    this.updateControls();
    if (offered && prev.status !== 'offered') this.flash();
  }

  /** Visibility and enabled state of the action buttons. */
  updateControls() {
    const c = this.conv;
    const isVoice = c.channel === 'voice';
    const voiceOff = isVoice && !state.capabilities.voice;
    const noVoiceTitle = voiceOff ? 'Voice is unavailable: no live phone (SIP) registration' : '';
    // While the link is down nothing the agent does could reach the server: every action
    // waits for the reconnection (typing and drafts go on and sync when it is back).
    const offline = state.link !== 'up';
    const busy = this.busy === true || offline;
    this.sendBtn.disabled = offline;
    this.saveBtn.disabled = offline;
    this.root.classList.toggle('link-down', offline);

    this.acceptBtn.disabled = busy || voiceOff;
    this.acceptBtn.title = noVoiceTitle;
    this.rejectBtn.disabled = busy;

    const inProcess = c.status === 'in_process';
    const wrapUp = c.status === 'wrap_up';
    this.endBtn.hidden = !inProcess;
    this.endBtn.textContent = isVoice ? 'End call' : c.channel === 'chat' ? 'End chat' : 'End';
    this.transferBtn.hidden = !inProcess;
    this.consultBtn.hidden = !inProcess;
    this.completeBtn.hidden = !wrapUp;
    const canCallback = isVoice && (wrapUp || c.status === 'handled') && CALLBACK_REASONS.has(c.disconnect_reason);
    this.callbackBtn.hidden = !canCallback;

    for (const btn of [this.endBtn, this.transferBtn, this.consultBtn, this.callbackBtn]) {
      btn.disabled = busy || voiceOff;
      btn.title = noVoiceTitle;
    }
    this.completeBtn.disabled = busy;
    this.actions.hidden = [...this.actions.children].every((b) => b.hidden);
    if (!inProcess) this.closeTarget();
    if (isVoice) {
      let text;
      let note = '';
      if (inProcess) {
        text = 'On the call';
        if (voiceOff) note = 'Voice unavailable.';
      } else if (wrapUp) {
        text = c.answered_at && c.ended_at ? 'The call lasted' : c.disconnect_reason ? 'Call ended.' : '';
        note = 'Wrap-up in progress.';
        if (canCallback && voiceOff) note += ' Call back becomes available when voice is restored.';
      } else text = humanize(c.status);
      setText(this.voiceText, text);
      setText(this.voiceNote, note);
      this.showCallTime(inProcess, wrapUp);
    }
  }

  /** Running time of a call in process; the final length once it ended. */
  showCallTime(inProcess, wrapUp) {
    const c = this.conv;
    const t = this.callTime;
    if (inProcess && c.answered_at) {
      if (t.dataset.elapsedSince !== c.answered_at) {
        t.dataset.elapsedSince = c.answered_at;
        refreshClock(t);
      }
      t.dataset.state = 'running';
      t.title = `Answered at ${fmtTime(c.answered_at)}`;
      t.hidden = false;
      return;
    }
    delete t.dataset.elapsedSince;
    const length = wrapUp && c.answered_at && c.ended_at
      ? Date.parse(c.ended_at) - Date.parse(c.answered_at) : NaN;
    if (Number.isNaN(length)) {
      t.hidden = true;
      t.dataset.state = '';
      setText(t, '');
      return;
    }
    setText(t, fmtDuration(length));
    t.dataset.state = 'final';
    t.title = `Answered at ${fmtTime(c.answered_at)}, ended at ${fmtTime(c.ended_at)}`;
    t.hidden = false;
  }

  flash() {
    this.root.classList.remove('flash');
    void this.root.offsetWidth; // restart the animation
    this.root.classList.add('flash');
  }

  // ---- transcript

  setMessages(list) {
    const ids = new Set(list.map((m) => m.id));
    const same = ids.size === this.messageIds.size && [...ids].every((id) => this.messageIds.has(id));
    if (same) return;
    this.transcript.replaceChildren();
    this.messageIds.clear();
    for (const m of list) this.renderMessage(m);
    this.scrollDown();
  }

  /** A new message (event or own send): append it unless already shown. */
  addMessage(m) {
    if (!m || this.messageIds.has(m.id)) return;
    if (!this.conv.messages) this.conv.messages = [];
    this.conv.messages.push(m);
    const stick = this.nearBottom();
    this.renderMessage(m);
    this.transcript.hidden = this.conv.channel === 'voice';
    if (stick) this.scrollDown();
  }

  renderMessage(m) {
    if (!m) return;
    this.messageIds.add(m.id);
    const who = m.from === 'agent' ? 'Agent' : m.from === 'customer' ? 'Customer' : 'System';
    this.transcript.appendChild(h('li', {
      class: `msg from-${m.from || 'system'}`, testid: 'message', dataset: { from: m.from || 'system', messageId: m.id },
    },
    h('div', { class: 'bubble' }, m.text ?? ''),
    h('div', { class: 'msg-meta' }, `${who} · ${fmtTime(m.at)}`)));
  }

  nearBottom() {
    const t = this.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 40;
  }

  scrollDown() {
    this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  // ---- script and memo (drafts)

  values() {
    const script = {};
    for (const f of SCRIPT_FIELDS) script[f.key] = this.fields[f.key].value;
    return { script, memo: this.memo.value };
  }

  /** Fill the form from the server (a draft, or else the saved metadata). Local
   *  edits the server has not stored yet win and are sent again. */
  restore(draft) {
    if (this.dirty) {
      this.syncDraft();
      return;
    }
    const src = draft || this.conv.metadata || {};
    const script = src.script || {};
    for (const f of SCRIPT_FIELDS) {
      const v = script[f.key] == null ? '' : String(script[f.key]);
      if (this.fields[f.key].value !== v) this.fields[f.key].value = v;
    }
    const memo = src.memo == null ? '' : String(src.memo);
    if (this.memo.value !== memo) this.memo.value = memo;
    this.setDraftStatus(draft ? 'draft' : 'clean');
  }

  edited() {
    this.editGen += 1;
    this.setDraftStatus('editing');
    this.queueDraft();
  }

  setDraftStatus(s, detail) {
    const text = {
      clean: '',
      draft: 'Unsaved draft',
      editing: 'Editing…',
      syncing: 'Syncing draft…',
      synced: 'Draft kept (not saved yet)',
      offline: 'Draft not synced yet, retrying…',
      saving: 'Saving…',
      saved: 'Saved',
      error: detail || 'Could not sync the draft',
    }[s];
    setText(this.draftStatus, text);
    this.draftStatus.dataset.state = s;
    this.draftStatus.className = `draft-status ${s === 'offline' || s === 'draft' || s === 'synced' ? 'warn' : s === 'saved' ? 'ok' : s === 'error' ? 'err' : ''}`;
  }

  async syncDraft() {
    this.queueDraft.cancel();
    clearTimeout(this.retryTimer);
    if (!this.dirty || state.link === 'ended') return;
    if (this.inFlight) {
      this.again = true;
      return;
    }
    const gen = this.editGen;
    this.inFlight = true;
    this.setDraftStatus('syncing');
    try {
      await call('PUT', `/conversations/${enc(this.id)}/draft`, this.values());
      if (gen > this.syncedGen) this.syncedGen = gen;
      if (!this.dirty) this.setDraftStatus('synced');
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        failed(e);
      } else if (e instanceof ApiError && (e.status === 0 || e.status >= 500 || e.status === 429)) {
        this.setDraftStatus('offline');
        this.retryTimer = setTimeout(() => this.syncDraft(), 3000);
      } else {
        this.setDraftStatus('error', `Draft not synced: ${errorText(e)}`);
      }
    } finally {
      this.inFlight = false;
      if (this.again) {
        this.again = false;
        if (this.dirty) this.queueDraft();
      }
    }
  }

  /** Send the pending draft now, surviving the page being closed. */
  flushOnExit() {
    if (!this.dirty) return;
    this.queueDraft.cancel();
    api('PUT', `/conversations/${enc(this.id)}/draft`, { token: me.token, body: this.values(), keepalive: true }).catch(() => {});
  }

  async save() {
    this.queueDraft.cancel();
    const gen = this.editGen;
    this.saveBtn.disabled = true;
    this.setDraftStatus('saving');
    try {
      const res = await call('POST', `/conversations/${enc(this.id)}/metadata`, this.values());
      if (gen > this.syncedGen) this.syncedGen = gen;
      this.conv.metadata = res && res.metadata ? res.metadata : this.values();
      this.setDraftStatus(this.dirty ? 'editing' : 'saved');
      if (this.dirty) this.queueDraft();
      return true;
    } catch (e) {
      this.setDraftStatus('error', `Not saved: ${errorText(e)}`);
      failed(e);
      return false;
    } finally {
      this.saveBtn.disabled = false;
    }
  }

  /** True when the form differs from the saved metadata. */
  unsaved() {
    const m = this.conv.metadata || {};
    const v = this.values();
    const ms = m.script || {};
    return SCRIPT_FIELDS.some((f) => (ms[f.key] ?? '') !== v.script[f.key]) || (m.memo ?? '') !== v.memo;
  }

  // ---- actions

  async run(fn, okText) {
    this.busy = true;
    this.updateControls();
    try {
      const res = await fn();
      if (okText) notify(okText, 'info');
      return res;
    } catch (e) {
      failed(e);
      return undefined;
    } finally {
      this.busy = false;
      if (views.get(this.id) === this) this.updateControls();
    }
  }

  async accept() {
    const res = await this.run(() => call('POST', `/conversations/${enc(this.id)}/accept`));
    if (res && res.id === this.id) applyConversation(res);
    if (res !== undefined) (this.composer.hidden ? this.fields.reason : this.composeInput).focus();
  }

  async reject() {
    const res = await this.run(() => call('POST', `/conversations/${enc(this.id)}/reject`));
    if (res && res.id === this.id) applyConversation(res);
  }

  async end() {
    const res = await this.run(() => call('POST', `/conversations/${enc(this.id)}/end`));
    if (res && res.id === this.id) applyConversation(res);
  }

  async complete() {
    // Completing with answers typed but not saved would lose them: save first.
    if (this.unsaved()) {
      const ok = await this.save();
      if (!ok) return;
    }
    const res = await this.run(() => call('POST', `/conversations/${enc(this.id)}/complete`));
    if (res && res.id === this.id) applyConversation(res);
  }

  async callback() {
    const res = await this.run(() => call('POST', `/conversations/${enc(this.id)}/callback`), 'Calling the customer back.');
    if (res && res.id) {
      applyConversation(res);
      const v = views.get(res.id);
      if (v) {
        v.root.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
        v.flash();
      }
    }
  }

  async send() {
    const text = this.composeInput.value.trim();
    if (!text || this.sending) return;
    this.sending = true;
    this.sendBtn.disabled = true;
    try {
      const res = await call('POST', `/conversations/${enc(this.id)}/messages`, { text });
      this.composeInput.value = '';
      const msg = res && res.message ? res.message : res;
      if (msg && msg.id && typeof msg.text === 'string') this.addMessage(msg);
    } catch (e) {
      failed(e);
    } finally {
      this.sending = false;
      this.sendBtn.disabled = false;
      this.composeInput.focus();
    }
  }

  openTarget(mode) {
    this.targetForm.dataset.mode = mode;
    this.targetForm.hidden = false;
    this.targetKindField.hidden = mode === 'consult';
    if (mode === 'consult') this.targetKind.value = 'agent';
    this.targetSubmit.textContent = mode === 'consult' ? 'Start consultation' : 'Transfer';
    this.syncTargetKind();
    this.targetInput.focus();
  }

  syncTargetKind() {
    const agent = this.targetKind.value === 'agent';
    setText(this.targetLabel, agent ? 'Agent id' : 'Queue id');
    this.targetInput.setAttribute('list', agent ? 'agent-ids' : 'queue-ids');
    this.targetInput.placeholder = agent ? 'e.g. bob' : 'e.g. support';
  }

  closeTarget() {
    if (this.targetForm.hidden) return;
    const hadFocus = this.targetForm.contains(document.activeElement);
    this.targetForm.hidden = true;
    this.targetInput.value = '';
    if (hadFocus && !this.transferBtn.hidden) this.transferBtn.focus();
  }

  async submitTarget() {
    const target = this.targetInput.value.trim();
    if (!target) {
      this.targetInput.focus();
      return;
    }
    const mode = this.targetForm.dataset.mode;
    const kind = mode === 'consult' ? 'agent' : this.targetKind.value;
    if (kind === 'agent') knownAgents.add(target);
    else knownQueues.add(target);
    const path = `/conversations/${enc(this.id)}/${mode === 'consult' ? 'consult' : 'transfer'}`;
    const okText = mode === 'consult' ? `Consultation offered to ${target}.` : `Transferred to ${kind} ${target}.`;
    const res = await this.run(() => call('POST', path, { [kind]: target }), okText);
    if (res !== undefined) {
      this.closeTarget();
      if (res && res.id === this.id) applyConversation(res);
    }
    renderDatalists();
  }
}

// ---------------------------------------------------------------------------
// Applying server data

function keeps(conv) {
  if (!conv || !ACTIVE.has(conv.status)) return false;
  return !conv.agent || !me.agentId || conv.agent === me.agentId;
}

function applyConversation(conv) {
  if (!conv || !conv.id) return;
  let v = views.get(conv.id);
  if (!keeps(conv)) {
    if (v) removeView(v);
    return;
  }
  if (!v) {
    v = new ConvView(conv);
    views.set(conv.id, v);
    v.update(conv);
    v.restore(null);
    placeView(v);
  } else {
    v.update(conv);
  }
  renderWork();
}

function removeView(v) {
  v.queueDraft.cancel();
  clearTimeout(v.retryTimer);
  v.root.remove();
  views.delete(v.id);
  renderWork();
}

function sortKey(v) {
  return `${v.conv.created_at || ''}|${v.id}`;
}

/** Insert a card at its place (oldest first) without moving the others. */
function placeView(v) {
  const key = sortKey(v);
  for (const other of el.grid.children) {
    const ov = views.get(other.dataset.conversationId);
    if (ov && sortKey(ov) > key) {
      el.grid.insertBefore(v.root, other);
      return;
    }
  }
  el.grid.appendChild(v.root);
}

function applySnapshot(snap) {
  if (!snap || typeof snap !== 'object') return;
  if (snap.session) {
    if (snap.session.agent_id) me.agentId = snap.session.agent_id;
    state.sessionState = snap.session.state || null;
  }
  if (snap.presence !== undefined) state.presence = snap.presence;
  if (snap.capabilities) state.capabilities = { ...state.capabilities, ...snap.capabilities };
  if (Array.isArray(snap.banners)) state.banners = snap.banners;

  const convs = Array.isArray(snap.conversations) ? snap.conversations : [];
  const drafts = snap.drafts && typeof snap.drafts === 'object' ? snap.drafts : {};
  const seen = new Set();
  for (const conv of convs) {
    if (!conv || !conv.id || !keeps(conv)) continue;
    seen.add(conv.id);
    let v = views.get(conv.id);
    if (!v) {
      v = new ConvView(conv);
      views.set(conv.id, v);
      v.update({ ...conv, messages: conv.messages || [] });
      placeView(v);
    } else {
      v.update({ ...conv, messages: conv.messages || v.conv.messages || [] });
    }
    v.restore(drafts[conv.id] || null);
  }
  for (const v of [...views.values()]) if (!seen.has(v.id)) removeView(v);
  for (const v of views.values()) v.updateControls();
  renderTop();
  renderBanners();
  renderWork();
}

function onFrame(msg) {
  switch (msg.type) {
    case 'snapshot':
      if (msg.heartbeat && msg.heartbeat.timeout_ms > 0) {
        // Ping often enough, and give up soon enough, to notice a dead link within the
        // server's own heartbeat_timeout (the page cannot see WebSocket pings).
        const t = msg.heartbeat.timeout_ms;
        sock.setHeartbeat(Math.max(500, Math.min(msg.heartbeat.interval_ms || t, t / 4)), t / 2);
      }
      applySnapshot(msg);
      break;
    case 'conversation':
      applyConversation(msg.conversation);
      break;
    case 'message': {
      const v = views.get(msg.conversation_id);
      if (v && msg.message) v.addMessage(msg.message);
      break;
    }
    case 'capabilities':
      if (msg.capabilities) {
        state.capabilities = { ...state.capabilities, ...msg.capabilities };
        renderTop();
        for (const v of views.values()) v.updateControls();
      }
      break;
    case 'banners':
      state.banners = Array.isArray(msg.banners) ? msg.banners : [];
      renderBanners();
      break;
    case 'presence':
      state.presence = msg.presence;
      renderTop();
      break;
    case 'session': {
      state.sessionState = msg.state;
      if (msg.state === 'ended') {
        const r = signingOut ? 'logged_out' : msg.reason;
        sessionOver(r === 'taken_over' ? 'taken_over' : r === 'logged_out' ? 'logged_out' : 'session_lost');
      }
      break;
    }
    default:
      break; // pong and anything newer
  }
}

// ---------------------------------------------------------------------------
// Work list (sidebar), datalists, page title

function renderWork() {
  const list = [...views.values()].sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : 1));
  el.worklist.replaceChildren(...list.map((v) => {
    const c = v.conv;
    return h('li', null, h('a', {
      href: `#conv-${c.id}`, class: c.status === 'offered' ? 'offered' : '', testid: `worklist-item-${c.id}`,
      onclick: (e) => {
        e.preventDefault();
        v.root.scrollIntoView({ block: 'start', behavior: 'smooth' });
        const target = !v.offerBar.hidden ? v.acceptBtn : !v.composer.hidden ? v.composeInput : v.fields.reason;
        target.focus({ preventScroll: true });
      },
    },
    chip(c),
    h('span', { class: 'wl-name' }, customerName(c)),
    h('span', { class: `pill ${statusTone(c.status)}` }, humanize(c.status)),
    h('span', { class: 'wl-meta' }, `${channelLabel(c)} · ${c.queue || '—'}`)));
  }));
  el.worklistEmpty.hidden = list.length > 0;
  el.noWork.hidden = list.length > 0;
  setText(el.workCount, String(list.length));
  const offers = list.filter((v) => v.conv.status === 'offered').length;
  document.title = `${offers ? `(${offers}) Incoming · ` : ''}Communication Panel · switchboard`;
  renderDatalists();
}

function renderDatalists() {
  const fill = (dl, values) => {
    const cur = [...dl.options].map((o) => o.value).join('\n');
    const next = [...values].sort();
    if (cur === next.join('\n')) return;
    dl.replaceChildren(...next.map((v) => h('option', { value: v })));
  };
  fill(el.queueIds, knownQueues);
  fill(el.agentIds, [...knownAgents].filter((a) => a !== me.agentId));
}

// ---------------------------------------------------------------------------
// Presence and sign-out

el.presence.addEventListener('click', async (e) => {
  const btn = e.target.closest('button[data-value]');
  if (!btn || btn.dataset.value === state.presence) return;
  const want = btn.dataset.value;
  for (const b of el.presence.querySelectorAll('button')) b.disabled = true;
  try {
    const res = await call('PUT', '/agent/presence', { presence: want });
    state.presence = res && res.presence ? res.presence : want;
  } catch (err) {
    failed(err);
  } finally {
    renderTop();
  }
});

let signingOut = false;
el.logout.addEventListener('click', async () => {
  if (signingOut) return;
  signingOut = true;
  el.logout.disabled = true;
  try {
    await call('POST', '/logout');
    sessionOver('logged_out');
  } catch (e) {
    failed(e);
    signingOut = false;
    el.logout.disabled = false;
  }
});

// ---------------------------------------------------------------------------
// Session end

function sessionOver(kind) {
  if (state.link === 'ended') return;
  state.link = 'ended';
  sock.stop();
  for (const v of views.values()) {
    v.queueDraft.cancel();
    clearTimeout(v.retryTimer);
  }
  clearInterval(pickTimer);
  clearSession(me.token);
  if (kind === 'taken_over') {
    renderTop();
    renderBanners();
    setText(el.overlayTitle, 'Signed in elsewhere');
    setText(el.overlayText,
      'Your session was taken over by a sign-in from another tab, window or device. This page no longer receives conversations; your work continues there.');
    el.overlay.hidden = false;
    for (const n of document.querySelectorAll('.app-header, main')) n.inert = true;
    el.overlayLogin.focus();
    return;
  }
  gotoLogin(kind);
}

// ---------------------------------------------------------------------------
// Manual picking from a queue

const pickForm = document.getElementById('pick-form');
const pickQueue = document.getElementById('pick-queue');
const pickList = document.getElementById('pick-list');
const pickError = document.getElementById('pick-error');
let pickTimer = null;
let pickQueueId = '';

async function loadPickList() {
  if (!pickQueueId || state.link === 'ended') return;
  const q = pickQueueId;
  try {
    const list = await call('GET', `/queues/${enc(q)}/conversations`);
    if (q !== pickQueueId) return;
    pickError.hidden = true;
    knownQueues.add(q);
    renderDatalists();
    const items = Array.isArray(list) ? list : [];
    if (!items.length) {
      pickList.replaceChildren(h('li', { class: 'muted' }, `Queue ${q} is empty.`));
      return;
    }
    pickList.replaceChildren(...items.map((c) => {
      const btn = h('button', { type: 'button', class: 'btn btn-sm', testid: `pick-${c.id}` }, 'Pick');
      btn.addEventListener('click', async () => {
        btn.disabled = true;
        try {
          const res = await call('POST', `/queues/${enc(q)}/pick`, { conversation_id: c.id });
          if (res && res.id) applyConversation(res);
          notify(`Picked the conversation with ${customerName(c)}.`, 'info');
        } catch (e) {
          failed(e);
        } finally {
          loadPickList();
        }
      });
      return h('li', { testid: `pick-item-${c.id}` }, chip(c),
        h('span', { class: 'grow', title: c.id }, customerName(c)),
        elapsed(c.queue_arrival_time, { class: 'small muted', title: 'Waiting time' }),
        btn);
    }));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      failed(e);
      return;
    }
    pickError.textContent = e instanceof ApiError && e.status === 403
      ? `You are not a member of queue ${q}.`
      : e instanceof ApiError && e.status === 404 ? `There is no queue ${q}.` : errorText(e);
    pickError.hidden = false;
    pickList.replaceChildren();
  }
}

pickForm.addEventListener('submit', (e) => {
  e.preventDefault();
  pickQueueId = pickQueue.value.trim();
  clearInterval(pickTimer);
  pickList.replaceChildren();
  pickError.hidden = true;
  if (!pickQueueId) return;
  loadPickList();
  pickTimer = setInterval(loadPickList, 5000);
});

// ---------------------------------------------------------------------------
// Connection

const sock = new LiveSocket({
  url: () => wsUrl('/agent/ws', me.token),
  // Until the server's snapshot says otherwise (its heartbeat), ping often enough to notice
  // a dead link within the default heartbeat_timeout (15 s).
  pingMs: 3000,
  staleMs: 9000,
  probe: tokenProbe('/agent/state', () => me.token),
  onMessage: onFrame,
  onUp: () => {
    state.link = 'up';
    renderTop();
    renderBanners();
    for (const v of views.values()) v.updateControls();
  },
  onDown: ({ code }) => {
    if (state.link === 'ended') return;
    state.link = 'down';
    state.downCode = code;
    // The server counts a session without a panel socket as unable to work (voice calls
    // drop, no offers): show every channel off and disable the call controls until the
    // snapshot of the resumed session says otherwise.
    state.capabilities = { voice: false, chat: false, email: false };
    for (const v of views.values()) v.updateControls();
    renderTop();
    renderBanners();
  },
  onFinal: (code) => {
    if (signingOut) sessionOver('logged_out');
    else sessionOver(code === CLOSE_TAKEN_OVER ? 'taken_over' : 'session_lost');
  },
});

// The browser knows before any timer that the network is gone: the panel says so at once.
window.addEventListener('offline', () => sock.drop('offline'));
window.addEventListener('online', () => sock.retryNow());
window.addEventListener('pagehide', () => {
  for (const v of views.values()) v.flushOnExit();
});

async function init() {
  renderTop();
  renderWork();
  startClocks();
  try {
    const snap = await call('GET', '/agent/state');
    applySnapshot(snap);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      sessionOver('session_lost');
      return;
    }
    if (e instanceof ApiError && e.status === 403) {
      clearSession(me.token);
      gotoLogin();
      return;
    }
    // Network trouble: the socket below retries by itself.
  }
  if (state.link !== 'ended') sock.start();
}

if (!redirect) init();
