#!/usr/bin/env python3
"""Starts a switchboard binary the way systemd does and checks it behaves as a service.

For each run: a temporary config (loopback, port 0) and data directory, a notify socket
($NOTIFY_SOCKET) and a watchdog ($WATCHDOG_USEC); waits for READY=1 and measures the time
from exec to it; fetches / over HTTP; idles, then reads the resident memory; sends SIGHUP
(expects RELOADING=1 then READY=1) and SIGTERM (expects STOPPING=1 and exit code 0).

Prints `ready_ms=`, `idle_rss_kib=` and `watchdog_pings=` lines (the median start-up time over
the runs, the last run's RSS). Exits non-zero, with the server's log, on any failure.
Usage: servecheck.py BINARY [--runs N] [--idle SECONDS]
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CONFIG = """\
[server]
http_listen = "127.0.0.1:0"
data_dir = "{data}"

[sip]
listen = "127.0.0.1:0"
"""


class Failure(Exception):
    pass


def expect(sock, wanted, timeout, seen):
    """Reads notify datagrams until one holds `wanted` (e.g. "READY=1"); returns it."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure(f"no {wanted} within {timeout}s (got {seen})")
        sock.settimeout(left)
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            continue
        seen.append(msg.replace("\n", " | "))
        if wanted in msg.split("\n"):
            return msg


def one_run(binary, idle, tmp):
    data = os.path.join(tmp, "data")
    cfg = os.path.join(tmp, "config.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(data=data))
    notify_path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    log_path = os.path.join(tmp, "server.log")
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="500000")
    env.pop("JOURNAL_STREAM", None)
    seen = []
    with open(log_path, "w") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            [binary, "serve", "--config", cfg], env=env, stdout=log, stderr=log
        )
        try:
            ready = expect(sock, "READY=1", 30, seen)
            ready_ms = (time.monotonic() - started) * 1000
            status = [l for l in ready.split("\n") if l.startswith("STATUS=serving ")]
            if not status:
                raise Failure(f"READY=1 without the serving address: {ready!r}")
            url = status[0].split(" ", 1)[1]
            with urllib.request.urlopen(url + "/", timeout=10) as resp:
                if resp.status != 200:
                    raise Failure(f"GET / answered {resp.status}")
            time.sleep(idle)
            rss = None
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
            pings = sum(1 for m in seen if "WATCHDOG=1" in m)
            # Collect the pings that arrived while idling.
            sock.settimeout(0.01)
            try:
                while True:
                    m = sock.recv(4096).decode()
                    seen.append(m.replace("\n", " | "))
                    pings += "WATCHDOG=1" in m.split("\n")
            except (socket.timeout, BlockingIOError):
                pass
            if idle >= 1 and pings == 0:
                raise Failure("no WATCHDOG=1 while idle")
            proc.send_signal(signal.SIGHUP)
            expect(sock, "RELOADING=1", 10, seen)
            expect(sock, "READY=1", 10, seen)
            proc.send_signal(signal.SIGTERM)
            expect(sock, "STOPPING=1", 10, seen)
            code = proc.wait(timeout=30)
            if code != 0:
                raise Failure(f"exit code {code} after SIGTERM")
            return ready_ms, rss, pings
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            sock.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=2.0)
    args = ap.parse_args()
    times = []
    rss = pings = None
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="switchboard-check-") as tmp:
            try:
                ready_ms, rss, pings = one_run(os.path.abspath(args.binary), args.idle, tmp)
            except (Failure, OSError, subprocess.TimeoutExpired) as e:
                print(f"servecheck: run {i + 1}: {e}", file=sys.stderr)
                try:
                    with open(os.path.join(tmp, "server.log")) as f:
                        sys.stderr.write(f.read())
                except OSError:
                    pass
                return 1
            times.append(ready_ms)
    print(f"ready_ms={statistics.median(times):.1f}")
    print(f"ready_ms_all={','.join(f'{t:.1f}' for t in times)}")
    print(f"idle_rss_kib={rss}")
    print(f"watchdog_pings={pings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
