#!/usr/bin/env bash
# Disk full: a real switchboard binary on a small tmpfs (8 MiB) as its data directory, fed
# web-chat messages of 4,000 characters until the store cannot write any more. Passes when
#
# - the server either keeps running and refuses (503 `unavailable`) or exits non-zero with a
#   clear error line, and never panics or answers another 5xx;
# - after the tmpfs is given room (remount, 64 MiB) and the server restarted on the same data
#   directory, every message that was acknowledged (2xx) is in its chat's transcript, and
#   new messages are accepted again.
#
#   tests/disk_full.sh BINARY
#
# Needs root allowed to mount a tmpfs; otherwise prints "skipped" and exits 0. Needs python3 and
# no terminal (CI).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 BINARY" >&2
    exit 2
fi
BIN=$(realpath "$1")
[[ -x "$BIN" ]] || {
    echo "not an executable: $BIN" >&2
    exit 2
}
if [[ $(id -u) -ne 0 ]]; then
    echo "skipped: mounting the small tmpfs needs root"
    exit 0
fi

WORK=$(mktemp -d)
DATA="$WORK/data"
SERVER_PID=""
MOUNTED=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    [[ -z "$MOUNTED" ]] || umount "$DATA" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$DATA"
if ! mount -t tmpfs -o size=8m,mode=0700 tmpfs "$DATA"; then
    echo "skipped: this machine does not let root mount a tmpfs (no CAP_SYS_ADMIN?)"
    exit 0
fi
MOUNTED=yes

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/config.toml" <<EOF
[server]
http_listen = "127.0.0.1:$PORT"
data_dir = "$DATA"

[sip]
enabled = false

[log]
level = "warn"

[limits]
chats_per_minute = 100000
customer_messages_per_minute = 100000
snapshot_messages = 1000

[[queues]]
id = "support"
name = "Support"
channel = "chat"
EOF
"$BIN" check-config "$WORK/config.toml" >/dev/null

start_server() {
    "$BIN" serve --config "$WORK/config.toml" </dev/null >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "FAIL: the server exited while starting:" >&2
            cat "$WORK/server.log" >&2
            exit 1
        fi
        if python3 - "$PORT" <<'EOF' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1).read()
EOF
            return 0
        fi
        sleep 0.1
    done
    echo "FAIL: the server did not become ready within 20 s:" >&2
    cat "$WORK/server.log" >&2
    exit 1
}

# The traffic: new chats, each fed up to 150 messages; every acknowledged message is written
# to acked.tsv (chat token, text). Stops after 20 answers in a row that are not 2xx (or no
# answer), or fails after 120 s without the disk filling.
traffic() {
    python3 - "$PORT" "$WORK/acked.tsv" <<'EOF'
import json, sys, time, urllib.request, urllib.error
port, acked_path = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}/api/v1"
pad = "x" * 3900

def call(method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except Exception:
        return None, None

statuses = {}
acked = open(acked_path, "a")
token, in_chat, failures, n = None, 0, 0, 0
started = time.monotonic()
while failures < 20:
    if time.monotonic() - started > 120:
        print("FAIL: the disk did not fill within 120 s", file=sys.stderr)
        sys.exit(1)
    if token is None or in_chat >= 150:
        status, body = call("POST", "/chats", {"queue": "support", "name": f"customer {n}"})
        statuses[status] = statuses.get(status, 0) + 1
        if status == 201:
            token, in_chat, failures = body["token"], 0, 0
        else:
            failures += 1
            time.sleep(0.05)
        continue
    n += 1
    text = f"m{n} {pad}"
    status, body = call("POST", "/chat/messages", {"text": text}, token)
    statuses[status] = statuses.get(status, 0) + 1
    if status is not None and 200 <= status < 300:
        acked.write(f"{token}\t{text.split()[0]}\n")
        acked.flush()
        in_chat += 1
        failures = 0
    else:
        failures += 1
        time.sleep(0.05)
print("answers:", {str(k): v for k, v in statuses.items()})
bad = [s for s in statuses if s is not None and s >= 500 and s != 503]
if bad:
    print(f"FAIL: answers other than 503 among the errors: {bad}", file=sys.stderr)
    sys.exit(1)
EOF
}

start_server
traffic
ACKED=$(wc -l <"$WORK/acked.tsv")
df -h "$DATA" | tail -n 1

# The server either still runs and refuses, or has exited with an error.
for _ in $(seq 1 50); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$SERVER_PID" 2>/dev/null; then
    OUTCOME="kept running, refusing writes"
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
else
    set +e
    wait "$SERVER_PID"
    CODE=$?
    set -e
    if [[ $CODE -eq 0 ]]; then
        echo "FAIL: the server exited with status 0 on a full disk:" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    if ! grep -qi "no space\|space left\|store" "$WORK/server.log"; then
        echo "FAIL: the server exited ($CODE) without saying why:" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    OUTCOME="exited with status $CODE: $(grep -i 'no space\|space left\|store' "$WORK/server.log" | tail -n 1)"
fi
SERVER_PID=""
if grep -q "panicked" "$WORK/server.log"; then
    echo "FAIL: the server panicked:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi

# Room again, same data directory: everything acknowledged is there, and writes work.
mount -o remount,size=64m "$DATA"
start_server
python3 - "$PORT" "$WORK/acked.tsv" <<'EOF'
import json, sys, urllib.request
port, acked_path = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}/api/v1"
by_token = {}
for line in open(acked_path):
    token, mark = line.rstrip("\n").split("\t")
    by_token.setdefault(token, set()).add(mark)

def call(method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())

missing = 0
for token, marks in by_token.items():
    _, chat = call("GET", "/chat", token)
    stored = {m["text"].split()[0] for m in chat["messages"] if m.get("text")}
    lost = marks - stored
    missing += len(lost)
    if lost:
        print(f"FAIL: acknowledged but missing: {sorted(lost)[:5]} ...", file=sys.stderr)
if missing:
    sys.exit(1)
last = next(iter(by_token))
status, _ = call("POST", "/chat/messages", last, {"text": "after the disk was given room"})
assert 200 <= status < 300, status
print(f"after restart: {sum(map(len, by_token.values()))} acknowledged messages in "
      f"{len(by_token)} chats all present; writes accepted again")
EOF
if grep -q "panicked" "$WORK/server.log"; then
    echo "FAIL: the server panicked after the restart:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
echo "disk_full: $ACKED acknowledged on an 8 MiB store; the server $OUTCOME; nothing lost"
