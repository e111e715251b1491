"""The decontamination audit: plant leaks of each kind into clean training rows, run matcher sets,
and report recall per leak kind beside the removal rate on the unplanted rows, split into rows that
are number-swapped siblings of a test problem and rows that are not (`mathforge decontam-audit`).

The first row of the table is the paper's filter as it was (30 words, `NgramMatcher(whole=False)`), the
yardstick for "removes no more than today". Hosts of leaks are training rows that neither that
filter nor the sibling key flags, so a leak is caught for what was planted, not for its host.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from mathforge.quality.leaks import LEAKS, plant_leaks, sibling_key
from mathforge.quality.matchers import WORD_CHANGE, Decontaminator, Match, NgramMatcher
from mathforge.record import Record

BASELINE = "today: 30-word n-grams"


def audit_rows(train: Sequence[Record], sets: dict[str, list[Record]], *, clean: int = 2000, per_kind: int = 500,
               seed: int = 0, rewrite: Callable[[str], str] | None = None, today: NgramMatcher | None = None
               ) -> tuple[list[Record], list[Record]]:
    """(unplanted rows, planted rows): `clean` training rows as they are, and `per_kind` leaks of
    each kind, each on its own host (tagged `meta["leak"]`)."""
    rng = random.Random(seed)
    pool = rng.sample(list(train), len(train))
    if len(pool) < clean + len(LEAKS) * per_kind:
        raise ValueError(f"need {clean + len(LEAKS) * per_kind} training rows, got {len(pool)}")
    keys = {sibling_key(r.problem) for records in sets.values() for r in records}
    today = today or NgramMatcher(sets, whole=False)
    flagged = {r.id for r, m in zip(pool[clean:], _scan(today, pool[clean:]), strict=True) if m}
    hosts = [r for r in pool[clean:] if r.id not in flagged and sibling_key(r.problem) not in keys]
    share = len(hosts) // len(LEAKS)
    planted = [row for k, kind in enumerate(LEAKS)
               for row in plant_leaks(rng, hosts[k * share : (k + 1) * share], sets, kind, per_kind, rewrite)]
    return pool[:clean], planted


def _scan(matcher: Any, rows: Sequence[Record], batch_size: int = 1024) -> list[Match | None]:
    return [m for start in range(0, len(rows), batch_size) for m in matcher.match(rows[start : start + batch_size])]


def teacher_rewrite(engine: Any) -> Callable[[str], str]:
    """Paraphrases written by a teacher (`engine`, any backend; cached, so a rerun pays nothing);
    an empty or failed answer keeps the problem as it was."""
    from mathforge.engine.types import Request, Sampling
    from mathforge.quality.judge import load_template
    from mathforge.record import stable_id

    template, version = load_template("paraphrase_v1.j2")

    def rewrite(problem: str) -> str:
        prompt = template.render(problem=problem)
        request = Request(key=stable_id(version, prompt), messages=[{"role": "user", "content": prompt}],
                          sampling=Sampling(temperature=0.0, max_tokens=400))
        result = engine.run([request], desc="paraphrase")[0]
        return (result.texts[0].strip() if result.ok else "") or problem
    return rewrite


def _rates(removed: Sequence[bool], unplanted: Sequence[Record], planted: Sequence[Record],
           siblings: Sequence[bool]) -> dict[str, Any]:
    """Recall per leak kind and removal rates of the unplanted rows, in percent."""
    clean, leaks = removed[: len(unplanted)], removed[len(unplanted) :]
    row: dict[str, Any] = {}
    for kind in LEAKS:
        hits = [r for r, p in zip(leaks, planted, strict=True) if p.meta["leak"]["kind"] == kind]
        row[f"recall_{kind}"] = round(100 * sum(hits) / max(len(hits), 1), 2)
    others = [r for r, s in zip(clean, siblings, strict=True) if not s]
    sibs = [r for r, s in zip(clean, siblings, strict=True) if s]
    row["removed_not_siblings"] = round(100 * sum(others) / max(len(others), 1), 2)
    row["removed_siblings"] = round(100 * sum(sibs) / max(len(sibs), 1), 2)
    return row


def _kept_at(match: Match | None, threshold: float | None) -> bool:
    """Whether a row caught at the lowest threshold of a sweep is still caught at `threshold`
    (None: the run's own). Exact: the embedding matcher runs last and removes a row iff the
    similarity it reports reaches the threshold, on similarity alone that of the nearest test
    problem, with `restates` that of the most similar test problem the row restates."""
    if match is None or match.matcher != "embedding" or threshold is None:
        return match is not None
    return (match.similarity or 0.0) >= threshold


def audit(train: Sequence[Record], sets: dict[str, list[Record]], matcher_sets: Sequence[Sequence[str]],
          thresholds: Sequence[float] = (0.9,), *, clean: int = 2000, per_kind: int = 500, seed: int = 0,
          n: int = 30, batch_size: int = 1024, rewrite: Callable[[str], str] | None = None,
          word_changes: Sequence[float] = (WORD_CHANGE,), **decontam_opts: Any) -> dict[str, Any]:
    """The trade-off table: one row per matcher set (and where `embedding` is in it, per threshold,
    on similarity alone and with the `restates` check at each of `word_changes`)."""
    today = NgramMatcher(sets, n=30, whole=False)
    unplanted, planted = audit_rows(train, sets, clean=clean, per_kind=per_kind, seed=seed, rewrite=rewrite,
                                    today=today)
    rows = [*unplanted, *planted]
    keys = {sibling_key(r.problem) for records in sets.values() for r in records}
    siblings = [sibling_key(r.problem) in keys for r in unplanted]
    table = [{"matchers": BASELINE, "threshold": None, "word_change": None,
              **_rates([m is not None for m in _scan(today, rows)], unplanted, planted, siblings)}]
    for names in matcher_sets:
        # a sweep of thresholds is exact from one run at the lowest threshold (`_kept_at`): one on
        # similarity alone (the full path), one per `word_change` (prefiltered); not with a judge
        sweep = sorted(thresholds) if "embedding" in names and "llm" not in names else [None]
        checks = [None, *word_changes] if sweep[0] is not None else [WORD_CHANGE]
        for check in checks:
            dc = Decontaminator(sets, names, n=n, threshold=sweep[0] or 0.85, **{**decontam_opts, "word_change": check})
            found = [m for start in range(0, len(rows), batch_size) for m in dc.matches(rows[start : start + batch_size])]
            for t in sweep:
                table.append({"matchers": ",".join(names), "threshold": t, "word_change": check if t else None,
                              **_rates([_kept_at(m, t) for m in found], unplanted, planted, siblings)})
    return {"train_rows": len(unplanted), "leaks_per_kind": per_kind, "seed": seed, "n": n,
            "unplanted_siblings": sum(siblings), "table": table}
