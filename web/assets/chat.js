// switchboard: customer web chat (/chat?queue=ID).
//
// The customer token is kept in sessionStorage under "switchboard.chat.<queue>",
// so a reload of the tab continues the same chat.
//
// data-testid on this page
//   static (chat.html):
//     chat-error, chat-connection (data-state: connecting|live|reconnecting|ended),
//     chat-start-form, chat-name, chat-first-message, chat-start,
//     chat-view, chat-status (data-status), chat-reconnecting, transcript,
//     chat-compose, chat-input, chat-send, chat-end, chat-new
//   created:
//     queue-position (data-position; "You are number N in the queue"),
//     agent-name ("You are chatting with Alice"), chat-ended ("The chat has ended"),
//     agent-reconnecting ("Your agent is reconnecting…", while the agent's connection is lost),
//     message (data-from: customer|agent|system, data-message-id; class "pending" until stored),
//     chat-notice (transcript notes such as "Alice joined the chat")

import { api, ApiError, wsUrl, LiveSocket, tokenProbe, CLOSE_TAKEN_OVER, CLOSE_UNAUTHORIZED, h, fmtTime, errorText } from './api.js';

const ENDED = new Set(['wrap_up', 'handled', 'abandoned']);

const params = new URLSearchParams(location.search);
const queueId = (params.get('queue') || '').trim();
const storageKey = `switchboard.chat.${queueId}`;

const el = {
  card: document.getElementById('chat-card'),
  error: document.getElementById('chat-error'),
  conn: document.getElementById('conn-state'),
  startForm: document.getElementById('start-form'),
  name: document.getElementById('chat-name'),
  firstMessage: document.getElementById('chat-first-message'),
  start: document.getElementById('chat-start'),
  view: document.getElementById('chat-view'),
  statusbar: document.getElementById('statusbar'),
  statusText: document.getElementById('status-text'),
  reconnecting: document.getElementById('reconnecting'),
  transcript: document.getElementById('transcript'),
  compose: document.getElementById('compose'),
  input: document.getElementById('chat-input'),
  send: document.getElementById('chat-send'),
  end: document.getElementById('chat-end'),
  newChat: document.getElementById('chat-new'),
};

let chat = null; // {token, conversation_id, group_id, name}
let status = null;
let position = null;
/** The server said the agent has been disconnected for a while (their grace period). */
let agentAway = false;
let agentName = null;
let sock = null;
const shownIds = new Set();
const pending = []; // [{text, node}] messages sent, not yet seen from the server

function loadChat() {
  try {
    const c = JSON.parse(sessionStorage.getItem(storageKey) || 'null');
    return c && typeof c.token === 'string' ? c : null;
  } catch {
    return null;
  }
}

function showError(text) {
  el.error.textContent = text || '';
  el.error.hidden = !text;
}

// ---------------------------------------------------------------------------
// Views

function showStart(message) {
  if (sock) sock.stop();
  sock = null;
  chat = null;
  el.view.hidden = true;
  el.conn.hidden = true;
  el.card.classList.add('start');
  el.startForm.hidden = false;
  showError(message || '');
  el.start.disabled = false;
  el.name.focus();
}

function showChat() {
  el.startForm.hidden = true;
  el.card.classList.remove('start');
  el.view.hidden = false;
  el.conn.hidden = false;
}

function setConn(s) {
  const [label, tone] = {
    connecting: ['Connecting…', 'tone-gray'],
    live: ['Online', 'tone-green'],
    reconnecting: ['Reconnecting…', 'tone-amber'],
    ended: ['Chat ended', 'tone-gray'],
  }[s];
  el.conn.textContent = label;
  el.conn.className = `pill ${tone}`;
  el.conn.dataset.state = s;
  el.reconnecting.hidden = s !== 'reconnecting';
}

function renderStatus() {
  const ended = ENDED.has(status);
  el.statusbar.dataset.status = status || '';
  let node;
  let tone = 'tone-gray';
  if (ended) {
    node = h('span', { testid: 'chat-ended' }, 'The chat has ended. Thank you for contacting us.');
  } else if (status === 'in_process' && agentAway) {
    tone = 'tone-amber';
    node = h('span', { testid: 'agent-reconnecting' },
      `Your agent${agentName ? `, ${agentName},` : ''} is reconnecting… Please stay here: your messages are kept.`);
  } else if (status === 'in_process') {
    tone = 'tone-green';
    node = agentName
      ? h('span', { testid: 'agent-name', dataset: { name: agentName } }, `You are chatting with ${agentName}`)
      : h('span', null, 'You are connected with an agent');
  } else if (status === 'offered') {
    tone = 'tone-blue';
    node = h('span', null, 'Connecting you with an agent…');
  } else if (status === 'in_queue') {
    tone = 'tone-blue';
    node = Number.isFinite(position) && position > 0
      ? h('span', { testid: 'queue-position', dataset: { position: String(position) } }, `You are number ${position} in the queue`)
      : h('span', null, 'Waiting for the next available agent…');
  } else {
    node = h('span', null, 'Connecting…');
  }
  el.statusText.replaceChildren(node);
  el.statusbar.className = `chat-statusbar ${tone}`;
  el.input.disabled = ended;
  el.send.disabled = ended;
  el.end.hidden = ended;
  el.newChat.hidden = !ended;
}

function nearBottom() {
  const t = el.transcript;
  return t.scrollHeight - t.scrollTop - t.clientHeight < 40;
}

function scrollDown() {
  el.transcript.scrollTop = el.transcript.scrollHeight;
}

function messageNode(m, extraClass = '') {
  const from = m.from || 'system';
  const who = from === 'customer' ? 'You' : from === 'agent' ? (agentName || 'Agent') : '';
  return h('li', {
    class: `msg from-${from} ${extraClass}`.trim(), testid: 'message',
    dataset: { from, messageId: m.id || '' },
  },
  h('div', { class: 'bubble' }, m.text ?? ''),
  h('div', { class: 'msg-meta' }, who ? `${who} · ${fmtTime(m.at)}` : fmtTime(m.at)));
}

/** Show a message from the server unless it is already shown. */
function addMessage(m) {
  if (!m || (m.id && shownIds.has(m.id))) return;
  const stick = nearBottom();
  if (m.id) shownIds.add(m.id);
  if (m.from === 'customer') {
    const i = pending.findIndex((p) => p.text === m.text);
    if (i >= 0) {
      const [p] = pending.splice(i, 1);
      p.node.replaceWith(messageNode(m));
      return;
    }
  }
  el.transcript.appendChild(messageNode(m));
  if (stick || m.from === 'customer') scrollDown();
}

function note(text, strong = false) {
  const stick = nearBottom();
  el.transcript.appendChild(h('li', { class: `transcript-note ${strong ? 'strong' : ''}`, testid: 'chat-notice' }, text));
  if (stick) scrollDown();
}

/** Apply a status change; notes tell the customer what happened. */
let endedNoteTimer = null;
function applyStatus(s, pos, agent, announce) {
  const prevStatus = status;
  const prevAgent = agentName;
  status = s ?? status;
  if (status !== 'in_process') agentAway = false;
  position = pos === undefined ? position : pos;
  agentName = agent === undefined ? agentName : agent;
  if (announce) {
    if (status === 'in_process' && agentName && (prevStatus !== 'in_process' || prevAgent !== agentName)) {
      note(`${agentName} joined the chat`, true);
    } else if (status === 'in_queue' && prevStatus === 'in_process') {
      note(`${prevAgent || 'The agent'} left the chat. You keep your place in the queue; the next available agent will continue.`);
    }
    clearTimeout(endedNoteTimer);
    if (ENDED.has(status) && !ENDED.has(prevStatus)) {
      // A transfer may pass through an ended state for a moment: wait before saying so.
      endedNoteTimer = setTimeout(() => { if (ENDED.has(status)) note('The chat has ended', true); }, 1500);
    }
  }
  renderStatus();
}

function applySnapshot(snap, announce) {
  const stick = nearBottom() || shownIds.size === 0;
  agentAway = snap.agent_reconnecting === true;
  applyStatus(snap.status, snap.position ?? null, snap.agent_name ?? null, announce);
  for (const m of Array.isArray(snap.messages) ? snap.messages : []) addMessage(m);
  if (stick) scrollDown();
}

// ---------------------------------------------------------------------------
// Connection

/** The server closes the socket after the final status of an ended chat: nothing to
 *  reconnect to, and the transcript stays on screen. */
function closeEnded() {
  if (sock) sock.stop();
  setConn('ended');
}

function connect() {
  setConn('connecting');
  sock = new LiveSocket({
    url: () => wsUrl('/chat/ws', chat.token),
    probe: tokenProbe('/chat', () => chat.token),
    onUp: () => setConn('live'),
    onDown: () => {
      if (ENDED.has(status)) closeEnded();
      else setConn('reconnecting');
    },
    onFinal: (code) => {
      if (ENDED.has(status)) closeEnded();
      else if (code === CLOSE_UNAUTHORIZED || code === CLOSE_TAKEN_OVER) chatGone();
    },
    onMessage: (msg) => {
      switch (msg.type) {
        case 'snapshot':
          applySnapshot(msg, true);
          break;
        case 'message':
          addMessage(msg.message);
          break;
        case 'status':
          applyStatus(msg.status, msg.position ?? null, msg.agent_name ?? null, true);
          break;
        case 'agent_connection':
          agentAway = msg.state === 'reconnecting';
          renderStatus();
          break;
        default:
          break;
      }
    },
  });
  sock.start();
}

function chatGone() {
  sessionStorage.removeItem(storageKey);
  const name = chat && chat.name;
  showStart('This chat is no longer available. You can start a new one.');
  if (name) el.name.value = name;
}

async function resume() {
  showChat();
  renderStatus();
  try {
    const snap = await api('GET', '/chat', { token: chat.token });
    applySnapshot(snap || {}, false);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 404)) {
      chatGone();
      return;
    }
    // Network trouble: the socket retries by itself.
  }
  if (ENDED.has(status)) {
    setConn('ended');
    return;
  }
  connect();
  if (!el.input.disabled) el.input.focus();
}

// ---------------------------------------------------------------------------
// User actions

el.startForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  showError('');
  const name = el.name.value.trim();
  const text = el.firstMessage.value.trim();
  if (!name) {
    showError('Please enter your name.');
    el.name.focus();
    return;
  }
  el.start.disabled = true;
  el.start.textContent = 'Starting…';
  try {
    const body = { queue: queueId, name };
    if (text) body.text = text;
    const res = await api('POST', '/chats', { body });
    chat = { token: res.token, conversation_id: res.conversation_id, group_id: res.group_id, name };
    sessionStorage.setItem(storageKey, JSON.stringify(chat));
    el.firstMessage.value = '';
    el.transcript.replaceChildren();
    shownIds.clear();
    status = 'in_queue';
    position = null;
    agentName = null;
    await resume();
  } catch (err) {
    const msg = err instanceof ApiError && err.status === 429 ? 'Too many chats were started from here. Please wait a moment and try again.'
      : err instanceof ApiError && err.status === 404 ? 'This chat service is not available.'
        : errorText(err);
    showError(msg);
  } finally {
    el.start.disabled = false;
    el.start.textContent = 'Start chat';
  }
});

async function sendMessage() {
  const text = el.input.value.trim();
  if (!text || !chat || el.input.disabled) return;
  el.input.value = '';
  const node = messageNode({ from: 'customer', text, at: new Date().toISOString() }, 'pending');
  const p = { text, node };
  pending.push(p);
  el.transcript.appendChild(node);
  scrollDown();
  try {
    const res = await api('POST', '/chat/messages', { token: chat.token, body: { text } });
    const m = res && res.message ? res.message : res;
    if (m && m.id && pending.includes(p)) {
      pending.splice(pending.indexOf(p), 1);
      if (shownIds.has(m.id)) node.remove();
      else {
        shownIds.add(m.id);
        node.replaceWith(messageNode(m));
      }
    }
  } catch (err) {
    if (pending.includes(p)) pending.splice(pending.indexOf(p), 1);
    node.remove();
    if (!el.input.value) el.input.value = text;
    if (err instanceof ApiError && err.status === 401) {
      chatGone();
      return;
    }
    showError(`Your message was not sent: ${errorText(err)}`);
    setTimeout(() => showError(''), 6000);
  }
}

el.compose.addEventListener('submit', (e) => {
  e.preventDefault();
  sendMessage();
});
el.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    sendMessage();
  }
});

el.end.addEventListener('click', async () => {
  if (!chat) return;
  el.end.disabled = true;
  try {
    const res = await api('POST', '/chat/end', { token: chat.token });
    if (res && res.status) applyStatus(res.status, res.position ?? null, undefined, true);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) chatGone();
    else showError(errorText(err));
  } finally {
    el.end.disabled = false;
  }
});

el.newChat.addEventListener('click', () => {
  const name = chat && chat.name;
  sessionStorage.removeItem(storageKey);
  showStart('');
  if (name) el.name.value = name;
});

window.addEventListener('online', () => { if (sock) sock.retryNow(); });

// ---------------------------------------------------------------------------

if (!queueId) {
  el.startForm.hidden = true;
  showError('This chat link is incomplete: it does not name a queue.');
} else {
  chat = loadChat();
  if (chat) resume();
  else showStart('');
}
