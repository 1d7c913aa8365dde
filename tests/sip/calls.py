#!/usr/bin/env python3
"""Real phone calls through a switchboard binary, end to end over UDP.

    python3 tests/sip/calls.py --bin BINARY --config CONFIG --http PORT --sip PORT --work DIR

sipp plays the trunk (trunk_*.xml, a UAC calling the voice queue `phones`) and the agents'
phones (phone_register.xml, then one phone_*.xml UAS per call on the registered port). This
script plays the agents' panels (login, the panel WebSocket, presence, wrap-up) and the
supervisor who reads the conversations, starts and restarts the server, and checks each
story: an answered call with the SDP passed through byte for byte; a caller hanging up while
queued; a phone nobody answers, then the next agent's; a declined call, then the next
agent's; the panel lost during a call; a restart during a call, then a BYE from the phone;
the phone's registration lapsing during a call.

Needs python3-websockets and sipp. Exits non-zero at the first failed story, printing the
sipp logs and the server log. Needs no terminal and no standard input (CI).
"""

import argparse
import asyncio
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE = "phones"
# How long any one sipp run, or a wait for a state, may take.
BOUND = 30.0


class Failed(Exception):
    pass


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The switchboard process: start, stop, restart on the same config and ports."""

    def __init__(self, args):
        self.bin = args.bin
        self.config = args.config
        self.http = args.http
        self.sip = args.sip
        self.log_path = os.path.join(args.work, "calls-server.log")
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--config", self.config],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed("the server exited at start")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/", timeout=1).read()
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise Failed("the server did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=BOUND)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Api:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def call(self, method, path, token=None, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text else None)

    def ok(self, method, path, token=None, body=None):
        status, reply = self.call(method, path, token, body)
        if status >= 300:
            raise Failed(f"{method} {path}: {status} {reply}")
        return reply

    def login(self, user, password):
        return self.ok("POST", "/login", body={"username": user, "password": password})["token"]


class Panel:
    """An agent's panel: the WebSocket kept open (it is what makes the agent reachable)."""

    def __init__(self, http_port, token):
        self.url = f"ws://127.0.0.1:{http_port}/api/v1/agent/ws?token={token}"
        self.ws = None
        self.reader = None

    async def open(self):
        deadline = time.monotonic() + BOUND
        while True:
            try:
                self.ws = await websockets.connect(self.url, ping_interval=None)
                break
            except (OSError, websockets.exceptions.WebSocketException):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        first = json.loads(await self.ws.recv())
        if first.get("type") != "snapshot":
            raise Failed(f"the panel's first frame is not the snapshot: {first}")
        self.reader = asyncio.create_task(self._drain())

    async def _drain(self):
        try:
            async for _ in self.ws:
                pass
        except websockets.exceptions.ConnectionClosed:
            pass

    async def close(self):
        if self.ws is not None:
            await self.ws.close()
            self.ws = None
        if self.reader is not None:
            await self.reader
            self.reader = None


class Sipp:
    """One sipp process; its message trace is kept to compare bodies."""

    def __init__(self, work, name, scenario, args):
        self.name = name
        self.trace = os.path.join(work, f"{name}.messages.log")
        self.errors = os.path.join(work, f"{name}.errors.log")
        self.screen = os.path.join(work, f"{name}.screen.log")
        self.cmd = [
            "sipp", "-sf", os.path.join(HERE, scenario), "-i", "127.0.0.1",
            "-m", "1", "-l", "1", "-timeout", f"{int(BOUND)}s", "-timeout_error",
            "-max_recv_loops", "1000", "-nostdin",
            "-trace_err", "-error_file", self.errors,
            "-trace_msg", "-message_file", self.trace,
        ] + args
        self.proc = None

    async def start(self):
        with open(self.screen, "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=os.path.dirname(self.trace)
            )
        # A UAS must be listening before the call is placed.
        await asyncio.sleep(0.3)
        return self

    async def done(self):
        try:
            rc = await asyncio.wait_for(self.proc.wait(), BOUND + 5)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            rc = "killed"
        if rc != 0:
            raise Failed(f"sipp {self.name} failed ({rc})\n{self.report()}")

    def kill(self):
        if self.proc and self.proc.returncode is None:
            self.proc.kill()

    def report(self):
        out = []
        for path in (self.errors, self.screen):
            if os.path.exists(path):
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
                out.append(f"--- {os.path.basename(path)}\n{text[-6000:]}")
        return "\n".join(out)

    def messages(self):
        """(direction, raw message) pairs of the trace, direction `sent` or `received`."""
        return [(d, raw) for d, raw, _ in self.timed_messages()]

    def timed_messages(self):
        """(direction, raw message, wall-clock time in seconds) triples of the trace."""
        with open(self.trace, "rb") as f:
            text = f.read()
        found = []
        parts = re.split(rb"\n-{20,} ([-0-9]+ [:.0-9]+)\n", b"\n" + text)
        for stamp, part in zip(parts[1::2], parts[2::2]):
            m = re.match(rb"\s*UDP message (sent|received)[^\n]*\n\n", part)
            if m:
                at = datetime.datetime.strptime(stamp.decode(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                found.append((m.group(1).decode(), part[m.end():], at))
        return found


def sip_body(raw):
    head, _, rest = raw.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
    return rest[: int(m.group(1))] if m else rest


def first(messages, direction, start):
    for d, raw in messages:
        if d == direction and raw.startswith(start):
            return raw
    raise Failed(f"no {direction} message starting {start!r}")


class Story:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.server = Server(args)
        self.api = Api(args.http)
        self.target = f"127.0.0.1:{args.sip}"
        self.tokens = {}
        self.panels = {}
        self.phones = {"alice": free_udp_port(), "bob": free_udp_port()}
        self.runs = []

    # --- helpers -------------------------------------------------------------------------

    async def sipp(self, name, scenario, *args):
        run = await Sipp(self.work, name, scenario, list(args)).start()
        self.runs.append(run)
        return run

    async def register(self, agent, expires):
        run = await self.sipp(
            f"register-{agent}-{expires}", "phone_register.xml", self.target,
            "-s", agent, "-au", agent, "-ap", f"{agent}-sip",
            "-key", "expires", str(expires), "-p", str(self.phones[agent]),
        )
        await run.done()

    async def phone(self, agent, scenario, name, *extra):
        return await self.sipp(name, scenario, "-p", str(self.phones[agent]), *extra)

    async def trunk(self, scenario, name, caller, *extra):
        return await self.sipp(
            name, scenario, self.target, "-s", QUEUE, "-key", "caller", caller,
            "-p", str(free_udp_port()), *extra,
        )

    def presence(self, agent, presence):
        self.api.ok("PUT", "/agent/presence", self.tokens[agent], {"presence": presence})

    def conversation(self, caller):
        rows = self.api.ok("GET", "/conversations?channel=voice", self.tokens["sam"])
        for c in rows:
            if c["customer"]["address"] == caller:
                return c
        return None

    async def wait_for(self, caller, what, pred):
        deadline = time.monotonic() + BOUND
        c = None
        while time.monotonic() < deadline:
            c = self.conversation(caller)
            if c is not None and pred(c):
                return c
            await asyncio.sleep(0.05)
        raise Failed(f"the call from {caller} never got {what}: {c}")

    async def ended(self, caller, status, reason, agent):
        c = await self.wait_for(caller, f"status {status}", lambda c: c["status"] == status)
        if c.get("disconnect_reason") != reason:
            raise Failed(f"call from {caller}: reason {c.get('disconnect_reason')}, not {reason}")
        if c.get("agent") != agent:
            raise Failed(f"call from {caller}: agent {c.get('agent')}, not {agent}")
        return c

    async def wait_for_id(self, id, what, pred):
        deadline = time.monotonic() + BOUND
        c = None
        while time.monotonic() < deadline:
            c = self.api.ok("GET", f"/conversations/{id}", self.tokens["sam"])
            if pred(c):
                return c
            await asyncio.sleep(0.05)
        raise Failed(f"conversation {id} never got {what}: {c}")

    def events(self, c):
        details = self.api.ok("GET", f"/conversations/{c['id']}", self.tokens["sam"])
        return [e["event"] for e in details["events"]]

    def complete(self, agent, c):
        self.api.ok("POST", f"/conversations/{c['id']}/complete", self.tokens[agent], {})

    # --- stories -------------------------------------------------------------------------

    async def setup(self):
        self.server.start()
        for user in ("alice", "bob", "sam"):
            self.tokens[user] = self.api.login(user, f"{user}-pw")
        for agent in ("alice", "bob"):
            self.panels[agent] = Panel(self.args.http, self.tokens[agent])
            await self.panels[agent].open()
            await self.register(agent, 300)
            self.presence(agent, "not_ready")

    async def answered(self):
        """Alice's phone answers; the caller talks and hangs up; SDP untouched both ways."""
        self.presence("alice", "ready")
        phone = await self.phone("alice", "phone_answer.xml", "answered-phone")
        trunk = await self.trunk("trunk_call.xml", "answered-trunk", "15550101", "-d", "1000")
        c = await self.wait_for("15550101", "in_process", lambda c: c["status"] == "in_process")
        await trunk.done()
        await phone.done()
        c = await self.ended("15550101", "wrap_up", "CustomerEnded", "alice")
        t, p = trunk.messages(), phone.messages()
        offer_out = sip_body(first(t, "sent", b"INVITE "))
        offer_in = sip_body(first(p, "received", b"INVITE "))
        answer_out = sip_body(first(p, "sent", b"SIP/2.0 200"))
        answer_in = sip_body(first(t, "received", b"SIP/2.0 200"))
        if not offer_out.startswith(b"v=0") or offer_out != offer_in:
            raise Failed(f"the offer changed on the way:\n{offer_out!r}\n{offer_in!r}")
        if not answer_out.startswith(b"v=0") or answer_out != answer_in:
            raise Failed(f"the answer changed on the way:\n{answer_out!r}\n{answer_in!r}")
        self.complete("alice", c)
        self.presence("alice", "not_ready")

    async def abandoned(self):
        """Nobody is ready; the caller hangs up while queued: 487, abandoned."""
        trunk = await self.trunk("trunk_cancel.xml", "abandoned-trunk", "15550102", "-d", "1000")
        await self.wait_for("15550102", "in_queue", lambda c: c["status"] == "in_queue")
        await trunk.done()
        await self.ended("15550102", "abandoned", "CustomerAbandoned", None)

    async def next_agent(self, scenario, caller, event):
        """Alice's phone rings out or declines: back to the queue, then Bob's phone answers."""
        self.presence("alice", "ready")
        alice = await self.phone("alice", scenario, f"{event}-alice")
        bob = await self.phone("bob", "phone_answer.xml", f"{event}-bob")
        trunk = await self.trunk("trunk_call.xml", f"{event}-trunk", caller, "-d", "500")
        await self.wait_for(caller, "offered to alice",
                            lambda c: c["status"] == "offered" and c["agent"] == "alice")
        self.presence("bob", "ready")
        await alice.done()
        await trunk.done()
        await bob.done()
        c = await self.ended(caller, "wrap_up", "CustomerEnded", "bob")
        if event not in self.events(c):
            raise Failed(f"call from {caller}: no {event} event in {self.events(c)}")
        self.complete("bob", c)
        self.presence("alice", "not_ready")
        self.presence("bob", "not_ready")

    async def panel_lost(self):
        """Alice's panel connection is lost during a call: BYE to both sides."""
        self.presence("alice", "ready")
        phone = await self.phone("alice", "phone_answer.xml", "panel-lost-phone")
        trunk = await self.trunk("trunk_wait_bye.xml", "panel-lost-trunk", "15550105")
        await self.wait_for("15550105", "in_process", lambda c: c["status"] == "in_process")
        await self.panels["alice"].close()
        await trunk.done()
        await phone.done()
        c = await self.ended("15550105", "wrap_up", "AgentConnectionLost", "alice")
        await self.panels["alice"].open()
        self.presence("alice", "not_ready")
        self.lost_call = c

    async def callback(self):
        """Alice calls back the dropped caller: her phone first (no SDP), then the customer
        through the outbound proxy with the phone's offer; the customer hangs up."""
        lost = self.lost_call
        phone = await self.phone("alice", "phone_answer.xml", "callback-phone")
        customer = await self.sipp(
            "callback-customer", "phone_hangup.xml", "-p", str(self.args.outbound), "-d", "1000"
        )
        new = self.api.ok("POST", f"/conversations/{lost['id']}/callback", self.tokens["alice"], {})
        if new["status"] != "offered":
            raise Failed(f"a callback being dialled is offered to its agent: {new}")
        await phone.done()
        await customer.done()
        c = await self.wait_for_id(new["id"], "wrap_up", lambda c: c["status"] == "wrap_up")
        if c.get("disconnect_reason") != "CustomerEnded" or c.get("agent") != "alice":
            raise Failed(f"the callback ended as {c}")
        p, u = phone.messages(), customer.messages()
        if sip_body(first(p, "received", b"INVITE ")):
            raise Failed("the phone is called back without SDP")
        offer_out = sip_body(first(p, "sent", b"SIP/2.0 200"))
        offer_in = sip_body(first(u, "received", b"INVITE "))
        answer_out = sip_body(first(u, "sent", b"SIP/2.0 200"))
        answer_in = sip_body(first(p, "received", b"ACK "))
        if not offer_out.startswith(b"v=0") or offer_out != offer_in:
            raise Failed(f"the phone's offer changed on the way:\n{offer_out!r}\n{offer_in!r}")
        if not answer_out.startswith(b"v=0") or answer_out != answer_in:
            raise Failed(f"the customer's answer changed on the way:\n{answer_out!r}\n{answer_in!r}")
        self.complete("alice", c)
        self.complete("alice", lost)

    async def restart(self):
        """The server restarts during a call; the phone's BYE afterwards reaches the caller."""
        self.presence("alice", "ready")
        phone = await self.phone("alice", "phone_hangup.xml", "restart-phone", "-d", "4000")
        trunk = await self.trunk("trunk_wait_bye.xml", "restart-trunk", "15550106")
        await self.wait_for("15550106", "in_process", lambda c: c["status"] == "in_process")
        self.server.stop()
        self.server.start()
        back = time.time()
        for agent in ("alice", "bob"):
            await self.panels[agent].close()
            await self.panels[agent].open()
        await phone.done()
        await trunk.done()
        byes = [at for d, raw, at in phone.timed_messages() if d == "sent" and raw.startswith(b"BYE ")]
        if not byes or byes[-1] < back:
            raise Failed(f"the phone's BYE did not come after the restart ({byes} < {back})")
        c = await self.ended("15550106", "wrap_up", "AgentEnded", "alice")
        self.complete("alice", c)
        self.presence("alice", "not_ready")

    async def registration_lost(self):
        """Bob's phone registration lapses during a call: BYE to both sides."""
        await self.register("bob", 10)
        self.presence("bob", "ready")
        phone = await self.phone("bob", "phone_answer.xml", "registration-phone")
        trunk = await self.trunk("trunk_wait_bye.xml", "registration-trunk", "15550107")
        await self.wait_for("15550107", "in_process", lambda c: c["status"] == "in_process")
        await trunk.done()
        await phone.done()
        c = await self.ended("15550107", "wrap_up", "SipRegistrationLost", "bob")
        self.complete("bob", c)

    async def run(self):
        stories = [
            ("answered call, SDP passed through unchanged", self.answered),
            ("caller hangs up while queued", self.abandoned),
            ("no answer, then the next agent",
             lambda: self.next_agent("phone_noanswer.xml", "15550103", "offer_timeout")),
            ("declined, then the next agent",
             lambda: self.next_agent("phone_decline.xml", "15550104", "offer_rejected")),
            ("panel connection lost during a call", self.panel_lost),
            ("callback: the agent's phone, then the customer", self.callback),
            ("restart during a call, then a BYE", self.restart),
            ("registration lapses during a call", self.registration_lost),
        ]
        await self.setup()
        for name, story in stories:
            started = time.monotonic()
            try:
                await story()
            except Failed as e:
                print(f"FAIL {name}: {e}")
                for run in self.runs:
                    run.kill()
                raise
            print(f"PASS {name} ({time.monotonic() - started:.1f}s)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--http", required=True, type=int)
    p.add_argument("--sip", required=True, type=int)
    p.add_argument("--outbound", required=True, type=int, help="the outbound proxy's UDP port")
    p.add_argument("--work", required=True)
    args = p.parse_args()
    story = Story(args)
    try:
        asyncio.run(story.run())
    except Failed:
        print("--- server log")
        print(story.server.log())
        return 1
    finally:
        for run in story.runs:
            run.kill()
        story.server.stop()
    print("all call stories passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
