"""Xwin-style question generation with self-correction (Li et al., 2024).

The teacher writes a refined/new problem from a seed, then checks it step by step for logical and
mathematical consistency ("Verdict: correct|incorrect", read as sound|flawed); a flawed problem is
revised using the check's own critique (its reasoning, without the verdict line) and checked again,
for at most `max_rounds` revisions. A problem still flawed after that is dropped; a sound one is
solved. The row keeps every version and verdict in meta['synth'].
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mathforge.record import Record
from mathforge.synth.common import (
    Ctx,
    SolveItem,
    eliminate,
    make_record,
    parse_question,
    render,
    same_text,
    solve,
    text_of,
)

# "correct"/"incorrect" are the template's words: a small teacher writes them far more reliably than
# "sound"/"flawed" (SmolLM2-135M concluded "flawed" after every check, even of real MATH problems).
_VERDICT = re.compile(r"verdict\s*[:：]?\s*\**\s*(incorrect|correct|sound|flawed)\b", re.I)
_VERDICT_LINE = re.compile(r"^.*\bverdict\b.*$", re.I | re.M)
_MEANING = {"correct": "sound", "sound": "sound", "incorrect": "flawed", "flawed": "flawed"}


@dataclass
class Draft:
    seed: Record
    key: str
    problem: str
    version: str
    history: list[dict[str, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # cache keys of the requests that wrote and checked it


def parse_verdict(text: str) -> str | None:
    """'sound' or 'flawed' from the last "Verdict:" line of a check, or None when there is none."""
    found = _VERDICT.findall(text or "")
    return _MEANING[found[-1].lower()] if found else None


def critique_of(check: str) -> str:
    """What a check found, for the revision prompt: its reasoning up to the last verdict line, without
    verdict lines (what a raw completion writes after its verdict belongs to no check)."""
    lines = list(_VERDICT_LINE.finditer(check))
    head = check[: lines[-1].start()] if lines else check
    return _VERDICT_LINE.sub("", head).strip()


async def run(ctx: Ctx, units: Sequence[tuple[Record, int]], max_rounds: int = 2) -> list[Record]:
    """Generate, verify (and revise up to `max_rounds` times), then solve; returns kept rows."""
    drafts = await _generate(ctx, units)
    sound: list[Draft] = []
    for rnd in range(max_rounds + 1):
        if not drafts:
            break
        verdicts = await _verify(ctx, drafts, rnd)
        sound += [d for d, (v, _) in zip(drafts, verdicts, strict=True) if v == "sound"]
        flawed = [(d, critique) for d, (v, critique) in zip(drafts, verdicts, strict=True) if v != "sound"]
        if rnd == max_rounds:
            if flawed:
                ctx.meter.dropped["xwin_still_flawed"] += len(flawed)
            break
        drafts = await _revise(ctx, flawed, rnd + 1)
    return await _solve(ctx, sound)


async def _generate(ctx: Ctx, units: Sequence[tuple[Record, int]]) -> list[Draft]:
    keys = [f"{ctx.stage}/xwin/{s.id}/{r}" for s, r in units]
    prompts = [render("xwin_generate", problem=s.problem) for s, _ in units]
    reqs = [ctx.request("question", k, p, level=s.level) for (s, _), k, p in zip(units, keys, prompts, strict=True)]
    drafts = []
    for (seed, _), key, prompt, res in zip(units, keys, prompts, await ctx.ask(reqs, "xwin: generate"), strict=True):
        problem, reason = parse_question(*ctx.generated(res))
        reason = reason or eliminate(seed.problem, problem)
        if reason:
            ctx.meter.dropped[f"xwin_{reason}"] += 1
            continue
        drafts.append(Draft(seed, key, problem, prompt.version, requests=list(res.cache_keys)))
    return drafts


async def _verify(ctx: Ctx, drafts: list[Draft], rnd: int) -> list[tuple[str | None, str]]:
    """(verdict, critique) per draft; a check with no verdict line is asked for it once."""
    prompts = [render("xwin_verify", problem=d.problem) for d in drafts]
    reqs = [ctx.request("check", f"{d.key}/verify{rnd}", p, level=d.seed.level) for d, p in zip(drafts, prompts, strict=True)]
    results = await ctx.ask(reqs, f"xwin: verify {rnd}")
    checks = [text_of(r)[0] for r in results]
    for d, r in zip(drafts, results, strict=True):
        d.requests += r.cache_keys
    verdicts = [parse_verdict(c) for c in checks]
    missing = [i for i, v in enumerate(verdicts) if v is None and checks[i].strip()]
    ask = render("elicit", what="your conclusion", form="Verdict: correct   (or)   Verdict: incorrect")
    lines = await ctx.follow_up([reqs[i] for i in missing], [checks[i] for i in missing], ask, "Verdict: ", "xwin: verdict")
    for i, (line, keys) in zip(missing, lines, strict=True):
        verdicts[i] = parse_verdict(line)
        drafts[i].requests += keys
    for d, v, c in zip(drafts, verdicts, checks, strict=True):
        d.history.append({"problem": d.problem, "verdict": v or "none", "check": c.strip()})
    return [(v, c) for v, c in zip(verdicts, checks, strict=True)]


async def _revise(ctx: Ctx, flawed: list[tuple[Draft, str]], rnd: int) -> list[Draft]:
    prompts = [render("xwin_revise", problem=d.problem, critique=critique_of(c) or "The problem is not well posed.")
               for d, c in flawed]
    reqs = [ctx.request("question", f"{d.key}/revise{rnd}", p, level=d.seed.level)
            for (d, _), p in zip(flawed, prompts, strict=True)]
    out = []
    for (d, _), res in zip(flawed, await ctx.ask(reqs, f"xwin: revise {rnd}"), strict=True):
        problem, reason = parse_question(*ctx.generated(res))
        # A revision that returns the flawed draft word for word fixed nothing (a small teacher's
        # habit); a small edit is a fix, so only the seed is held to the elimination rules.
        if reason is None and same_text(problem, d.problem):
            reason = "unchanged"
        reason = reason or eliminate(d.seed.problem, problem)
        if reason:
            ctx.meter.dropped[f"xwin_revise_{reason}"] += 1
            continue
        d.problem = problem
        d.requests += res.cache_keys
        out.append(d)
    return out


async def _solve(ctx: Ctx, sound: list[Draft]) -> list[Record]:
    items = [SolveItem(f"{d.key}/solve", "solve", {"problem": d.problem, "fewshot": ctx.examples(d.seed.id, d.key)},
                       d.seed.level) for d in sound]
    kept = []
    for d, (checked, _) in zip(sound, await solve(ctx, items, "xwin: solve"), strict=True):
        if not checked.ok:
            ctx.meter.dropped[checked.reason] += 1
            continue
        if checked.repair:
            ctx.meter.repaired[checked.repair] += 1
        kept.append(make_record(ctx, d.seed, d.problem, "xwin", checked, d.version, step=1, written_by=d.requests,
                                revisions=len(d.history) - 1, history=d.history))
    ctx.meter.kept += len(kept)
    return kept
