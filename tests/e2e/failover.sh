#!/usr/bin/env bash
# Browser test of a two-node cluster on PostgreSQL: an agent's panel and a supervisor's
# Dashboard on the active node; the active node is killed with SIGKILL; both pages find the
# node that took over by themselves and carry on with the same session, no sign-in needed.
# Screenshots go to target/e2e/ under the repository root.
#
# Usage: tests/e2e/failover.sh BINARY
# Uses SWITCHBOARD_TEST_POSTGRES_URL when set, otherwise starts tests/postgres/start.sh's server.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BINARY" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
[[ -x "$bin" ]] || { echo "not an executable: $1" >&2; exit 2; }
chromium="${E2E_CHROMIUM:-/usr/bin/chromium}"
[[ -x "$chromium" ]] || { echo "$chromium is missing: apt-get install -y chromium" >&2; exit 2; }
url="${SWITCHBOARD_TEST_POSTGRES_URL:-$(bash "$root/tests/postgres/start.sh")}"

cd "$here"
npm ci --no-audit --no-fund --prefer-offline --loglevel=error

work="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-failover.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A schema of its own, empty, so earlier runs leave nothing behind.
schema="e2e_failover"
psql "$url" -qAt -v ON_ERROR_STOP=1 -c "DROP SCHEMA IF EXISTS $schema CASCADE" -c "CREATE SCHEMA $schema" >/dev/null
case "$url" in *\?*) sep='&' ;; *) sep='?' ;; esac
schema_url="${url}${sep}options=-c%20search_path%3D${schema}"

pw_hash() { printf '%s\n' "$1" | "$bin" hash-password | sed -n 's/^password_hash = "\(.*\)"$/\1/p'; }
read -r port_a sip_a < <(node lib/ports.mjs)
read -r port_b sip_b < <(node lib/ports.mjs)
base_a="http://127.0.0.1:$port_a"
base_b="http://127.0.0.1:$port_b"
agent_hash="$(pw_hash frank-e2e-pw)"
sup_hash="$(pw_hash sam-e2e-pw)"

node_config() { # name http_port sip_port own_url peer_url
  cat <<EOF
[server]
http_listen = "127.0.0.1:$2"
data_dir = "$work/$1"

[store]
backend = "postgres"
postgres_url = "$schema_url"

[cluster]
node_id = "$1"
lease = "2s"
advertise_url = "$4"
peers = ["$5"]

[resilience]
session_grace = "60s"

[sip]
listen = "127.0.0.1:$3"
realm = "switchboard-e2e"

[limits]
login_per_minute = 100

[log]
level = "info"

[[queues]]
id = "returns"
name = "Returns"
channel = "chat"

[[agents]]
id = "frank"
name = "Frank"
password_hash = "$agent_hash"
sip_password = "frank-sip-secret"
queues = ["returns"]

[[supervisors]]
id = "sam"
name = "Sam"
password_hash = "$sup_hash"
EOF
}
node_config node-a "$port_a" "$sip_a" "$base_a" "$base_b" >"$work/a.toml"
node_config node-b "$port_b" "$sip_b" "$base_b" "$base_a" >"$work/b.toml"
"$bin" check-config "$work/a.toml" >/dev/null

"$bin" serve --config "$work/a.toml" >"$work/a.log" 2>&1 &
pid_a=$!
pids+=("$pid_a")
node lib/wait-ready.mjs "$base_a/readyz" "$pid_a" 30000 || { cat "$work/a.log" >&2; exit 1; }
"$bin" serve --config "$work/b.toml" >"$work/b.log" 2>&1 &
pid_b=$!
pids+=("$pid_b")

shots="$root/target/e2e"
mkdir -p "$shots"
set +e
E2E_BASE_URL="$base_a" \
E2E_NODE_B_URL="$base_b" \
E2E_NODE_A_PID="$pid_a" \
E2E_SIP_ADDR="127.0.0.1:$sip_a" \
E2E_API_KEY="unused" \
E2E_GRACE_MS=60000 \
E2E_SIP_MAX_EXPIRES_MS=3600000 \
E2E_SCREENSHOT_DIR="$shots" \
E2E_CHROMIUM="$chromium" \
  node --test --test-concurrency=1 --test-force-exit --test-timeout=120000 --test-reporter=spec \
  "$here/failover.cluster.mjs"
status=$?
set -e
if [[ $status -ne 0 ]]; then
  echo "--- node-a log (last 40 lines)" >&2; tail -n 40 "$work/a.log" >&2
  echo "--- node-b log (last 40 lines)" >&2; tail -n 40 "$work/b.log" >&2
fi
exit $status
