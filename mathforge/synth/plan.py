"""A forecast before paying: run a pilot of about 1% of each stage, extrapolate to the recipe.

The pilot is the recipe itself with every target (and the core-set budget) scaled down, run against
the recipe's teacher (or `mathforge teacher-sim`). Per stage and method it measures requests, prompt
and completion tokens per kept sample; the full recipe's quotas times those give its requests and
tokens, the recipe's prices its dollars, and the engine's concurrency, rate limits and the pilot's
mean latency its wall time. The uncertainty is the pilot's sampling error: a method that kept k
samples in the pilot has its per-sample costs known to about 1/sqrt(k).

The pilot's responses land in `out/cache.sqlite` (the run directory's request cache), so
`mathforge synth RECIPE --out DIR` reuses every one of them that the full run asks again (the
same seeds are visited in the same order, so the first units of stage1_initial and stage2_hard
are the pilot's).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from mathforge.engine.config import EngineConfig
from mathforge.markdown import table
from mathforge.synth.pipeline import SynthConfig, quotas, run_synth

KEYS = ("requests", "prompt_tokens", "completion_tokens")
STAGES = {"stage1_initial": lambda c: c.stage1.initial_target, "stage1_normal": lambda c: c.stage1.target,
          "stage2_hard": lambda c: c.stage2.target}


def pilot_config(cfg: SynthConfig, fraction: float) -> SynthConfig:
    """The recipe with every target scaled by `fraction` (at least a few samples per method, so
    that every method is measured). The core-set keeps every pilot row it can (up to the recipe's
    budget), not 1% of its budget: stage1_normal's pilot must see seeds as varied as the run's."""
    floor = 3 * sum(1 for v in cfg.mix.values() if v > 0)

    def scaled(n: int) -> int:
        return min(n, max(floor, math.ceil(n * fraction)))

    initial = scaled(cfg.stage1.initial_target)
    s1 = replace(cfg.stage1, initial_target=initial, coreset_budget=min(cfg.stage1.coreset_budget, initial),
                 target=scaled(cfg.stage1.target))
    return replace(cfg, stage1=s1, stage2=replace(cfg.stage2, target=scaled(cfg.stage2.target)))


def plan(cfg: SynthConfig, out: str | Path, fraction: float = 0.01) -> dict[str, Any]:
    """Run the pilot into `out/pilot`, keep its responses in `out/cache.sqlite`, return the forecast."""
    out = Path(out)
    pilot = run_synth(pilot_config(cfg, fraction), out / "pilot")
    pilot.pop("datasets")
    engine = json.loads(sorted((out / "pilot" / "stats").glob("engine-*.json"))[-1].read_text())
    _share_cache(out / "pilot" / "cache.sqlite", out / "cache.sqlite")
    return forecast(cfg, pilot, engine.get("mean_latency_s") or 1.0)


def forecast(cfg: SynthConfig, pilot: dict[str, dict[str, dict[str, Any]]], latency_s: float) -> dict[str, Any]:
    """The full recipe's requests, tokens, dollars and seconds from a pilot's yield table."""
    ecfg = EngineConfig(**cfg.engine)
    stages = {}
    for stage, target_of in STAGES.items():
        if stage not in pilot:
            continue
        methods = {m: _method(q, pilot[stage].get(m, {})) for m, q in quotas(target_of(cfg), cfg.mix).items()}
        stages[stage] = {**_sum(methods.values()), "methods": methods}
    total = _sum(stages.values())
    rate = _requests_per_s(ecfg, latency_s, total)
    for row in [total, *stages.values(), *(m for s in stages.values() for m in s["methods"].values())]:
        row["usd"] = round(ecfg.cost(ecfg.model, row["prompt_tokens"], row["completion_tokens"]), 2)
        row["seconds"] = round(row["requests"] / rate, 1) if rate else None
    return {**total, "stages": stages, "latency_s": latency_s, "requests_per_s": round(rate, 2)}


def _method(quota: int, y: dict[str, Any]) -> dict[str, Any]:
    kept = y.get("kept", 0)
    if not kept:  # the pilot kept nothing: no estimate, flagged rather than guessed
        return {k: 0 for k in KEYS} | {"relative_error": None, "pilot_kept": 0, "quota": quota}
    per = {k: y.get(k, 0) / kept for k in KEYS}
    return {k: round(per[k] * quota) for k in KEYS} | {"relative_error": round(1 / math.sqrt(kept), 3),
                                                       "pilot_kept": kept, "quota": quota}


def _sum(rows: Any) -> dict[str, Any]:
    rows = list(rows)
    total = Counter()
    var = 0.0
    for r in rows:
        total.update({k: r[k] for k in KEYS})
        err = r.get("relative_error")
        var += (r["requests"] * (err if err is not None else 1.0)) ** 2
    out = dict(total)
    out["relative_error"] = round(math.sqrt(var) / out["requests"], 3) if out.get("requests") else None
    return {k: out.get(k, 0) for k in KEYS} | {"relative_error": out["relative_error"]}


def _requests_per_s(ecfg: EngineConfig, latency_s: float, total: dict[str, Any]) -> float:
    """The sustained rate: the window (concurrency / latency), capped by rpm and by tpm."""
    rate = ecfg.concurrency / max(latency_s, 1e-6)
    if ecfg.rpm:
        rate = min(rate, ecfg.rpm / 60)
    tokens = (total["prompt_tokens"] + total["completion_tokens"]) / max(total["requests"], 1)
    if ecfg.tpm and tokens:
        rate = min(rate, ecfg.tpm / 60 / tokens)
    return rate


def _share_cache(pilot: Path, target: Path) -> None:
    """Copy the pilot's responses into the run directory's cache (rows already there are kept)."""
    from mathforge.engine.cache import RequestCache

    RequestCache(target).close()  # creates the table when the run directory is new
    db = sqlite3.connect(target, timeout=60)
    try:
        db.execute("ATTACH DATABASE ? AS pilot", (str(pilot),))
        with db:
            db.execute("INSERT OR IGNORE INTO responses SELECT * FROM pilot.responses")
        db.execute("DETACH DATABASE pilot")
    finally:
        db.close()


def render(fc: dict[str, Any]) -> str:
    """The forecast as a table (per stage and method, then the total)."""
    rows = []
    for stage, s in fc["stages"].items():
        rows += [_row(stage, m, r, r["quota"]) for m, r in s["methods"].items()] + [_row(stage, "**all**", s, "")]
    rows.append(_row("**total**", "", fc, ""))
    headers = ("stage", "method", "quota", "requests", "prompt tok", "completion tok", "USD", "hours", "±")
    return "\n".join(table(headers, rows, "llrrrrrrr")) + (f"\n\nAt {fc['requests_per_s']} requests/s (concurrency / the pilot's mean latency "
                               f"{fc['latency_s']} s, within the rate limits); ± is the pilot's "
                               "relative sampling error (1/sqrt(samples kept) per method).")


def _row(stage: str, method: str, r: dict[str, Any], quota: Any) -> tuple[Any, ...]:
    hours = f"{r['seconds'] / 3600:.2f}" if r.get("seconds") is not None else "-"
    err = f"{r['relative_error']:.0%}" if r.get("relative_error") is not None else "?"
    return (stage, method, quota, f"{r['requests']:,}", f"{r['prompt_tokens']:,}", f"{r['completion_tokens']:,}",
            f"{r['usd']:,.2f}", hours, err)
