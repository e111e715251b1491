"""A scripted OpenAI-compatible server for fault injection, kill tests and throughput benchmarks.

Not a model: it answers `/v1/chat/completions` and `/v1/completions` after a fixed latency with a
deterministic text derived from the request, and misbehaves on demand. A directive in the prompt,
`[[fault:KIND]]` or `[[fault:KINDxN]]`, makes the first N attempts (default 1) of that request fail:

    429        HTTP 429 with Retry-After          500       HTTP 500
    slow       sleeps `slow_s` (past the client's timeout)
    drop       closes the connection without answering
    malformed  HTTP 200 with a body that is not JSON
    nochoices  HTTP 200, JSON without choices  empty      HTTP 200, empty message content
    400, 401   HTTP 400 / 401 (not retryable)

It counts what it answers per request (`GET /stats`), and `POST /control` can hold every request
after the k-th answer until released, so a test can kill a client at a moment when every answer
it received is known. Run standalone: `python -m mathforge.sim.mockserver --port 8000 --latency 0.2`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import threading
from collections import Counter
from typing import Any

from aiohttp import web

FAULT = re.compile(r"\[\[fault:(\w+?)(?:x(\d+))?\]\]")


class MockServer:
    """The server's state and handlers; `start_in_thread()` runs it beside a test."""

    def __init__(self, latency: float = 0.0, slow_s: float = 30.0, retry_after: float = 1.0):
        self.latency = latency
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.received = 0
        self.attempts: Counter = Counter()  # request fingerprint -> attempts seen
        self.answered: Counter = Counter()  # request fingerprint -> successful answers delivered
        self.faults: Counter = Counter()  # fault kind -> times injected
        self.abandoned = 0
        self.inflight = 0
        self.max_inflight = 0
        self.auth: set[str] = set()
        self.hold_after: int | None = None
        self.released = asyncio.Event()
        self.holding = 0
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/control", self.control)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model"}]})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "answered_total": sum(self.answered.values()),
            "answered": dict(self.answered),
            "faults": dict(self.faults),
            "abandoned": self.abandoned,
            "holding": self.holding,
            "max_inflight": self.max_inflight,
        }

    async def control(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "hold_after" in body:
            self.hold_after = body["hold_after"]
            self.released.clear()
        if body.get("release"):
            self.hold_after = None
            self.released.set()
        return web.json_response(self.snapshot())

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._complete(request)
        finally:
            self.inflight -= 1

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        self.received += 1
        self.auth.add(request.headers.get("Authorization", ""))
        body = await request.json()
        chat = request.path.endswith("chat/completions")
        text = _prompt_text(body, chat)
        fp = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        self.attempts[fp] += 1
        if self.hold_after is not None and sum(self.answered.values()) >= self.hold_after:
            return await self._hold(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        match = FAULT.search(text)
        empty = False
        if match and self.attempts[fp] <= int(match.group(2) or 1):
            self.faults[match.group(1)] += 1
            empty = match.group(1) == "empty"
            fault = None if empty else await self._fault(match.group(1), request)
            if fault is not None:
                return fault
        response = web.json_response(_answer(body, text, chat, fp, empty))
        await response.prepare(request)
        await response.write_eof()
        if request.transport is not None and not request.transport.is_closing():
            self.answered[fp] += 1
        return response

    async def _hold(self, request: web.Request) -> web.Response:
        self.holding += 1
        await self.released.wait()
        self.holding -= 1
        self.abandoned += 1  # released only after the test killed its client; nobody is listening
        return web.json_response({"error": {"message": "held"}}, status=503)

    async def _fault(self, kind: str, request: web.Request) -> web.StreamResponse | None:
        if kind == "429":
            headers = {"Retry-After": str(self.retry_after)}
            return web.json_response({"error": {"message": "rate limited"}}, status=429, headers=headers)
        if kind == "500":
            return web.json_response({"error": {"message": "internal error"}}, status=500)
        if kind in ("400", "401"):
            return web.json_response({"error": {"message": f"refused ({kind})"}}, status=int(kind))
        if kind == "slow":
            await asyncio.sleep(self.slow_s)
            return None
        if kind == "drop":
            request.transport.close()
            return web.Response(status=500)  # never reaches the client: the connection is gone
        if kind == "malformed":
            return web.Response(text='{"id": "x", "choices": [', content_type="application/json")
        if kind == "nochoices":
            return web.json_response({"id": "x", "object": "chat.completion", "created": 0, "model": "mock"})
        raise ValueError(f"unknown fault kind '{kind}'")

    def start_in_thread(self, host: str = "127.0.0.1") -> str:
        """Serve on a free port from a daemon thread; returns the base URL (`.../v1`)."""
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.released = asyncio.Event()
            runner = web.AppRunner(self.app(), access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            self.loop = loop
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        threading.Thread(target=serve, daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("mock server did not start")
        return f"http://{host}:{self.port}/v1"

    def stop(self) -> None:
        """Stop a server started with `start_in_thread` (held requests are released first)."""
        self.loop.call_soon_threadsafe(self.released.set)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _prompt_text(body: dict[str, Any], chat: bool) -> str:
    if chat:
        return "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    return str(body.get("prompt", ""))


def _answer(body: dict[str, Any], text: str, chat: bool, fp: str, empty: bool) -> dict[str, Any]:
    """A deterministic reply: same request, same text, whatever the order or timing (n choices)."""
    choices, completion = [], 0
    for i in range(int(body.get("n") or 1)):
        tag = fp[:8] if i == 0 else f"{fp[:8]}.{i}"
        reply = "" if empty else f"Reply {tag} to: {text[-60:]}\nThe answer is {(int(fp[:4], 16) + i) % 100}"
        completion += len(reply.split())
        if chat:
            choices.append(
                {"index": i, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            )
        else:
            choices.append({"index": i, "text": reply, "finish_reason": "stop", "logprobs": None})
    prompt_tokens = max(1, len(text.split()))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    kind = "chat.completion" if chat else "text_completion"
    return {
        "id": f"mock-{fp}",
        "object": kind,
        "created": 0,
        "model": body.get("model", "mock"),
        "choices": choices,
        "usage": usage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    server = MockServer(latency=args.latency)
    web.run_app(server.app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
