"""A forecast before paying: run a pilot of a few % of each stage, extrapolate to the recipe.

The pilot is the recipe itself with every target (and the core-set budget) scaled down, run against
the recipe's teacher (or `mathforge teacher-sim`): first at half the pilot's size, then at its size
(reusing the first one's answers), then doubling up to a cap while some method has kept too little
to be estimated. Per stage and method it measures units (a seed's request chain), rows kept, and
requests and tokens per unit; the run's units are those that fill the method's quota at the pilot's
rows per unit, at most its unit budget (`max_passes`), so a method the pilot saw keep nothing is
forecast from the requests it spent (it will spend its whole budget), never as 0; a method the
pilot never ran makes the forecast a declared lower bound. The relative error is the pilot's
sampling error (about 1/sqrt(rows kept) per method) and the change, beyond its noise, between the
forecasts from the last pilot and from the one of half its size (duplicates, seeds used up); the
90% interval is ± 1.645 of it. `with_pilot` adds what the pilots sent and the run will not reuse:
what the teacher answers in all. Dollars are shown at online and batch prices, wall time online
(concurrency / latency, rate limits) and in batch mode (waves of dependent requests x a batch's
turnaround).

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
from mathforge.synth.stream import max_units

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


MIN_KEPT = 10  # rows a method must keep in the pilot before its yield counts as measured (±1/sqrt(10))
Z90 = 1.645  # the 90% interval is the point ± Z90 relative errors


def plan(cfg: SynthConfig, out: str | Path, fraction: float = 0.01, max_fraction: float = 0.08,
         turnaround_s: float = 4 * 3600.0) -> dict[str, Any]:
    """Run the pilot into `out/pilot*`, keep its responses in `out/cache.sqlite`, return the forecast.

    The pilot runs at half of `fraction`, then at `fraction` (reusing the first one's answers), so
    that the yield's change with the run's size is measured; then it doubles, up to `max_fraction`,
    while some method has kept fewer than MIN_KEPT rows. `turnaround_s` is one batch's expected
    turnaround, for batch mode's wall time (waves × turnaround)."""
    out, max_fraction = Path(out), max(max_fraction, fraction)
    runs, previous, f = [], None, fraction / 2
    while True:
        pilot_dir = out / ("pilot" if f == fraction else f"pilot-{f:g}")
        if previous is not None:
            _share_cache(previous / "cache.sqlite", pilot_dir / "cache.sqlite")
        table = run_synth(pilot_config(cfg, f), pilot_dir)
        table.pop("datasets")
        runs.append((f, table, json.loads(sorted((pilot_dir / "stats").glob("engine-*.json"))[-1].read_text())))
        previous = pilot_dir
        if f >= max_fraction or (f >= fraction and _measured(table)):
            break
        f = min(f * 2, max_fraction)
    _share_cache(previous / "cache.sqlite", out / "cache.sqlite")
    (_, small, _), (f, pilot, engine) = runs[-2], runs[-1]  # the last pilot, and the one of half its size
    latency = engine.get("mean_latency_s") or 1.0
    fc = forecast(cfg, pilot, latency, smaller=small, turnaround_s=turnaround_s, waves=_waves(previous, latency))
    return {**fc, "pilot_fraction": f, **with_pilot(fc, sum(e.get("calls", 0) for _, _, e in runs), pilot)}


REUSED = ("stage1_initial", "stage2_hard")  # the run's first units there are the pilot's: same seeds, same order


def with_pilot(fc: dict[str, Any], sent: int, pilot: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """What the teacher answers in all, the pilot included: the run's forecast, plus the requests
    the pilots sent (every size; the engine's calls), less those the run takes from the cache (the
    last pilot's REUSED stages; stage1_normal's seeds are a core-set of the pilot's own rows, so its
    few shared seeds are not counted, and the total leans high by them)."""
    reused = min(sent, sum(y.get("requests", 0) for s in REUSED for y in pilot.get(s, {}).values()))
    shift = sent - reused
    interval = [lo + shift for lo in fc["interval"]] if fc.get("interval") else None
    return {"pilot_requests": sent, "pilot_reused": reused,
            "with_pilot": {"requests": fc["requests"] + shift, "interval": interval}}


def _measured(table: dict[str, dict[str, dict[str, Any]]]) -> bool:
    """Every method kept enough rows to estimate its yield, or ran enough units (3 x MIN_KEPT) to
    show that its yield is low (then its unit budget, or the few rows it kept, bound it)."""
    return all(y.get("kept", 0) >= MIN_KEPT or y.get("units", 0) >= 3 * MIN_KEPT
               for s in table.values() for y in s.values())


def _waves(pilot_dir: Path, latency_s: float) -> float:
    """The pilot's sequential rounds of requests: its synthesis stages' seconds over the mean latency
    (stage 1's two rounds one after the other, stage 2 beside them). A pilot barely fills the window,
    so this is the chain of dependent requests that a batch run goes through wave by wave."""
    def seconds(stage: str) -> float:
        path = pilot_dir / "stats" / f"{stage}.json"
        return json.loads(path.read_text()).get("seconds", 0.0) if path.exists() else 0.0

    chain = max(seconds("stage1_initial") + seconds("stage1_normal"), seconds("stage2_hard"))
    return max(1.0, chain / latency_s) if latency_s else 1.0


def forecast(cfg: SynthConfig, pilot: dict[str, dict[str, dict[str, Any]]], latency_s: float,
             smaller: dict[str, dict[str, dict[str, Any]]] | None = None, turnaround_s: float = 4 * 3600.0,
             waves: float = 1.0) -> dict[str, Any]:
    """The full recipe's requests, tokens, dollars and seconds (online and in batch mode) from a
    pilot's yield table; `smaller`, a pilot of half its size, measures the yield's change with size."""
    ecfg = EngineConfig(**cfg.engine)
    stages = {}
    for stage, target_of in STAGES.items():
        if stage not in pilot:
            continue
        stages[stage] = _stage(cfg, target_of(cfg), pilot[stage])
        if smaller and stage in smaller:
            _widen(stages[stage], _drift(_stage(cfg, target_of(cfg), smaller[stage]), stages[stage]))
    total = _sum(stages.values())
    rate = _requests_per_s(ecfg, latency_s, total)
    for row in [total, *stages.values(), *(m for s in stages.values() for m in s["methods"].values())]:
        row["usd"] = round(ecfg.online_cost(ecfg.model, row["prompt_tokens"], row["completion_tokens"]), 2)
        row["usd_batch"] = round(row["usd"] * ecfg.batch_discount, 2)
        row["seconds"] = round(row["requests"] / rate, 1) if rate else None
        row["interval"] = _interval(row)
    total["batch_waves"] = round(waves)  # every unit that can run goes in each wave
    total["batch_seconds"] = round(total["batch_waves"] * turnaround_s, 1)
    return {**total, "stages": stages, "latency_s": latency_s, "requests_per_s": round(rate, 2),
            "turnaround_s": turnaround_s}


def _method(quota: int, y: dict[str, Any], unit_budget: int) -> dict[str, Any]:
    """One method's forecast from its pilot row, per unit (a seed's request chain): units to fill
    the quota at the pilot's rows per unit, at most the method's unit budget, times the pilot's
    requests and tokens per unit. A method that kept nothing is forecast to spend its whole budget
    (what the run does), from the requests it spent, never as 0."""
    units, kept = y.get("units", 0), y.get("kept", 0)
    rows = kept + (y.get("dropped") or {}).get("over_quota", 0)
    base = {"quota": quota, "pilot_kept": kept, "pilot_units": units, "pilot_requests": y.get("requests", 0)}
    if not units:
        return {k: 0 for k in KEYS} | base | {"relative_error": None, "lower_bound": (
            "the pilot ran no unit of this method (no usable seed in the pilot?)")}
    need = quota * units / rows if rows else math.inf
    run_units = min(need, unit_budget) if unit_budget else need
    if math.isinf(run_units):
        return {k: y.get(k, 0) for k in KEYS} | base | {"relative_error": None, "lower_bound": (
            f"the pilot kept none of this method's {units} units and it has no unit budget")}
    # Units fixed by the budget: only the cost per unit is uncertain; else the yield, ~1/sqrt(rows).
    err = 1 / math.sqrt(units) if need >= unit_budget else math.sqrt(1 / rows + 1 / units)
    return {k: round(y.get(k, 0) / units * run_units) for k in KEYS} | base | {
        "relative_error": round(err, 3), "lower_bound": None, "budget_bound": need >= unit_budget}


def _stage(cfg: SynthConfig, target: int, pilot: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One stage's forecast: its methods' (each filling its quota of `target`), and their sum."""
    methods = {m: _method(q, pilot.get(m, {}), max_units(q, cfg.max_passes))
               for m, q in quotas(target, cfg.mix).items()}
    return {**_sum(methods.values()), "methods": methods}


def _drift(smaller: dict[str, Any], pilot: dict[str, Any]) -> float:
    """The relative change of a stage's forecast requests from the half-size pilot's to the pilot's
    (duplicates and seeds used up move it as a run grows), beyond what sampling noise explains.

    Both are forecasts of the same recipe (each method filling its own quota), so a pilot whose
    small size gives each method a floor of a few samples does not read as a change of yield. The
    pilot holds the half-size pilot's units (the same seeds, in the same order), so the noise of
    their difference is sqrt(e_small^2 - e_pilot^2), not the two errors added."""
    a, b = smaller["requests"], pilot["requests"]
    ea, eb = smaller.get("relative_error"), pilot.get("relative_error")
    if not (a and b) or ea is None or eb is None or smaller.get("lower_bound") or pilot.get("lower_bound"):
        return 0.0
    return max(0.0, abs(b / a - 1) - math.sqrt(max(ea * ea - eb * eb, 0.0)))


def _widen(row: dict[str, Any], drift: float) -> None:
    row["size_drift"] = round(drift, 3)
    if row.get("relative_error") is not None:
        row["relative_error"] = round(math.hypot(row["relative_error"], drift), 3)


def _interval(row: dict[str, Any]) -> list[int] | None:
    err = row.get("relative_error")
    if err is None or row.get("lower_bound"):
        return None
    return [round(row["requests"] * max(0.0, 1 - Z90 * err)), round(row["requests"] * (1 + Z90 * err))]


def _sum(rows: Any) -> dict[str, Any]:
    rows = list(rows)
    total = Counter()
    var = 0.0
    bounds = []
    for r in rows:
        total.update({k: r[k] for k in KEYS})
        err = r.get("relative_error")
        var += (r["requests"] * (err if err is not None else 1.0)) ** 2
        if r.get("lower_bound"):
            bounds.append(r["lower_bound"])
    out = {k: total.get(k, 0) for k in KEYS}
    err = round(math.sqrt(var) / out["requests"], 3) if out["requests"] else None
    # A part that is only a lower bound makes the whole one: said once, with its reason.
    return out | {"relative_error": err, "lower_bound": "; ".join(dict.fromkeys(bounds)) or None}


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
    """The forecast as a table (per stage and method, then the total), online and batch side by side."""
    rows = []
    for stage, s in fc["stages"].items():
        rows += [_row(stage, m, r, r["quota"]) for m, r in s["methods"].items()] + [_row(stage, "**all**", s, "")]
    rows.append(_row("**total**", "", fc, ""))
    headers = ("stage", "method", "quota", "requests", "90% interval", "prompt tok", "completion tok", "USD online",
               "USD batch", "hours online", "±")
    notes = [f"\n\nOnline: {fc['requests_per_s']} requests/s (concurrency / the pilot's mean latency {fc['latency_s']} s, "
             f"within the rate limits), {fc['seconds'] / 3600:.1f} h. Batch mode: {fc['batch_waves']} waves of dependent "
             f"requests x {fc['turnaround_s'] / 3600:g} h turnaround = {fc['batch_seconds'] / 3600:.1f} h, at "
             f"${fc['usd_batch']:,.2f}. ± is the relative error: the pilot's sampling error per method, and the "
             f"yield's change from a half-size pilot (pilot: {fc.get('pilot_fraction', 0):.1%} of each stage)."]
    if fc.get("with_pilot"):
        w = fc["with_pilot"]
        span = f" (90% interval {w['interval'][0]:,}-{w['interval'][1]:,})" if w["interval"] else ""
        notes.append(f"\n\nWith the pilot: the pilot sent {fc['pilot_requests']:,} requests, of which the run takes "
                     f"about {fc['pilot_reused']:,} from the cache: {w['requests']:,} requests in all{span}.")
    if fc.get("lower_bound"):
        notes.append(f"\n\n**The total is a lower bound, not a forecast**: {fc['lower_bound']}.")
    return "\n".join(table(headers, rows, "llrrlrrrrrr")) + "".join(notes)


def _row(stage: str, method: str, r: dict[str, Any], quota: Any) -> tuple[Any, ...]:
    hours = f"{r['seconds'] / 3600:.2f}" if r.get("seconds") is not None else "-"
    err = f"{r['relative_error']:.0%}" if r.get("relative_error") is not None else "?"
    span = f"{r['interval'][0]:,}-{r['interval'][1]:,}" if r.get("interval") else "lower bound"
    return (stage, method, quota, f"{r['requests']:,}", span, f"{r['prompt_tokens']:,}", f"{r['completion_tokens']:,}",
            f"{r['usd']:,.2f}", f"{r['usd_batch']:,.2f}", hours, err)
