"""`mathforge grade`: grade a file of responses with every grader side by side.

Rows carry an id, a response, and a gold answer, or a solution to read it from (`#### n` for
GSM8K-style, the boxed answer otherwise). Verdicts are written per row, one field per grader
(`strict`, `symbolic`, ...); the summary holds each grader's accuracy and the disagreeing rows.

With a group field, rows sharing its value are one item's sampled solutions (in file order): the
summary also holds pass@k, maj@k and avg@n with intervals, per level and subject when rows carry
them (see `mathforge.eval.sampled`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mathforge.answers import boxed_answer, gsm8k_answer
from mathforge.eval.report import accuracy, disagreements
from mathforge.eval.sampled import check_ks, default_ks, summarize_sampled
from mathforge.grading import DEFAULT_TIMEOUT_S, grade_batch
from mathforge.io import AtomicWriter, DataError, read_rows, write_json

CHUNK = 5000  # rows graded per round: bounded memory on large files, full worker pools


def gold_of(row: dict[str, Any], gold_field: str, solution_field: str) -> str | None:
    """The gold answer of a row: its gold field (or "gold"), else parsed from its solution."""
    for key in (gold_field, "gold"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    solution = row.get(solution_field)
    if not isinstance(solution, str):
        return None
    return gsm8k_answer(solution) if "####" in solution else boxed_answer(solution)


def _rows(path: Path, fields: tuple[str, str, str, str], group_field: str | None) -> list[dict[str, Any]]:
    id_field, response_field, gold_field, solution_field = fields
    rows = []
    for line, row in read_rows(path):
        gold = gold_of(row, gold_field, solution_field)
        if gold is None:
            raise DataError(f"{path}:{line}: no gold answer ('{gold_field}', 'gold' or a '{solution_field}' with one)")
        if group_field and row.get(group_field) is None:
            raise DataError(f"{path}:{line}: no '{group_field}' to group samples by")
        response = row.get(response_field)
        if not isinstance(response, str):
            raise DataError(f"{path}:{line}: field '{response_field}' must be a string")
        rows.append({"id": row.get(id_field, f"{path.name}:{line}"), "gold": gold, "response": response,
                     "level": row.get("level"), "subject": row.get("subject"), "line": line,
                     "group": row.get(group_field) if group_field else None})
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def group_items(rows: list[dict[str, Any]]) -> list[list[int]]:
    """Row indexes grouped into items by their group value (first appearance order, file order within)."""
    items: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        items.setdefault(row["group"], []).append(i)
    return list(items.values())


def grade_file(
    path: str | Path, out: str | Path, kind: str = "math", graders: tuple[str, ...] = ("strict", "symbolic"),
    fields: tuple[str, str, str, str] = ("id", "response", "answer", "solution"),
    timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None, progress: bool = False,
    group_field: str | None = None, ks: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Write per-row verdicts to `out` and `<out>.summary.json`; return the summary. With
    `group_field`, also pass@k / maj@k for each k in `ks` (default 1, 2, 4, ... n) and avg@n."""
    rows = _rows(Path(path), fields, group_field)
    if group_field:  # checked before any grading: a bad k or an item short of samples fails fast
        groups = group_items(rows)
        ks = tuple(ks or default_ks(len(groups[0]))) if groups else ()
        try:
            check_ks(groups, ks)
        except ValueError as e:
            raise DataError(f"{path}: grouped by '{group_field}': {e}") from None
    graded = []
    with AtomicWriter(out) as writer:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            pairs = [(r["gold"], r["response"]) for r in chunk]
            verdicts = {g: grade_batch(pairs, g, kind, workers=workers, timeout_s=timeout_s, progress=progress)
                        for g in graders}
            for i, r in enumerate(chunk):
                row = {"id": r["id"], "gold": r["gold"], **{g: verdicts[g][i].to_dict() for g in graders}}
                writer.write(row)
                graded.append({"id": r["id"], "gold": r["gold"], "level": r["level"], "subject": r["subject"],
                               "verdicts": {g: row[g] for g in graders}})
    summary = {
        "file": str(path), "kind": kind, "n": len(graded),
        "accuracy": {g: accuracy([r["verdicts"][g]["correct"] for r in graded]) for g in graders},
        "disagreements": disagreements(graded, graders),
    }
    if group_field:
        summary.update(summarize_sampled([[graded[i] for i in group] for group in groups], graders, ks))
    write_json(Path(str(out) + ".summary.json"), summary)
    return summary
