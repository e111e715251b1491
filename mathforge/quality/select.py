"""Selection strategies under a budget, one switchable step (the paper's §4.3.2-4.3.3 ablations).

- `random`: a uniform sample; the paper's hard-to-beat baseline (Table 4).
- `verifier`: a uniform sample of the records that passed verification (`verify.verdict` True:
  answer agreement, self-consistency and/or the verifier model). The paper finds this raises
  correctness but lowers difficulty, and loses to random selection.
- `hard`: hard problems first (MATH level >= `min_level` and/or the LLM judge's `hard`), then the
  rest by descending difficulty (level, judge score, or the fail rate rejection sampling measured,
  `meta["difficulty"]["pass_rate"]`, on the same 1-5 scale); the paper's stage-2 choice, which
  beats random (Table 5).
- `coreset`: k-center greedy on problem embeddings (diversity).

Every selection reports the level/subject distribution (and judge scores) before and after, so
a drop in difficulty is visible whichever strategy runs.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from mathforge.filters import Distribution
from mathforge.quality.verify import CHECKS, verdict
from mathforge.record import Record

STRATEGIES = ("random", "verifier", "hard", "coreset")


@dataclass(frozen=True)
class SelectConfig:
    strategy: str = "random"
    budget: int = 1000
    seed: int = 0
    min_level: int = 4  # hard: MATH levels counted as hard (the paper's stage 2 uses 4 and 5)
    hard_by: str = "both"  # hard: "level", "judge" or "both" (either says hard)
    checks: tuple[str, ...] = CHECKS  # verifier: which verification results count
    embed_model: str | None = None  # coreset: sentence-transformers model (None: embedded MiniLM)


@dataclass
class Selection:
    records: list[Record]
    report: dict[str, Any]


def select(records: Sequence[Record], config: SelectConfig, vectors: np.ndarray | None = None) -> Selection:
    """Choose at most `config.budget` records with `config.strategy`, in input order. `vectors`:
    coreset: the problems' embeddings when already computed (`quality.steps.embed_shards`)."""
    if config.strategy not in _CHOOSERS:
        raise ValueError(f"unknown selection strategy '{config.strategy}' (known: {', '.join(STRATEGIES)})")
    if config.budget < 0:
        raise ValueError(f"budget must be >= 0, got {config.budget}")
    chooser = partial(_coreset, vectors=vectors) if config.strategy == "coreset" else _CHOOSERS[config.strategy]
    chosen, extra = chooser(list(records), config)
    picked = [records[i] for i in sorted(chosen)]
    report = {"strategy": config.strategy, "budget": config.budget, "seen": len(records),
              "selected": len(picked), **extra,
              "before": describe(records), "after": describe(picked)}
    return Selection(picked, report)


def describe(records: Iterable[Record]) -> dict[str, Any]:
    """Levels, subjects, judge scores, measured pass rates and mean level of records, streaming."""
    dist, scores, rates = Distribution(), Counter(), Counter()
    for record in records:
        dist.add(record)
        scores[str((record.meta.get("difficulty") or {}).get("score", "unjudged"))] += 1
        rates[pass_rate_bin(record)] += 1
    return _summary(dist, scores, rates)


def pass_rate_bin(record: Record) -> str:
    """The bin of the teacher's measured pass rate on a record's problem (rejection sampling)."""
    rate = (record.meta.get("difficulty") or {}).get("pass_rate")
    if rate is None:
        return "unmeasured"
    return "0" if rate == 0 else "1" if rate >= 1 else f"<{min(b for b in (0.25, 0.5, 0.75, 1.0) if rate < b)}"


def merge_descriptions(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One `describe` result from those of several shards."""
    dist, scores, rates = Distribution(), Counter(), Counter()
    for part in parts:
        dist.total += part["total"]
        dist.levels.update(part["levels"])
        dist.subjects.update(part["subjects"])
        scores.update(part["judge_scores"])
        rates.update(part.get("pass_rates", {}))
    return _summary(dist, scores, rates)


def _summary(dist: Distribution, scores: Counter, rates: Counter) -> dict[str, Any]:
    known = {int(k): v for k, v in dist.levels.items() if k != "unknown"}
    n = sum(known.values())
    return {**dist.to_dict(), "judge_scores": dict(sorted(scores.items())), "pass_rates": dict(sorted(rates.items())),
            "mean_level": round(sum(k * v for k, v in known.items()) / n, 3) if n else None}


def _random(records: list[Record], cfg: SelectConfig) -> tuple[list[int], dict[str, Any]]:
    k = min(cfg.budget, len(records))
    return random.Random(cfg.seed).sample(range(len(records)), k), {}


def _verifier(records: list[Record], cfg: SelectConfig) -> tuple[list[int], dict[str, Any]]:
    verdicts = [verdict(r, cfg.checks) for r in records]
    passed = [i for i, v in enumerate(verdicts) if v]
    k = min(cfg.budget, len(passed))
    counts = Counter(str(v) for v in verdicts)
    return random.Random(cfg.seed).sample(passed, k), {"verified": {"passed": counts["True"],
                                                                     "failed": counts["False"],
                                                                     "undecided": counts["None"]}}


def is_hard(record: Record, min_level: int = 4, hard_by: str = "both") -> bool:
    """Hard by MATH level, by the LLM difficulty judge (`meta["difficulty"]["hard"]`), or either."""
    by_level = record.level is not None and record.level >= min_level
    by_judge = bool((record.meta.get("difficulty") or {}).get("hard"))
    return {"level": by_level, "judge": by_judge, "both": by_level or by_judge}[hard_by]


def difficulty(record: Record) -> float:
    """A row's difficulty on the 1-5 scale: its level, the judge's score or the measured fail rate, the highest."""
    judged = record.meta.get("difficulty") or {}
    rate = judged.get("pass_rate")
    measured = 1 + 4 * (1 - rate) if rate is not None else 0  # always solved -> 1, never -> 5
    return max(judged.get("score") or 0, record.level or 0, measured)


def _hard(records: list[Record], cfg: SelectConfig) -> tuple[list[int], dict[str, Any]]:
    if cfg.hard_by not in ("level", "judge", "both"):
        raise ValueError(f"hard_by must be level, judge or both, got '{cfg.hard_by}'")
    rng = random.Random(cfg.seed)
    hard = [i for i, r in enumerate(records) if is_hard(r, cfg.min_level, cfg.hard_by)]
    rng.shuffle(hard)
    hard_set = set(hard)
    rest = [i for i in range(len(records)) if i not in hard_set]
    rng.shuffle(rest)  # random among equals, then hardest first
    rest.sort(key=lambda i: -difficulty(records[i]))
    chosen = (hard + rest)[: cfg.budget]
    return chosen, {"hard_available": len(hard), "hard_selected": min(len(hard), cfg.budget)}


def _coreset(records: list[Record], cfg: SelectConfig, vectors: np.ndarray | None = None) -> tuple[list[int], dict[str, Any]]:
    from mathforge.embed import embed_texts
    from mathforge.quality.coreset import k_center_greedy

    if cfg.budget >= len(records):
        return list(range(len(records))), {}
    if vectors is None:
        vectors = embed_texts([r.problem for r in records], model=cfg.embed_model)
    result = k_center_greedy(vectors, cfg.budget, seed=cfg.seed)
    return result.indices.tolist(), {"coverage": result.report}


_CHOOSERS: dict[str, Callable[[list[Record], SelectConfig], tuple[list[int], dict[str, Any]]]] = {
    "random": _random, "verifier": _verifier, "hard": _hard, "coreset": _coreset,
}
