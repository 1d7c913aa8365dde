// The test phone's digest arithmetic and parsing, against RFC 2617's worked example, so a
// failing SIP browser test points at the server and not at the client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { digestResponse, parseChallenge, parseResponse } from './lib/sip.mjs';

test('the digest response matches the RFC 2617 §3.5 example', () => {
  assert.equal(digestResponse({
    username: 'Mufasa', realm: 'testrealm@host.com', password: 'Circle Of Life', method: 'GET',
    uri: '/dir/index.html', nonce: 'dcd98b7102dd2f0e8b11d0f600bfb0c093', nc: '00000001', cnonce: '0a4f113b',
  }), '6629fae49393a05397450978507c4ef1');
});

test('a challenge with quoted and bare parameters is parsed', () => {
  const c = parseChallenge('Digest realm="switchboard", nonce="00ab", opaque="x\\"y", algorithm=MD5, qop="auth"');
  assert.deepEqual(c, { realm: 'switchboard', nonce: '00ab', opaque: 'x"y', algorithm: 'MD5', qop: 'auth' });
  assert.equal(parseChallenge('Basic realm="x"'), null);
});

test('a response keeps every header value under its lower-case name', () => {
  const r = parseResponse('SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nWWW-Authenticate: Digest nonce="n"\r\nContent-Length: 0\r\n\r\n');
  assert.equal(r.status, 401);
  assert.equal(r.reason, 'Unauthorized');
  assert.equal(r.header('WWW-Authenticate'), 'Digest nonce="n"');
  assert.equal(parseResponse('garbage'), null);
});
