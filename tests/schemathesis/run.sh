#!/usr/bin/env bash
# Runs schemathesis against a real switchboard binary: the OpenAPI document the server serves
# at /api/v1/openapi.json, every operation called with generated valid and invalid input,
# with a valid credential for each role.
#
#   tests/schemathesis/run.sh BINARY [MAX_EXAMPLES]
#
# Writes a temporary config (agents alice and bob, supervisor sam, one integration key, a
# chat, a voice and an email queue, a temporary data_dir), starts `BINARY serve`, logs in,
# starts a web chat for a customer token, then runs one schemathesis pass per role on the
# operations of that role (supervisor, agent, integration, customer, and the session routes
# with a throw-away session so that logging out ends only that one). MAX_EXAMPLES (default
# 50) bounds the test cases per operation and phase; the whole run stays within a few
# minutes. Passes when no response is a 5xx and every response conforms to the document
# (status code, content type, headers, body schema), invalid input is refused and
# credentials are enforced; prints the number of requests sent. schemathesis is installed
# with pip into a virtualenv under ~/.cache on first use. Needs no terminal and no standard
# input (CI).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 BINARY [MAX_EXAMPLES]" >&2
    exit 2
fi
BIN=$(realpath "$1")
MAX_EXAMPLES=${2:-50}
SCHEMATHESIS_VERSION=4.32.5
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-schemathesis-$SCHEMATHESIS_VERSION

[[ -x "$BIN" ]] || {
    echo "not an executable: $BIN" >&2
    exit 2
}
command -v curl >/dev/null || {
    echo "curl not found: apt-get install -y curl" >&2
    exit 2
}
if [[ ! -x "$VENV/bin/schemathesis" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/schemathesis"

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A port in 20000..59999 that nothing listens on (TCP or UDP) right now.
free_port() {
    local used port
    used=$(ss -Hlntu 2>/dev/null | awk '{print $5}' | sed 's/.*://' | sort -u || true)
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! grep -qx "$port" <<<"$used"; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# `hash-password` prints the `password_hash = "…"` line; the hash is what is between the quotes.
hash_of() {
    printf '%s\n' "$1" | "$BIN" hash-password | sed -n 's/^password_hash = "\(.*\)"$/\1/p'
}

API_KEY="schemathesis-integration-key-0123456789abcdef"
API_KEY_SHA=$(printf '%s' "$API_KEY" | sha256sum | cut -d' ' -f1)
ALICE_HASH=$(hash_of alice-pw)
BOB_HASH=$(hash_of bob-pw)
SAM_HASH=$(hash_of sam-pw)

write_config() {
    cat >"$WORK/config.toml" <<EOF
[server]
http_listen = "127.0.0.1:$HTTP_PORT"
data_dir = "$WORK/data"

[sip]
listen = "127.0.0.1:$SIP_PORT"

[log]
level = "warn"

[[queues]]
id = "support"
name = "Support"
channel = "chat"

[[queues]]
id = "phones"
name = "Phones"
channel = "voice"

[[queues]]
id = "mail"
name = "Mail"
channel = "email"

[[supervisors]]
id = "sam"
name = "Sam"
password_hash = "$SAM_HASH"

[[agents]]
id = "alice"
name = "Alice"
password_hash = "$ALICE_HASH"
sip_password = "alice-sip"
queues = ["support", "phones", "mail"]

[[agents]]
id = "bob"
name = "Bob"
password_hash = "$BOB_HASH"
sip_password = "bob-sip"
queues = ["support", "phones", "mail"]

[[api_keys]]
id = "crm"
key_sha256 = "$API_KEY_SHA"
EOF
}

# Start the server; a port taken between the check and the bind just means another try.
started=""
for attempt in 1 2 3 4 5; do
    HTTP_PORT=$(free_port)
    SIP_PORT=$(free_port)
    [[ "$HTTP_PORT" != "$SIP_PORT" ]] || continue
    write_config
    "$BIN" check-config "$WORK/config.toml" >/dev/null
    "$BIN" serve --config "$WORK/config.toml" </dev/null >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            break
        fi
        if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HTTP_PORT/readyz"; then
            started=yes
            break
        fi
        sleep 0.1
    done
    [[ -n "$started" ]] && break
    echo "server did not start (attempt $attempt):" >&2
    cat "$WORK/server.log" >&2
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
done
if [[ -z "$started" ]]; then
    echo "FAIL: switchboard never became ready" >&2
    exit 1
fi
BASE="http://127.0.0.1:$HTTP_PORT"
echo "switchboard pid $SERVER_PID: $BASE"

json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
post() {
    curl -fsS --max-time 10 -H 'content-type: application/json' -d "$2" "$BASE$1"
}
login() {
    post /api/v1/login "{\"username\": \"$1\", \"password\": \"$1-pw\"}" | json_field token
}
SAM=$(login sam)
ALICE=$(login alice)
BOB=$(login bob)
CUSTOMER=$(post /api/v1/chats '{"queue": "support", "name": "Casey", "text": "hello"}' |
    json_field token)

failed=0
total=0
# One pass: a name, the credential, then schemathesis filter options.
pass() {
    local name=$1 token=$2
    shift 2
    local out="$WORK/$name.txt"
    echo "--- $name"
    set +e
    "$ST" run "$BASE/api/v1/openapi.json" \
        --checks all --exclude-checks positive_data_acceptance \
        --max-examples "$MAX_EXAMPLES" --seed 1 --workers 1 \
        --request-timeout 10 --suppress-health-check all --no-color \
        -H "Authorization: Bearer $token" "$@" </dev/null >"$out" 2>&1
    local rc=$?
    set -e
    # The summary's "Test cases:" line counts generated cases; the report counts requests.
    sed -n '/SUMMARY/,$p' "$out" | grep -v '^$' || tail -n 40 "$out"
    local n
    n=$(grep -o '"request"' "$WORK/$name.ndjson" 2>/dev/null | wc -l || true)
    total=$((total + n))
    echo "$name: $n requests, exit code $rc"
    if [[ $rc -ne 0 ]]; then
        failed=1
        cat "$out"
    fi
}
report() { echo "--report ndjson --report-ndjson-path $WORK/$1.ndjson"; }

# shellcheck disable=SC2046
pass supervisor "$SAM" --include-tag supervisor --include-tag history \
    --include-tag operations $(report supervisor)
# shellcheck disable=SC2046
pass agent "$ALICE" --include-tag agent --include-tag conversations --include-tag queues \
    $(report agent)
# shellcheck disable=SC2046
pass integration "$API_KEY" --include-tag integrations $(report integration)
# shellcheck disable=SC2046
pass customer "$CUSTOMER" --include-tag customer $(report customer)
# shellcheck disable=SC2046
pass sessions "$BOB" --include-tag sessions $(report sessions)

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "FAIL: the server died during the run" >&2
    failed=1
fi
if grep -qi 'panicked' "$WORK/server.log"; then
    echo "FAIL: the server panicked" >&2
    failed=1
fi
echo "schemathesis: $total requests in all"
if [[ $failed -ne 0 ]]; then
    echo "--- server log"
    tail -n 100 "$WORK/server.log"
    exit 1
fi
echo "PASS: no 5xx, every response as documented"
