"""The truth audit of a rehearsal: the simulated teacher's log joined with the data a run kept.

The miniature world's teacher (sim/miniteacher.py) logs, for every answered request, what is
true about it under the engine's cache key: for a solve, the problem's true answer and level and
whether the solution was right; for a written problem, its answer, level, whether it is well posed
and whether it is a planted test leak; for a verdict, what was true and what was said. Every
synthetic row carries the cache keys of the requests that made it (`meta.synth.requests`: the ones
that wrote its problem, then its solve), so the join is by key, never by text: a row's truth is its
solve request's line (the true answer and level of the problem as solved), the problem's writer is
the last writing request before it. Joined, they give the share of kept rows the log covers, the
true error rate of the kept data per method and true level, the answer check's and the judges'
precision and recall against the truth, and how many planted leaks decontamination caught.

A log may end in a torn line (the simulator was killed mid-write) and hold a request twice (a
retried or resumed request): the first complete line of each key counts, and both are reported.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mathforge.record import Record
from mathforge.synth.contract import normalize_answer

SOLVES = ("solve", "answer_aug", "fobar")  # kinds whose truth is about the problem solved
WRITES = ("evol", "xwin_generate", "xwin_revise", "rephrase")  # kinds that write a problem


def read_log(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The answered lines of a simulator log, one per request key, and how many were skipped."""
    rows, seen, skipped = [], set(), Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped["torn"] += 1
                continue
            if row.get("status") != 200 or "key" not in row:
                skipped["not_answered"] += 1
            elif row["key"] in seen:
                skipped["duplicate"] += 1
            else:
                seen.add(row["key"])
                rows.append(row)
    return rows, {"lines": len(rows) + sum(skipped.values()), "answered": len(rows), **skipped}


def audit(log: list[dict[str, Any]], kept: Iterable[Record], written: Iterable[Record]) -> dict[str, Any]:
    """The audit's figures (fractions in 0-1); `written`: the synthetic rows before cleaning.
    coverage: the share of kept rows whose solve request the log holds."""
    by_key = {row["key"]: row for row in log}
    rows = kept_rows(kept, by_key)
    return {"coverage": _share(sum(r["joined"] for r in rows), len(rows)), "joined": sum(r["joined"] for r in rows),
            "kept": len(rows),
            "kept_error_rate": _share(sum(r["wrong"] for r in rows if r["joined"]), sum(r["joined"] for r in rows)),
            "error_by_method": _error_by(rows, "method"), "error_by_level": _error_by(rows, "level"),
            "answer_check": answer_check(rows), "judges": judges(log), "leaks": leaks(log, rows, written, by_key)}


def kept_rows(kept: Iterable[Record], by_key: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per kept row: joined to the log (its solve request answered in a form the simulator read),
    its method and true level, wrong (against the truth), the answer check's verdict (None when it
    had no known answer to compare with) and the request that wrote its problem (None: a seed's)."""
    out = []
    for r in kept:
        lines = [by_key[k] for k in requests(r) if k in by_key]
        truth = next((x for x in lines if x.get("kind") in SOLVES and "answer" in x), None)
        check = (r.meta.get("answer_check") or {}).get("correct")
        wrong = truth is not None and (not truth["well_posed"] or normalize_answer(r.answer) != str(truth["answer"]))
        out.append({"joined": truth is not None, "method": r.lineage.method or "seed",
                    "level": truth["level"] if truth else None, "wrong": wrong, "check": check,
                    "writer": writer(r, by_key)})
    return out


def requests(record: Record) -> list[str]:
    """The cache keys of the requests that made a synthetic row, in order (synth.common.make_record)."""
    return list((record.meta.get("synth") or {}).get("requests") or ())


def writer(record: Record, by_key: dict[str, dict[str, Any]]) -> str | None:
    """The key of the last request that wrote the row's problem (a revision replaces a draft)."""
    return next((k for k in reversed(requests(record)) if by_key.get(k, {}).get("kind") in WRITES), None)


def _error_by(rows: list[dict[str, Any]], field: str) -> dict[str, dict[str, float]]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if r["joined"]:
            groups[str(r[field])].append(r["wrong"])
    return {k: {"rows": len(v), "error_rate": _share(sum(v), len(v))} for k, v in sorted(groups.items())}


def answer_check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer check as a detector of wrong rows: a disagreement flags a row."""
    checked = [(r["check"] is False, r["wrong"]) for r in rows if r["joined"] and r["check"] is not None]
    return {"checked": len(checked), **_detector(checked)}


def judges(log: list[dict[str, Any]]) -> dict[str, Any]:
    """Xwin's problem check (flags ill-posed problems) and the difficulty judge (flags level >= 4)."""
    checks = [(r["verdict"] == "flawed", not r["well_posed"]) for r in log if r.get("kind") == "check" and "verdict" in r]
    hard = [(r["said"] >= 4, r["level"] >= 4) for r in log if r.get("kind") == "difficulty" and "said" in r]
    return {"xwin_check": {"judged": len(checks), **_detector(checks)},
            "difficulty": {"judged": len(hard), **_detector(hard)}}


def leaks(log: list[dict[str, Any]], rows: list[dict[str, Any]], written: Iterable[Record],
          by_key: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Planted test-set copies: written by the teacher, reaching the synthetic data (a row whose
    problem that request wrote), caught by cleaning (no kept row's)."""
    planted = {r["key"] for r in log if r.get("kind") in WRITES and r.get("leak")}
    reached = planted & {writer(w, by_key) for w in written}
    kept = reached & {r["writer"] for r in rows}
    return {"planted": len(planted), "in_synthetic_data": len(reached), "caught": len(reached - kept),
            "kept": len(kept)}


def _detector(pairs: list[tuple[bool, bool]]) -> dict[str, float | None]:
    """Precision and recall of (flagged, truly bad) pairs."""
    hits = sum(f and b for f, b in pairs)
    return {"precision": _share(hits, sum(f for f, _ in pairs)), "recall": _share(hits, sum(b for _, b in pairs))}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
