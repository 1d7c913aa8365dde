// A small SIP phone for the browser tests: sends REGISTER over UDP and answers the registrar's
// digest challenge (RFC 3261 §10 and §22, RFC 2617 MD5 with qop=auth, nc and cnonce).

import dgram from 'node:dgram';
import crypto from 'node:crypto';

const md5 = (s) => crypto.createHash('md5').update(s).digest('hex');

/** The RFC 2617 §3.2.2 request-digest for qop=auth. */
export function digestResponse({ username, realm, password, method, uri, nonce, nc, cnonce, qop = 'auth' }) {
  const ha1 = md5(`${username}:${realm}:${password}`);
  const ha2 = md5(`${method}:${uri}`);
  return md5(`${ha1}:${nonce}:${nc}:${cnonce}:${qop}:${ha2}`);
}

/** Parameters of a `Digest a=b, c="d"` challenge; names lower-cased. */
export function parseChallenge(value) {
  const m = /^\s*Digest\s+(.*)$/is.exec(value || '');
  if (!m) return null;
  const params = {};
  const re = /([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g;
  let p;
  while ((p = re.exec(m[1]))) {
    params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  }
  return params;
}

/** A SIP response: status, reason, headers (lower-case names → list of values). */
export function parseResponse(text) {
  const [head] = text.split('\r\n\r\n');
  const lines = head.split('\r\n');
  const m = /^SIP\/2\.0\s+(\d{3})\s*(.*)$/.exec(lines[0] || '');
  if (!m) return null;
  const headers = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    (headers[name] ||= []).push(line.slice(i + 1).trim());
  }
  return { status: Number(m[1]), reason: m[2], headers, header: (n) => (headers[n.toLowerCase()] || [])[0] };
}

const rand = (n = 8) => crypto.randomBytes(n).toString('hex');

/**
 * An agent's phone. `register(expires)` runs one REGISTER transaction (with the challenge
 * round trip) and resolves to the final response; `expires = 0` removes the binding.
 */
export class SipPhone {
  constructor({ server, user, password }) {
    const [host, port] = server.split(':');
    this.host = host;
    this.port = Number(port);
    this.user = user;
    this.password = password;
    this.callId = `${rand()}@e2e`;
    this.tag = rand(4);
    this.cseq = 0;
    this.nc = 0;
    this.challenge = null;
    this.socket = null;
    this.waiters = new Map(); // branch → resolve
  }

  async open() {
    if (this.socket) return;
    this.socket = dgram.createSocket('udp4');
    this.socket.on('message', (buf) => {
      const res = parseResponse(buf.toString('utf8'));
      if (!res) return;
      const via = res.header('via') || '';
      const b = /branch=([^;\s,]+)/.exec(via);
      const w = b && this.waiters.get(b[1]);
      if (w && res.status >= 200) {
        this.waiters.delete(b[1]);
        w(res);
      }
    });
    await new Promise((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.bind(0, '127.0.0.1', resolve);
    });
    this.localPort = this.socket.address().port;
  }

  close() {
    if (this.socket) this.socket.close();
    this.socket = null;
  }

  get uri() {
    return `sip:${this.host}:${this.port}`;
  }

  request(expires, authorization) {
    this.cseq += 1;
    const branch = `z9hG4bK${rand()}`;
    const aor = `sip:${this.user}@${this.host}`;
    const lines = [
      `REGISTER ${this.uri} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${this.localPort};branch=${branch};rport`,
      'Max-Forwards: 70',
      `From: <${aor}>;tag=${this.tag}`,
      `To: <${aor}>`,
      `Call-ID: ${this.callId}`,
      `CSeq: ${this.cseq} REGISTER`,
      `Contact: <sip:${this.user}@127.0.0.1:${this.localPort}>`,
      `Expires: ${expires}`,
    ];
    if (authorization) lines.push(`Authorization: ${authorization}`);
    lines.push('User-Agent: switchboard-e2e', 'Content-Length: 0', '', '');
    return { branch, bytes: Buffer.from(lines.join('\r\n')) };
  }

  /** One request with UDP retransmission (T1 = 500 ms, doubling), resolving to the final response. */
  transact({ branch, bytes }) {
    return new Promise((resolve, reject) => {
      let interval = 500;
      let sent = 0;
      let timer = null;
      const send = () => {
        if (sent === 5) {
          this.waiters.delete(branch);
          reject(new Error(`no SIP response from ${this.host}:${this.port}`));
          return;
        }
        sent += 1;
        this.socket.send(bytes, this.port, this.host);
        timer = setTimeout(send, interval);
        interval *= 2;
      };
      this.waiters.set(branch, (res) => {
        clearTimeout(timer);
        resolve(res);
      });
      send();
    });
  }

  authorization() {
    const c = this.challenge;
    this.nc += 1;
    const nc = this.nc.toString(16).padStart(8, '0');
    const cnonce = rand();
    const response = digestResponse({
      username: this.user, realm: c.realm, password: this.password, method: 'REGISTER',
      uri: this.uri, nonce: c.nonce, nc, cnonce,
    });
    const parts = [
      `username="${this.user}"`, `realm="${c.realm}"`, `nonce="${c.nonce}"`, `uri="${this.uri}"`,
      `response="${response}"`, 'algorithm=MD5', `cnonce="${cnonce}"`, 'qop=auth', `nc=${nc}`,
    ];
    if (c.opaque !== undefined) parts.push(`opaque="${c.opaque}"`);
    return `Digest ${parts.join(', ')}`;
  }

  /**
   * REGISTER with `expires` seconds: the first request goes without credentials (or with the
   * last challenge's nonce), a 401 is answered once with credentials. Returns
   * `{status, first, granted}` with the statuses seen and the granted expiry of the 200.
   */
  async register(expires) {
    await this.open();
    const seen = [];
    let res = await this.transact(this.request(expires, this.challenge ? this.authorization() : null));
    seen.push(res.status);
    for (let i = 0; i < 2 && res.status === 401; i += 1) {
      const c = parseChallenge(res.header('www-authenticate'));
      if (!c || !c.nonce) throw new Error(`401 without a digest challenge: ${res.header('www-authenticate')}`);
      if (!/\bauth\b/.test(c.qop || '')) throw new Error(`challenge does not offer qop=auth: ${c.qop}`);
      this.challenge = c;
      this.nc = 0;
      res = await this.transact(this.request(expires, this.authorization()));
      seen.push(res.status);
    }
    const contact = res.header('contact') || '';
    const g = /;\s*expires=(\d+)/i.exec(contact);
    return { status: res.status, seen, granted: g ? Number(g[1]) : null, response: res };
  }
}
