"""Bilingual suite (§4.3.4, Table 6): the same benchmark in English and translated, side by side.

Translations come from a teacher (prompt `prompts/translate.j2`) or from a file the user provides
(rows with an id and the translated problem). A teacher translation is kept only if it passes a
structural check: non-empty, not the source text, and every number of the source problem still
present (a translation that drops or changes a number is a different problem). Both languages are
evaluated with the same prompt and graders; the table gives each accuracy and per-item agreement.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from mathforge.eval.benchmarks import Benchmark
from mathforge.eval.run import EvalConfig, evaluate
from mathforge.io import DataError, read_rows, write_json, write_text
from mathforge.markdown import table
from mathforge.record import Record, annotate, derive

PROMPTS = Path(__file__).resolve().parent / "prompts"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def translation_problem(source: str, translated: str) -> str | None:
    """Why `translated` is not a usable translation of `source`, or None."""
    text = translated.strip()
    if not text:
        return "empty"
    if text == source.strip():
        return "untranslated"
    missing = Counter(_NUMBER.findall(source.replace(",", ""))) - Counter(_NUMBER.findall(text.replace(",", "")))
    return "numbers_changed" if missing else None


def _translated(record: Record, text: str, language: str, how: str, version: str | None = None) -> Record:
    t = derive(record, problem=text.strip(), method=f"translate/{language}", answer=record.answer,
               solution=record.solution, prompt_version=version, id=f"{record.id}#{language}")
    return annotate(t, "translation", {"language": language, "source_id": record.id, "how": how})


def translate(
    records: list[Record], teacher: Any, language: str = "Chinese", max_tokens: int = 1024
) -> tuple[list[Record], dict[str, int]]:
    """Teacher translations of `records` that pass the structural check, and rejection counts."""
    from mathforge.engine import Request, Sampling
    from mathforge.engine.generate import load_template

    template = load_template(PROMPTS / "translate.j2")
    replies = teacher.run([Request(
        key=f"translate/{language}/{r.id}", sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
        messages=[{"role": "user", "content": template.render({"problem": r.problem, "language": language})}])
        for r in records], desc=f"translate to {language}")
    out, stats = [], Counter()
    for r, res in zip(records, replies, strict=True):
        text = res.texts[0] if res.ok else ""
        why = translation_problem(r.problem, text)
        stats[why or "kept"] += 1
        if not why:
            out.append(_translated(r, text, language, "teacher", template.version))
    return out, dict(stats)


def load_translations(path: str | Path, records: list[Record], language: str = "Chinese",
                      id_field: str = "id", problem_field: str = "problem") -> list[Record]:
    """Translations from a file of rows {id_field: source id, problem_field: translated problem}."""
    by_id = {r.id: r for r in records}
    out = []
    for line, row in read_rows(path):
        rid, text = row.get(id_field), row.get(problem_field)
        if rid is None or not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{line}: needs '{id_field}' and a non-empty '{problem_field}'")
        if str(rid) in by_id:
            out.append(_translated(by_id[str(rid)], text, language, "file"))
    if not out:
        raise DataError(f"{path}: none of its ids are in the benchmark (field '{id_field}')")
    return out


def agreement(a: list[bool], b: list[bool]) -> dict[str, Any]:
    """Per-item agreement of two paired verdict lists."""
    pairs = Counter(zip(a, b, strict=True))
    n = len(a)
    return {"n": n, "both_correct": pairs[(True, True)], "only_first": pairs[(True, False)],
            "only_second": pairs[(False, True)], "both_wrong": pairs[(False, False)],
            "agreement": (pairs[(True, True)] + pairs[(False, False)]) / n if n else 0.0}


def evaluate_bilingual(
    records: list[Record], translated: list[Record], bench: Benchmark, student: Any, cfg: EvalConfig,
    out_dir: str | Path, language: str = "Chinese",
) -> dict[str, Any]:
    """Table 6 for one model: accuracy in both languages on the items present in both, and agreement."""
    out = Path(out_dir)
    source_ids = {t.meta["translation"]["source_id"] for t in translated}
    originals = [r for r in records if r.id in source_ids]
    order = {r.id: i for i, r in enumerate(originals)}
    translated = sorted(translated, key=lambda t: order[t.meta["translation"]["source_id"]])
    first = evaluate(originals, bench, student, cfg, out / "original")
    second = evaluate(translated, bench, student, cfg, out / language.lower())
    per_grader = {}
    for g in cfg.graders:
        a = _flags(out / "original" / "samples.jsonl", g)
        b = _flags(out / language.lower() / "samples.jsonl", g)
        per_grader[g] = {"original": first["accuracy"][g], language: second["accuracy"][g], **agreement(a, b)}
    summary = {"benchmark": bench.name, "language": language, "n_source": len(records),
               "n_paired": len(originals), "graders": per_grader}
    write_json(out / "bilingual.json", summary)
    write_text(out / "bilingual.md", render_bilingual(summary))
    return summary


def _flags(samples: Path, grader: str) -> list[bool]:
    return [row["verdicts"][grader]["correct"] for _, row in read_rows(samples)]


def render_bilingual(summary: dict[str, Any]) -> str:
    lang = summary["language"]
    lines = [f"# Bilingual: {summary['benchmark']} in English and {lang} (Table 6)", "",
             f"{summary['n_paired']} of {summary['n_source']} items have a usable translation.", "",
             *table(("grader", "English %", f"{lang} %", "both ✓", "only English ✓", f"only {lang} ✓", "both ✗",
                     "agreement"),
                    [(g, f"{100 * row['original']['accuracy']:.2f}", f"{100 * row[lang]['accuracy']:.2f}",
                      row["both_correct"], row["only_first"], row["only_second"], row["both_wrong"],
                      f"{100 * row['agreement']:.1f}%") for g, row in summary["graders"].items()],
                    "lrrrrrrr")]
    return "\n".join(lines) + "\n"
