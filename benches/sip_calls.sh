#!/usr/bin/env bash
# Calls per second through switchboard as a SIP proxy, and the same calls through Kamailio as a
# plain stateful proxy, in one run.
#
#   benches/sip_calls.sh BINARY
#
# Environment (all optional):
#   AGENTS=500        agents, each with a phone registered with digest authentication (500 is
#                     the product's upper end)
#   RATES="100 300 500"  call rates tried, in calls per second (sipp -r), one after the other
#   DURATION=20       seconds of calls placed at each rate
#   TALK_MS=500       how long each call lasts once answered, in milliseconds, before the
#                     caller hangs up (the phone rings 300 ms before answering)
#   IDLE=5            seconds over which each server's CPU use is measured with no call
#   KAMAILIO=auto     auto = run the baseline if kamailio is installed; skip = don't
#   KEEP=DIR          copy every log and sipp statistics file there at the end
#
# An agent holds a call from the offer (the phone rings) to the completed wrap-up, so AGENTS
# agents take at most about AGENTS ÷ (0.3 s + TALK_MS) calls per second: beyond that calls
# wait in the queue and the setup time grows. Kamailio has no such limit (any number of calls
# may ring one contact).
#
# Needs sipp (Debian sip-tester), python3-websockets, curl and, for the baseline, kamailio.
#
# switchboard: a generated config with AGENTS agents (a0001…) in the voice queue `phones`,
# loopback as the trunk. One sipp UAS (tests/sip/phone_answer.xml) plays every agent's phone:
# each agent registers (benches/sip_calls/register.xml) a contact on that sipp's port. A
# python3 driver (benches/sip_calls/panels.py) logs every agent in, holds their panel
# WebSockets, sets them ready and completes each call's wrap-up as soon as it starts, so the
# agent can take the next call. The trunk (benches/sip_calls/trunk.xml) places DURATION × RATE
# calls to `sip:phones@…` at RATE per second; switchboard queues each call, offers it to a
# ready agent, rings the phone, relays the answer, and ends it on the caller's BYE.
#
# Kamailio: tm + rr + registrar/usrloc (in memory) + auth_db (db_text), 2 UDP workers, the same
# 4 MiB receive buffer. The same phones register to it with the same scenario, the same trunk
# scenario calls `sip:a0001@…`, `sip:a0002@…`… in turn, and Kamailio relays each call to the
# registered contact, record-routing it.
#
# Per server and rate: calls completed, calls/s (completed ÷ the time from the first INVITE to
# the last BYE's 200, less one mean call length), failed calls and retransmissions (trunk and
# phones), mean call setup time (INVITE to 200, including the 300 ms of ringing), mean BYE →
# 200 time and the server's CPU seconds (utime + stime from /proc/PID/stat, every Kamailio
# process) per 1000 calls over the same window; for switchboard also its store commits and
# records written per call (/metrics).
# Prints a Markdown table at the end; exits non-zero if any call failed.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 BINARY" >&2
    exit 2
fi
BIN=$(realpath "$1")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/benches/sip_calls"
PHONE="$ROOT/tests/sip/phone_answer.xml"
AGENTS=${AGENTS:-500}
RATES=${RATES:-"100 300 500"}
DURATION=${DURATION:-20}
TALK_MS=${TALK_MS:-500}
KAMAILIO=${KAMAILIO:-auto}
IDLE=${IDLE:-5}
TICKS=$(getconf CLK_TCK)
PYTHON=python3
[[ -x /usr/bin/python3 ]] && PYTHON=/usr/bin/python3

command -v sipp >/dev/null || {
    echo "sipp not found: apt-get install -y sip-tester" >&2
    exit 2
}
command -v curl >/dev/null || {
    echo "curl not found: apt-get install -y curl" >&2
    exit 2
}
"$PYTHON" -c 'import websockets' 2>/dev/null || {
    echo "python3 websockets not found: apt-get install -y python3-websockets" >&2
    exit 2
}
[[ -x "$BIN" ]] || {
    echo "not an executable: $BIN" >&2
    exit 2
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ -n "${KEEP:-}" ]]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ && echo "logs kept in $KEEP"
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
    return 1
}

# utime + stime of processes (and their reaped children), in clock ticks.
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

# The last value of column $2 of sipp's stat file $1 (empty if there is no such column).
stat_col() {
    [[ -s "$1" ]] || {
        echo 0
        return
    }
    awk -F';' -v want="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) c = i }
        END { if (c) print $c }' "$1"
}

# sipp's mean response time column "HH:MM:SS:uuuuuu" in milliseconds.
to_ms() {
    awk -F: '{ printf "%.0f", ($1 * 3600 + $2 * 60 + $3) * 1000 + $4 / 1000 }' <<<"$1"
}

SIPP_COMMON=(-i 127.0.0.1 -buff_size 4194304 -nostdin -max_recv_loops 1000 -max_sched_loops 1000)

# Users: a0001 … with SIP password sip-a0001 …
AGENT_IDS=()
{
    echo "SEQUENTIAL"
    for i in $(seq 1 "$AGENTS"); do
        printf 'a%04d;sip-a%04d\n' "$i" "$i"
        AGENT_IDS+=("$(printf 'a%04d' "$i")")
    done
} >"$WORK/users.csv"
for i in $(seq 1 "$AGENTS"); do
    printf 'a%04d\n' "$i"
done | { echo SEQUENTIAL; cat; } >"$WORK/agents.csv"
for i in $(seq 1 "$AGENTS"); do echo "phones"; done | { echo SEQUENTIAL; cat; } >"$WORK/queue.csv"

# start_phones NAME: one sipp UAS answering for every agent's phone on PHONE_PORT.
start_phones() {
    PHONE_PORT=$(free_port)
    sipp -sf "$PHONE" -p "$PHONE_PORT" "${SIPP_COMMON[@]}" -trace_stat -stf "$WORK/$1.phones.stat.csv" \
        -fd 1 -trace_err -error_file "$WORK/$1.phones.errors.log" </dev/null >"$WORK/$1.phones.log" 2>&1 &
    PHONES=$!
    PIDS+=("$PHONES")
    sleep 0.5
    kill -0 "$PHONES" || {
        echo "$1: the phones' sipp did not start" >&2
        cat "$WORK/$1.phones.log" >&2
        exit 1
    }
}

# register NAME PORT: every agent's phone registers its contact on PHONE_PORT.
register() {
    sipp "127.0.0.1:$2" -sf "$HERE/register.xml" -inf "$WORK/users.csv" "${SIPP_COMMON[@]}" \
        -key phone_port "$PHONE_PORT" -key expires 600 -m "$AGENTS" -r 200 -l 50 \
        -timeout 60s -timeout_error -trace_err -error_file "$WORK/$1.register.errors.log" \
        </dev/null >"$WORK/$1.register.log" 2>&1 || {
        echo "$1: registering the phones failed" >&2
        tail -n 40 "$WORK/$1.register.log" "$WORK/$1.register.errors.log" >&2
        exit 1
    }
}

# stop_phones NAME: the phones' sipp finishes its calls and exits; prints "failed retransmissions".
stop_phones() {
    kill -USR1 "$PHONES" 2>/dev/null || true
    wait "$PHONES" 2>/dev/null || true
    local stat="$WORK/$1.phones.stat.csv"
    echo "$(stat_col "$stat" 'FailedCall(C)') $(stat_col "$stat" 'Retransmissions(C)')"
}

# idle_cpu NAME PID...: the server's CPU use with everything set up and no call, over IDLE s.
idle_cpu() {
    local name=$1 c0 c1
    shift
    c0=$(cpu_ticks "$@")
    sleep "$IDLE"
    c1=$(cpu_ticks "$@")
    awk -v n="$name" -v c0="$c0" -v c1="$c1" -v hz="$TICKS" -v s="$IDLE" \
        'BEGIN { printf "%s idle: %.3f CPU s per second\n", n, (c1 - c0) / hz / s }' | tee -a "$WORK/idle.txt"
}

# switchboard's store counters from /metrics: "commits records_written commit_seconds".
store_counters() {
    curl -fsS --max-time 5 "http://127.0.0.1:$HTTP_PORT/metrics" | awk '
        $1 == "switchboard_commits_total" { k = $2 }
        $1 == "switchboard_store_writes_total" { w = $2 }
        $1 == "switchboard_commit_seconds_total" { s = $2 }
        END { print k + 0, w + 0, s + 0 }'
}

# run_calls NAME SERVER_LABEL PORT TARGETS RATE PID...: one measured run of calls at RATE;
# appends a result row.
FAILED_TOTAL=0
run_calls() {
    local name=$1 label=$2 port=$3 targets=$4 rate=$5
    shift 5
    local calls=$((rate * DURATION)) run="$name-$rate"
    local c0 c1 t0 t1 rc=0 m0="" m1=""
    [[ $name != switchboard ]] || m0=$(store_counters)
    c0=$(cpu_ticks "$@")
    t0=$(now_s)
    sipp "127.0.0.1:$port" -sf "$HERE/trunk.xml" -inf "$targets" "${SIPP_COMMON[@]}" \
        -r "$rate" -m "$calls" -l $((rate * 40 + 100)) -d "$TALK_MS" -timeout $((DURATION + 90))s \
        -trace_stat -stf "$WORK/$run.stat.csv" -fd 60 \
        -trace_err -error_file "$WORK/$run.errors.log" </dev/null >"$WORK/$run.log" 2>&1 || rc=$?
    t1=$(now_s)
    c1=$(cpu_ticks "$@")
    [[ $name != switchboard ]] || m1=$(store_counters)
    local stat="$WORK/$run.stat.csv" ok failed retrans setup bye
    ok=$(stat_col "$stat" 'SuccessfulCall(C)')
    failed=$(stat_col "$stat" 'FailedCall(C)')
    retrans=$(stat_col "$stat" 'Retransmissions(C)')
    setup=$(to_ms "$(stat_col "$stat" 'ResponseTimesetup(C)')")
    bye=$(to_ms "$(stat_col "$stat" 'ResponseTimebye(C)')")
    FAILED_TOTAL=$((FAILED_TOTAL + failed + calls - ok - failed))
    awk -v label="$label" -v rate="$rate" -v calls="$calls" -v ok="$ok" -v failed="$failed" \
        -v re="$retrans" -v a="$t0" -v b="$t1" -v c0="$c0" -v c1="$c1" -v hz="$TICKS" \
        -v rc="$rc" -v setup="$setup" -v bye="$bye" -v talk="$TALK_MS" 'BEGIN {
            secs = b - a; cpu = (c1 - c0) / hz
            # The run ends one call length after the last call was placed.
            placing = secs - (setup + talk + bye) / 1000
            printf "| %s | %d | %s | %d | %.1f | %.1f | %d | %d | %d | %d | %.2f | %.3f |\n",
                rate, calls, label, ok, secs, ok / placing, failed, re, setup, bye, cpu,
                (ok > 0 ? cpu * 1000 / ok : 0)
        }' >>"$WORK/results.md"
    tail -n 1 "$WORK/results.md"
    if [[ -n "$m0" ]]; then
        read -r k0 w0 s0 <<<"$m0"
        read -r k1 w1 s1 <<<"$m1"
        awk -v rate="$rate" -v ok="$ok" -v k="$((k1 - k0))" -v w="$((w1 - w0))" -v s0="$s0" -v s1="$s1" \
            'BEGIN { if (ok > 0) printf "switchboard at %s calls/s: %.2f commits (fsyncs) and %.1f records written per call, %.1f ms per commit\n",
                rate, k / ok, w / ok, (k > 0 ? (s1 - s0) * 1000 / k : 0) }' | tee -a "$WORK/store.txt"
    fi
    if [[ $rc -ne 0 || "$ok" != "$calls" ]]; then
        echo "$run: sipp exit $rc, $ok of $calls calls completed; sipp errors (first lines):"
        grep -E 'Aborting|unexpected|timeout|Dead call|Failed' "$WORK/$run.errors.log" 2>/dev/null |
            cut -c1-220 | head -n 8 || true
        tail -n 5 "$WORK/$run.log"
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
trunks = ["127.0.0.1"]
max_expires = "600s"
# Above the calls in progress at the highest rate tried, so that 503 is not what is measured.
max_calls = 5000

[limits]
login_per_minute = $((AGENTS + 10))

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
"$BIN" check-config "$WORK/switchboard.toml" >/dev/null
"$BIN" serve --config "$WORK/switchboard.toml" </dev/null >"$WORK/switchboard.log" 2>&1 &
SB=$!
PIDS+=("$SB")
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HTTP_PORT/" && break
    sleep 0.1
done
echo "switchboard pid $SB: http 127.0.0.1:$HTTP_PORT, sip udp 127.0.0.1:$SIP_PORT ($AGENTS agents)"
start_phones switchboard
register switchboard "$SIP_PORT"
"$PYTHON" "$HERE/panels.py" --http "$HTTP_PORT" --password bench-pw "${AGENT_IDS[@]}" \
    </dev/null >"$WORK/panels.out.log" 2>"$WORK/panels.err.log" &
PANELS=$!
PIDS+=("$PANELS")
for _ in $(seq 1 600); do
    grep -qx ready "$WORK/panels.out.log" 2>/dev/null && break
    kill -0 "$PANELS" 2>/dev/null || break
    sleep 0.1
done
grep -qx ready "$WORK/panels.out.log" || {
    echo "the panels did not get ready:" >&2
    cat "$WORK/panels.err.log" "$WORK/panels.out.log" >&2
    exit 1
}
echo "phones registered on udp 127.0.0.1:$PHONE_PORT; $AGENTS panels open, agents ready"
idle_cpu switchboard "$SB"
SB_OK=0
for rate in $RATES; do
    run_calls switchboard switchboard "$SIP_PORT" "$WORK/queue.csv" "$rate" "$SB"
    SB_OK=$((SB_OK + $(tail -n 1 "$WORK/results.md" | awk -F'|' '{ print $5 }')))
    # The last calls' wrap-ups are completed before the next rate starts.
    sleep 2
done
read -r PH_FAILED PH_RETRANS <<<"$(stop_phones switchboard)"
echo "the panels' driver used $(awk -v t="$(cpu_ticks "$PANELS")" -v hz="$TICKS" 'BEGIN { printf "%.1f", t / hz }') CPU s"
kill -TERM "$PANELS"
wait "$PANELS" 2>/dev/null || true
PANEL_COUNTS=$(tail -n 1 "$WORK/panels.out.log")
echo "switchboard phones: $PH_FAILED failed calls, $PH_RETRANS retransmissions"
echo "panels: $PANEL_COUNTS"
if [[ -s "$WORK/panels.err.log" ]]; then
    echo "panel errors (first lines):"
    head -n 5 "$WORK/panels.err.log"
fi
COMPLETED=$(sed -n 's/.*"completed": \([0-9]*\).*/\1/p' <<<"$PANEL_COUNTS")
if [[ "$COMPLETED" != "$SB_OK" ]]; then
    echo "switchboard: $SB_OK calls completed, but $COMPLETED wrap-ups completed" >&2
    FAILED_TOTAL=$((FAILED_TOTAL + 1))
fi
FAILED_TOTAL=$((FAILED_TOTAL + PH_FAILED))
kill "$SB"
wait "$SB" 2>/dev/null || true
echo "switchboard database after the runs: $(du -h "$WORK/data/switchboard.redb" | cut -f1)"
if grep -qiE 'error|panic' "$WORK/switchboard.log"; then
    echo "switchboard log (errors):"
    grep -iE 'error|panic' "$WORK/switchboard.log" | head -n 5
fi

# --- Kamailio: tm, rr, registrar/usrloc in memory, auth_db on db_text, 2 UDP workers
KAM=$(command -v kamailio || true)
KAM_VERSION=""
if [[ "$KAMAILIO" != skip && -n "$KAM" ]]; then
    KAM_VERSION=$("$KAM" -v | sed -n 's/^version: kamailio \([^ ]*\).*/\1/p')
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
    MPATH=$(dirname "$(find /usr/lib -name tm.so -path '*kamailio*' | head -n 1)")
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
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
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
modparam("registrar", "max_expires", 600)
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    # In-dialog requests (ACK, BYE) follow the recorded route.
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
        sl_send_reply("404", "Not Here");
        exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }
    # A retransmission of a request in a transaction is absorbed by tm.
    if (!is_method("ACK")) { t_check_trans(); }
    if (is_method("REGISTER")) {
        if (!www_authorize("switchboard", "subscriber")) {
            www_challenge("switchboard", "1");
            exit;
        }
        if (!save("location")) { sl_reply_error(); }
        exit;
    }
    if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; }
    if (!is_method("INVITE")) { sl_send_reply("405", "Method Not Allowed"); exit; }
    # Calls come in from the trunk only, as switchboard's sip.trunks.
    if (\$si != "127.0.0.1") { sl_send_reply("403", "Forbidden"); exit; }
    if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
    record_route();
    if (!t_relay()) { sl_reply_error(); }
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
    for f in /proc/[0-9]*/stat; do
        line=$(cat "$f" 2>/dev/null) || continue
        read -r -a x <<<"${line##*) }"
        # After "pid (comm) ": state, then the parent's pid.
        [[ "${x[1]}" != "$KP" ]] || { f=${f#/proc/}; KPIDS+=("${f%/stat}"); }
    done
    echo "kamailio $KAM_VERSION pid $KP (${#KPIDS[@]} processes) on udp 127.0.0.1:$KPORT"
    start_phones kamailio
    register kamailio "$KPORT"
    echo "phones registered on udp 127.0.0.1:$PHONE_PORT"
    idle_cpu kamailio "${KPIDS[@]}"
    for rate in $RATES; do
        run_calls kamailio "Kamailio $KAM_VERSION" "$KPORT" "$WORK/agents.csv" "$rate" "${KPIDS[@]}"
        sleep 2
    done
    read -r PH_FAILED PH_RETRANS <<<"$(stop_phones kamailio)"
    echo "kamailio phones: $PH_FAILED failed calls, $PH_RETRANS retransmissions"
    FAILED_TOTAL=$((FAILED_TOTAL + PH_FAILED))
    kill "$KP"
    wait "$KP" 2>/dev/null || true
else
    echo "kamailio: not run (KAMAILIO=$KAMAILIO, binary: ${KAM:-not installed})"
fi

echo
echo "load average at the start: $LOAD_START"
echo "$AGENTS agents, $DURATION s of calls per rate, ${TALK_MS} ms of talk, sipp $(sipp -v 2>/dev/null | sed -n 's/.*SIPp v\([0-9.]*\).*/\1/p')"
echo
cat "$WORK/idle.txt"
cat "$WORK/store.txt" 2>/dev/null || true
echo
echo "| calls/s offered | calls | server | completed | seconds | calls/s completed | failed | retransmissions | setup ms (mean) | BYE ms (mean) | server CPU s | CPU s per 1000 calls |"
echo "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
sort -t'|' -k2,2n -s "$WORK/results.md"
# switchboard ÷ Kamailio per rate: calls/s completed, CPU s per 1000 calls, setup time.
awk -F'|' '{ gsub(/ /, "", $4) }
    $4 == "switchboard" { r[$2] = $7; c[$2] = $13; s[$2] = $10 }
    $4 != "switchboard" && ($2 in r) && $7 > 0 && $13 > 0 {
        printf "rate %s/s: switchboard / Kamailio = %.2f × the calls/s, %.2f × the CPU per call, %.2f × the setup time\n",
            $2 + 0, r[$2] / $7, c[$2] / $13, s[$2] / $10 }' "$WORK/results.md"
if [[ $FAILED_TOTAL -ne 0 ]]; then
    echo "FAILED: $FAILED_TOTAL failed or missing calls (see above)" >&2
    exit 1
fi
