"""A simulated teacher: a local OpenAI-compatible server that answers our synthesis prompts in format.

For rehearsals and benchmarks of synthesis at scale without paying a real API: it recognises each of
our prompt kinds by its template's words and answers as a cooperative teacher would, new problems
for rewrite/Evol/Xwin prompts, a statement for self-verification, a verdict for checks, and a
worked solution ending in "The answer is X" for everything else. Everything is decided by a hash of
the request body, so a rerun gets the same answers, latencies and faults, whatever the order:

- correctness: a solution's answer is right with probability `levels[level - 1]` (the client may
  send the item's MATH level as an `X-Sim-Level` header, see EngineConfig.sim_hints; default 3);
  a check says "correct" with the same probability; the right answer of a problem is a hash of it;
- latency: lognormal with the given median and sigma (mean = median * exp(sigma**2 / 2));
- faults, each a probability per attempt: 429 with Retry-After, 500, a hang past the client's
  timeout, a dropped connection;
- a log: one JSON line per answered attempt (`t` arrival, `s` seconds served, `status`, `kind`,
  `level`, `fp` the request's fingerprint), the ground truth for requests/s, latency and repeated
  requests in benchmarks;
- the batch API (`/v1/files`, `/v1/batches`, see batchapi.py), its lines answered as above, with a
  completion delay, failed lines and expiry as flags (`--batch-*`).

    mathforge teacher-sim --port 8008 --median 0.5 --sigma 0.6 --levels .9,.7,.5,.3,.1 --log sim.jsonl
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any

from aiohttp import web

from mathforge.answers import ANSWER_PREFIX
from mathforge.sim import miniteacher
from mathforge.sim.batchapi import BatchAPI, BatchSimConfig
from mathforge.sim.mockserver import MockServer, _prompt_text
from mathforge.sim.simprofiles import Profile, middleware

# Each prompt kind by the words of its template (synth/prompts/*.j2); checked in this order.
KINDS = (
    ("elicit", "Now state only"),
    ("check", "Check a math problem"),
    ("statement", "as one declarative sentence"),
    ("question", "harder and more varied"),
    ("question", "Restate a math problem"),
    ("question", "as inspiration"),
    ("question", "checked by a reviewer"),
)
NAMES = ("Ava", "Ben", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kira", "Lars")
ITEMS = ("apple", "marble", "ticket", "book", "stamp", "coin", "shell", "card", "brick", "seed")


@dataclass(frozen=True)
class SimConfig:
    """How the simulated teacher behaves; every field is a `mathforge teacher-sim` flag."""

    median_s: float = 0.5
    sigma: float = 0.6
    levels: tuple[float, ...] = (0.9, 0.7, 0.5, 0.3, 0.1)
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    rate_drop: float = 0.0
    retry_after_s: float = 1.0
    hang_s: float = 600.0  # how long a "timeout" fault hangs (the client gives up first)
    seed: int = 0
    # "mini": the teacher of the miniature world (sim/miniteacher.py; `levels` is then `mini.levels`)
    world: str = "generic"
    mini: miniteacher.MiniConfig = miniteacher.MiniConfig()

    @property
    def mean_s(self) -> float:
        return self.median_s * math.exp(self.sigma**2 / 2)


class TeacherSim(MockServer):
    """The simulator's state and handler (MockServer's plumbing: `start_in_thread`, `/stats`)."""

    def __init__(self, cfg: SimConfig = SimConfig(), log: IO[str] | None = None,
                 batch: BatchSimConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.log = log
        self.kinds: Counter = Counter()
        self.batch_api = BatchAPI(batch or BatchSimConfig(), log)

    def app(self) -> web.Application:
        """The completion endpoints and the batch API (`/v1/files`, `/v1/batches`, see batchapi.py)."""
        return self.batch_api.install(super().app())

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "kinds": dict(self.kinds)}

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        t0 = time.time()
        self.received += 1
        body = await request.json()
        chat = request.path.endswith("chat/completions")
        text = _prompt_text(body, chat)
        fp = hashlib.sha256(json.dumps(body, sort_keys=True).encode() + str(self.cfg.seed).encode()).hexdigest()
        self.attempts[fp] += 1
        level = _level(request.headers.get("X-Sim-Level"))
        last = _last_turn(body, chat, text)
        kind = miniteacher.kind_of(text, last) if self.cfg.world == "mini" else next(
            (k for k, words in KINDS if words in last), "solve")
        rng = random.Random(f"{fp}/{self.attempts[fp]}")
        fault = self._fault_kind(rng)
        await asyncio.sleep(rng.lognormvariate(math.log(self.cfg.median_s), self.cfg.sigma) if self.cfg.median_s else 0)
        if fault:
            self.faults[fault] += 1
            self._log(t0, fault, kind, level, fp)
            return await self._fault({"timeout": "slow", "drop": "drop"}.get(fault, fault), request) or web.Response()
        truth = {}
        if self.cfg.world == "mini":  # the truth goes to the log only, keyed as the engine's cache
            _, reply, truth = miniteacher.answer(text, last, random.Random(fp), self.cfg.mini)
            truth = {"key": miniteacher.request_key(body), **truth}
        else:
            reply = answer(kind, text, random.Random(fp), self.cfg.levels[level - 1])
        self.kinds[kind] += 1
        self.answered[fp[:16]] += 1
        self._log(t0, 200, kind, level, fp, truth)
        return web.json_response(_body(body, reply, text, chat, fp))

    def _fault_kind(self, rng: random.Random) -> str | None:
        draw = rng.random()
        for kind, rate in (("429", self.cfg.rate_429), ("500", self.cfg.rate_500),
                           ("timeout", self.cfg.rate_timeout), ("drop", self.cfg.rate_drop)):
            if draw < rate:
                return kind
            draw -= rate
        return None

    def _log(self, t0: float, status: int | str, kind: str, level: int, fp: str, truth: dict | None = None) -> None:
        if self.log is not None:
            self.log.write(json.dumps({"t": round(t0, 4), "s": round(time.time() - t0, 4), "status": status,
                                       "kind": kind, "level": level, "fp": fp[:16], **(truth or {})}) + "\n")


def answer(kind: str, text: str, rng: random.Random, p_right: float) -> str:
    """The simulated teacher's reply to a prompt of `kind` (deterministic given `rng`)."""
    if kind == "question":
        return new_problem(rng)
    if kind == "statement":
        question = re.findall(r"Question: (.*)", text)[-1].strip()
        given = re.findall(r"Answer: (.*)", text)[-1].strip()
        return f"Statement: The answer to \"{question.rstrip('?')}\" is {given}."
    right = rng.random() < p_right
    if kind == "check":
        return "All quantities are defined and the conditions agree.\nVerdict: " + ("correct" if right else "incorrect")
    truth = truth_of(text)
    value = truth if right else truth + 1 + rng.randrange(9)
    if kind == "elicit":
        return "Verdict: correct" if "Verdict" in text.rsplit("Now state only", 1)[1] else f"{ANSWER_PREFIX} {value}"
    steps = [f"Step {i}: combine the quantities found so far, which gives {rng.randrange(2, 999)}."
             for i in range(1, rng.randrange(3, 9))]
    return "\n".join(steps) + f"\n{ANSWER_PREFIX} {value}"


def new_problem(rng: random.Random) -> str:
    """A fresh, well-posed word problem (never similar to its parent: the numbers and story vary)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randrange(3, 90), rng.randrange(2, 12), rng.randrange(2, 15)
    return (f"{name} has {a} {item}s and buys {b} packs with {c} {item}s in each pack, then gives away "
            f"{rng.randrange(1, a)} {item}s. How many {item}s does {name} have now?")


def truth_of(text: str) -> int:
    """The simulated right answer of the problem a solve prompt asks about (a hash of its text)."""
    problem = text.rsplit("Problem:", 1)[-1].split("\nSolution:", 1)[0].strip()
    return int(hashlib.sha256(problem.encode()).hexdigest()[:6], 16) % 1000


def _last_turn(body: dict[str, Any], chat: bool, text: str) -> str:
    """Where a prompt's template words are: a chat's last turn (a follow-up is its own kind)."""
    if chat and body.get("messages"):
        return str(body["messages"][-1].get("content", ""))
    return text


def _level(header: str | None) -> int:
    try:
        return min(5, max(1, int(header))) if header else 3
    except ValueError:
        return 3


def _body(body: dict[str, Any], reply: str, text: str, chat: bool, fp: str) -> dict[str, Any]:
    usage = {"prompt_tokens": max(1, len(text) // 4), "completion_tokens": max(1, len(reply) // 4)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
    else:
        choice = {"index": 0, "text": reply, "finish_reason": "stop", "logprobs": None}
    return {"id": f"sim-{fp[:16]}", "object": "chat.completion" if chat else "text_completion", "created": 0,
            "model": body.get("model", "sim"), "choices": [choice], "usage": usage}


def _ends_line(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def serve(cfg: SimConfig, host: str, port: int, log_path: str | None,
          batch: BatchSimConfig | None = None, profile: Profile | None = None) -> None:
    """Serve until interrupted; the log is line-buffered so a reader sees every answered attempt.
    `profile` changes the replies' yields (see simprofiles.py)."""
    log = open(log_path, "a", encoding="utf-8", buffering=1) if log_path else None  # noqa: SIM115 - closed below
    if log is not None and log.tell() and not _ends_line(log_path):
        log.write("\n")  # a line torn by a killed predecessor stays a line of its own, not the start of ours
    try:
        sim = TeacherSim(cfg, log, batch)
        sim.slow_s, sim.retry_after = cfg.hang_s, cfg.retry_after_s
        app = sim.app()
        if profile is not None:
            app.middlewares.append(middleware(profile))
        web.run_app(app, host=host, port=port, access_log=None, print=None)
    finally:
        if log is not None:
            log.close()
