#!/usr/bin/env bash
# Load test of the SIP registrar: digest-authenticated REGISTERs from sipp (Debian sip-tester)
# against a release switchboard binary, and the same load against Kamailio as the baseline.
#
#   benches/sip_load.sh BINARY
#
# Environment (all optional):
#   AGENTS=500        distinct agents (users.csv lines; 500 is the product's upper end)
#   DURATION=25       seconds of the measured run (after a short warm-up)
#   CONCURRENCY=200   most registrations in flight at once (sipp -l)
#   RATE=40000        sipp's offered rate in calls/s; the in-flight limit is what binds
#   KAMAILIO=auto     auto = run the baseline if kamailio is installed; skip = don't
#
# One sipp "call" is one registration: REGISTER → 401 → REGISTER with credentials → 200, i.e.
# two REGISTER transactions. Reported per server: authenticated registrations/s, REGISTER
# transactions/s, failed calls, retransmissions, and the server's CPU seconds (utime + stime
# from /proc/PID/stat) per 1000 registrations. Prints a Markdown table at the end.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 BINARY" >&2
    exit 2
fi
BIN=$(realpath "$1")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIO="$ROOT/tests/sip/register_auth.xml"
AGENTS=${AGENTS:-500}
DURATION=${DURATION:-25}
CONCURRENCY=${CONCURRENCY:-200}
RATE=${RATE:-40000}
KAMAILIO=${KAMAILIO:-auto}
TICKS=$(getconf CLK_TCK)

command -v sipp >/dev/null || {
    echo "sipp not found: apt-get install -y sip-tester" >&2
    exit 2
}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

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
    return 1
}

# utime + stime of a process (and its reaped children), in clock ticks.
cpu_ticks() {
    local total=0 stat
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat")
        stat=${stat##*) }
        # After "pid (comm) ": field 3 is state; utime, stime, cutime, cstime are 14..17.
        read -r -a f <<<"$stat"
        total=$((total + f[11] + f[12] + f[13] + f[14]))
    done
    echo "$total"
}

now_s() { date +%s.%N; }

# Users: a0001 … with SIP password sip-a0001 …
{
    echo "SEQUENTIAL"
    for i in $(seq 1 "$AGENTS"); do
        printf 'a%04d;sip-a%04d\n' "$i" "$i"
    done
} >"$WORK/users.csv"

# run_load NAME SIP_PORT PID... : warm-up, then the measured run; appends a result row.
RESULTS=()
run_load() {
    local name=$1 port=$2
    shift 2
    local common=(-sf "$SCENARIO" -inf "$WORK/users.csv" -i 127.0.0.1 -buff_size 4194304
        -nostdin -timeout 120s -max_recv_loops 1000 -max_sched_loops 1000
        -r "$RATE" -l "$CONCURRENCY")
    # Warm-up: every agent registers a few times.
    sipp "127.0.0.1:$port" "${common[@]}" -m $((AGENTS * 4)) </dev/null >"$WORK/$name.warm.log" 2>&1 || {
        echo "$name: warm-up failed" >&2
        tail -n 40 "$WORK/$name.warm.log" >&2
        return 1
    }
    # The measured run: as many registrations as the server takes for DURATION seconds; then
    # SIGUSR1 tells sipp to start no new call and to exit once the calls in flight are done.
    local c0 c1 t0 t1
    c0=$(cpu_ticks "$@")
    t0=$(now_s)
    sipp "127.0.0.1:$port" "${common[@]}" -m 100000000 -trace_stat -stf "$WORK/$name.stat.csv" \
        -fd 60 -trace_err -error_file "$WORK/$name.errors.log" </dev/null >"$WORK/$name.run.log" 2>&1 &
    local sp=$!
    sleep "$DURATION"
    kill -USR1 "$sp" 2>/dev/null || true
    local rc=0
    wait "$sp" || rc=$?
    t1=$(now_s)
    c1=$(cpu_ticks "$@")
    local stat="$WORK/$name.stat.csv"
    col() { # the last value of column $1 of sipp's stat file
        awk -F';' -v want="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) c = i }
            END { print $c }' "$stat"
    }
    local ok failed retrans
    ok=$(col 'SuccessfulCall(C)')
    failed=$(col 'FailedCall(C)')
    retrans=$(col 'Retransmissions(C)')
    awk -v name="$name" -v ok="$ok" -v failed="$failed" -v re="$retrans" -v a="$t0" -v b="$t1" \
        -v c0="$c0" -v c1="$c1" -v hz="$TICKS" -v rc="$rc" 'BEGIN {
            secs = b - a; cpu = (c1 - c0) / hz
            printf "| %s | %d | %.1f | %d | %d | %d | %.0f | %.0f | %.2f | %.3f |\n",
                name, ok, secs, failed, re, rc, ok / secs, 2 * ok / secs, cpu,
                (ok > 0 ? cpu * 1000 / ok : 0)
        }' >>"$WORK/results.md"
    tail -n 1 "$WORK/results.md"
    if [[ -s "$WORK/$name.errors.log" ]]; then
        echo "$name: sipp errors (first lines; full log kept as ${KEEP:-\$KEEP}/$name.errors.log):"
        grep -E 'Aborting|unexpected|timeout|Dead call' "$WORK/$name.errors.log" | cut -c1-220 | head -n 5 || true
        if [[ -n "${KEEP:-}" ]]; then
            cp "$WORK/$name.errors.log" "$KEEP/"
        fi
    fi
}

# --- switchboard
HTTP_PORT=$(free_port)
SIP_PORT=$(free_port)
HASH=$(printf 'bench-pw\n' | "$BIN" hash-password | sed -n 's/^password_hash = "\(.*\)"$/\1/p')
{
    cat <<EOF
[server]
http_listen = "127.0.0.1:$HTTP_PORT"
data_dir = "$WORK/data"

[sip]
listen = "127.0.0.1:$SIP_PORT"
realm = "switchboard"

[log]
level = "warn"

[[queues]]
id = "phones"
name = "Phones"
channel = "voice"
EOF
    for i in $(seq 1 "$AGENTS"); do
        printf '\n[[agents]]\nid = "a%04d"\nname = "Agent %d"\npassword_hash = "%s"\n' \
            "$i" "$i" "$HASH"
        printf 'sip_password = "sip-a%04d"\nqueues = ["phones"]\n' "$i"
    done
} >"$WORK/switchboard.toml"
"$BIN" serve --config "$WORK/switchboard.toml" </dev/null >"$WORK/switchboard.log" 2>&1 &
SB=$!
PIDS+=("$SB")
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HTTP_PORT/" && break
    sleep 0.1
done
echo "switchboard pid $SB on udp 127.0.0.1:$SIP_PORT ($AGENTS agents)"
run_load switchboard "$SIP_PORT" "$SB"
kill "$SB"
wait "$SB" 2>/dev/null || true
echo "switchboard database after the run: $(du -h "$WORK/data/switchboard.redb" | cut -f1)"

# --- Kamailio: db_text subscriber table, usrloc in memory, 2 UDP workers
KAM=$(command -v kamailio || true)
if [[ "$KAMAILIO" != skip && -n "$KAM" ]]; then
    KPORT=$(free_port)
    mkdir -p "$WORK/kamdb"
    printf 'id(int,auto) table_name(string) table_version(int) \n0:subscriber:7\n' \
        >"$WORK/kamdb/version"
    {
        echo 'id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null) '
        for i in $(seq 1 "$AGENTS"); do
            printf '%d:a%04d:switchboard:sip-a%04d:::\n' "$i" "$i" "$i"
        done
    } >"$WORK/kamdb/subscriber"
    MPATH=$(dirname "$(find /usr/lib -name auth_db.so -path '*kamailio*' | head -n 1)")
    cat >"$WORK/kamailio.cfg" <<EOF
#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=2
auto_aliases=no
# The same 4 MiB receive buffer switchboard asks for (Kamailio probes up to this size).
maxbuffer=4194304
listen=udp:127.0.0.1:$KPORT
mpath="$MPATH/"
loadmodule "db_text.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("usrloc", "db_mode", 0)
modparam("auth_db", "db_url", "text://$WORK/kamdb")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
modparam("registrar", "min_expires", 10)
modparam("registrar", "max_expires", 30)
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (method == "REGISTER") {
        if (!www_authorize("switchboard", "subscriber")) {
            www_challenge("switchboard", "1");
            exit;
        }
        if (!save("location")) { sl_reply_error(); }
        exit;
    }
    if (method == "OPTIONS") { sl_send_reply("200", "OK"); exit; }
    sl_send_reply("405", "Method Not Allowed");
}
EOF
    "$KAM" -c -f "$WORK/kamailio.cfg" >"$WORK/kamailio.check.log" 2>&1 || {
        echo "kamailio config check failed:" >&2
        cat "$WORK/kamailio.check.log" >&2
        exit 1
    }
    "$KAM" -DD -E -f "$WORK/kamailio.cfg" -P "$WORK/kamailio.pid" -m 256 -M 32 -Y "$WORK" -w "$WORK" \
        </dev/null >"$WORK/kamailio.log" 2>&1 &
    KP=$!
    PIDS+=("$KP")
    sleep 2
    # Every process of the Kamailio instance (main, UDP workers, timers).
    KPIDS=("$KP")
    for p in $(pgrep -P "$KP" || true); do KPIDS+=("$p"); done
    echo "kamailio pid $KP (${#KPIDS[@]} processes) on udp 127.0.0.1:$KPORT"
    run_load kamailio "$KPORT" "${KPIDS[@]}"
    kill "$KP"
    wait "$KP" 2>/dev/null || true
else
    echo "kamailio: not run (KAMAILIO=$KAMAILIO, binary: ${KAM:-not installed})"
fi

echo
echo "| server | registrations | seconds | failed | retransmissions | sipp exit | registrations/s | REGISTER transactions/s | server CPU s | CPU s per 1000 registrations |"
echo "|---|---|---|---|---|---|---|---|---|---|"
cat "$WORK/results.md"
