#!/usr/bin/env bash
# Browser tests: starts BINARY on free loopback ports with a short grace period and short SIP
# expiries, drives the web pages in headless Chromium (playwright-core, Debian's chromium) with
# node's test runner, stops the server and exits with the tests' result.
# Screenshots of every page go to target/e2e/ under the repository root.
#
# Usage: tests/e2e/run.sh BINARY [TEST_FILE...]   (e.g. target/release/switchboard; default:
#        every tests/e2e/*.test.mjs)
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 BINARY [TEST_FILE...]" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
[[ -x "$bin" ]] || { echo "not an executable: $1" >&2; exit 2; }
shift
tests=()
for t in "$@"; do tests+=("$(cd "$(dirname "$t")" && pwd)/$(basename "$t")"); done

chromium="${E2E_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "$chromium is missing: apt-get install -y chromium (as root)" >&2
    exit 2
  fi
fi

cd "$here"
all=0
[[ ${#tests[@]} -gt 0 ]] || { tests=(./*.test.mjs); all=1; }
npm ci --no-audit --no-fund --prefer-offline --loglevel=error

work="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-e2e.XXXXXX")"
server_pid=""
stop_server() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pw_hash() { printf '%s\n' "$1" | "$bin" hash-password | sed -n 's/^password_hash = "\(.*\)"$/\1/p'; }
read -r http_port sip_port < <(node lib/ports.mjs)
api_key="e2e-$(node -e 'process.stdout.write(require("crypto").randomBytes(24).toString("hex"))')"
api_key_sha256="$(printf '%s' "$api_key" | sha256sum | cut -d' ' -f1)"
grace_s=6
max_expires_s=3

# Passwords follow lib/harness.mjs: "<user>-e2e-pw", SIP "<user>-sip-secret"; prompts too.
cat >"$work/config.toml" <<EOF
[server]
http_listen = "127.0.0.1:$http_port"
data_dir = "$work/data"

[resilience]
session_grace = "${grace_s}s"
# Short enough that a loss outlasting it (but not the grace) prompts the customer.
reconnecting_prompt_delay = "2s"

[sip]
listen = "127.0.0.1:$sip_port"
realm = "switchboard-e2e"
min_expires = "1s"
max_expires = "${max_expires_s}s"
default_expires = "${max_expires_s}s"

[limits]
# Every browser signs in from 127.0.0.1.
login_per_minute = 100

[log]
level = "info"

[[queues]]
id = "support"
name = "Customer support"
channel = "chat"
session_lost_prompt = "Sorry for the wait: your agent was disconnected. You keep your place in the queue."
reconnecting_prompt = "Your agent is reconnecting, please stay with us."

[[queues]]
id = "sales"
name = "Sales"
channel = "chat"

[[queues]]
id = "billing"
name = "Billing"
channel = "chat"

[[queues]]
id = "returns"
name = "Returns"
channel = "chat"
reconnecting_prompt = "Your agent is reconnecting, please stay with us."
session_lost_prompt = "Sorry for the wait: your agent was disconnected. You keep your place in the queue."

[[queues]]
id = "phones"
name = "Phone line"
channel = "voice"

[[agents]]
id = "alice"
name = "Alice"
password_hash = "$(pw_hash alice-e2e-pw)"
sip_password = "alice-sip-secret"
queues = ["support", "phones"]

[[agents]]
id = "bob"
name = "Bob"
password_hash = "$(pw_hash bob-e2e-pw)"
sip_password = "bob-sip-secret"
queues = ["support", "phones"]

[[agents]]
id = "carol"
name = "Carol"
password_hash = "$(pw_hash carol-e2e-pw)"
sip_password = "carol-sip-secret"
queues = ["phones"]

[[agents]]
id = "dave"
name = "Dave"
password_hash = "$(pw_hash dave-e2e-pw)"
sip_password = "dave-sip-secret"
queues = ["sales"]

[[agents]]
id = "erin"
name = "Erin"
password_hash = "$(pw_hash erin-e2e-pw)"
sip_password = "erin-sip-secret"
queues = ["billing"]

[[agents]]
id = "frank"
name = "Frank"
password_hash = "$(pw_hash frank-e2e-pw)"
sip_password = "frank-sip-secret"
queues = ["returns"]

[[agents]]
id = "gina"
name = "Gina"
password_hash = "$(pw_hash gina-e2e-pw)"
sip_password = "gina-sip-secret"
queues = ["returns"]

[[supervisors]]
id = "sam"
name = "Sam"
password_hash = "$(pw_hash sam-e2e-pw)"

[[api_keys]]
id = "e2e"
key_sha256 = "$api_key_sha256"
EOF

"$bin" check-config "$work/config.toml" >/dev/null
"$bin" serve --config "$work/config.toml" >"$work/server.log" 2>&1 &
server_pid=$!
if ! node lib/wait-ready.mjs "http://127.0.0.1:$http_port/readyz" "$server_pid" 30000; then
  cat "$work/server.log" >&2
  exit 1
fi

shots="$root/target/e2e"
# A full run replaces the previous screenshots; a partial one overwrites only its own.
[[ $all -eq 0 ]] || rm -rf "$shots"
mkdir -p "$shots"

set +e
E2E_BASE_URL="http://127.0.0.1:$http_port" \
E2E_SIP_ADDR="127.0.0.1:$sip_port" \
E2E_API_KEY="$api_key" \
E2E_GRACE_MS=$((grace_s * 1000)) \
E2E_SIP_MAX_EXPIRES_MS=$((max_expires_s * 1000)) \
E2E_SCREENSHOT_DIR="$shots" \
E2E_CHROMIUM="$chromium" \
  node --test --test-concurrency=1 --test-force-exit --test-timeout=120000 --test-reporter=spec "${tests[@]}"
status=$?
set -e

stop_server
if [[ $status -ne 0 ]]; then
  echo "--- server log (last 80 lines)" >&2
  tail -n 80 "$work/server.log" >&2
fi
echo "screenshots: $shots"
exit $status
