"""Robustness suite (§4.3.5, Table 7): GSM8K with 1 to 5 distractor sentences, following CMATH.

A teacher writes distractors for each problem: sentences that fit its story but play no part in the
answer. Each sentence must pass two checks before use:
- structural: a single plain statement (no question, not a copy of a problem sentence), and the
  variant with the sentences removed is the original problem, verbatim;
- semantic: the teacher, asked separately with a CoT prompt whether the sentence changes the
  answer, contradicts or makes the problem ambiguous, answers "VERDICT: KEEP".
Variant k holds the first k accepted sentences, inserted before the problem's final (question)
sentence, so the variants of one problem are nested like CMATH's. Items with fewer than k
accepted sentences are absent from count k; every count reports its own n.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from mathforge.eval.benchmarks import Benchmark
from mathforge.eval.run import EvalConfig, evaluate
from mathforge.io import write_json, write_text
from mathforge.markdown import table
from mathforge.record import Record, annotate, derive

PROMPTS = Path(__file__).resolve().parent / "prompts"
MAX_DISTRACTORS = 5
_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*(.+?)\s*$")
# The space before the final sentence; a "." inside a number ("$2.50") does not end a sentence.
_LAST_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=(?:[^.!?]|\.(?=\d))+[.!?]?\s*$)")
_VERDICT = re.compile(r"VERDICT:\s*(KEEP|REJECT)", re.IGNORECASE)


def parse_sentences(text: str, limit: int = MAX_DISTRACTORS) -> list[str]:
    """The numbered (or bulleted) sentences of a teacher reply, in order."""
    found = []
    for line in text.splitlines():
        m = _NUMBERED.match(line)
        if m:
            found.append(m.group(1).strip().strip('"').strip())
    return found[:limit]


def sentence_problem(sentence: str, original: str) -> str | None:
    """Why `sentence` cannot be a distractor of `original` on its face, or None if it can."""
    if not sentence or len(sentence.split()) > 60:
        return "length"
    if "?" in sentence:
        return "question"
    if sentence[-1] not in ".!\"'":
        return "not_a_sentence"
    if sentence.lower() in original.lower():
        return "copies_problem"
    return None


def inject(problem: str, sentences: list[str]) -> str:
    """`problem` with `sentences` inserted before its final sentence (the question)."""
    text = problem.strip()
    parts = _LAST_SENTENCE.split(text, maxsplit=1)
    if len(parts) == 2:
        return f"{parts[0]} {' '.join(sentences)} {parts[1]}"
    return f"{' '.join(sentences)} {text}"


def removes_to_original(variant: str, sentences: list[str], original: str) -> bool:
    """The structural check: deleting the inserted sentences gives back the original verbatim."""
    text = variant
    for s in sentences:
        text = text.replace(" " + s, "", 1) if " " + s in text else text.replace(s + " ", "", 1)
    return text == original.strip()


def make_variants(
    records: list[Record], teacher: Any, max_distractors: int = MAX_DISTRACTORS, check: bool = True,
    seed: int = 0, check_tokens: int = 300,
) -> tuple[list[Record], dict[str, Any]]:
    """Distractor variants of `records` (meta["robustness"] = {count, distractors}) and statistics.

    `check_tokens` bounds the teacher's reasoning in each distractor check."""
    from mathforge.engine import Request, Sampling
    from mathforge.engine.generate import load_template

    write = load_template(PROMPTS / "distractors.j2")
    sampling = Sampling(temperature=0.7, max_tokens=60 * max_distractors, seed=seed)
    replies = teacher.run([Request(key=f"distract/{r.id}", sampling=sampling, messages=[
        {"role": "user", "content": write.render({"problem": r.problem, "count": max_distractors})}])
        for r in records], desc="distractors")
    stats: Counter = Counter()
    candidates: dict[str, list[str]] = {}
    for r, res in zip(records, replies, strict=True):
        kept = []
        for s in parse_sentences(res.texts[0] if res.ok else "", max_distractors):
            why = sentence_problem(s, r.problem)
            stats[f"rejected_{why}" if why else "well_formed"] += 1
            if not why:
                kept.append(s)
        candidates[r.id] = kept
    if check:
        candidates = _teacher_check(records, candidates, teacher, stats, check_tokens)
    variants = list(_variants(records, candidates, max_distractors, stats, write.version))
    return variants, {"items": len(records), **dict(stats)}


def _teacher_check(records: list[Record], candidates: dict[str, list[str]], teacher: Any,
                   stats: Counter, max_tokens: int) -> dict[str, list[str]]:
    from mathforge.engine import Request, Sampling
    from mathforge.engine.generate import load_template

    check = load_template(PROMPTS / "distractor_check.j2")
    jobs = [(r, s) for r in records for s in candidates[r.id]]
    replies = teacher.run([Request(
        key=f"distract-check/{r.id}/{i}", sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
        messages=[{"role": "user", "content": check.render({"problem": r.problem, "sentence": s})}])
        for i, (r, s) in enumerate(jobs)], desc="distractor checks")
    kept: dict[str, list[str]] = {r.id: [] for r in records}
    for (r, s), res in zip(jobs, replies, strict=True):
        verdicts = _VERDICT.findall(res.texts[0] if res.ok else "")
        verdict = verdicts[-1].upper() if verdicts else "NONE"
        stats[f"check_{verdict.lower()}"] += 1
        if verdict == "KEEP":
            kept[r.id].append(s)
    return kept


def _variants(records, candidates, max_distractors, stats, version):
    for r in records:
        sentences = candidates[r.id]
        for k in range(1, min(len(sentences), max_distractors) + 1):
            problem = inject(r.problem, sentences[:k])
            if not removes_to_original(problem, sentences[:k], r.problem):
                stats["rejected_structure"] += 1
                break
            stats[f"variants_{k}"] += 1
            v = derive(r, problem=problem, method=f"robustness/distractors-{k}", answer=r.answer,
                       solution=r.solution, prompt_version=version)
            yield annotate(v, "robustness", {"count": k, "distractors": sentences[:k], "original_id": r.id})


def evaluate_robustness(
    records: list[Record], bench: Benchmark, student: Any, teacher: Any, cfg: EvalConfig,
    out_dir: str | Path, max_distractors: int = MAX_DISTRACTORS, check: bool = True,
) -> dict[str, Any]:
    """Table 7: the student's accuracy on the originals and on each distractor count."""
    out = Path(out_dir)
    variants, stats = make_variants(records, teacher, max_distractors, check)
    rows = {0: evaluate(records, bench, student, cfg, out / "distractors-0")}
    for k in range(1, max_distractors + 1):
        subset = [v for v in variants if v.meta["robustness"]["count"] == k]
        if subset:
            rows[k] = evaluate(subset, bench, student, cfg, out / f"distractors-{k}")
    table = {k: {"n": s["n"], **{g: s["accuracy"][g] for g in cfg.graders}} for k, s in rows.items()}
    summary = {"benchmark": bench.name, "variant_stats": stats, "by_distractors": table}
    write_json(out / "robustness.json", summary)
    write_text(out / "robustness.md", render_robustness(summary, cfg.graders))
    return summary


def render_robustness(summary: dict[str, Any], graders: tuple[str, ...]) -> str:
    lines = [f"# Robustness: {summary['benchmark']} with distractors (Table 7)", "",
             *table(("distractors", "n", *(f"{g} %" for g in graders)),
                    [(k, row["n"], *(f"{100 * row[g]['accuracy']:.2f}" for g in graders))
                     for k, row in sorted(summary["by_distractors"].items(), key=lambda kv: int(kv[0]))],
                    "r" * (2 + len(graders)))]
    stats = ", ".join(f"{k}: {v}" for k, v in summary["variant_stats"].items())
    return "\n".join([*lines, "", f"Variant construction: {stats}", ""])

