"""Summaries of graded samples: accuracy with a 95% Wilson interval per grader, per MATH level
(the paper's Table 2) and subject (Table 12), truncation, throughput, and the strict/symbolic
disagreements. Rendered to markdown from the summary dict, never parsed back."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from mathforge.markdown import table
from mathforge.stats import wilson


def accuracy(flags: list[bool]) -> dict[str, Any]:
    n, k = len(flags), sum(flags)
    lo, hi = wilson(k, n)
    return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi]}


def summarize(samples: list[dict[str, Any]], graders: tuple[str, ...], meta: dict[str, Any]) -> dict[str, Any]:
    """The summary of one evaluation run from its per-sample rows (see `run.sample_row`)."""
    out: dict[str, Any] = dict(meta)
    out["n"] = len(samples)
    out["accuracy"] = {g: accuracy([s["verdicts"][g]["correct"] for s in samples]) for g in graders}
    out["reasons"] = {g: dict(Counter(s["verdicts"][g]["reason"] for s in samples)) for g in graders}
    out["by_level"] = _breakdown(samples, graders, "level")
    out["by_subject"] = _breakdown(samples, graders, "subject")
    out["truncation_rate"] = sum(s["truncated"] for s in samples) / len(samples) if samples else 0.0
    out["generation_errors"] = sum(1 for s in samples if s.get("error"))
    out["disagreements"] = disagreements(samples, graders)
    out["items"] = item_results(samples, graders)
    return out


def item_results(samples: list[dict[str, Any]], graders: tuple[str, ...]) -> dict[str, Any]:
    """Per-item outcomes as columns (ids, levels, subjects, 0/1 per grader): what paired
    comparisons and bootstrap intervals over items need (mathforge.stats), compact in JSON."""
    return {"ids": [s["id"] for s in samples], "level": [s.get("level") for s in samples],
            "subject": [s.get("subject") for s in samples],
            "correct": {g: [int(bool(s["verdicts"][g]["correct"])) for s in samples] for g in graders}}


def _breakdown(samples: list[dict[str, Any]], graders: tuple[str, ...], field: str) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        if s.get(field) is not None:
            groups[str(s[field])].append(s)
    return {
        key: {g: accuracy([s["verdicts"][g]["correct"] for s in rows]) for g in graders}
        for key, rows in sorted(groups.items())
    }


def disagreements(samples: list[dict[str, Any]], graders: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows where the graders do not all agree, with what each one extracted."""
    rows = []
    for s in samples:
        verdicts = s["verdicts"]
        if len({verdicts[g]["correct"] for g in graders}) > 1:
            rows.append({"id": s["id"], "gold": s["gold"],
                         **{g: {k: verdicts[g][k] for k in ("correct", "extracted", "reason")} for g in graders}})
    return rows


def _pct(a: dict[str, Any]) -> str:
    lo, hi = a["ci95"]
    return f"{100 * a['accuracy']:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _table(title: str, groups: dict[str, Any], graders: tuple[str, ...]) -> list[str]:
    if not groups:
        return []
    rows = [(key, next(iter(per.values()))["n"], *(_pct(per[g]) for g in graders)) for key, per in groups.items()]
    return [f"## {title}", "", *table(("group", "n", *(f"{g} % [95% CI]" for g in graders)), rows,
                                      "lr" + "r" * len(graders)), ""]


def render_markdown(summary: dict[str, Any], graders: tuple[str, ...], max_disagreements: int = 50) -> str:
    """A human-readable report of one summary."""
    lines = [f"# {summary.get('benchmark', 'evaluation')}: {summary.get('model', '')}", ""]
    lines += [f"- items: {summary['n']}", f"- truncation rate: {100 * summary['truncation_rate']:.1f}%",
              f"- generation errors: {summary['generation_errors']}"]
    if summary.get("tokens_per_s") is not None:
        lines.append(f"- generation: {summary['tokens_per_s']:.1f} tokens/s")
    lines += ["", *_table("Accuracy", {"all": summary["accuracy"]}, graders), *meaning(summary, graders), ""]
    lines += _table("By MATH level (Table 2)", summary["by_level"], graders)
    lines += _table("By subject (Table 12)", summary["by_subject"], graders)
    dis = summary["disagreements"]
    lines += [f"## Grader disagreements ({len(dis)})", ""]
    if dis:
        rows = [(row["id"], f"`{_short(row['gold'])}`",
                 *(f"{'✓' if row[g]['correct'] else '✗'} `{_short(row[g]['extracted'])}`" for g in graders))
                for row in dis[:max_disagreements]]
        lines += table(("id", "gold", *graders), rows)
        if len(dis) > max_disagreements:
            lines.append(f"\n({len(dis) - max_disagreements} more in summary.json)")
    return "\n".join(lines) + "\n"


def meaning(summary: dict[str, Any], graders: tuple[str, ...], floor: float = 0.05) -> list[str]:
    """Plain words on what the accuracy can and cannot say, from its interval and the item count."""
    acc = summary["accuracy"][graders[0]]
    lo, hi = acc["ci95"]
    out = [f"What this means: with {summary['n']} items the 95% interval is {100 * (hi - lo):.0f} points wide; "
           "two models whose intervals overlap this much are not shown to differ."]
    if hi < floor:
        out.append(f"The whole interval is below {100 * floor:.0f}%: the model is at the floor on this benchmark "
                   "(it has not learned the task), so this number says nothing about the data it was trained on.")
    return out


def _short(text: Any, limit: int = 40) -> str:
    text = "" if text is None else str(text).replace("`", "'")  # the table escapes `|` and line breaks
    return text if len(text) <= limit else text[: limit - 1] + "…"
