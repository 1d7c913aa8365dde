// switchboard: shared client code for every page (HTTP API, session storage,
// WebSocket with reconnect, DOM and time helpers).
//
// data-testid attributes created here: none (page scripts pass their own via h()).
//
// All DOM is built with document.createElement + textContent. Server data is
// never parsed as HTML.

export const API = '/api/v1';
export const SESSION_KEY = 'switchboard.session';

// ---------------------------------------------------------------------------
// Session storage (localStorage, shared by every tab of the browser)

export function loadSession() {
  try {
    const raw = localStorage.getItem(SESSION_KEY);
    if (!raw) return null;
    const s = JSON.parse(raw);
    if (!s || typeof s.token !== 'string' || !s.token) return null;
    return s;
  } catch {
    return null;
  }
}

export function saveSession(s) {
  localStorage.setItem(SESSION_KEY, JSON.stringify(s));
}

/** Remove the stored session. With `onlyToken`, only if it still holds that token
 *  (another tab may already have stored a newer login). */
export function clearSession(onlyToken) {
  if (onlyToken !== undefined) {
    const cur = loadSession();
    if (cur && cur.token !== onlyToken) return;
  }
  localStorage.removeItem(SESSION_KEY);
}

// ---------------------------------------------------------------------------
// Cluster: with several nodes (docs/high-availability.md) only the active one
// serves. Every reply of a clustered node names the nodes in the
// `x-switchboard-nodes` header, which the page remembers. When the live socket
// drops and the node is unreachable or standby, the page asks the nodes it knows
// (GET /api/v1/cluster, readable from any origin) which one is active, and moves
// there, handing the stored session over in the URL fragment (never sent to a
// server). A single server sends no such header, so nothing here runs there.

const CLUSTER_KEY = 'switchboard.cluster.nodes';
const HANDOFF = '#session=';

(function takeHandedOverSession() {
  try {
    if (location.hash.startsWith(HANDOFF)) {
      const s = JSON.parse(decodeURIComponent(location.hash.slice(HANDOFF.length)));
      if (s && typeof s.token === 'string' && s.token) saveSession(s);
      history.replaceState(null, '', location.pathname + location.search);
    }
  } catch { /* not a handoff */ }
})();

function knownNodes() {
  try {
    const list = JSON.parse(localStorage.getItem(CLUSTER_KEY) || '[]');
    return Array.isArray(list) ? list.filter((n) => typeof n === 'string' && n) : [];
  } catch {
    return [];
  }
}

function noteClusterNodes(res) {
  const nodes = res.headers.get('x-switchboard-nodes');
  if (!nodes) return;
  const list = nodes.split(/\s+/).filter(Boolean);
  if (list.length && JSON.stringify(list) !== JSON.stringify(knownNodes())) {
    localStorage.setItem(CLUSTER_KEY, JSON.stringify(list));
  }
}

async function clusterInfo(base) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), 2000);
  try {
    const res = await fetch(`${base}${API}/cluster`, { signal: ctl.signal, cache: 'no-store' });
    if (!res.ok) return null;
    const info = await res.json();
    if (Array.isArray(info.nodes) && info.nodes.length) {
      localStorage.setItem(CLUSTER_KEY, JSON.stringify(info.nodes));
    }
    return info;
  } catch {
    return null;
  } finally {
    clearTimeout(t);
  }
}

/** Moves the page to the active node when this one is not it. Returns true when
 *  the page is leaving. */
export async function followActiveNode() {
  const known = knownNodes();
  if (known.length === 0) return false;
  const own = await clusterInfo('');
  if (own && own.role === 'active') return false;
  if (!own && known.length === 0) return false;
  let active = own && own.active;
  for (const base of known) {
    if (active) break;
    if (base === location.origin) continue;
    const info = await clusterInfo(base);
    if (info && info.role === 'active') active = base;
    else if (info && info.active) active = info.active;
  }
  if (!active || active.replace(/\/$/, '') === location.origin) return false;
  const session = loadSession();
  const hand = session ? HANDOFF + encodeURIComponent(JSON.stringify(session)) : '';
  location.replace(active.replace(/\/$/, '') + location.pathname + location.search + hand);
  return true;
}

/** Go to the login page, telling it why. */
export function gotoLogin(reason) {
  const q = reason ? `?ended=${encodeURIComponent(reason)}` : '';
  location.replace(`/${q}`);
}

// ---------------------------------------------------------------------------
// Clock: the server's clock is the reference for deadlines. The skew is
// estimated from the HTTP Date header (1 s resolution) and only applied when it
// is clearly larger than that resolution.

let clockSkewMs = 0;

function noteServerDate(res) {
  const d = res.headers.get('Date');
  if (!d) return;
  const server = Date.parse(d);
  if (Number.isNaN(server)) return;
  const skew = server + 500 - Date.now();
  clockSkewMs = Math.abs(skew) > 2000 ? skew : 0;
}

export function serverNow() {
  return Date.now() + clockSkewMs;
}

// ---------------------------------------------------------------------------
// HTTP

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message || code || `HTTP ${status}`);
    this.status = status; // 0 = network error
    this.code = code || (status === 0 ? 'network_error' : `http_${status}`);
    this.body = body;
  }
}

/**
 * JSON request to the API. `path` is relative to /api/v1.
 * Resolves to the parsed body (or null for an empty body); rejects with ApiError.
 */
export async function api(method, path, { token, body, keepalive = false, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, keepalive, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(API + path, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network_error', 'The server could not be reached.');
  }
  noteServerDate(res);
  noteClusterNodes(res);
  const text = await res.text().catch(() => '');
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const code = data && typeof data.error === 'string' ? data.error : undefined;
    const msg = data && typeof data.message === 'string' ? data.message : `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, code, msg, data);
  }
  return data;
}

/** Query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export function wsUrl(path, token) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${API}${path}?token=${encodeURIComponent(token)}`;
}

// ---------------------------------------------------------------------------
// WebSocket that reconnects by itself.
//
// Close codes 4001 (taken over) and 4401 (token no longer valid) are final: the
// socket is not reopened and onFinal(code, reason) is called. Anything else is
// retried with exponential backoff, 0.5 s doubling to 8 s, with jitter. Before a
// retry the optional `probe()` runs (e.g. a GET with the token): it returns
// 'ok' to go on, or a final code (4401) when the token is no longer accepted.
// That covers servers that refuse the upgrade with HTTP 401, which browsers
// only report as close code 1006.

export const CLOSE_TAKEN_OVER = 4001;
export const CLOSE_UNAUTHORIZED = 4401;
/** The session already has its maximum of panel sockets (limits.max_sockets_per_session):
 *  retried like a drop, since closing another tab frees a place. */
export const CLOSE_TOO_MANY_SOCKETS = 4409;

export class LiveSocket {
  constructor({ url, onMessage, onUp, onDown, onFinal, probe, pingMs = 0, staleMs = 0 }) {
    this.url = url; // () => string
    this.onMessage = onMessage || (() => {});
    this.onUp = onUp || (() => {});
    this.onDown = onDown || (() => {});
    this.onFinal = onFinal || (() => {});
    this.probe = probe;
    this.pingMs = pingMs;
    this.staleMs = staleMs;
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.up = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this.nextRetryAt = 0;
  }

  start() {
    this.stopped = false;
    this.open();
    if (this.pingMs && !this.pingTimer) {
      this.pingTimer = setInterval(() => this.tick(), this.pingMs);
    }
  }

  /** Stop for good (logout, session over). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      detach(ws);
      try { ws.close(1000, 'client closing'); } catch { /* already closed */ }
    }
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  /**
   * Ping every `pingMs` and declare the link dead after `staleMs` without any frame: set
   * from the server's heartbeat so a dead link is noticed within its heartbeat_timeout.
   */
  setHeartbeat(pingMs, staleMs) {
    if (!(pingMs > 0) || !(staleMs > 0)) return;
    this.pingMs = pingMs;
    this.staleMs = staleMs;
    if (this.pingTimer) {
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.tick(), this.pingMs);
    }
  }

  /** The link is known to be dead (the browser went offline): give it up now. */
  drop(reason) {
    const ws = this.ws;
    if (!ws || this.stopped) return;
    detach(ws);
    try { ws.close(4000, reason); } catch { /* ignore */ }
    this.lost(1006, reason);
  }

  /** Reconnect now instead of waiting for the backoff timer. */
  retryNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.reconnect();
  }

  open() {
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.lost(1006, '');
      return;
    }
    this.ws = ws;
    this.lastFrameAt = Date.now();
    ws.onopen = () => {
      this.lastFrameAt = Date.now();
    };
    ws.onmessage = (ev) => {
      this.lastFrameAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || typeof msg !== 'object') return;
      if (msg.type === 'snapshot') {
        // A snapshot means the server accepted us: backoff starts over.
        this.attempt = 0;
        if (!this.up) {
          this.up = true;
          this.onUp();
        }
      }
      this.onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.lost(ev.code, ev.reason);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  tick() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (this.staleMs && Date.now() - this.lastFrameAt > this.staleMs) {
      // Nothing at all (not even a pong) for too long: the connection is dead
      // even if TCP has not noticed yet.
      const ws = this.ws;
      detach(ws);
      try { ws.close(4000, 'stale'); } catch { /* ignore */ }
      this.lost(1006, 'stale');
      return;
    }
    this.send({ type: 'ping' });
  }

  lost(code, reason) {
    this.ws = null;
    const wasUp = this.up;
    this.up = false;
    if (this.stopped) return;
    if (code === CLOSE_TAKEN_OVER || code === CLOSE_UNAUTHORIZED) {
      this.stop();
      this.onFinal(code, reason);
      return;
    }
    this.onDown({ code, reason, wasUp });
    this.schedule();
  }

  schedule() {
    if (this.stopped) return;
    const base = Math.min(8000, 500 * 2 ** this.attempt);
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this.attempt = Math.min(this.attempt + 1, 10);
    this.nextRetryAt = Date.now() + delay;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.reconnect(), delay);
  }

  async reconnect() {
    if (this.stopped) return;
    if (this.probe) {
      let verdict;
      try {
        verdict = await this.probe();
      } catch {
        verdict = 'retry';
      }
      if (this.stopped) return;
      if (verdict === CLOSE_UNAUTHORIZED || verdict === CLOSE_TAKEN_OVER) {
        this.stop();
        this.onFinal(verdict, 'probe');
        return;
      }
      if (verdict === 'retry') {
        // Unreachable or standby: in a cluster, another node may be serving now.
        try {
          if (await followActiveNode()) return;
        } catch { /* stay on this node */ }
        if (this.stopped) return;
        this.schedule();
        return;
      }
    }
    this.open();
  }
}

function detach(ws) {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
}

/** A probe for LiveSocket: GET `path` with the token. */
export function tokenProbe(path, getToken) {
  return async () => {
    try {
      await api('GET', path, { token: getToken() });
      return 'ok';
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return CLOSE_UNAUTHORIZED;
      // Unreachable, or a standby node (503): try again, or elsewhere.
      return e instanceof ApiError && (e.status === 0 || e.status === 503) ? 'retry' : 'ok';
    }
  };
}

// ---------------------------------------------------------------------------
// DOM

/**
 * h('div', {class: 'x', testid: 'y', onclick: fn, hidden: true}, 'text', child...)
 * Strings and numbers become text nodes; null/undefined/false are skipped;
 * arrays are flattened.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'testid') el.dataset.testid = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'value') el.value = v;
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function $(sel, root = document) {
  return root.querySelector(sel);
}

export function byTestId(id, root = document) {
  return root.querySelector(`[data-testid="${CSS.escape(id)}"]`);
}

export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

// ---------------------------------------------------------------------------
// Formatting

/** "in_process" → "In process", "AgentSessionLost" stays as is. */
export function humanize(v) {
  if (v === null || v === undefined || v === '') return '—';
  const s = String(v);
  if (!s.includes('_')) return s.charAt(0).toUpperCase() + s.slice(1);
  const t = s.replace(/_/g, ' ');
  return t.charAt(0).toUpperCase() + t.slice(1);
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** Local time of day, "14:05:09". */
export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Local time with milliseconds, for event tables. */
export function fmtTimeMs(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${fmtTime(iso)}.${pad(d.getMilliseconds(), 3)}`;
}

/** Local date and time, "2026-11-23 10:15:02". */
export function fmtDateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtTime(iso)}`;
}

/** Duration: "0:07", "12:40", "1:02:03". Negative durations count as zero. */
export function fmtDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hh = Math.floor(total / 3600);
  const mm = Math.floor((total % 3600) / 60);
  const ss = total % 60;
  return hh ? `${hh}:${pad(mm)}:${pad(ss)}` : `${mm}:${pad(ss)}`;
}

export function msUntil(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? NaN : t - serverNow();
}

export function msSince(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? NaN : serverNow() - t;
}

/** Last 8 characters of an id (the random part of a UUID v7), for dense tables; the full id goes in the title. */
export function shortId(id) {
  return id ? String(id).slice(-8) : '—';
}

// ---------------------------------------------------------------------------
// Live clocks: elements with data-countdown-to (ISO time) or data-elapsed-since
// (ISO time) are refreshed every second by one shared timer.

export function countdown(iso, attrs = {}) {
  const el = h('span', { ...attrs, class: `clock ${attrs.class || ''}`.trim() });
  el.dataset.countdownTo = iso;
  refreshClock(el);
  return el;
}

export function elapsed(iso, attrs = {}) {
  const el = h('span', { ...attrs, class: `clock ${attrs.class || ''}`.trim() });
  el.dataset.elapsedSince = iso;
  refreshClock(el);
  return el;
}

export function refreshClock(el) {
  if (el.dataset.countdownTo) {
    const ms = msUntil(el.dataset.countdownTo);
    setText(el, Number.isNaN(ms) ? '—' : fmtDuration(ms + 999));
    el.classList.toggle('clock-urgent', ms < 10000);
    el.classList.toggle('clock-over', ms <= 0);
  } else if (el.dataset.elapsedSince) {
    const ms = msSince(el.dataset.elapsedSince);
    setText(el, Number.isNaN(ms) ? '—' : fmtDuration(ms));
  }
}

let clockTimer = null;
export function startClocks() {
  if (clockTimer) return;
  const tick = () => {
    for (const el of document.querySelectorAll('[data-countdown-to],[data-elapsed-since]')) refreshClock(el);
  };
  clockTimer = setInterval(tick, 1000);
}

/** Debounce: the returned function runs `fn` `ms` after the last call. */
export function debounce(fn, ms) {
  let t = null;
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => {
      t = null;
      fn(...args);
    }, ms);
  };
  d.cancel = () => {
    clearTimeout(t);
    t = null;
  };
  d.pending = () => t !== null;
  return d;
}

/** Message text for an ApiError, for notices. */
export function errorText(e) {
  if (e instanceof ApiError) {
    if (e.status === 0) return 'The server could not be reached. Check the connection and try again.';
    return e.message || e.code;
  }
  return String((e && e.message) || e);
}
