#!/usr/bin/env python3
"""The agents' panels for the call benchmark (benches/sip_calls.sh).

    python3 panels.py --http PORT --password PW AGENT_ID...

Logs every agent in, opens their panel WebSocket (which, with a registered phone, is what makes
an agent reachable by voice), sets them `ready`, then prints `ready` on its own line. From then
on it completes each call's wrap-up as soon as the panel shows the agent's call in `wrap_up`
(`POST /conversations/{id}/complete`): an agent takes one call at a time and gets the next only
once the last one is completed. On SIGTERM or SIGINT it prints one JSON line of counts and
exits. Needs python3-websockets.
"""

import argparse
import asyncio
import concurrent.futures
import http.client
import json
import signal
import sys
import threading
import time

import websockets

LOCAL = threading.local()


class Http:
    """Blocking JSON calls over one keep-alive connection per worker thread."""

    def __init__(self, port):
        self.port = port

    def call(self, method, path, token=None, body=None):
        for attempt in (1, 2):
            conn = getattr(LOCAL, "conn", None)
            if conn is None:
                conn = LOCAL.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                conn.request(method, "/api/v1" + path, body=data, headers=headers)
                r = conn.getresponse()
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
            except (http.client.HTTPException, OSError):
                # The server closed an idle keep-alive connection: one new connection, once.
                conn.close()
                LOCAL.conn = None
                if attempt == 2:
                    raise


class Panels:
    def __init__(self, args):
        self.args = args
        self.http = Http(args.http)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.workers)
        self.counts = {
            "agents": len(args.agents),
            "offered": 0,
            "in_process": 0,
            "wrap_up": 0,
            "completed": 0,
            "complete_errors": 0,
            "other_frames": 0,
            "panels_lost": 0,
            "max_complete_ms": 0.0,
        }
        self.errors = []
        self.done = set()

    async def rest(self, method, path, token=None, body=None):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, self.http.call, method, path, token, body
        )

    async def login(self, agent):
        status, reply = await self.rest(
            "POST", "/login", body={"username": agent, "password": self.args.password}
        )
        if status != 200:
            raise SystemExit(f"login {agent}: {status} {reply}")
        return reply["token"]

    async def panel(self, agent, token, opened):
        url = f"ws://127.0.0.1:{self.args.http}/api/v1/agent/ws?token={token}"
        async with websockets.connect(url, ping_interval=None, max_size=None) as ws:
            first = json.loads(await ws.recv())
            if first.get("type") != "snapshot":
                raise SystemExit(f"{agent}: the panel's first frame is not the snapshot: {first}")
            status, reply = await self.rest("PUT", "/agent/presence", token, {"presence": "ready"})
            if status != 200:
                raise SystemExit(f"{agent}: presence ready: {status} {reply}")
            opened.set_result(None)
            try:
                async for raw in ws:
                    frame = json.loads(raw)
                    if frame.get("type") != "conversation":
                        if frame.get("type") not in ("presence", "capabilities"):
                            self.counts["other_frames"] += 1
                            self.note(f"{agent}: {frame}")
                        continue
                    c = frame["conversation"]
                    status = c.get("status")
                    if status in ("offered", "in_process"):
                        self.counts[status] += 1
                    elif status == "wrap_up" and c.get("agent") == agent and c["id"] not in self.done:
                        self.counts["wrap_up"] += 1
                        self.done.add(c["id"])
                        asyncio.create_task(self.complete(agent, token, c))
            except websockets.exceptions.ConnectionClosed as e:
                if not self.stopping:
                    self.counts["panels_lost"] += 1
                    self.note(f"{agent}: panel closed: {e}")

    async def complete(self, agent, token, c):
        started = time.monotonic()
        status, reply = await self.rest("POST", f"/conversations/{c['id']}/complete", token, {})
        ms = (time.monotonic() - started) * 1000
        self.counts["max_complete_ms"] = max(self.counts["max_complete_ms"], round(ms, 1))
        if status == 200:
            self.counts["completed"] += 1
        else:
            self.counts["complete_errors"] += 1
            self.note(f"{agent}: complete {c['id']}: {status} {reply}")

    def note(self, text):
        if len(self.errors) < 20:
            self.errors.append(text)
            print(text, file=sys.stderr, flush=True)

    async def run(self):
        self.stopping = False
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tokens = await asyncio.gather(*(self.login(a) for a in self.args.agents))
        tasks = []
        for agent, token in zip(self.args.agents, tokens):
            opened = loop.create_future()
            tasks.append(asyncio.create_task(self.panel(agent, token, opened)))
            await asyncio.wait({opened, tasks[-1]}, return_when=asyncio.FIRST_COMPLETED)
            if tasks[-1].done():
                tasks[-1].result()
        print("ready", flush=True)
        await stop.wait()
        self.stopping = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(json.dumps(self.counts), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--http", required=True, type=int)
    p.add_argument("--password", required=True)
    p.add_argument("--workers", type=int, default=8, help="threads for the REST calls")
    p.add_argument("agents", nargs="+")
    asyncio.run(Panels(p.parse_args()).run())


if __name__ == "__main__":
    main()
