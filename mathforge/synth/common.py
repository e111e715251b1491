"""What every augmentation method shares: the teacher protocol, the per-method yield meter, the
solve step under the answer contract, parsing of generated questions, and the elimination rules."""

from __future__ import annotations

import asyncio
import difflib
import itertools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from mathforge.answers import ANSWER_PREFIX, answer_line
from mathforge.engine.types import Request, Result, Sampling
from mathforge.record import Record, derive, stable_id
from mathforge.synth.contract import Checked, check_response, with_answer
from mathforge.synth.templates import Prompt, render

# Where a raw completion has said its piece: the templates' own field labels start the next item.
COMPLETION_STOPS = {
    "solve": ("\nProblem:",),
    "question": ("\nProblem:", "\nExample", "\nOriginal exercise:", "\nInspiration:", "\nQuestion:", "\nReview:",
                 "\nCorrected problem:"),
    "check": ("\nProblem:", "\nExample"),
}


class Teacher(Protocol):
    """What a method needs from the engine: one request's result, awaited in a shared window."""

    async def asubmit(self, request: Request) -> Result: ...


@dataclass
class Yield:
    """Per-method accounting for the yield table."""

    requests: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    # Per-problem counters ({problem id: Counter}) a method keeps in its own ledger scope
    # (committed with the unit's rows: see stream.ShardWriter).
    problems: dict[str, Counter] = field(default_factory=dict)

    def add(self, other: Yield) -> None:
        for name in ("requests", "cached", "failed", "prompt_tokens", "completion_tokens", "kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dropped.update(other.dropped)
        self.repaired.update(other.repaired)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cached": self.cached, "failed": self.failed,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "kept": self.kept, "dropped": dict(self.dropped), "repaired": dict(self.repaired)}


@dataclass(frozen=True)
class Ctx:
    """Everything a method needs besides its seeds: sampling, few-shot pool, naming, accounting."""

    teacher: Teacher
    stage: str
    teacher_name: str
    fewshot_pool: tuple[Record, ...] = ()
    fewshot: int = 2
    solve_sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.7, max_tokens=1024))
    question_sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.7, max_tokens=384))
    elicit: bool = True
    completion: bool = False  # raw-completion prompts (the template text continued), not chat
    seed: int = 0
    priority: int = 0  # of this stage's requests in the shared window (Request.priority)
    meter: Yield = field(default_factory=Yield)

    def request(self, kind: str, key: str, prompt: Prompt, *salt: str, level: int | None = None) -> Request:
        """A request of `kind` ("solve", "question" or "check") whose key carries the template
        identity (name@version#hash) and whose seed is derived from key and salt, so replicas of
        one prompt are distinct requests (the cache keys on content) and yet reproducible."""
        base = self.solve_sampling if kind == "solve" else self.question_sampling
        seed = int(stable_id(key, *salt), 16) % (2**31)
        stop = tuple(base.stop) + (COMPLETION_STOPS[kind] if self.completion else ())
        sampling = Sampling(temperature=base.temperature, max_tokens=base.max_tokens, top_p=base.top_p, seed=seed, stop=stop)
        if self.completion:
            return Request(key=f"{prompt.version}/{key}", prompt=prompt.text, sampling=sampling, level=level,
                           priority=self.priority)
        return Request(key=f"{prompt.version}/{key}", messages=user(prompt), sampling=sampling, level=level,
                       priority=self.priority)

    def generated(self, result: Result) -> tuple[str, str]:
        """(text, finish_reason) of a question-writing result; a raw completion keeps its first
        paragraph only (it runs on past the item), a chat reply is taken whole."""
        text, finish = text_of(result)
        if self.completion and finish != "error":
            parts = re.split(r"\n\s*\n", text.strip(), maxsplit=1)
            if len(parts) == 2:  # the item ended before any cut-off
                return parts[0], "stop"
        return text, finish

    async def follow_up(self, reqs: list[Request], responses: list[str], ask: Prompt, prefix: str,
                        desc: str) -> list[tuple[str, list[str]]]:
        """Ask after each response for one missing final line (greedy, short); returns each line
        and its request's cache keys.

        Chat: a second user turn with `ask`. Completion: the response continued after `prefix`
        (the answer-extraction step of zero-shot CoT), returned with the prefix.
        """
        sampling = Sampling(temperature=0.0, max_tokens=48, seed=0, stop=("\n",) if self.completion else ())
        followups = []
        for req, response in zip(reqs, responses, strict=True):
            key = f"{ask.version}/{req.key}"
            if self.completion:
                followups.append(Request(key=key, prompt=f"{req.prompt}{response.rstrip()}\n{prefix}", sampling=sampling,
                                         level=req.level, priority=req.priority))
            else:
                messages = [*(req.messages or []), {"role": "assistant", "content": response}, *user(ask)]
                followups.append(Request(key=key, messages=messages, sampling=sampling, level=req.level,
                                         priority=req.priority))
        results = await self.ask(followups, desc)
        return [(f"{prefix}{text_of(r)[0]}" if self.completion else text_of(r)[0], r.cache_keys) for r in results]

    async def ask(self, requests: list[Request], desc: str) -> list[Result]:
        """Run requests through the teacher's shared window, counting them and their tokens."""
        if not requests:
            return []
        results = await asyncio.gather(*(self.teacher.asubmit(r) for r in requests))
        m = self.meter
        m.requests += len(results)
        m.cached += sum(r.cached for r in results)
        m.failed += sum(r.error is not None for r in results)
        m.prompt_tokens += sum(r.prompt_tokens for r in results)
        m.completion_tokens += sum(r.completion_tokens for r in results)
        return results

    def examples(self, exclude: str, salt: str) -> list[dict[str, str]]:
        """Few-shot examples from the seed pool, chosen per item (deterministic), never the item itself."""
        pool = self.fewshot_pool
        if not pool or self.fewshot <= 0:
            return []
        start = int(stable_id(salt, str(self.seed)), 16) % len(pool)
        # Walk the pool from `start`, stepping over the item itself (no copy of a large pool per call).
        walk = (pool[(start + i) % len(pool)] for i in range(len(pool)))
        picks = list(itertools.islice((r for r in walk if r.id != exclude), self.fewshot))
        return [{"problem": r.problem, "solution": solution_body(r), "answer": r.answer or ""} for r in picks]


def solution_body(record: Record) -> str:
    """A record's solution without its trailing answer line (few-shot templates add it back)."""
    text = (record.solution or "").rstrip()
    idx = text.rfind(ANSWER_PREFIX)
    return text[:idx].rstrip() if idx >= 0 and "\n" not in text[idx:] else text


def user(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt.text}]


def text_of(result: Result) -> tuple[str, str]:
    """(text, finish_reason) of a result's first sample; failures read as empty."""
    if result.error or not result.texts:
        return "", "error"  # the engine already counted the failure by kind
    return result.texts[0], result.finish_reasons[0] if result.finish_reasons else "stop"


# ---------------------------------------------------------------- solving under the contract


@dataclass(frozen=True)
class SolveItem:
    key: str
    template: str
    variables: dict[str, Any]
    level: int | None = None


async def solve(ctx: Ctx, items: Sequence[SolveItem], desc: str) -> list[tuple[Checked, str]]:
    """Solve each item under the answer contract: (Checked, prompt version) per item, in order.

    A response with a chain of thought but no parseable final answer gets one short follow-up
    turn asking for the answer line (the answer-extraction step of zero-shot CoT): a weak teacher
    can then still meet the contract while the parser stays strict.
    """
    prompts = [render(it.template, **it.variables) for it in items]
    reqs = [ctx.request("solve", it.key, p, level=it.level) for it, p in zip(items, prompts, strict=True)]
    results = await ctx.ask(reqs, desc)
    texts = [text_of(r) for r in results]
    checked = [replace(check_response(t, f) if f != "error" else Checked(reason="request_failed"),
                       requests=tuple(r.cache_keys)) for (t, f), r in zip(texts, results, strict=True)]
    if ctx.elicit:
        checked = await _elicit_answers(ctx, reqs, [t for t, _ in texts], checked, desc)
    return [(c, p.version) for c, p in zip(checked, prompts, strict=True)]


async def _elicit_answers(ctx: Ctx, reqs: list[Request], texts: list[str], checked: list[Checked], desc: str) -> list[Checked]:
    todo = [i for i, c in enumerate(checked) if c.reason == "no_answer_line"]
    if not todo:
        return checked
    ask = render("elicit", what="the final answer", form=f"{ANSWER_PREFIX} <final answer>")
    lines = await ctx.follow_up([reqs[i] for i in todo], [texts[i] for i in todo], ask, f"{ANSWER_PREFIX} ", f"{desc}: answer line")
    out = list(checked)
    for i, (line, keys) in zip(todo, lines, strict=True):
        answer = answer_line(line)
        made = with_answer(texts[i].strip(), answer, "elicited") if answer else Checked(reason="no_answer_line")
        out[i] = replace(made, requests=(*checked[i].requests, *keys))
    return out


# ---------------------------------------------------------------- generated questions


_LEAD_INS = re.compile(r"^\s*(?:\**\s*)?(?:restated problem|new problem|new exercise|corrected problem|"
                       r"rewritten problem|problem|question|statement|exercise)\s*\**\s*[:：]\s*\**\s*", re.I)


def parse_question(text: str, finish_reason: str) -> tuple[str | None, str | None]:
    """The problem a question-writing prompt produced: (problem, None) or (None, drop reason)."""
    q, reason = parse_generated(text, finish_reason)
    if q is None or looks_like_problem(q):
        return q, reason
    return None, "not_a_problem"


def parse_generated(text: str, finish_reason: str) -> tuple[str | None, str | None]:
    """Generated text minus lead-ins ("New problem:") and any solution the teacher appended."""
    if finish_reason == "error":
        return None, "request_failed"
    if finish_reason == "length":
        return None, "truncated"
    q = text.strip()
    while True:
        stripped = _LEAD_INS.sub("", q, count=1).strip()
        if stripped == q:
            break
        q = stripped
    # A teacher that goes on to solve its own question: keep the question only.
    q = re.split(r"\n\s*(?:\**\s*)?(?:solution|answer|step 1)\b", q, maxsplit=1, flags=re.I)[0]
    q = q.split(ANSWER_PREFIX, 1)[0].strip()
    return (q, None) if q else (None, "empty")


_ASKS = re.compile(r"\?|\b(?:find|compute|calculate|determine|solve|evaluate|simplify|express|prove|show|"
                   r"give|list|write|state)\b", re.I)


def looks_like_problem(text: str) -> bool:
    """A generated problem asks for something (a question mark or an imperative), and is not an
    answer in disguise ("The answer to this problem is 28.")."""
    return bool(_ASKS.search(text)) and not re.match(r"\s*the (?:answer|solution|result)\b", text, re.I)


# Words of our own question-writing prompts: an evolved problem that repeats them copied the prompt.
PROMPT_WORDS = ("original exercise", "new exercise", "inspiration:", "restated problem", "corrected problem",
                "the reviewer", "self-contained, solvable", "without a solution", "the original problem",
                "rewritten problem", "given problem")
UNANSWERABLE = ("sorry", "cannot be determined", "can't be determined", "not enough information",
                "insufficient information", "cannot be solved", "impossible to determine", "is not solvable",
                "does not have a unique", "as an ai")


def eliminate(parent: str, child: str) -> str | None:
    """Why an evolved/rewritten problem fails (WizardLM's elimination rules), or None if it passes."""
    words = child.split()
    if len(child) < 15 or len(words) < 4:
        return "degenerate"
    if len(child) > 8 * len(parent) + 400 or _repetitive(words) or _repeated_lines(child):
        return "degenerate"
    if barely_changed(parent, child):
        return "unchanged"
    low = child.lower()
    if any(w in low for w in PROMPT_WORDS):
        return "copied_prompt"
    return None


def unanswerable(solution: str, answer: str | None) -> bool:
    """The teacher's answer says the problem cannot be solved (an evolution that broke it)."""
    low = solution.lower()
    if normalize_words(answer) in ("undefined", "none", "n/a", "unknown", "cannotbedetermined", "nosolution"):
        return True
    return any(p in low for p in UNANSWERABLE) and len(solution.split()) < 150


def barely_changed(parent: str, child: str, at: float = 0.95) -> bool:
    """A rewrite that edits at most a few characters of its parent problem (WizardLM's "no
    information gain"): difflib's character ratio >= `at` after case and whitespace folding.

    Not near-duplicate removal (`mathforge.quality.dedup`: Jaccard of word 3-shingles, a copy
    among rows): one changed word of a short problem removes three of its few shingles, so that
    measure cannot say "edited at most a few characters". The cheap upper bounds go first: the
    full ratio costs milliseconds a pair."""
    matcher = difflib.SequenceMatcher(None, _norm(parent), _norm(child))
    return matcher.real_quick_ratio() >= at and matcher.quick_ratio() >= at and matcher.ratio() >= at


def same_text(a: str, b: str) -> bool:
    """Equal up to case and whitespace."""
    return _norm(a) == _norm(b)


def normalize_words(text: str | None) -> str:
    return re.sub(r"[^a-z/]", "", (text or "").lower())


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _repetitive(words: list[str]) -> bool:
    return len(words) >= 30 and len(set(words)) / len(words) < 0.25


def _repeated_lines(text: str) -> bool:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return bool(lines) and Counter(lines).most_common(1)[0][1] >= 3


def make_record(ctx: Ctx, parent: Record, problem: str, method: str, checked: Checked, version: str,
                step: int | None = None, written_by: Sequence[str] = (), **meta: Any) -> Record:
    """A synthetic record with lineage back to `parent` and what the method learned in meta['synth'],
    among it `requests`: the engine's cache keys of the requests that wrote its problem
    (`written_by`) and solved it, in order (what a simulated teacher's log is keyed by)."""
    synth = {"repair": checked.repair, **meta, "requests": [*written_by, *checked.requests]}
    fields: dict[str, Any] = {"solution": checked.solution, "answer": checked.answer, "teacher": ctx.teacher_name,
                              "prompt_version": version, "meta": {"synth": synth}}
    if step is not None:
        fields["step"] = step
    return derive(parent, problem=problem, method=method, stage=ctx.stage, **fields)
