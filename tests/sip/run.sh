#!/usr/bin/env bash
# Runs the sipp scenarios of this directory against a real switchboard binary over UDP.
#
#   tests/sip/run.sh BINARY [SCENARIO.xml ...]
#
# Writes a temporary config (agents alice and bob with the SIP passwords of users.csv,
# supervisor sam, the voice queue `phones`, loopback as the trunk and as the outbound proxy
# (a sipp customer on a free port), SIP and HTTP on free
# loopback ports, a temporary data_dir), starts `BINARY serve`, waits until the login page
# answers, runs each registration scenario with sipp (Debian package sip-tester) and stops the
# server. Without SCENARIO arguments it then runs the call stories of calls.py (sipp trunk and
# phones, the panels played by the script, python3-websockets) on a fresh data_dir. Exits
# non-zero if anything fails, printing sipp's error log and the server log. Needs no terminal
# and no standard input (CI).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 BINARY [SCENARIO.xml ...]" >&2
    exit 2
fi
BIN=$(realpath "$1")
shift
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCENARIOS=()
CALLS=yes
[[ $# -eq 0 ]] || CALLS=""
for s in "${@:-register_auth.xml refresh.xml unregister.xml interval_too_brief.xml}"; do
    for one in $s; do
        if [[ -f "$one" ]]; then
            SCENARIOS+=("$(realpath "$one")")
        else
            SCENARIOS+=("$HERE/$(basename "$one")")
        fi
    done
done

command -v sipp >/dev/null || {
    echo "sipp not found: apt-get install -y sip-tester" >&2
    exit 2
}
[[ -x "$BIN" ]] || {
    echo "not an executable: $BIN" >&2
    exit 2
}

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

http_ok() {
    if command -v curl >/dev/null; then
        curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$1/"
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 &&
            head -c 12 <&3 | grep -q ' 200') 2>/dev/null
    fi
}

# `hash-password` prints the `password_hash = "…"` line; the hash is what is between the quotes.
hash_of() {
    printf '%s\n' "$1" | "$BIN" hash-password | sed -n 's/^password_hash = "\(.*\)"$/\1/p'
}

ALICE_HASH=$(hash_of alice-pw)
BOB_HASH=$(hash_of bob-pw)
SAM_HASH=$(hash_of sam-pw)

write_config() {
    cat >"$WORK/config.toml" <<EOF
[server]
http_listen = "127.0.0.1:$HTTP_PORT"
data_dir = "$1"

[sip]
listen = "127.0.0.1:$SIP_PORT"
realm = "switchboard"
min_expires = "10s"
max_expires = "300s"
default_expires = "30s"
trunks = ["127.0.0.1"]
outbound_proxy = "sip:127.0.0.1:$OUTBOUND_PORT"

[resilience]
heartbeat_interval = "60s"
heartbeat_timeout = "180s"

[log]
level = "warn"

[[queues]]
id = "phones"
name = "Phones"
channel = "voice"
offer_timeout = "3s"

[[supervisors]]
id = "sam"
name = "Sam"
password_hash = "$SAM_HASH"

[[agents]]
id = "alice"
name = "Alice"
password_hash = "$ALICE_HASH"
sip_password = "alice-sip"
queues = ["phones"]

[[agents]]
id = "bob"
name = "Bob"
password_hash = "$BOB_HASH"
sip_password = "bob-sip"
queues = ["phones"]
EOF
}

# Start the server; a port taken between the check and the bind just means another try.
started=""
for attempt in 1 2 3 4 5; do
    HTTP_PORT=$(free_port)
    SIP_PORT=$(free_port)
    OUTBOUND_PORT=$(free_port)
    [[ "$HTTP_PORT" != "$SIP_PORT" && "$OUTBOUND_PORT" != "$SIP_PORT" && "$OUTBOUND_PORT" != "$HTTP_PORT" ]] || continue
    write_config "$WORK/data"
    "$BIN" check-config "$WORK/config.toml" >/dev/null
    "$BIN" serve --config "$WORK/config.toml" </dev/null >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            break
        fi
        if http_ok "$HTTP_PORT"; then
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
echo "switchboard pid $SERVER_PID: http 127.0.0.1:$HTTP_PORT, sip udp 127.0.0.1:$SIP_PORT"

failed=0
cd "$WORK"
for scenario in "${SCENARIOS[@]}"; do
    name=$(basename "$scenario" .xml)
    src="$scenario"
    errlog="$WORK/$name.errors.log"
    set +e
    sipp "127.0.0.1:$SIP_PORT" -sf "$src" -inf "$HERE/users.csv" \
        -i 127.0.0.1 -m 2 -l 2 -timeout 20s -timeout_error -max_recv_loops 1000 \
        -trace_err -error_file "$errlog" -nostdin \
        </dev/null >"$WORK/$name.screen.log" 2>&1
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
        echo "PASS $name"
    else
        failed=1
        echo "FAIL $name (sipp exit code $rc)"
        echo "--- sipp errors ($name)"
        cat "$errlog" 2>/dev/null || true
        echo "--- sipp screen ($name)"
        tail -n 60 "$WORK/$name.screen.log" || true
    fi
done

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "FAIL: the server died during the run" >&2
    failed=1
fi
if [[ $failed -ne 0 ]]; then
    echo "--- server log"
    cat "$WORK/server.log"
    exit 1
fi
echo "all ${#SCENARIOS[@]} sipp scenarios passed"

if [[ -n "$CALLS" ]]; then
    # The call stories own their server (they restart it): same ports, a fresh data_dir.
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    write_config "$WORK/calls-data"
    PYTHON=python3
    [[ -x /usr/bin/python3 ]] && PYTHON=/usr/bin/python3
    "$PYTHON" "$HERE/calls.py" --bin "$BIN" --config "$WORK/config.toml" \
        --http "$HTTP_PORT" --sip "$SIP_PORT" --outbound "$OUTBOUND_PORT" --work "$WORK"
fi
