"""Teacher profiles for `mathforge teacher-sim` that change yields, for testing forecasts.

Applied to the simulator's completion replies after they are made (an aiohttp middleware), so any
world the simulator serves can take them; each decided by a hash of the request (a rerun gets the
same). `echo_rate`: a share of new-problem replies repeat the problem they were given (a duplicate
of the seed, which synthesis drops as unchanged); `format_fail`: per prompt kind, named by words of
its template (see teachersim.KINDS), a share of replies that are not in any format.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

QUESTION_WORDS = ("harder and more varied", "Restate a math problem", "as inspiration", "checked by a reviewer")


@dataclass(frozen=True)
class Profile:
    echo_rate: float = 0.0
    format_fail: tuple[tuple[str, float], ...] = ()  # (template words, share of replies out of format)

    def __post_init__(self) -> None:
        for rate in (self.echo_rate, *(r for _, r in self.format_fail)):
            if not 0 <= rate <= 1:
                raise ValueError(f"a profile rate must be in [0, 1], got {rate}")

    def mangle(self, prompt: str, reply: str, rng: random.Random) -> str:
        for words, rate in self.format_fail:
            if words in prompt and rng.random() < rate:
                return "Sorry, I am not able to do that."
        if any(w in prompt for w in QUESTION_WORDS) and rng.random() < self.echo_rate:
            given = re.findall(r"Problem: (.*)", prompt)
            return given[-1].strip() if given else reply
        return reply


def parse_format_fail(specs: list[str]) -> tuple[tuple[str, float], ...]:
    """`WORDS=RATE` flags (e.g. "Restate a math problem=0.8") as (words, rate) pairs."""
    out = []
    for spec in specs:
        words, sep, rate = spec.rpartition("=")
        if not sep or not words:
            raise ValueError(f"--format-fail needs WORDS=RATE, got {spec!r}")
        out.append((words, float(rate)))
    return tuple(out)


def middleware(profile: Profile) -> Any:
    @web.middleware
    async def mangle(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if not request.path.endswith("completions") or response.status != 200 or not isinstance(response, web.Response):
            return response
        raw = await request.read()
        body, data = json.loads(raw), json.loads(response.body)
        prompt = str(body["messages"][-1]["content"]) if body.get("messages") else str(body.get("prompt", ""))
        rng = random.Random(hashlib.sha256(raw).hexdigest())
        for choice in data.get("choices", []):
            if "message" in choice:
                choice["message"]["content"] = profile.mangle(prompt, choice["message"]["content"], rng)
            else:
                choice["text"] = profile.mangle(prompt, choice["text"], rng)
        return web.json_response(data)

    return mangle
