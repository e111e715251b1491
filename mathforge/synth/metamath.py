"""MetaMathQA-style augmentation (Yu et al., 2024): four sub-methods, one question each.

- answer augmentation: the seed question, a fresh chain-of-thought solution;
- rephrasing: the teacher rewrites the question (same answer), then solves it;
- FOBAR: one number of the question becomes X, the known answer A is appended ("If we know the
  answer to the above question is A, what is the value of the unknown variable X?"), the teacher
  solves for X, whose true value is the masked number;
- self-verification: one number of the problem's context is masked as X; the teacher restates the
  final question together with its answer as a declarative sentence ("How many fruits are in the
  box?" + 12 -> "There are 12 fruits in the box."); context + statement + "What is the value of the
  unknown variable X?" is solved. (A one-sentence problem is restated whole, keeping X.)

Backward questions are built deterministically (the masked number is chosen by a seeded RNG), so
each row records its expected answer and whether the teacher's answer agrees.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mathforge.grading import same_answer
from mathforge.record import Record
from mathforge.synth.common import (
    Ctx,
    SolveItem,
    eliminate,
    make_record,
    parse_generated,
    parse_question,
    render,
    solve,
)
from mathforge.synth.contract import normalize_answer

SUBMETHODS = ("answer_aug", "rephrase", "fobar", "self_verify")
FOBAR_SUFFIX = "If we know the answer to the above question is {answer}, what is the value of the unknown variable X?"
SV_SUFFIX = "What is the value of the unknown variable X?"
# A maskable number stands alone: not part of a word, exponent, subscript, LaTeX command or decimal.
_NUMBER = re.compile(r"(?<![\w.^_\\])\d+(?:\.\d+)?(?![\w]|\.\d)")


@dataclass(frozen=True)
class Masked:
    question: str  # with the number replaced by X
    value: str  # the number that was masked: the expected X
    start: int


def mask_number(problem: str, salt: str) -> Masked | None:
    """Replace one number of `problem` by X (seeded choice among numbers that occur once), or None.

    Numbers occurring more than once anywhere (also as a coefficient, "3q") are skipped because
    masking one copy would leave the question ambiguous; a problem already using X is skipped too.
    """
    if re.search(r"\bX\b", problem):
        return None
    found = list(_NUMBER.finditer(problem))
    candidates = [m for m in found if len(_digit_runs(problem, m.group())) == 1]
    if not candidates:
        return None
    m = random.Random(salt).choice(candidates)
    return Masked(problem[: m.start()] + "X" + problem[m.end() :], m.group(), m.start())


def _digit_runs(text: str, number: str) -> list[str]:
    """Every occurrence of `number` as a whole digit run, in any context ("3" in "3q^2" counts)."""
    return re.findall(rf"(?<![\d.]){re.escape(number)}(?!\d|\.\d)", text)


def fobar_question(problem: str, answer: str, salt: str) -> tuple[str, str] | None:
    """(FOBAR question, expected X) for a seed with a known answer, or None if nothing can be masked."""
    masked = mask_number(problem, salt)
    if masked is None:
        return None
    return f"{masked.question.rstrip()} {FOBAR_SUFFIX.format(answer=answer)}", masked.value


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@dataclass(frozen=True)
class SVQuestion:
    context: str  # the sentences before the final question, with X masked ("" if there are none)
    question: str  # what the teacher restates with the answer (contains X when context is "")
    value: str  # the expected X
    trailer: str = ""  # instructions after the question ("Give the answer in cm."), kept as they are


def sv_question(problem: str, salt: str) -> SVQuestion | None:
    """Split a problem into context and final question and mask a number of the context as X
    (of the whole problem when it is a single sentence); None when nothing can be masked."""
    parts = _SENTENCE_END.split(problem.strip())
    asks = [i for i, p in enumerate(parts) if p.rstrip().endswith("?")]
    last = asks[-1] if asks else len(parts) - 1
    if last > 0:
        context, question, trailer = " ".join(parts[:last]), parts[last], " ".join(parts[last + 1 :])
        masked = mask_number(context, salt) if not re.search(r"\bX\b", question + trailer) else None
        if masked is not None:
            return SVQuestion(masked.question, question, masked.value, trailer)
    masked = mask_number(problem, salt)
    return SVQuestion("", masked.question, masked.value) if masked else None


def parse_statement(text: str, finish_reason: str, sv: SVQuestion, answer: str) -> tuple[str | None, str | None]:
    """The self-verification question from the teacher's statement, checked: the statement states
    the known answer, is not a question, and keeps X when X is not in the context."""
    statement, reason = parse_generated(text, finish_reason)
    if statement is None:
        return None, reason
    if normalize_answer(answer) not in normalize_answer(statement):
        return None, "answer_missing"
    if statement.rstrip().endswith("?"):
        return None, "not_declarative"
    if not sv.context and not re.search(r"\bX\b", statement):
        return None, "no_unknown"
    return " ".join(p for p in (sv.context, statement.rstrip(), SV_SUFFIX, sv.trailer) if p), None


def unusable(sub: str, seed: Record) -> str | None:
    """Why `seed` can never serve sub-method `sub` (whatever the replica), or None when it can:
    the backward methods need a known answer and a number that can be masked."""
    if sub not in ("fobar", "self_verify"):
        return None
    if not seed.answer:
        return "no_answer"
    build = mask_number if sub == "fobar" else sv_question
    return "no_maskable_number" if build(seed.problem, "") is None else None


async def run(ctx: Ctx, sub: str, units: Sequence[tuple[Record, int]]) -> list[Record]:
    """Run sub-method `sub` on (seed, replica) units; returns the kept records, counts the drops."""
    return await {"answer_aug": _answer_aug, "rephrase": _rephrase, "fobar": _fobar, "self_verify": _self_verify}[sub](ctx, units)


def _key(ctx: Ctx, sub: str, seed: Record, replica: int) -> str:
    return f"{ctx.stage}/metamath/{sub}/{seed.id}/{replica}"


async def _solve_and_keep(ctx: Ctx, sub: str, jobs: list[tuple[Record, str, str, str | None, list[str]]],
                          template: str) -> list[Record]:
    """jobs: (seed, key, question, expected answer, cache keys of the requests that wrote the
    question); solve each and keep what meets the contract."""
    items = [SolveItem(key, template, {"problem": q, "fewshot": ctx.examples(seed.id, key)}, seed.level)
             for seed, key, q, _, _ in jobs]
    kept = []
    for (seed, _, question, expected, written_by), (checked, version) in zip(
            jobs, await solve(ctx, items, f"metamath/{sub}"), strict=True):
        if not checked.ok:
            ctx.meter.dropped[checked.reason] += 1
            continue
        if checked.repair:
            ctx.meter.repaired[checked.repair] += 1
        kept.append(_record(ctx, seed, question, sub, checked, version, expected, written_by))
    ctx.meter.kept += len(kept)
    return kept


def _record(ctx: Ctx, seed: Record, question: str, sub: str, checked, version: str, expected: str | None,
            written_by: list[str]) -> Record:
    return make_record(ctx, seed, question, f"metamath/{sub}", checked, version, step=1, written_by=written_by,
                       expected=expected, agrees=same_answer(checked.answer, expected))


async def _answer_aug(ctx: Ctx, units: Sequence[tuple[Record, int]]) -> list[Record]:
    jobs = [(s, _key(ctx, "answer_aug", s, r), s.problem, s.answer, []) for s, r in units]
    return await _solve_and_keep(ctx, "answer_aug", jobs, "metamath_answer")


async def _rephrase(ctx: Ctx, units: Sequence[tuple[Record, int]]) -> list[Record]:
    keys = [_key(ctx, "rephrase", s, r) for s, r in units]
    prompts = [render("metamath_rephrase", problem=s.problem) for s, _ in units]
    reqs = [ctx.request("question", k, p, level=s.level) for (s, _), k, p in zip(units, keys, prompts, strict=True)]
    jobs = []
    for (seed, _), key, res in zip(units, keys, await ctx.ask(reqs, "metamath/rephrase: rewrite"), strict=True):
        question, reason = parse_question(*ctx.generated(res))
        reason = reason or eliminate(seed.problem, question)
        if reason:
            ctx.meter.dropped[f"rephrase_{reason}"] += 1
            continue
        jobs.append((seed, f"{key}/solve", question, seed.answer, res.cache_keys))
    return await _solve_and_keep(ctx, "rephrase", jobs, "solve")


async def _fobar(ctx: Ctx, units: Sequence[tuple[Record, int]]) -> list[Record]:
    jobs = []
    for seed, replica in units:
        key = _key(ctx, "fobar", seed, replica)
        built = fobar_question(seed.problem, seed.answer, key) if seed.answer else None
        if built is None:
            ctx.meter.dropped["no_answer" if not seed.answer else "no_maskable_number"] += 1
            continue
        jobs.append((seed, key, built[0], built[1], []))
    return await _solve_and_keep(ctx, "fobar", jobs, "metamath_fobar")


async def _self_verify(ctx: Ctx, units: Sequence[tuple[Record, int]]) -> list[Record]:
    staged = []
    for seed, replica in units:
        key = _key(ctx, "self_verify", seed, replica)
        sv = sv_question(seed.problem, key) if seed.answer else None
        if sv is None:
            ctx.meter.dropped["no_answer" if not seed.answer else "no_maskable_number"] += 1
            continue
        staged.append((seed, key, sv))
    prompts = [render("metamath_self_verify", question=sv.question, answer=s.answer) for s, _, sv in staged]
    reqs = [ctx.request("question", k, p, level=s.level) for (s, k, _), p in zip(staged, prompts, strict=True)]
    jobs = []
    for (seed, key, sv), res in zip(staged, await ctx.ask(reqs, "metamath/self_verify: statement"), strict=True):
        question, reason = parse_statement(*ctx.generated(res), sv, seed.answer)
        if reason:
            ctx.meter.dropped[f"statement_{reason}"] += 1
            continue
        jobs.append((seed, f"{key}/solve", question, sv.value, res.cache_keys))
    return await _solve_and_keep(ctx, "self_verify", jobs, "solve")

