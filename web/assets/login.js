// switchboard: login page (/).
//
// data-testid on this page (static, in index.html):
//   login-form, username, password, login-submit,
//   login-error      (failed sign-in; role="alert"),
//   login-message    (why the previous session ended, from ?ended=<reason>),
//   continue-session (a stored session exists), continue-link

import { api, ApiError, loadSession, saveSession, errorText } from './api.js';

const ENDED_TEXT = {
  session_lost: 'Your session ended: the connection was lost for longer than the grace period. Please sign in again.',
  expired: 'Your session ended. Please sign in again.',
  unauthorized: 'Your session ended. Please sign in again.',
  taken_over: 'Your session was taken over by a sign-in from another window or device.',
  logged_out: 'You have signed out.',
};

const form = document.getElementById('login-form');
const username = document.getElementById('username');
const password = document.getElementById('password');
const submit = document.getElementById('login-submit');
const errorBox = document.getElementById('login-error');
const messageBox = document.getElementById('login-message');

function homeFor(role) {
  return role === 'supervisor' ? '/dashboard' : '/panel';
}

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = !text;
}

// Why did we land here?
const params = new URLSearchParams(location.search);
const ended = params.get('ended');
if (ended) {
  messageBox.textContent = ENDED_TEXT[ended] || 'Your session ended. Please sign in again.';
  messageBox.hidden = false;
  if (ended === 'logged_out') {
    messageBox.classList.replace('tone-amber', 'tone-green');
  }
  // Keep the address clean so a reload does not repeat the message.
  history.replaceState(null, '', '/');
}

// A stored session (e.g. a tab closed during the grace period) can be continued.
const stored = loadSession();
if (stored && !ended) {
  const box = document.getElementById('continue');
  const who = stored.username || stored.agent_id || 'your account';
  document.getElementById('continue-text').textContent =
    `You are signed in as ${who}${stored.role === 'supervisor' ? ' (supervisor)' : ''}. `;
  document.getElementById('continue-link').href = homeFor(stored.role);
  box.hidden = false;
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError('');
  const u = username.value.trim();
  const p = password.value;
  if (!u || !p) {
    showError('Enter your username and password.');
    (u ? password : username).focus();
    return;
  }
  submit.disabled = true;
  submit.textContent = 'Signing in…';
  try {
    const res = await api('POST', '/login', { body: { username: u, password: p } });
    if (!res || !res.token) throw new ApiError(500, 'bad_response', 'Unexpected answer from the server.');
    saveSession({
      token: res.token,
      role: res.role,
      agent_id: res.agent_id ?? null,
      session_id: res.session_id ?? null,
      username: u,
    });
    location.assign(homeFor(res.role));
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      showError('Wrong username or password.');
      password.select();
      password.focus();
    } else if (e instanceof ApiError && e.status === 429) {
      showError('Too many attempts. Wait a moment and try again.');
    } else {
      showError(errorText(e));
    }
    submit.disabled = false;
    submit.textContent = 'Sign in';
  }
});

username.focus();
