"""Metrics of several sampled solutions per item: pass@k, maj@k and avg@n, each with a bootstrap
interval over items (mathforge.stats), per grader, overall and per level / subject.

- pass@k: the chance that at least one of k samples drawn without replacement from an item's n is
  correct, by the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k), computed as
  the product 1 - prod_{i=n-c+1..n} (1 - k/i) so that large n never overflows or cancels.
- maj@k: the majority answer of the item's *first* k samples (answers as each grader extracted
  them, normalised; samples without an answer do not vote) is right. Ties go to the tied answer
  that appeared first, so the result is deterministic and does not depend on dict or hash order.
  The item is right when the grader judged that answer's first sample right.
- avg@n: the mean correctness of all n samples (the expected pass@1 of one draw).

An item is a list of sample rows, each `{"verdicts": {grader: {"correct", "extracted"}}}` plus
`level` and `subject` when known (the rows of `samples.jsonl` or of `mathforge grade`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mathforge.grading.strict import normalize
from mathforge.markdown import table
from mathforge.stats import interval

Item = Sequence[dict[str, Any]]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one item with `c` correct among `n` samples (needs k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def majority(answers: Sequence[str | None]) -> int | None:
    """The index of the first sample carrying the majority answer (None when none has an answer).
    Answers are compared after Hendrycks normalisation; ties go to the answer seen first."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None or not str(answer).strip():
            continue
        key = vote_key(str(answer))
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return None
    best = max(counts, key=lambda a: (counts[a], -first[a]))
    return first[best]


def vote_key(answer: str) -> str:
    """An answer's ballot: its Hendrycks normal form, or the stripped text where that fails."""
    try:
        return normalize(answer)
    except (AssertionError, IndexError, ValueError):
        return answer.strip()


def maj_at_k(samples: Item, grader: str, k: int) -> float:
    """1.0 when the majority answer of the first `k` samples is right under `grader`, else 0.0."""
    head = samples[:k]
    pick = majority([s["verdicts"][grader].get("extracted") for s in head])
    return 0.0 if pick is None else float(bool(head[pick]["verdicts"][grader]["correct"]))


def item_scores(samples: Item, grader: str, ks: Sequence[int]) -> dict[str, float]:
    """pass@k and maj@k for each k, and avg@n, of one item under one grader."""
    n = len(samples)
    c = sum(bool(s["verdicts"][grader]["correct"]) for s in samples)
    scores = {f"pass@{k}": pass_at_k(n, c, k) for k in ks}
    scores.update({f"maj@{k}": maj_at_k(samples, grader, k) for k in ks})
    scores[f"avg@{n}"] = c / n
    return scores


def metric_names(ks: Sequence[int], n: int) -> list[str]:
    return [f"pass@{k}" for k in ks] + [f"maj@{k}" for k in ks] + [f"avg@{n}"]


def check_ks(items: Sequence[Item], ks: Sequence[int]) -> int:
    """The samples per item (every item must have the same number, at least max(ks))."""
    sizes = {len(samples) for samples in items}
    if not items or len(sizes) != 1:
        raise ValueError(f"every item needs the same number of samples, got sizes {sorted(sizes)}")
    n = sizes.pop()
    if not ks or min(ks) < 1 or max(ks) > n:
        raise ValueError(f"k must be in 1..{n} (the samples per item), got {list(ks)}")
    return n


def score(items: Sequence[Item], graders: Sequence[str], ks: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """{metric: {grader: Interval dict}} over `items`, each metric's interval a bootstrap over items."""
    n = check_ks(items, ks)
    out: dict[str, Any] = {m: {} for m in metric_names(ks, n)}
    for g in graders:
        per_item = [item_scores(samples, g, ks) for samples in items]
        for metric in out:
            out[metric][g] = interval([s[metric] for s in per_item], seed=seed).to_dict()
    return out


def summarize_sampled(items: Sequence[Item], graders: Sequence[str], ks: Sequence[int]) -> dict[str, Any]:
    """The sampled part of a summary: top-level `pass@k`/`maj@k`/`avg@n` keys, plus the same per
    level and per subject (groups with the field set)."""
    n = check_ks(items, ks)
    out = {"samples_per_item": n, "ks": list(ks), "items_sampled": len(items), **score(items, graders, ks)}
    for field in ("level", "subject"):
        groups: dict[str, list[Item]] = defaultdict(list)
        for samples in items:
            if samples[0].get(field) is not None:
                groups[str(samples[0][field])].append(samples)
        out[f"sampled_by_{field}"] = {key: {"n": len(group), **score(group, graders, ks)}
                                      for key, group in sorted(groups.items())}
    return out


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself: the usual pass@k / maj@k columns for n samples."""
    ks = [1]
    while ks[-1] * 2 <= n:
        ks.append(ks[-1] * 2)
    return ks if ks[-1] == n else [*ks, n]


def render_sampled(summary: dict[str, Any], graders: Sequence[str]) -> str:
    """Markdown tables of a summary's sampled metrics: overall, then per level and subject."""
    names = shown_metrics(summary)
    lines = [f"## Sampled: {summary['samples_per_item']} samples per item, {summary['items_sampled']} items "
             "(% with a 95% bootstrap interval over items)", ""]
    lines += _metric_table({"all": {"n": summary["items_sampled"], **{m: summary[m] for m in names}}}, names, graders)
    for field in ("level", "subject"):
        if summary[f"sampled_by_{field}"]:
            lines += [f"### By {field}", "", *_metric_table(summary[f"sampled_by_{field}"], names, graders)]
    return "\n".join(lines) + "\n"


def shown_metrics(summary: dict[str, Any]) -> list[str]:
    """The metrics a table shows: those of k = 1, 2, 4, ... n among the summary's k (all stay in the JSON)."""
    n = summary["samples_per_item"]
    return metric_names([k for k in summary["ks"] if k in default_ks(n)], n)


def _metric_table(groups: dict[str, Any], names: Sequence[str], graders: Sequence[str]) -> list[str]:
    rows = [(key, per["n"], g, *(f"{100 * per[m][g]['estimate']:.1f} [{100 * per[m][g]['lo']:.1f}, "
                                 f"{100 * per[m][g]['hi']:.1f}]" for m in names))
            for key, per in groups.items() for g in graders]
    return [*table(("group", "n", "grader", *names), rows, "lrl" + "r" * len(names)), ""]
