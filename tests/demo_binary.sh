#!/usr/bin/env bash
# Starts the built binary's `switchboard demo`, logs in as the supervisor and polls the
# conversation search (GET /api/v1/conversations?limit=200, docs/api.md#supervisor-routes) until
# conversations on every medium (webchat, sms, social, email, voice) and a chat requeued after
# its agent's session was lost (disconnect_reason AgentSessionLost, origin kind requeue) appear
# — within 60 s of real time. Then stops the demo with Ctrl-C (SIGINT) and checks that it exits
# 0 and removes its temporary data directory.
#
# Usage: tests/demo_binary.sh [path/to/switchboard]
#        (default: $SWITCHBOARD_BIN, else target/release/switchboard)
# Needs: bash, curl, grep, sed.
set -euo pipefail

BIN=${1:-${SWITCHBOARD_BIN:-target/release/switchboard}}
LIMIT=${DEMO_LIMIT_SECONDS:-60}
if [ ! -x "$BIN" ]; then
    echo "demo_binary: no executable at $BIN (build it: cargo build --release)" >&2
    exit 2
fi

OUT=$(mktemp)
ERR=$(mktemp)
"$BIN" demo --http 127.0.0.1:0 --sip 127.0.0.1:0 >"$OUT" 2>"$ERR" &
PID=$!
cleanup() {
    if kill -0 "$PID" 2>/dev/null; then
        kill -INT "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -f "$OUT" "$ERR"
}
trap cleanup EXIT

fail() {
    echo "demo_binary: FAIL: $*" >&2
    echo "--- demo stdout" >&2
    cat "$OUT" >&2 || true
    echo "--- demo stderr (last 40 lines)" >&2
    tail -n 40 "$ERR" >&2 || true
    exit 1
}

# The banner names the URL and the data directory.
URL=""
for _ in $(seq 1 100); do
    URL=$(sed -n 's#^ *Open *\(http://[^ /]*\)/ *$#\1#p' "$OUT")
    [ -n "$URL" ] && break
    kill -0 "$PID" 2>/dev/null || fail "the demo exited at start"
    sleep 0.1
done
[ -n "$URL" ] || fail "no URL printed within 10 s"
DATA_DIR=$(sed -n 's#^Data lives in \(.*\) and is deleted.*#\1#p' "$OUT")
STARTED=$SECONDS
echo "demo_binary: demo at $URL (data in $DATA_DIR)"

LOGIN=$(curl -sS -X POST -H 'content-type: application/json' \
    -d '{"username":"supervisor","password":"supervisor"}' "$URL/api/v1/login") \
    || fail "supervisor login request failed"
TOKEN=$(printf '%s' "$LOGIN" | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')
[ -n "$TOKEN" ] || fail "supervisor login: $LOGIN"

missing="everything"
while [ $((SECONDS - STARTED)) -lt "$LIMIT" ]; do
    BODY=$(curl -sS -H "Authorization: Bearer $TOKEN" "$URL/api/v1/conversations?limit=200" || true)
    missing=""
    for medium in webchat sms social email voice; do
        printf '%s' "$BODY" | grep -Eq "\"medium\" *: *\"$medium\"" || missing="$missing $medium"
    done
    printf '%s' "$BODY" | grep -Eq '"disconnect_reason" *: *"AgentSessionLost"' \
        || missing="$missing AgentSessionLost"
    printf '%s' "$BODY" | grep -Eq '"kind" *: *"requeue"' || missing="$missing requeue"
    if [ -z "$missing" ]; then
        break
    fi
    sleep 2
done
[ -z "$missing" ] || fail "after ${LIMIT} s still missing:$missing"
echo "demo_binary: every medium and an AgentSessionLost requeue after $((SECONDS - STARTED)) s"

kill -INT "$PID"
rc=0
wait "$PID" || rc=$?
[ "$rc" -eq 0 ] || fail "the demo exited with $rc after Ctrl-C"
if [ -n "$DATA_DIR" ] && [ -e "$DATA_DIR" ]; then
    fail "the temporary data directory $DATA_DIR is still there"
fi
echo "demo_binary: ok (stopped cleanly, data directory removed)"
