// switchboard: supervisor Dashboard (/dashboard).
//
// Hash routes (deep links): #conversation/<id> (Conversation Details), #group/<group_id> (group view).
//
// data-testid on this page
//   static (dashboard.html):
//     supervisor-id, live-status (data-state: connecting|live|reconnecting), logout,
//     banner-strip, banner-reconnecting (while the live stream is down), reconnect-now,
//     notice, notice-text, notice-close,
//     agents-section, agents-summary, agent-filter, agents-table,
//     queues-section, queues-table,
//     search-section, search-form, search-status, search-queue, search-agent, search-channel,
//     search-limit, search-submit, search-results, search-count, search-empty,
//     details-pane, details-empty
//   alert strip (shown while alerts stand): alert-strip, alerts-count, and per alert
//     alert-<id> (data-kind: agent_in_grace|connection_unstable|session_lost, data-agent),
//     alert-text, alert-time, alert-conversation (links), alert-release (agent_in_grace)
//   calls strip (voice work now): calls-section, calls-waiting, calls-ringing, calls-talking
//     (data-count), calls-oldest-wait (the longest wait of a waiting call)
//   agents summary: summary-connected, summary-grace, summary-ready (connected and ready),
//     summary-sip (data-count)
//   agents table: agent-<agent_id> (row; data-session-state), and inside it:
//     agent-name, session-state (data-state), grace-countdown (disconnected sessions: deadline - now),
//     agent-presence (data-presence), agent-capabilities, sip-status (data-registered), sip-expiry,
//     open-conversations
//   queues table: queue-<id> (row), and inside it: queue-waiting, queue-oldest-wait, queue-show
//   search results: result-<conversation id> (row; data-status), and inside it:
//     conversation-link, status, disconnect-reason
//   Conversation Details (#conversation/<id>): conversation-details (data-conversation-id),
//     details-status, details-close, disconnect (callout), disconnect-party (data-party),
//     disconnect-reason (data-reason),
//     field-id, field-group_id, group-link, field-status, field-channel, field-medium, field-queue,
//     field-agent, field-customer-name, field-customer-address, field-origin-kind,
//     field-origin-previous, previous-link, field-subject (email), field-queue_arrival_time,
//     field-created_at, field-answered_at, field-ended_at, field-length (answered and ended),
//     field-script, field-memo,
//     events-table, event-row (data-event), event-time, event-name, event-agent, event-detail,
//     reassign-form, reassign-kind, reassign-target, reassign-submit (open conversations only)
//   group view (#group/<group_id>): group-view (data-group-id), group-id, back-link, details-close,
//     group-table, group-row (data-conversation-id, data-status), and inside each row:
//     conversation-link, status, agent, origin-kind, queue-arrival, disconnect-reason
//   details-error (conversation or group not found / not allowed)

import {
  api, ApiError, loadSession, clearSession, gotoLogin, wsUrl, LiveSocket, tokenProbe,
  CLOSE_TAKEN_OVER, h, setText, humanize, fmtTime, fmtTimeMs, fmtDateTime, fmtDuration, countdown,
  elapsed, startClocks, errorText, shortId, query, debounce,
} from './api.js';

const stored = loadSession();
// Not signed in as a supervisor: go where this browser belongs instead.
const redirect = !stored ? '/' : stored.role !== 'supervisor' ? '/panel' : null;
if (redirect) location.replace(redirect);
const token = stored ? stored.token : '';
const enc = encodeURIComponent;

const REASON_TEXT = {
  CustomerEnded: 'The customer hung up or left the chat while it was in process.',
  CustomerAbandoned: 'The customer left while waiting in the queue or during the offer.',
  AgentEnded: 'The agent ended the conversation.',
  AgentConnectionLost: 'The call dropped because the agent\'s Communication Panel lost its connection.',
  SipRegistrationLost: 'The call dropped because the agent\'s phone (SIP) registration expired.',
  AgentSessionLost: 'The agent\'s connection was lost and did not return within the grace period. The chat was returned to its queue as a new conversation of this group: open the Group ID to follow it.',
  Transferred: 'The agent transferred the conversation; the work continues in a new conversation of this group.',
  Reassigned: 'A supervisor moved the conversation; the work continues in a new conversation of this group.',
};
const AGENT_FAULT = new Set(['AgentConnectionLost', 'SipRegistrationLost', 'AgentSessionLost']);
const OPEN = new Set(['in_queue', 'offered', 'in_process', 'wrap_up']);

const agents = new Map(); // agent_id → agent
const alerts = new Map(); // alert id → alert
const queues = new Map(); // id → queue
const agentRows = new Map();
const queueRows = new Map();
let lastSearch = null; // filters of the shown results
const resultRows = new Map(); // conversation id → tr

const el = {
  supervisorId: document.getElementById('supervisor-id'),
  live: document.getElementById('live-status'),
  logout: document.getElementById('logout'),
  banners: document.getElementById('banners'),
  notice: document.getElementById('notice'),
  noticeText: document.getElementById('notice-text'),
  agentsBody: document.getElementById('agents-body'),
  agentsEmpty: document.getElementById('agents-empty'),
  agentsSummary: document.getElementById('agents-summary'),
  agentFilter: document.getElementById('agent-filter'),
  queuesBody: document.getElementById('queues-body'),
  queuesEmpty: document.getElementById('queues-empty'),
  searchForm: document.getElementById('search-form'),
  resultsBody: document.getElementById('results-body'),
  resultsEmpty: document.getElementById('results-empty'),
  searchCount: document.getElementById('search-count'),
  side: document.getElementById('side'),
  sideEmpty: document.getElementById('side-empty'),
  sideContent: document.getElementById('side-content'),
  queueOptions: document.getElementById('queue-options'),
  agentOptions: document.getElementById('agent-options'),
  alerts: document.getElementById('alerts'),
  alertsList: document.getElementById('alerts-list'),
  alertsCount: document.getElementById('alerts-count'),
  callsWaiting: document.querySelector('[data-testid="calls-waiting"]'),
  callsRinging: document.querySelector('[data-testid="calls-ringing"]'),
  callsTalking: document.querySelector('[data-testid="calls-talking"]'),
  callsOldest: document.getElementById('calls-oldest'),
};

setText(el.supervisorId, (stored && (stored.username || stored.agent_id)) || 'supervisor');

// ---------------------------------------------------------------------------
// Helpers

let noticeTimer = null;
function notify(text, kind = 'error') {
  clearTimeout(noticeTimer);
  el.noticeText.textContent = text;
  el.notice.classList.toggle('info', kind === 'info');
  el.notice.hidden = false;
  if (kind === 'info') noticeTimer = setTimeout(() => { el.notice.hidden = true; }, 6000);
}
document.getElementById('notice-close').addEventListener('click', () => { el.notice.hidden = true; });

let ended = false;
function sessionOver(reason) {
  if (ended) return;
  ended = true;
  sock.stop();
  clearSession(token);
  gotoLogin(reason);
}

function get(path) {
  return api('GET', path, { token });
}

function failed(e) {
  if (e instanceof ApiError && e.status === 401) sessionOver('expired');
  else notify(errorText(e));
}

function statusTone(status) {
  return {
    in_queue: 'tone-gray', offered: 'tone-blue', in_process: 'tone-green',
    wrap_up: 'tone-violet', handled: 'tone-gray', abandoned: 'tone-red',
  }[status] || 'tone-gray';
}

function statusPill(status, testid = 'status') {
  return h('span', { class: `pill ${statusTone(status)}`, testid, dataset: { status: status || '' } }, humanize(status));
}

function reasonEl(reason, testid = 'disconnect-reason') {
  return h('span', {
    testid, class: AGENT_FAULT.has(reason) ? 'pill plain tone-red' : reason ? 'pill plain tone-gray' : 'muted',
  }, reason || '—');
}

function channelText(c) {
  if (c.channel === 'chat' && c.medium) return `Chat · ${c.medium}`;
  return humanize(c.channel);
}

/** Time of day for today, date and time otherwise. */
function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toDateString() === new Date().toDateString() ? fmtTime(iso) : fmtDateTime(iso);
}

function timeCell(iso) {
  return h('td', { class: 'nowrap', title: iso || '' }, when(iso));
}

function convLink(id) {
  return h('a', { href: `#conversation/${enc(id)}`, testid: 'conversation-link', class: 'mono', title: id }, shortId(id));
}

function customerText(c) {
  const cu = c.customer || {};
  return cu.name || cu.address || '—';
}

// ---------------------------------------------------------------------------
// Agents

function sessionCell(a) {
  const s = a.session;
  if (!s) {
    return h('td', null, h('span', { class: 'pill tone-gray', testid: 'session-state', dataset: { state: 'none' } }, 'Signed out'));
  }
  const tone = s.state === 'connected' ? 'tone-green' : s.state === 'disconnected' ? 'tone-amber' : 'tone-red';
  const label = s.state === 'disconnected' ? 'Disconnected' : humanize(s.state);
  const td = h('td', { class: 'nowrap' },
    h('span', { class: `pill ${tone}`, testid: 'session-state', dataset: { state: s.state || '' } }, label));
  if (s.state === 'disconnected' && s.deadline) {
    // On its own line, so the countdown never widens the table.
    td.appendChild(h('span', {
      class: 'sub', title: `Disconnected at ${fmtTimeMs(s.disconnected_at)}; the session ends at ${fmtTimeMs(s.deadline)} unless the agent returns`,
    }, 'grace ', countdown(s.deadline, { testid: 'grace-countdown', class: 'grace' })));
  }
  return td;
}

function agentRow(a) {
  const caps = a.capabilities || {};
  const sip = a.sip || {};
  const presence = a.session ? a.presence : null;
  const sipCell = h('td');
  const sipStatus = h('span', {
    testid: 'sip-status', dataset: { registered: String(!!sip.registered) },
    class: `pill ${sip.registered ? 'tone-green' : 'tone-gray'}`,
  }, sip.registered ? 'Registered' : 'Not registered');
  sipCell.appendChild(sipStatus);
  if (sip.registered && sip.expires_at) {
    sipCell.appendChild(h('span', { class: 'sub nowrap', title: `Registration expires at ${fmtTimeMs(sip.expires_at)}` },
      'expires in ', countdown(sip.expires_at, { testid: 'sip-expiry', class: 'calm' })));
  }
  const open = a.open_conversations ?? a.open ?? 0;
  return h('tr', {
    testid: `agent-${a.agent_id}`,
    dataset: { agentId: a.agent_id, sessionState: a.session ? a.session.state : 'none' },
  },
  h('td', { class: 'nowrap' }, h('strong', { testid: 'agent-name' }, a.name || a.agent_id), h('span', { class: 'sub mono' }, a.agent_id)),
  sessionCell(a),
  h('td', null, presence
    ? h('span', { class: `pill ${presence === 'ready' ? 'tone-green' : 'tone-amber'}`, testid: 'agent-presence', dataset: { presence } }, humanize(presence))
    : h('span', { class: 'muted', testid: 'agent-presence', dataset: { presence: '' } }, '—')),
  h('td', { class: 'nowrap', testid: 'agent-capabilities' },
    ['voice', 'chat', 'email'].map((ch) => h('span', {
      class: `cap ${caps[ch] ? 'on' : 'off'}`, title: `${humanize(ch)} ${caps[ch] ? 'available' : 'unavailable'}`, dataset: { channel: ch, on: String(!!caps[ch]) },
    }, ch[0].toUpperCase()))),
  sipCell,
  h('td', { class: 'num', testid: 'open-conversations' }, String(open)));
}

function agentSortKey(a) {
  return `${(a.name || a.agent_id || '').toLowerCase()}\u0000${a.agent_id}`;
}

function upsertAgent(a) {
  if (!a || !a.agent_id) return;
  agents.set(a.agent_id, a);
  const row = agentRow(a);
  const old = agentRows.get(a.agent_id);
  agentRows.set(a.agent_id, row);
  if (old) {
    old.replaceWith(row);
  } else {
    const key = agentSortKey(a);
    const before = [...el.agentsBody.children].find((tr) => agentSortKey(agents.get(tr.dataset.agentId) || {}) > key);
    el.agentsBody.insertBefore(row, before || null);
  }
  filterAgentRow(row, a);
}

function replaceAgents(list) {
  agents.clear();
  agentRows.clear();
  el.agentsBody.replaceChildren();
  for (const a of [...list].sort((x, y) => (agentSortKey(x) < agentSortKey(y) ? -1 : 1))) upsertAgent(a);
  renderAgentSummary();
}

function filterAgentRow(row, a) {
  const f = el.agentFilter.value.trim().toLowerCase();
  row.hidden = !!f && !`${a.name || ''} ${a.agent_id}`.toLowerCase().includes(f);
}

el.agentFilter.addEventListener('input', () => {
  for (const [id, row] of agentRows) filterAgentRow(row, agents.get(id));
});

function renderAgentSummary() {
  const list = [...agents.values()];
  const count = (fn) => list.filter(fn).length;
  const pill = (tone, n, label, testid) => h('span', { class: `pill plain ${tone}`, testid, dataset: { count: String(n) } }, `${n} ${label}`);
  el.agentsSummary.replaceChildren(
    pill('tone-green', count((a) => a.session && a.session.state === 'connected'), 'connected', 'summary-connected'),
    pill('tone-amber', count((a) => a.session && a.session.state === 'disconnected'), 'in grace', 'summary-grace'),
    // Ready = can be offered work now: a disconnected agent is not, whatever their presence.
    pill('tone-blue', count((a) => a.session && a.session.state === 'connected' && a.presence === 'ready'), 'ready', 'summary-ready'),
    pill('tone-gray', count((a) => a.sip && a.sip.registered), 'SIP registered', 'summary-sip'),
  );
  el.agentsEmpty.hidden = list.length > 0;
  fillOptions(el.agentOptions, list.map((a) => a.agent_id));
}

// ---------------------------------------------------------------------------
// Queues

function queueRow(q) {
  return h('tr', { testid: `queue-${q.id}`, dataset: { queueId: q.id } },
    h('td', null, h('strong', null, q.name || q.id), h('span', { class: 'sub mono' }, q.id)),
    h('td', null, humanize(q.channel)),
    h('td', { class: 'num', testid: 'queue-waiting' }, String(q.waiting ?? 0)),
    h('td', { class: 'num' }, q.oldest_arrival
      ? elapsed(q.oldest_arrival, { testid: 'queue-oldest-wait', title: `Oldest arrival ${fmtTimeMs(q.oldest_arrival)}` })
      : h('span', { class: 'muted', testid: 'queue-oldest-wait' }, '—')),
    h('td', { class: 'num' }, h('button', {
      type: 'button', class: 'btn btn-sm', testid: 'queue-show', onclick: () => showQueue(q.id),
      'aria-label': `List conversations waiting in ${q.name || q.id}`,
    }, 'List')));
}

function upsertQueue(q) {
  if (!q || !q.id) return;
  queues.set(q.id, q);
  const row = queueRow(q);
  const old = queueRows.get(q.id);
  queueRows.set(q.id, row);
  if (old) old.replaceWith(row);
  else {
    const before = [...el.queuesBody.children].find((tr) => tr.dataset.queueId > q.id);
    el.queuesBody.insertBefore(row, before || null);
  }
  el.queuesEmpty.hidden = queues.size > 0;
  fillOptions(el.queueOptions, [...queues.keys()]);
  renderCalls();
}

function replaceQueues(list) {
  queues.clear();
  queueRows.clear();
  el.queuesBody.replaceChildren();
  for (const q of list) upsertQueue(q);
  el.queuesEmpty.hidden = queues.size > 0;
  renderCalls();
}

function showQueue(id) {
  el.searchForm.elements.status.value = 'in_queue';
  el.searchForm.elements.queue.value = id;
  el.searchForm.elements.agent.value = '';
  el.searchForm.elements.channel.value = '';
  runSearch();
  document.getElementById('search-section').scrollIntoView({ block: 'start', behavior: 'smooth' });
}

function fillOptions(dl, values) {
  const next = [...new Set(values)].sort();
  if ([...dl.options].map((o) => o.value).join('\n') === next.join('\n')) return;
  dl.replaceChildren(...next.map((v) => h('option', { value: v })));
}

// ---------------------------------------------------------------------------
// Calls now: waiting (the voice queues' waiting counts), ringing (voice conversations
// offered) and talking (in process). Ringing and talking are counted from the conversation
// frames; each (re)connection seeds them from a search, and a frame that arrives while the
// search runs wins over its (older) result.

const CALL_LIMIT = 1000; // the search's maximum page
const calls = new Map(); // voice conversation id → 'offered' | 'in_process'
let callsSeenLive = null; // id → status of frames received while a seed runs
let callsSeed = 0;

function setCall(id, status) {
  if (status === 'offered' || status === 'in_process') calls.set(id, status);
  else calls.delete(id);
}

function noteCall(c) {
  if (!c || !c.id || c.channel !== 'voice') return;
  if (callsSeenLive) callsSeenLive.set(c.id, c.status);
  setCall(c.id, c.status);
  renderCalls();
}

async function seedCalls() {
  const seq = ++callsSeed;
  const seen = new Map();
  callsSeenLive = seen;
  try {
    const [ringing, talking] = await Promise.all(['offered', 'in_process'].map((status) =>
      get(`/conversations${query({ status, channel: 'voice', limit: String(CALL_LIMIT) })}`)));
    if (seq !== callsSeed) return;
    calls.clear();
    for (const c of [...(Array.isArray(ringing) ? ringing : []), ...(Array.isArray(talking) ? talking : [])]) {
      setCall(c.id, c.status);
    }
    for (const [id, status] of seen) setCall(id, status);
    renderCalls();
  } catch (e) {
    if (seq === callsSeed) failed(e);
  } finally {
    if (seq === callsSeed) callsSeenLive = null;
  }
}

function setCounter(node, n) {
  node.dataset.count = String(n);
  setText(node.querySelector('.n'), String(n));
}

function renderCalls() {
  let waiting = 0;
  let oldest = null;
  for (const q of queues.values()) {
    if (q.channel !== 'voice') continue;
    waiting += Number(q.waiting) || 0;
    if (q.oldest_arrival && (!oldest || q.oldest_arrival < oldest)) oldest = q.oldest_arrival;
  }
  let ringing = 0;
  let talking = 0;
  for (const status of calls.values()) {
    if (status === 'offered') ringing += 1;
    else talking += 1;
  }
  setCounter(el.callsWaiting, waiting);
  setCounter(el.callsRinging, ringing);
  setCounter(el.callsTalking, talking);
  if (waiting && oldest) {
    if (el.callsOldest.dataset.since !== oldest) {
      el.callsOldest.dataset.since = oldest;
      el.callsOldest.replaceChildren('longest ', elapsed(oldest, { title: `Waiting since ${fmtTimeMs(oldest)}` }));
    }
  } else {
    delete el.callsOldest.dataset.since;
    el.callsOldest.replaceChildren();
  }
}

// ---------------------------------------------------------------------------
// Conversation search

function filters() {
  const f = el.searchForm.elements;
  return {
    status: f.status.value,
    queue: f.queue.value.trim(),
    agent: f.agent.value.trim(),
    channel: f.channel.value,
    limit: f.limit.value,
  };
}

function matches(c, f) {
  return (!f.status || c.status === f.status) && (!f.queue || c.queue === f.queue)
    && (!f.agent || c.agent === f.agent) && (!f.channel || c.channel === f.channel);
}

function resultRow(c) {
  const tr = h('tr', {
    testid: `result-${c.id}`, class: 'result-row', dataset: { conversationId: c.id, status: c.status || '' },
  },
  h('td', null, convLink(c.id)),
  timeCell(c.created_at),
  h('td', null, customerText(c)),
  h('td', { class: 'nowrap' }, channelText(c), h('span', { class: 'sub mono' }, c.queue || '—')),
  h('td', null, statusPill(c.status)),
  h('td', null, c.agent || h('span', { class: 'muted' }, '—')),
  h('td', null, reasonEl(c.disconnect_reason)));
  if (route().id === c.id) tr.classList.add('current');
  return tr;
}

let searchSeq = 0;
async function runSearch() {
  const f = filters();
  const seq = ++searchSeq;
  el.searchCount.textContent = 'Searching…';
  try {
    const list = await get(`/conversations${query(f)}`);
    if (seq !== searchSeq) return;
    lastSearch = f;
    resultRows.clear();
    const items = Array.isArray(list) ? list : (list && list.conversations) || [];
    el.resultsBody.replaceChildren(...items.map((c) => {
      const tr = resultRow(c);
      resultRows.set(c.id, tr);
      return tr;
    }));
    el.resultsEmpty.hidden = items.length > 0;
    el.searchCount.textContent = `${items.length} shown, newest first`;
  } catch (e) {
    if (seq !== searchSeq) return;
    el.searchCount.textContent = '';
    failed(e);
  }
}

el.searchForm.addEventListener('submit', (e) => {
  e.preventDefault();
  runSearch();
});
for (const name of ['status', 'channel', 'limit']) {
  el.searchForm.elements[name].addEventListener('change', () => runSearch());
}

el.resultsBody.addEventListener('click', (e) => {
  if (e.target.closest('a')) return;
  const tr = e.target.closest('tr[data-conversation-id]');
  if (tr) location.hash = `#conversation/${tr.dataset.conversationId}`;
});

/** A live conversation change: update the results and the open details. */
function onConversation(c) {
  if (!c || !c.id) return;
  const old = resultRows.get(c.id);
  if (old) {
    const tr = resultRow(c);
    old.replaceWith(tr);
    resultRows.set(c.id, tr);
  } else if (lastSearch && matches(c, lastSearch)) {
    const tr = resultRow(c);
    el.resultsBody.insertBefore(tr, el.resultsBody.firstChild);
    resultRows.set(c.id, tr);
    const limit = Number(lastSearch.limit) || 50;
    while (el.resultsBody.children.length > limit) {
      const last = el.resultsBody.lastElementChild;
      resultRows.delete(last.dataset.conversationId);
      last.remove();
    }
    el.resultsEmpty.hidden = true;
    el.searchCount.textContent = `${el.resultsBody.children.length} shown, newest first`;
  }
  const r = route();
  if ((r.kind === 'conversation' && r.id === c.id) || (r.kind === 'group' && r.id === c.group_id)
    || (r.kind === 'conversation' && shown && shown.group_id === c.group_id)) {
    refreshSide();
  }
}

// ---------------------------------------------------------------------------
// Details pane: #conversation/<id> and #group/<group_id>

let shown = null; // the conversation currently shown in details
let sideSeq = 0;

function route() {
  const m = /^#(conversation|group)\/(.+)$/.exec(location.hash);
  if (!m) return { kind: null, id: null };
  let id = m[2];
  try { id = decodeURIComponent(id); } catch { /* keep raw */ }
  return { kind: m[1], id };
}

const refreshSide = debounce(() => renderSide(false), 300);

async function renderSide(focus = true) {
  const r = route();
  const seq = ++sideSeq;
  for (const [id, tr] of resultRows) tr.classList.toggle('current', r.kind === 'conversation' && id === r.id);
  if (!r.kind) {
    shown = null;
    el.sideContent.replaceChildren();
    el.sideEmpty.hidden = false;
    return;
  }
  el.sideEmpty.hidden = true;
  if (focus) el.sideContent.replaceChildren(h('div', { class: 'empty' }, 'Loading…'));
  try {
    let view;
    if (r.kind === 'conversation') {
      const c = await get(`/conversations/${enc(r.id)}`);
      if (seq !== sideSeq) return;
      shown = c;
      view = detailsView(c);
    } else {
      const g = await get(`/groups/${enc(r.id)}`);
      if (seq !== sideSeq) return;
      view = groupView(g, r.id);
    }
    el.sideContent.replaceChildren(view);
    if (focus) {
      const heading = view.querySelector('h2');
      if (heading) heading.focus({ preventScroll: true });
      el.side.scrollTop = 0;
    }
  } catch (e) {
    if (seq !== sideSeq) return;
    if (e instanceof ApiError && e.status === 401) {
      failed(e);
      return;
    }
    const what = r.kind === 'group' ? 'group' : 'conversation';
    const text = e instanceof ApiError && e.status === 404 ? `No ${what} ${r.id}.`
      : e instanceof ApiError && e.status === 403 ? `You may not view this ${what}.` : errorText(e);
    el.sideContent.replaceChildren(h('div', { class: 'card-body' },
      h('div', { class: 'notice', testid: 'details-error', role: 'alert' }, text),
      h('p', null, h('a', { href: '#', testid: 'details-close' }, 'Close'))));
  }
}

function closeLink() {
  return h('a', { href: '#', class: 'btn btn-sm', testid: 'details-close' }, 'Close');
}

function field(label, testid, value) {
  const dd = h('dd', { testid });
  if (value instanceof Node) dd.appendChild(value);
  else dd.textContent = value === null || value === undefined || value === '' ? '—' : String(value);
  return [h('dt', null, label), dd];
}

function timeValue(iso) {
  return iso ? h('span', { title: iso }, `${fmtDateTime(iso)}.${String(new Date(iso).getMilliseconds()).padStart(3, '0')}`) : '—';
}

function detailsView(c) {
  const party = c.disconnect_party;
  const reason = c.disconnect_reason;
  const tone = AGENT_FAULT.has(reason) ? 'tone-red' : reason ? 'tone-amber' : 'tone-gray';
  const origin = c.origin || {};
  const customer = c.customer || {};
  const meta = c.metadata || {};
  const script = meta.script && typeof meta.script === 'object' ? Object.entries(meta.script) : [];

  const callout = h('div', { class: `disc-callout ${tone}`, testid: 'disconnect' },
    h('dl', null,
      h('dt', null, 'Disconnect party'), h('dd', { testid: 'disconnect-party', dataset: { party: party || '' } }, party ? humanize(party) : '—'),
      h('dt', null, 'Disconnect reason'), h('dd', { testid: 'disconnect-reason', dataset: { reason: reason || '' } }, reason || '—')),
    reason && REASON_TEXT[reason] ? h('p', { class: 'explain' }, REASON_TEXT[reason]) : null);

  const fields = h('dl', { class: 'fields' },
    field('Conversation ID', 'field-id', h('span', { class: 'mono' }, c.id)),
    field('Group ID', 'field-group_id', c.group_id
      ? h('a', { href: `#group/${enc(c.group_id)}`, testid: 'group-link', class: 'mono', title: 'Show all related conversations' }, c.group_id)
      : '—'),
    field('Status', 'field-status', statusPill(c.status, 'status')),
    field('Channel', 'field-channel', humanize(c.channel)),
    field('Medium', 'field-medium', c.medium),
    field('Queue', 'field-queue', c.queue ? `${queues.get(c.queue)?.name || c.queue}${queues.get(c.queue)?.name ? ` (${c.queue})` : ''}` : '—'),
    field('Agent', 'field-agent', c.agent ? `${agents.get(c.agent)?.name || c.agent}${agents.get(c.agent)?.name ? ` (${c.agent})` : ''}` : '—'),
    field('Customer name', 'field-customer-name', customer.name),
    field('Customer address', 'field-customer-address', customer.address),
    field('Origin', 'field-origin-kind', humanize(origin.kind)),
    field('Previous conversation', 'field-origin-previous', origin.previous
      ? h('a', { href: `#conversation/${enc(origin.previous)}`, testid: 'previous-link', class: 'mono' }, origin.previous)
      : '—'),
    c.channel === 'email' || c.subject ? field('Subject', 'field-subject', c.subject) : null,
    field('Queue arrival', 'field-queue_arrival_time', timeValue(c.queue_arrival_time)),
    field('Created', 'field-created_at', timeValue(c.created_at)),
    field('Answered', 'field-answered_at', timeValue(c.answered_at)),
    field('Ended', 'field-ended_at', timeValue(c.ended_at)),
    c.answered_at && c.ended_at
      ? field(c.channel === 'voice' ? 'Call length' : 'Handling time', 'field-length',
        fmtDuration(Date.parse(c.ended_at) - Date.parse(c.answered_at)))
      : null,
    field('Script', 'field-script', script.length
      ? h('div', { class: 'kv' }, script.map(([k, v]) => [h('span', { class: 'muted' }, k), h('span', null, v === null || v === undefined ? '' : String(v))]))
      : '—'),
    field('Memo', 'field-memo', meta.memo ? h('span', { class: 'memo-text' }, meta.memo) : '—'));

  const events = Array.isArray(c.events) ? c.events : [];
  const eventsTable = h('div', { class: 'table-wrap' }, h('table', { class: 'data', testid: 'events-table' },
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'Time'), h('th', { scope: 'col' }, 'Event'),
      h('th', { scope: 'col' }, 'Agent'), h('th', { scope: 'col' }, 'Detail'))),
    h('tbody', null, events.length ? events.map((ev) => h('tr', { testid: 'event-row', dataset: { event: ev.event || '' } },
      h('td', { class: 'nowrap mono', testid: 'event-time', title: ev.at || '' }, fmtTimeMs(ev.at)),
      h('td', { testid: 'event-name' }, h('code', null, ev.event || '—')),
      h('td', { testid: 'event-agent' }, ev.agent || '—'),
      h('td', { testid: 'event-detail' }, detailText(ev.detail))))
      : h('tr', null, h('td', { colspan: '4', class: 'muted' }, 'No events.')))));

  return h('section', { testid: 'conversation-details', dataset: { conversationId: c.id }, 'aria-labelledby': 'details-title' },
    h('div', { class: 'details-head' },
      h('h2', { id: 'details-title', tabindex: '-1' }, 'Conversation Details'),
      statusPill(c.status, 'details-status'),
      c.group_id ? h('a', { href: `#group/${enc(c.group_id)}`, class: 'btn btn-sm' }, 'Group') : null,
      closeLink()),
    callout,
    fields,
    h('div', { class: 'section-title' }, `Events (${events.length})`),
    eventsTable,
    OPEN.has(c.status) ? reassignForm(c) : null);
}

function detailText(d) {
  if (d === null || d === undefined || d === '') return '—';
  if (typeof d === 'string') return d;
  return JSON.stringify(d);
}

function reassignForm(c) {
  const kind = h('select', { id: 'reassign-kind', testid: 'reassign-kind' },
    h('option', { value: 'queue' }, 'Queue'), h('option', { value: 'agent' }, 'Agent'));
  const target = h('input', { type: 'text', id: 'reassign-target', testid: 'reassign-target', list: 'queue-options', autocomplete: 'off', spellcheck: 'false' });
  kind.addEventListener('change', () => target.setAttribute('list', kind.value === 'agent' ? 'agent-options' : 'queue-options'));
  const submit = h('button', { type: 'submit', class: 'btn btn-sm', testid: 'reassign-submit' }, 'Reassign');
  return h('form', {
    class: 'reassign', testid: 'reassign-form',
    onsubmit: async (e) => {
      e.preventDefault();
      const t = target.value.trim();
      if (!t) {
        target.focus();
        return;
      }
      submit.disabled = true;
      try {
        await api('POST', `/conversations/${enc(c.id)}/reassign`, { token, body: { [kind.value]: t } });
        notify(`Reassigned to ${kind.value} ${t}.`, 'info');
        renderSide(false);
      } catch (err) {
        failed(err);
      } finally {
        submit.disabled = false;
      }
    },
  },
  h('div', { class: 'section-title' }, 'Reassign'),
  h('div', { class: 'row' },
    h('label', { for: 'reassign-kind', class: 'visually-hidden' }, 'Target kind'), kind,
    h('label', { for: 'reassign-target', class: 'visually-hidden' }, 'Target id'), h('div', { class: 'grow' }, target),
    submit));
}

function groupView(g, gid) {
  const list = Array.isArray(g && g.conversations) ? g.conversations : [];
  const from = shown && shown.group_id === gid ? shown.id : null;
  return h('section', { testid: 'group-view', dataset: { groupId: gid }, 'aria-labelledby': 'group-title' },
    h('div', { class: 'details-head' },
      h('h2', { id: 'group-title', tabindex: '-1' }, 'Group'),
      from ? h('a', { href: `#conversation/${enc(from)}`, class: 'btn btn-sm', testid: 'back-link' }, 'Back') : null,
      closeLink()),
    h('dl', { class: 'fields' }, field('Group ID', 'group-id', h('span', { class: 'mono' }, (g && g.group_id) || gid))),
    h('p', { class: 'small muted group-note' },
      `${list.length} related conversation${list.length === 1 ? '' : 's'}: the first one, its transfers, consultations, requeues and callbacks, oldest first.`),
    // Three columns of two facts each, so the table fits the side pane as well as the full
    // width below it.
    h('div', { class: 'table-wrap' }, h('table', { class: 'data', testid: 'group-table' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col', title: 'Conversation, medium · queue, origin' }, 'Conversation'),
        h('th', { scope: 'col', title: 'Status and agent' }, 'Status'),
        h('th', { scope: 'col', title: 'Queue arrival time and disconnect reason' }, 'Arrival'))),
      h('tbody', null, list.map((c) => h('tr', {
        testid: 'group-row', class: c.id === from ? 'current' : '', dataset: { conversationId: c.id, status: c.status || '' },
      },
      h('td', null, convLink(c.id),
        h('span', { class: 'sub' }, `${c.channel === 'chat' ? c.medium || 'chat' : c.channel || '—'} · ${c.queue || '—'}`),
        h('span', { class: 'sub', testid: 'origin-kind' }, humanize(c.origin && c.origin.kind))),
      h('td', null, statusPill(c.status),
        h('span', { class: 'sub', testid: 'agent' }, c.agent || 'No agent')),
      h('td', null,
        h('span', { class: 'nowrap', testid: 'queue-arrival', title: c.queue_arrival_time || '' }, when(c.queue_arrival_time)),
        h('span', { class: 'sub' }, reasonEl(c.disconnect_reason)))))))));
}

window.addEventListener('hashchange', () => renderSide(true));

// ---------------------------------------------------------------------------
// Alerts

const ALERT_TONE = { agent_in_grace: 'tone-amber', connection_unstable: 'tone-amber', session_lost: 'tone-red' };
const ALERT_LABEL = { agent_in_grace: 'In grace', connection_unstable: 'Unstable', session_lost: 'Session lost' };

function renderAlerts() {
  const list = [...alerts.values()].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  el.alertsList.replaceChildren(...list.map(alertRow));
  setText(el.alertsCount, String(list.length));
  el.alerts.hidden = list.length === 0;
}

function alertRow(a) {
  const convs = Array.isArray(a.conversations) ? a.conversations : [];
  const release = a.kind === 'agent_in_grace'
    ? h('button', {
      type: 'button', class: 'btn btn-sm btn-danger', testid: 'alert-release',
      title: `End ${a.agent}'s session now: their chats go back to the queue keeping their place`,
      onclick: (e) => releaseAgent(a.agent, e.currentTarget),
    }, 'Release now')
    : null;
  return h('li', { class: 'alert-item', testid: `alert-${a.id}`, dataset: { kind: a.kind, agent: a.agent } },
    h('span', { class: `pill ${ALERT_TONE[a.kind] || 'tone-gray'}` }, ALERT_LABEL[a.kind] || humanize(a.kind)),
    h('span', { class: 'alert-text', testid: 'alert-text' }, a.text || humanize(a.kind)),
    h('span', { class: 'small muted nowrap', testid: 'alert-time' }, fmtTime(a.at)),
    convs.length
      ? h('span', { class: 'alert-convs' }, ...convs.map((id) => h('a', {
        href: `#conversation/${id}`, class: 'mono small', testid: 'alert-conversation', title: id,
      }, `…${shortId(id)}`)))
      : null,
    release);
}

async function releaseAgent(agentId, btn) {
  if (btn) btn.disabled = true;
  try {
    await api('POST', `/agents/${enc(agentId)}/release`, { token });
    notify(`Released ${agentId}: their chats are back in the queue, keeping their place.`, 'info');
  } catch (e) {
    if (btn) btn.disabled = false;
    failed(e);
  }
}

function replaceAlerts(list) {
  alerts.clear();
  for (const a of list) if (a && a.id) alerts.set(a.id, a);
  renderAlerts();
}

// ---------------------------------------------------------------------------
// Live stream

function setLive(s) {
  const [label, tone] = {
    connecting: ['Connecting…', 'tone-gray'],
    live: ['Live', 'tone-green'],
    reconnecting: ['Reconnecting…', 'tone-amber'],
  }[s];
  el.live.textContent = label;
  el.live.className = `pill ${tone}`;
  el.live.dataset.state = s;
  const banner = el.banners.querySelector('[data-testid="banner-reconnecting"]');
  if (s === 'reconnecting' && !banner) {
    el.banners.appendChild(h('div', { class: 'banner tone-amber', testid: 'banner-reconnecting' },
      h('span', { class: 'icon', 'aria-hidden': 'true' }, '!'),
      h('span', { class: 'banner-text' }, 'Live updates interrupted. Reconnecting… The figures below may be out of date.'),
      h('button', { type: 'button', class: 'btn btn-sm', testid: 'reconnect-now', onclick: () => sock.retryNow() }, 'Retry now')));
  } else if (s !== 'reconnecting' && banner) {
    banner.remove();
  }
}

const sock = new LiveSocket({
  url: () => wsUrl('/dashboard/ws', token),
  probe: tokenProbe('/queues', () => token),
  onUp: () => setLive('live'),
  onDown: () => setLive('reconnecting'),
  onFinal: (code) => sessionOver(code === CLOSE_TAKEN_OVER ? 'taken_over' : 'expired'),
  onMessage: (msg) => {
    switch (msg.type) {
      case 'snapshot':
        if (Array.isArray(msg.agents)) replaceAgents(msg.agents);
        if (Array.isArray(msg.queues)) replaceQueues(msg.queues);
        if (Array.isArray(msg.alerts)) replaceAlerts(msg.alerts);
        seedCalls();
        break;
      case 'alert':
        if (msg.alert && msg.alert.id) {
          alerts.set(msg.alert.id, msg.alert);
          renderAlerts();
        }
        break;
      case 'alert_cleared':
        if (alerts.delete(msg.id)) renderAlerts();
        break;
      case 'agent':
        upsertAgent(msg.agent);
        renderAgentSummary();
        break;
      case 'queue':
        upsertQueue(msg.queue);
        break;
      case 'conversation':
        noteCall(msg.conversation);
        onConversation(msg.conversation);
        break;
      case 'session':
        if (msg.state === 'ended') sessionOver(msg.reason === 'taken_over' ? 'taken_over' : msg.reason === 'logged_out' ? 'logged_out' : 'expired');
        break;
      default:
        break;
    }
  },
});

window.addEventListener('online', () => sock.retryNow());

el.logout.addEventListener('click', async () => {
  el.logout.disabled = true;
  try {
    await api('POST', '/logout', { token });
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      failed(e);
      el.logout.disabled = false;
      return;
    }
  }
  sessionOver('logged_out');
});

async function init() {
  startClocks();
  renderSide(true);
  try {
    const [agentList, queueList, alertList] = await Promise.all([get('/agents'), get('/queues'), get('/alerts')]);
    replaceAgents(Array.isArray(agentList) ? agentList : []);
    replaceQueues(Array.isArray(queueList) ? queueList : []);
    replaceAlerts(Array.isArray(alertList) ? alertList : []);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      sessionOver(e.status === 401 ? 'expired' : undefined);
      return;
    }
    notify(errorText(e));
  }
  runSearch();
  sock.start();
}

if (!redirect) init();
