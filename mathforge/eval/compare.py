"""`mathforge compare A B`: is run B better than run A on the same items, beyond noise?

Per grader, overall and per level and subject: accuracy of each run, the paired difference B - A
with a bootstrap interval resampling items jointly (mathforge.stats), the exact McNemar test on the
items where exactly one run is right, and the smallest difference this many items can detect at the
observed disagreement rate (80% power). The verdict is McNemar's at `alpha`: `bench/compare_power.py`
measures its false-alarm rate on simulated pairs of equal runs (3-7% is asked for; the exact test
sits at or a little under alpha) and its power on a planted 3-point difference.

A run is an evaluation folder (its summary.json holds per-item results under `items`), a
summary.json, or a JSONL of per-row verdicts (`samples.jsonl`: sample 0 of each item; or the
output of `mathforge grade`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mathforge.io import DataError, read_rows
from mathforge.markdown import table
from mathforge.stats import mcnemar, min_detectable_difference, paired_difference

ALPHA = 0.05


def load_items(path: str | Path) -> dict[str, Any]:
    """Per-item columns of one run: {ids, level, subject, correct: {grader: [0/1, ...]}}."""
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    if not p.exists():
        raise DataError(f"{path}: no such run (an eval folder, its summary.json, or a JSONL of verdicts)")
    if p.suffix == ".json":
        try:
            items = json.loads(p.read_text()).get("items")
        except (json.JSONDecodeError, AttributeError) as e:
            raise DataError(f"{p}: not a summary.json ({e})") from None
        if not items or "correct" not in items:
            raise DataError(f"{p}: no per-item results ('items'); rerun the evaluation with this version")
        return items
    return _items_from_rows(p)


def _items_from_rows(path: Path) -> dict[str, Any]:
    ids, level, subject, correct = [], [], [], {}
    for line, row in read_rows(path):
        if row.get("sample", 0) != 0:  # a sampled run: one draw per item
            continue
        verdicts = row.get("verdicts") or {k: v for k, v in row.items() if isinstance(v, dict) and "correct" in v}
        if "id" not in row or not _verdicts_ok(verdicts):
            raise DataError(f"{path}:{line}: a row needs an 'id' and per-grader verdicts ({{'correct': ...}})")
        ids.append(str(row["id"]))
        level.append(row.get("level"))
        subject.append(row.get("subject"))
        for g, v in verdicts.items():
            correct.setdefault(g, []).append(int(bool(v["correct"])))
    if not ids:
        raise DataError(f"{path}: no rows")
    return {"ids": ids, "level": level, "subject": subject, "correct": correct}


def _verdicts_ok(verdicts: Any) -> bool:
    return bool(verdicts) and isinstance(verdicts, dict) and all(isinstance(v, dict) and "correct" in v
                                                                  for v in verdicts.values())


def align(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> np.ndarray:
    """B's column order for A's items; the two runs must hold the same items."""
    ids_a, ids_b = [str(i) for i in a["ids"]], [str(i) for i in b["ids"]]
    if len(set(ids_a)) != len(ids_a) or len(set(ids_b)) != len(ids_b):
        raise DataError("a run lists an item twice: compare needs one result per item")
    only_a, only_b = set(ids_a) - set(ids_b), set(ids_b) - set(ids_a)
    if only_a or only_b:
        example = sorted(only_a or only_b)[0]
        raise DataError(f"the runs are not on the same items: {len(only_a)} only in {names[0]}, {len(only_b)} only "
                        f"in {names[1]} (e.g. '{example}'); evaluate both on the same benchmark, limit and seed")
    where = {item: i for i, item in enumerate(ids_b)}
    return np.array([where[i] for i in ids_a])


def paired(a: Sequence[int], b: Sequence[int], alpha: float = ALPHA, seed: int = 0) -> dict[str, Any]:
    """The comparison of two 0/1 vectors over the same items (B - A)."""
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    test = mcnemar(vb, va)
    discordant = (test.a_only + test.b_only) / len(va)
    verdict = "no difference shown"
    if test.p_value < alpha:
        verdict = "B better" if test.a_only > test.b_only else "A better"
    return {"n": len(va), "a": float(va.mean()), "b": float(vb.mean()),
            "difference": paired_difference(vb, va, level=1 - alpha, seed=seed).to_dict(),
            "b_only": test.a_only, "a_only": test.b_only, "p_value": test.p_value,
            "discordant_rate": discordant, "min_detectable": min_detectable_difference(discordant, len(va), alpha),
            "verdict": verdict}


def compare(path_a: str | Path, path_b: str | Path, graders: Sequence[str] | None = None,
            alpha: float = ALPHA) -> dict[str, Any]:
    """Every shared grader's comparison of run B against run A, overall and per level and subject."""
    a, b = load_items(path_a), load_items(path_b)
    order = align(a, b, (str(path_a), str(path_b)))
    shared = [g for g in (graders or a["correct"]) if g in a["correct"] and g in b["correct"]]
    if not shared:
        raise DataError(f"no grader in both runs ({sorted(a['correct'])} vs {sorted(b['correct'])})")
    out: dict[str, Any] = {"a": str(path_a), "b": str(path_b), "alpha": alpha, "graders": shared}
    for g in shared:
        va, vb = np.asarray(a["correct"][g]), np.asarray(b["correct"][g])[order]
        out[g] = {"all": paired(va, vb, alpha)}
        for field in ("level", "subject"):
            out[g][f"by_{field}"] = {key: paired(va[idx], vb[idx], alpha)
                                     for key, idx in _groups(a.get(field) or []).items()}
    return out


def _groups(values: Sequence[Any]) -> dict[str, np.ndarray]:
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        if v is not None:
            groups.setdefault(str(v), []).append(i)
    return {k: np.array(v) for k, v in sorted(groups.items())}


def render(result: dict[str, Any]) -> str:
    """Markdown tables of a comparison (points are percentage points of accuracy)."""
    lines = [f"# B = {result['b']} vs A = {result['a']}", "",
             f"Difference B - A with a {100 * (1 - result['alpha']):.0f}% paired bootstrap interval over items; "
             f"exact McNemar p on the items where one run alone is right; verdict at alpha = {result['alpha']}; "
             "min. detectable: the smallest difference found 80% of the time at this disagreement rate.", ""]
    for g in result["graders"]:
        rows = {"all": result[g]["all"], **{f"level {k}": v for k, v in result[g]["by_level"].items()},
                **result[g]["by_subject"]}
        headers = ("items", "n", "A %", "B %", "B - A (points) [interval]", "B only", "A only", "p",
                   "min. detectable", "verdict")
        lines += [f"## {g}", "", *table(headers, [_row(key, r) for key, r in rows.items()], "lrrrrrrrr"), ""]
    return "\n".join(lines)


def _row(key: str, r: dict[str, Any]) -> tuple[Any, ...]:
    d = r["difference"]
    return (key, r["n"], f"{100 * r['a']:.1f}", f"{100 * r['b']:.1f}",
            f"{100 * d['estimate']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]", r["b_only"], r["a_only"],
            f"{r['p_value']:.3g}", f"{100 * r['min_detectable']:.1f}", r["verdict"])
