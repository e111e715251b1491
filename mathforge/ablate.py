"""The paper's experiments as one command each (`mathforge ablate RECIPE --out DIR`).

An ablation is a base run recipe (`mathforge run`'s, or a train-only one), named arms that each
override any of its fields (`synth.*`, `clean.*`, `train.*`, `eval.*`, `teacher_sim.*`), and
replicates: every data seed (the teacher's and the seed subset's: `data_seed_fields` and any
`{data_seed}` in a string of the recipe) crossed with every training seed. A null arm repeats the
base with other seeds: the noise floor every other difference is read against.

    for each arm x data seed x training seed: one run directory (`runs/<arm>/d<data>-t<train>`),
    its steps keyed by the one step model (mathforge.rundir). A replicate whose first steps carry the
    keys of a finished directory starts as a copy of it, so synthesis and cleaning run once per data
    seed however many arms and training seeds read them, and adding an arm runs only its own steps.
    -> per arm: accuracy overall and per level, 95% bootstrap intervals over items and replicates
    -> per arm: paired difference against the base on the same items; per replicate, exact McNemar
       ("these two models differ"); across replicates, the seed-aware verdict ("these two configs
       differ": a t-test on per-replicate paired differences, see `verdict`)
    -> comparison.json, report.md, report.html (per-level bars), steps.jsonl (what ran, what was reused)

Why a copy and not a store of step outputs addressed by key: a run directory's outputs are fixed
paths (rundir.py), and a copied directory rerun under a changed config is exactly the rerun the step
model is built and tested for (changed steps reset and run again, unchanged ones are reused), so an
ablation adds no second way of running a step. The copy costs disk (a miniature run is tens of MB).
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mathforge import htmlreport as H
from mathforge.config import ConfigError, _read_recipe, build, merge, override_tree
from mathforge.io import write_json, write_text
from mathforge.markdown import table

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class AblationArm:
    """One arm: its name, what it claims, and the run fields it sets (dotted, `train.stages[1].lr`)."""

    name: str
    set: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    # Another arm's name: this arm keeps, by random selection, as many normal rows as that arm's
    # cleaning kept in the same replicate (`clean.select.budget`, strategy random), so a filter is
    # compared with a random removal of the same size. Set once that arm's cleaning has finished.
    same_rows_as: str = ""


@dataclass(frozen=True)
class AblateConfig:
    """`mathforge ablate`: a base run recipe, arms overriding it, replicates, the report's statistics."""

    claim: str = ""  # the paper's result this ablation tests (the report's first line)
    base: str | None = None  # the base run recipe's path (relative to the working directory, as data_dir is)
    run: dict[str, Any] = field(default_factory=dict)  # run fields set over `base` (or the whole recipe)
    base_name: str = "base"
    arms: tuple[AblationArm, ...] = ()
    train_seeds: tuple[int, ...] = (1, 2)
    data_seeds: tuple[int, ...] = (0,)
    data_seed_fields: tuple[str, ...] = ("teacher_sim.seed", "synth.seed")  # set to the data seed
    null_arm: bool = True  # a null arm: the base again with every seed moved by `null_offset`
    null_offset: int = 1000
    metric: str = "strict"
    n_boot: int = 2_000
    alpha: float = ALPHA
    workers: int = 1  # replicates run at once, each in a process of its own
    threads: int | None = None  # torch threads per replicate; None: torch's default
    difference: str = "arm - base"  # or "base - arm" (`mathforge arms`: its first arm minus the others)

    def __post_init__(self) -> None:
        names = [self.base_name, *(a.name for a in self.arms)] + (["null"] if self.null_arm else [])
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names must be distinct (base and null included), got {names}")
        if not self.arms and not self.null_arm:
            raise ValueError("arms: an ablation needs an arm besides the base (or null_arm: true)")
        if not self.train_seeds or not self.data_seeds:
            raise ValueError("train_seeds and data_seeds need one seed at least")
        for arm in self.arms:
            if arm.same_rows_as and arm.same_rows_as not in names or arm.same_rows_as == arm.name:
                raise ValueError(f"arm {arm.name}: same_rows_as '{arm.same_rows_as}' is not another arm")
        if self.difference not in ("arm - base", "base - arm"):
            raise ValueError(f"difference: 'arm - base' or 'base - arm', got {self.difference!r}")


@dataclass(frozen=True)
class Replicate:
    """One run of an ablation: arm, replicate index, its seeds, its run config and directory."""

    arm: str
    index: int  # replicate r: the same r of every arm is paired (same items, matched seeds)
    data_seed: int
    train_seed: int
    cfg: Any  # pipeline.RunConfig
    dir: Path
    waits_for: str = ""  # the replicate whose kept rows set this one's selection budget (`same_rows_as`)

    @property
    def label(self) -> str:
        return f"{self.arm}/d{self.data_seed}-t{self.train_seed}"


def load(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> AblateConfig:
    """An ablation recipe plus `key=value` overrides (run fields: `run.train.max_steps=5`)."""
    from mathforge.config import load_config

    return load_config(AblateConfig, recipe, overrides)


def arm_names(cfg: AblateConfig) -> list[str]:
    return [cfg.base_name, *(["null"] if cfg.null_arm else []), *(a.name for a in cfg.arms)]


def replicates(cfg: AblateConfig, out: Path) -> list[Replicate]:
    """Every run of the ablation, replicate-major (stopped early, every arm has the first replicates)."""
    from mathforge.pipeline import RunConfig

    raw = _read_recipe(Path(cfg.base)) if cfg.base else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg.base}: a run recipe must be a mapping of config fields")
    raw = merge(raw, cfg.run)
    sets = {cfg.base_name: {}, "null": {}, **{a.name: a.set for a in cfg.arms}}
    by_name = {a.name: a for a in cfg.arms}
    out_list = []
    pairs = [(d, t) for d in cfg.data_seeds for t in cfg.train_seeds]
    for index, (d, t) in enumerate(pairs):
        for name in arm_names(cfg):
            off = cfg.null_offset if name == "null" else 0
            data_seed, train_seed = d + off, t + off
            plain = merge(raw, override_tree(sets[name].items()))
            plain = merge(plain, override_tree([(f, data_seed) for f in cfg.data_seed_fields]))
            plain = merge(plain, override_tree([("train.seed", train_seed)]))
            plain = _seeded(plain, data_seed, train_seed)
            folder = out / "runs" / name / f"d{data_seed}-t{train_seed}"
            ref = by_name[name].same_rows_as if name in by_name else ""
            waits = ""
            if ref:
                ref_off = cfg.null_offset if ref == "null" else 0
                ref_dir = out / "runs" / ref / f"d{d + ref_off}-t{t + ref_off}"
                rows = kept_rows(ref_dir)
                waits = "" if rows is not None else f"{ref}/d{d + ref_off}-t{t + ref_off}"
                budget = rows if rows is not None else 0  # a placeholder until the other arm has cleaned
                plain = merge(plain, override_tree([("clean.select.strategy", "random"),
                                                    ("clean.select.budget", max(budget, 1))]))
            run_cfg = build(RunConfig, plain, f"{cfg.base or 'the ablation'} (arm {name})")
            out_list.append(Replicate(name, index, data_seed, train_seed, run_cfg, folder, waits))
    return out_list


def kept_rows(run_dir: Path) -> int | None:
    """Rows a finished replicate's cleaning kept of its normal data (None: not cleaned yet)."""
    from mathforge.rundir import RunDir

    if not (run_dir / "steps" / "clean_normal.json").exists():
        return None
    stats = RunDir(run_dir).stats("clean_normal")
    return stats.get("rows_out") if stats else None


def _seeded(value: Any, data_seed: int, train_seed: int) -> Any:
    """`{data_seed}` / `{train_seed}` in the recipe's strings replaced (a whole "{data_seed}" by the number)."""
    if isinstance(value, dict):
        return {k: _seeded(v, data_seed, train_seed) for k, v in value.items()}
    if isinstance(value, list):
        return [_seeded(v, data_seed, train_seed) for v in value]
    if isinstance(value, str) and "{" in value:
        if value in ("{data_seed}", "{train_seed}"):
            return data_seed if value == "{data_seed}" else train_seed
        return value.replace("{data_seed}", str(data_seed)).replace("{train_seed}", str(train_seed))
    return value


# ---------------------------------------------------------------- sharing steps between replicates


def _planned(rep: Replicate) -> list[Any]:
    from mathforge.pipeline import plan

    return plan(rep.cfg, rep.dir)


def _reusable(planned: list[Any], own: Path, other: Path) -> int:
    """How many of `planned` (steps of a replicate in `own`) are done with their key in `other`."""
    from mathforge.rundir import marker_has

    n = 0
    for p in planned:
        rel = Path(p.rundir).relative_to(own)
        if marker_has(other / rel / "steps" / f"{p.step}.json", p.spec.key):
            n += 1
    return n


def _common(a: list[Any], b: list[Any]) -> int:
    """Steps two replicates would share: the same step under the same key."""
    keys = {(p.name, p.spec.key) for p in b}
    return sum((p.name, p.spec.key) in keys for p in a)


def _clone(donor: Path, target: Path) -> None:
    """`target` becomes a copy of the finished `donor` (its own log and locks excepted)."""
    tmp = target.with_name(f".{target.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(donor, tmp, ignore=shutil.ignore_patterns("*.lock", "run.log"), symlinks=True)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def _best_donor(rep: Replicate, planned: list[Any], dirs: list[Path]) -> tuple[Path | None, int]:
    best, best_n = None, _reusable(planned, rep.dir, rep.dir) if rep.dir.exists() else 0
    for d in dirs:
        if d != rep.dir and d.exists():
            n = _reusable(planned, rep.dir, d)
            if n > best_n:
                best, best_n = d, n
    return best, best_n


# ---------------------------------------------------------------- running


def run_ablation(cfg: AblateConfig, out: str | Path, log: Any = print) -> dict[str, Any]:
    """Run (or resume) every replicate not done, then write comparison.json and the reports."""
    from mathforge.config import dump_yaml
    from mathforge.pipeline import validate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "ablation.yaml", dump_yaml(cfg))
    reps = replicates(cfg, out)
    for rep in reps:
        validate(rep.cfg)
    plans = {rep.label: _planned(rep) for rep in reps}
    for _ in _schedule(cfg, reps, plans, out, log):
        pass
    result = compare_replicates(cfg, reps)
    write_json(out / "comparison.json", result)
    write_text(out / "report.md", markdown(result))
    H.write_page(out / "report.html", result.get("claim") or "Ablation", html_blocks(result))
    return result


def _schedule(cfg: AblateConfig, reps: list[Replicate], plans: dict[str, list[Any]], out: Path,
              log: Any) -> Iterator[Replicate]:
    """Start each replicate once no running one could hand it more finished steps than a finished
    directory can; up to `cfg.workers` at once (spawned processes, `cfg.threads` torch threads)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from mathforge.rundir import to_run
    from mathforge.scale import _init_worker

    pending = list(reps)
    if pending and all(r.waits_for for r in pending):
        raise ConfigError("ablate: every arm waits for another arm's kept rows (same_rows_as in a circle)")
    running: dict[Any, tuple[Replicate, float, dict[str, Any]]] = {}
    all_dirs = [r.dir for r in reps]
    total = len(pending)
    started = time.monotonic()
    finished = 0
    pool = ProcessPoolExecutor(max(1, cfg.workers), mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(cfg.threads,))
    try:
        while pending or running:
            busy = [r.dir for r, _, _ in running.values()]
            for rep in list(pending):
                if len(running) >= max(1, cfg.workers):
                    break
                if rep.waits_for:  # its selection budget is the rows another arm's cleaning keeps
                    fresh = next(r for r in replicates(cfg, out) if r.label == rep.label)
                    if fresh.waits_for:
                        continue
                    pending[pending.index(rep)] = rep = fresh
                    plans[rep.label] = _planned(rep)
                planned = plans[rep.label]
                donor, have = _best_donor(rep, planned, [d for d in all_dirs if d not in busy])
                waits = any(_common(planned, plans[r.label]) > have for r, _, _ in running.values())
                if waits:
                    continue
                pending.remove(rep)
                if donor is not None:
                    _clone(donor, rep.dir)
                todo = to_run(_planned(rep))
                entry = {"replicate": rep.label, "arm": rep.arm, "index": rep.index, "data_seed": rep.data_seed,
                         "train_seed": rep.train_seed, "dir": str(rep.dir.relative_to(out)),
                         "copied_from": str(donor.relative_to(out)) if donor else None,
                         "ran": todo, "reused": [p.name for p in planned if p.name not in todo]}
                if not todo:
                    finished += 1
                    _append(out / "steps.jsonl", {**entry, "seconds": 0.0})
                    yield rep
                    continue
                log(f"ablate: {rep.label}: running {len(todo)} steps" + (f" (copied from {entry['copied_from']})"
                                                                           if donor else ""))
                running[pool.submit(_run_one, rep.cfg, str(rep.dir))] = (rep, time.monotonic(), entry)
                busy.append(rep.dir)
            if not running:
                if pending:  # nothing can start and nothing runs: a same_rows_as circle
                    raise ConfigError(f"ablate: {', '.join(r.label for r in pending)} wait for each other's "
                                      "kept rows (same_rows_as in a circle)")
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                rep, t0, entry = running.pop(future)
                try:
                    future.result()
                except Exception as e:  # a failed replicate stops the ablation; finished ones are kept
                    message = str(e).splitlines()[0] if str(e) else ""
                    raise ValueError(f"ablate: replicate {rep.label} failed ({type(e).__name__}: {message}); "
                                     f"{rep.dir} keeps the steps it finished") from e
                finished += 1
                seconds = time.monotonic() - t0
                _append(out / "steps.jsonl", {**entry, "seconds": round(seconds, 1)})
                elapsed = time.monotonic() - started
                eta = elapsed / finished * (total - finished)
                log(f"ablate: {rep.label} done in {seconds:.0f} s ({finished}/{total}; ETA {eta / 60:.1f} min)")
                yield rep
    finally:
        pool.shutdown(cancel_futures=True)


def _run_one(cfg: Any, out: str) -> None:
    from mathforge.pipeline import run

    run(cfg, out)


def _append(path: Path, row: dict[str, Any]) -> None:
    from mathforge.scale import append_row

    append_row(path, row)


# ---------------------------------------------------------------- dry run


# Seconds per unit when no replicate of the ablation recorded a step yet: measured on the shared
# 2-core machine with recipes/paper_mini.yaml (synth 173 s for 5,500 targeted samples, training
# ~0.06 CPU-s per optimizer step of the 64-wide student, evaluation ~0.03 s per item).
CALIBRATED = {"synth": 0.032, "clean": 0.008, "export": 0.002, "train": 0.06, "eval": 0.03}


def dry_run(cfg: AblateConfig, out: str | Path) -> list[str]:
    """Every arm x replicate x step as run or reuse (from which directory), with an estimated time:
    recorded step timings of this ablation where any exist, else the calibrated rates above."""
    from mathforge.rundir import marker_has

    out = Path(out)
    reps = replicates(cfg, out)
    plans = {rep.label: _planned(rep) for rep in reps}
    timings = _recorded(out)
    will: dict[tuple[str, str], str] = {}  # (step, key) -> the replicate that will make it
    lines, total = [], 0.0
    for rep in reps:
        planned = plans[rep.label]
        donor, _ = _best_donor(rep, planned, [r.dir for r in reps])
        source = donor or rep.dir
        for p in planned:
            rel = Path(p.rundir).relative_to(rep.dir)
            if marker_has(rep.dir / rel / "steps" / f"{p.step}.json", p.spec.key):
                state = "reuse"
            elif marker_has(source / rel / "steps" / f"{p.step}.json", p.spec.key):
                state = f"reuse (copy of {source.relative_to(out)})"
            elif (p.name, p.spec.key) in will:
                state = f"reuse (made by {will[p.name, p.spec.key]})"
            else:
                state = "run"
                will[p.name, p.spec.key] = rep.label
                seconds, how = _estimate(p.name, rep.cfg, timings)
                total += seconds
                state = f"run    ~{seconds:.0f} s ({how})"
            if rep.waits_for and p.name.startswith(("clean", "export", "train", "eval")):
                state += f" (selection budget known after {rep.waits_for} cleaned)"
            lines.append(f"{rep.label:<28} {p.name:<26} {state}")
    lines.append(f"estimated: {total / 60:.1f} min of step time for {sum(' run ' in line for line in lines)} steps "
                 f"(divide by workers={cfg.workers} for replicates side by side)")
    return lines


def _recorded(out: Path) -> dict[str, list[tuple[float, Any]]]:
    """Seconds each step took in this ablation's finished replicates, by step name, each with the
    config it ran under (its `config.yaml`), so a step rerun under another config is scaled."""
    from mathforge.pipeline import RunConfig

    times: dict[str, list[tuple[float, Any]]] = {}
    configs: dict[Path, Any] = {}
    for stats in (out / "runs").glob("*/*/**/stats/*.json") if (out / "runs").exists() else []:
        try:
            seconds = json.loads(stats.read_text(encoding="utf-8")).get("seconds")
        except (OSError, ValueError):
            continue
        if isinstance(seconds, int | float):
            run_root = stats.parents[1]
            nested = run_root.name if run_root.name in ("synth", "train") and run_root.parent.name.startswith("d") else ""
            name = f"{nested}/{stats.stem}" if nested else stats.stem
            rep_dir = run_root.parent if nested else run_root
            if rep_dir not in configs:
                try:
                    configs[rep_dir] = build(RunConfig, _read_recipe(rep_dir / "config.yaml"), str(rep_dir))
                except (OSError, ValueError, ConfigError):
                    configs[rep_dir] = None
            times.setdefault(name, []).append((float(seconds), configs[rep_dir]))
    return times


def _estimate(name: str, run_cfg: Any, timings: dict[str, list[tuple[float, Any]]]) -> tuple[float, str]:
    """Recorded seconds of the step, scaled by how much more work the calibrated rates say this
    config's step is than the recorded one's (8 epochs where 3 ran: 8/3); else the calibrated rates."""
    if name in timings:
        scaled = [seconds * _ratio_of_work(name, run_cfg, cfg) for seconds, cfg in timings[name]]
        return statistics.median(scaled), "recorded"
    return _calibrated(name, run_cfg)


def _ratio_of_work(name: str, new: Any, old: Any) -> float:
    if old is None:
        return 1.0
    before = _calibrated(name, old)[0]
    return _calibrated(name, new)[0] / before if before > 0 else 1.0


def _calibrated(name: str, run_cfg: Any) -> tuple[float, str]:
    top = name.split("/")[0]
    synth = run_cfg.synth
    if top == "synth":
        targets = synth.stage1.initial_target + synth.stage1.target + (synth.stage2.target if synth.stage2.enabled else 0)
        steps = max(1, len([n for n in ("seeds", "stage1_initial", "stage1_coreset", "stage1_normal", "stage2_hard")]))
        return CALIBRATED["synth"] * targets / steps, "calibrated"
    if top.startswith("clean"):
        return CALIBRATED["clean"] * synth.stage1.target, "calibrated"
    if top == "export":
        return CALIBRATED["export"] * synth.stage1.target, "calibrated"
    if top == "train":
        t = run_cfg.train
        stage = next((s for s in t.stages if name == f"train/sft-{s.name}"), None)
        if stage is None:  # the student's initial checkpoint (tokenizer and weights)
            return 5.0, "calibrated"
        if t.max_steps > 0:
            return CALIBRATED["train"] * t.max_steps, "calibrated"
        rows = _stage_size(stage.dataset, run_cfg)
        if stage.max_samples:
            rows = min(rows, stage.max_samples)
        return CALIBRATED["train"] * rows * stage.epochs / t.global_batch, "calibrated"
    if top == "eval":
        return CALIBRATED["eval"] * (run_cfg.eval.limit or 1000), "calibrated"
    return 5.0, "calibrated"


def _stage_size(dataset: str, run_cfg: Any) -> int:
    """Rows a stage trains on, before anything ran: a run's synthesis targets for its own datasets,
    a source spec's `size=` (summed over a union's parts), else 1,000."""
    from urllib.parse import parse_qs

    from mathforge.pipeline import RUN_DATASETS
    from mathforge.rehearsal import dataset_parts

    synth, rows = run_cfg.synth, 0
    for part, share in dataset_parts(dataset, "a stage"):
        if part in RUN_DATASETS:
            n = synth.stage2.target if "hard" in part else synth.stage1.target
        else:
            size = parse_qs(part.split("?", 1)[1]).get("size", []) if "?" in part else []
            n = int(size[0]) if size and size[0].isdigit() else 1000
        rows += int(n * share)
    return max(rows, 1)


# ---------------------------------------------------------------- the comparison


def compare_replicates(cfg: AblateConfig, reps: list[Replicate]) -> dict[str, Any]:
    """comparison.json: accuracies, paired differences, per-replicate McNemar, the seed-aware verdict,
    the noise floor (null arm) and the data each arm trained on."""
    rows = replicate_rows(cfg, reps)
    result = compare(rows, cfg.metric, cfg.n_boot, cfg.difference)
    result["claim"] = cfg.claim
    result["replicates"] = {"data_seeds": list(cfg.data_seeds), "train_seeds": list(cfg.train_seeds),
                            "null_offset": cfg.null_offset if cfg.null_arm else None}
    result["about"] = {a.name: {"set": a.set, "about": a.about} for a in cfg.arms}
    result["verdicts"] = verdicts(rows, cfg, variance_groups(cfg, reps))
    result["data"] = {name: _data_of([r for r in reps if r.arm == name]) for name in arm_names(cfg)}
    result["seen"] = seen_items(cfg, reps, rows)
    return result


def replicate_rows(cfg: AblateConfig, reps: list[Replicate]) -> dict[str, list[dict[str, Any]]]:
    """Per arm, base first: one row per replicate, {"seed": replicate index, "items": {bench: items}}."""
    from mathforge.eval.benchmarks import slug
    from mathforge.eval.compare import load_items

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in arm_names(cfg)}
    for rep in reps:
        items = {b: load_items(rep.dir / "eval" / slug(b)) for b in rep.cfg.eval.benchmarks}
        rows[rep.arm].append({"seed": rep.index, "items": items})
    return rows


def compare(rows: dict[str, list[dict[str, Any]]], metric: str, n_boot: int,
            difference: str = "arm - base") -> dict[str, Any]:
    """Per arm and level: accuracy with intervals over items and replicates; each arm against the
    first (the base): paired differences and, per replicate, `mathforge compare`'s exact McNemar."""
    from mathforge.eval.compare import paired
    from mathforge.scale import groups_of, item_matrix
    from mathforge.stats import interval, paired_difference

    first, *others = list(rows)
    out: dict[str, Any] = {"metric": metric, "arms": list(rows), "difference_is": difference, "benchmarks": {}}
    for bench in rows[first][0]["items"]:
        groups = [("all", None)] + [(f"level {g}", ("level", g)) for g in groups_of(rows[first], bench, "level")]
        entry: dict[str, Any] = {"accuracy": {}, "difference": {}, "per_seed": {}}
        for label, group in groups:
            mats = {a: item_matrix(rs, bench, metric, group)[0] for a, rs in rows.items()}
            entry["accuracy"][label] = {a: interval(m, n_boot=n_boot).to_dict() for a, m in mats.items()}
            entry["difference"][label], entry["per_seed"][label] = {}, {}
            for o in others:
                # (x, y): difference x - y; per seed, B = x and A = y as `mathforge compare` reads them
                x, y = (o, first) if difference == "arm - base" else (first, o)
                entry["difference"][label][f"{x} - {y}"] = paired_difference(mats[x], mats[y], n_boot=n_boot).to_dict()
                entry["per_seed"][label][f"{x} vs {y}"] = [paired(a, b) for a, b in zip(mats[y], mats[x], strict=False)]
        out["benchmarks"][bench] = entry
    return out


def variance_groups(cfg: AblateConfig, reps: list[Replicate]) -> dict[str, str]:
    """Which arms' differences to the base carry the noise of another synthesis: the null arm (other
    seeds) and any arm whose synthesis steps have other keys than the base's ("own data"), apart from
    arms that train on the base's synthesis ("base data": a cleaning, selection or training change)."""
    base = {r.index: {p.name: p.spec.key for p in _planned(r) if p.name.startswith("synth/")}
            for r in reps if r.arm == cfg.base_name}
    groups = {}
    for name in arm_names(cfg)[1:]:
        own = name == "null" or any({p.name: p.spec.key for p in _planned(r) if p.name.startswith("synth/")}
                                    != base[r.index] for r in reps if r.arm == name)
        groups[name] = "own data" if own else "base data"
    return groups


def verdicts(rows: dict[str, list[dict[str, Any]]], cfg: AblateConfig,
             groups: dict[str, str] | None = None) -> dict[str, Any]:
    """Do two *configs* differ? A t-test on per-replicate paired differences (each arm minus the base
    on the same items, replicate r against replicate r), not on items: items are shared by every
    replicate, so only replicates are independent draws of "train this config again".

    The unit is the replicate, or the data seed when there are several (replicates that share a data
    seed share its synthesis and cleaning, so they are not independent): each unit's difference is
    the mean over its training seeds. The variance is pooled over every compared arm, the null arm
    included (the arms differ in mean, not in how much a rerun moves them), so the test has
    sum(units - 1) degrees of freedom instead of units - 1. It is pooled within `groups` only: an arm
    that trains on the base's own synthesis differs from it by less noise than the null arm or an arm
    with a synthesis of its own, so pooling the two kinds would understate the second's variance.
    Without `groups`, the null arm is a group of its own. Calibration on null pairs:
    `bench/ablate_null.py`. Per-level tests are exploratory unless read with the Holm-adjusted p.
    """
    from mathforge.scale import groups_of, item_matrix

    first, *others = list(rows)
    kinds = {o: (groups or {}).get(o) or ("own data" if o == "null" else "base data") for o in others}
    sign = 1.0 if cfg.difference == "arm - base" else -1.0
    units_of = _units(rows[first], cfg)
    out: dict[str, Any] = {"unit": "data seed" if len(cfg.data_seeds) > 1 else "replicate", "alpha": cfg.alpha,
                           "benchmarks": {}}
    for bench in rows[first][0]["items"]:
        groups = [("all", None)] + [(f"level {g}", ("level", g)) for g in groups_of(rows[first], bench, "level")]
        per_group = {}
        for label, group in groups:
            mats = {a: item_matrix(rs, bench, cfg.metric, group)[0] for a, rs in rows.items()}
            diffs = {o: sign * _unit_means(mats[o].mean(axis=1) - mats[first].mean(axis=1), units_of) for o in others}
            # a unit's difference moves in steps of 1 / (items x replicates in the unit)
            quantum = 1 / (mats[first].shape[1] * (len(units_of) / len(set(units_of))))
            per_group[label] = {}
            for kind in sorted(set(kinds.values())):
                per_group[label].update(_t_tests({o: d for o, d in diffs.items() if kinds[o] == kind}, cfg.alpha,
                                                 quantum))
            for o in others:
                per_group[label][o]["pooled_with"] = kinds[o]
        _holm(per_group, [o for o in others])
        out["benchmarks"][bench] = per_group
    return out


def _units(base_rows: list[dict[str, Any]], cfg: AblateConfig) -> list[int]:
    """The unit of each replicate row (rows sorted by replicate index, as `item_matrix` sorts them)."""
    n_train = len(cfg.train_seeds)
    return [row["seed"] // n_train if len(cfg.data_seeds) > 1 else row["seed"]
            for row in sorted(base_rows, key=lambda r: r["seed"])]


def _unit_means(values: np.ndarray, units: list[int]) -> np.ndarray:
    ids = sorted(set(units))
    return np.array([np.mean([v for v, u in zip(values, units, strict=True) if u == i]) for i in ids])


def _t_tests(diffs: dict[str, np.ndarray], alpha: float, quantum: float = 0.0) -> dict[str, Any]:
    """Each arm's mean unit difference against 0, with the variance pooled over arms.

    Differences move in steps of `quantum` (accuracies are counts over items), so with few units two
    can be exactly equal and a sample variance of 0 would call any difference certain. Sheppard's
    correction for grouped data adds the variance the rounding hides: two units each rounded to the
    step differ by a uniform error of variance quantum^2 / 6. It is negligible unless the units tie."""
    from scipy.stats import t as student_t

    df = sum(len(d) - 1 for d in diffs.values())
    ss = sum(float(((d - d.mean()) ** 2).sum()) for d in diffs.values())
    out: dict[str, Any] = {}
    for arm, d in diffs.items():
        entry: dict[str, Any] = {"difference": float(d.mean()), "units": [float(v) for v in d], "df": df}
        if df == 0:
            entry.update(p_value=None, verdict="untested: one replicate per arm (add seeds)", min_detectable=None)
        else:
            s2 = ss / df + quantum**2 / 6
            se = math.sqrt(s2 / len(d))
            t_crit = float(student_t.ppf(1 - alpha / 2, df))
            entry["se"] = se
            entry["lo"], entry["hi"] = float(d.mean()) - t_crit * se, float(d.mean()) + t_crit * se
            entry["min_detectable"] = (t_crit + float(student_t.ppf(POWER, df))) * se
            if se == 0:
                entry["p_value"] = 1.0 if d.mean() == 0 else 0.0
            else:
                entry["p_value"] = float(2 * student_t.sf(abs(d.mean()) / se, df))
            entry["verdict"] = "the configs differ" if entry["p_value"] < alpha else "inconclusive"
        out[arm] = entry
    return out


def _holm(per_group: dict[str, dict[str, Any]], arms: list[str]) -> None:
    """Holm-adjusted p over every per-level test (levels x arms); the overall tests stay as they are."""
    tests = [(label, arm) for label in per_group if label != "all" for arm in arms
             if per_group[label][arm].get("p_value") is not None]
    ranked = sorted(tests, key=lambda k: per_group[k[0]][k[1]]["p_value"])
    running = 0.0
    for i, (label, arm) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - i) * per_group[label][arm]["p_value"]))
        per_group[label][arm]["p_holm"] = running


def _data_of(reps: list[Replicate]) -> dict[str, Any]:
    """What an arm trained on, per data seed: rows per stage, level mix, true error rate (teacher log)."""
    from mathforge.rundir import RunDir

    out = {}
    for rep in reps:
        key = f"d{rep.data_seed}"
        if key in out or not rep.dir.exists():
            continue
        rd = RunDir(rep.dir)
        stages = (rd.stats("train").get("stages") or {})
        entry: dict[str, Any] = {"rows": {n: s.get("samples") for n, s in stages.items()}}
        entry["levels"] = _level_mix(rd, rep.cfg.train)
        truth = _truth(rd)
        if truth:
            entry["true_error_rate"] = truth.get("kept_error_rate")
        out[key] = entry
    return out


def _stage_sources(rd: Any, train: Any) -> list[tuple[str, str]]:
    """(stage name, the data it trained on) as `pipeline._train` resolves a stage's dataset name."""
    from mathforge.rehearsal import dataset_parts, part_name

    manifest, out = rd.manifest(), []
    for stage in train.stages:
        union = rd.root / "datasets" / stage.dataset
        if ("+" in stage.dataset or "*" in stage.dataset) and not Path(stage.dataset).exists():  # as `union` names it
            parts = dataset_parts(stage.dataset, f"stage {stage.name}")
            union = rd.root / "datasets" / "+".join(part_name(p, s) for p, s in parts)
        out.append((stage.name, manifest.get(stage.dataset) or (str(union) if union.exists() else stage.dataset)))
    return out


def _stage_rows(source: str) -> Iterator[Any]:
    from mathforge.io import read_records
    from mathforge.sources import load

    return read_records(source) if Path(source).exists() else load(source)  # a run's dataset, or a spec


def _level_mix(rd: Any, train: Any) -> dict[str, dict[str, int]]:
    """Rows per level of each training stage's data, streamed."""
    from collections import Counter

    out = {}
    for name, source in _stage_sources(rd, train):
        try:
            counts = Counter(str(r.level) if r.level is not None else "none" for r in _stage_rows(source))
        except (OSError, ValueError):  # a dataset gone since training: the row counts still stand
            continue
        out[name] = dict(sorted(counts.items()))
    return out


def _text_key(text: str) -> str:
    return " ".join(str(text).split())


def _seen_ids(rep: Replicate, bench: str) -> set[str] | None:
    """Ids of the benchmark's items whose problem (whitespace aside) is in the replicate's training
    data: a leak the decontamination let through, or one an arm planted. Holds the test problems
    (~200 bytes a row) and streams the training rows; None when the data or samples are gone."""
    from mathforge.eval.benchmarks import slug
    from mathforge.io import read_rows
    from mathforge.rundir import RunDir

    samples = rep.dir / "eval" / slug(bench) / "samples.jsonl"
    if not samples.exists():
        return None
    by_problem: dict[str, set[str]] = {}
    for _, row in read_rows(samples):
        if row.get("problem") is not None:
            by_problem.setdefault(_text_key(row["problem"]), set()).add(str(row["id"]))
    seen: set[str] = set()
    try:
        for _, source in _stage_sources(RunDir(rep.dir), rep.cfg.train):
            for r in _stage_rows(source):
                seen |= by_problem.get(_text_key(r.problem), set())
    except (OSError, ValueError):
        return None
    return seen


def seen_items(cfg: AblateConfig, reps: list[Replicate], rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per benchmark and arm, the test items found in its training data, and how the arm and the
    base answer those very items (the base's replicate of the same index): what a leak inflates.
    Empty when no replicate trained on a test problem."""
    base = arm_names(cfg)[0]
    out: dict[str, Any] = {}
    for bench in rows[base][0]["items"] if rows[base] else []:
        per_arm: dict[str, Any] = {}
        for name in arm_names(cfg):
            own = [r for r in reps if r.arm == name]
            tally = {"replicates": 0, "seen": 0, "correct": 0, "base_correct": 0, "unseen": 0, "unseen_correct": 0}
            for rep, row, base_row in zip(own, rows[name], rows[base], strict=False):
                ids = _seen_ids(rep, bench)
                if ids is None:
                    continue
                mine, theirs = row["items"][bench], base_row["items"][bench]
                right = dict(zip(mine["ids"], mine["correct"][cfg.metric], strict=True))
                base_right = dict(zip(theirs["ids"], theirs["correct"][cfg.metric], strict=True))
                tally["replicates"] += 1
                for item, ok in right.items():
                    if item in ids:
                        tally["seen"] += 1
                        tally["correct"] += ok
                        tally["base_correct"] += base_right.get(item, 0)
                    else:
                        tally["unseen"] += 1
                        tally["unseen_correct"] += ok
            per_arm[name] = tally
        if any(t["seen"] for t in per_arm.values()):
            out[bench] = per_arm
    return out


def _truth(rd: Any) -> dict[str, Any]:
    report = rd.root / "report.json"  # the rehearse step's, when the run has one
    if report.exists():
        return json.loads(report.read_text(encoding="utf-8")).get("truth") or {}
    from mathforge.rehearsal import LOG_NAME, truth_audit

    return truth_audit(rd).get("truth", {}) if (rd.root / LOG_NAME).exists() else {}


# ---------------------------------------------------------------- reports


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


SEEN_ABOUT = ("Items whose problem (whitespace aside) is in an arm's training data, summed over its replicates; the "
              "arm's answers on them, {base}'s answers on the same items in the replicate of the same seeds (what "
              "training on them added), and the arm's answers on the other items.")


def _seen_table(result: dict[str, Any], bench: str) -> tuple[list[str], list[list[str]]]:
    base = result["arms"][0]
    rows = [[arm, str(t["replicates"]), str(t["seen"]), _ratio(t["correct"], t["seen"]),
             "-" if arm == base else _ratio(t["base_correct"], t["seen"]), _ratio(t["unseen_correct"], t["unseen"])]
            for arm, t in result["seen"][bench].items()]
    return ["arm", "replicates", "items seen in training", "arm correct on them %", f"{base} correct on them %",
            "arm correct on the rest %"], rows


def _ratio(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} ({part}/{whole})" if whole else "-"


def _cell(iv: dict[str, float], signed: bool = False) -> str:
    return f"{_pct(iv['estimate'], signed)} [{_pct(iv['lo'], signed)}, {_pct(iv['hi'], signed)}]"


def _accuracy_table(entry: dict[str, Any], arms: list[str]) -> tuple[list[str], list[list[str]]]:
    headers = ["items", *[f"{a} %" for a in arms]]
    return headers, [[label, *[_cell(accs[a]) for a in arms]] for label, accs in entry["accuracy"].items()]


def _difference_table(result: dict[str, Any], bench: str) -> tuple[list[str], list[list[str]]]:
    entry = result["benchmarks"][bench]
    tests = (result.get("verdicts") or {}).get("benchmarks", {}).get(bench, {})
    headers = ["items", "arm", "paired difference, points [95% items x replicates]", "per replicate: McNemar p",
               "configs: t-test p", "min. detectable (points)", "verdict"]
    body = []
    for label, diffs in entry["difference"].items():
        for name, iv in diffs.items():
            arm = _other(name, result["arms"][0])
            seeds = entry["per_seed"][label]
            mc = next((v for k, v in seeds.items() if arm in k.split(" vs ")), [])
            t = tests.get(label, {}).get(arm, {})
            p = t.get("p_value")
            ptxt = "-" if p is None else f"{p:.3g}" + (f" (Holm {t['p_holm']:.3g})" if "p_holm" in t else "")
            verdict = t.get("verdict", "-")
            if label != "all" and verdict == "the configs differ" and t.get("p_holm", 1) >= result.get("verdicts", {}).get("alpha", ALPHA):
                verdict = "exploratory (not after Holm)"
            body.append([label, arm, _cell(iv, True), ", ".join(f"{m['p_value']:.3g}" for m in mc), ptxt,
                         _pct(t.get("min_detectable")), verdict])
    return headers, body


def _other(name: str, base: str) -> str:
    a, b = name.split(" - ", 1)
    return b if a == base else a


def _noise_lines(result: dict[str, Any]) -> list[str]:
    ver = result.get("verdicts") or {}
    lines = []
    for bench, groups in ver.get("benchmarks", {}).items():
        null = groups.get("all", {}).get("null")
        if null:
            lines.append(f"- {bench}: null arm (the base with other seeds) differs by {_pct(null['difference'], True)} "
                         f"points (p {null['p_value']:.3g})" if null.get("p_value") is not None else
                         f"- {bench}: null arm differs by {_pct(null['difference'], True)} points (untested)")
        by_kind: dict[str, dict[str, Any]] = {}
        for arm, v in groups.get("all", {}).items():
            if v.get("min_detectable"):
                by_kind.setdefault(v.get("pooled_with", "all arms"), {"mdd": v["min_detectable"], "df": v["df"], "arms": []})
                by_kind[v.get("pooled_with", "all arms")]["arms"].append(arm)
        for kind, k in by_kind.items():
            lines.append(f"- {bench}: smallest difference detectable between two configs (80% power, alpha "
                         f"{ver['alpha']}) for arms on {'their own synthesis' if kind == 'own data' else 'the base synthesis'} "
                         f"({', '.join(k['arms'])}): {_pct(k['mdd'])} points; unit: {ver['unit']}, {k['df']} degrees of freedom")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """report.md of an ablation."""
    arms = result["arms"]
    lines = [f"# {result.get('claim') or 'Ablation'}", "",
             f"Accuracy ({result['metric']} grader), % with 95% bootstrap intervals over items and replicates "
             f"({_replicate_line(result)}). Differences are paired on the same items ({result['difference_is']}). "
             "Two verdicts: per replicate, exact McNemar says whether *these two models* differ; across "
             "replicates, a t-test on the per-replicate differences (variance pooled over the arms) says whether "
             "*the two configs* differ. Per-level rows are exploratory unless significant after Holm's correction.", ""]
    for name, about in (result.get("about") or {}).items():
        lines.append(f"- **{name}**: {about['about'] or ''} `{json.dumps(about['set'])}`")
    lines += ["", "## Noise floor", "", *(_noise_lines(result) or ["- no null arm and one replicate: no noise floor"]), ""]
    for bench, entry in result["benchmarks"].items():
        headers, body = _accuracy_table(entry, arms)
        lines += [f"## {bench}: accuracy", "", *table(headers, body), ""]
        headers, body = _difference_table(result, bench)
        lines += [f"## {bench}: differences", "", *table(headers, body), ""]
    data = result.get("data") or {}
    if data:
        rows = [[arm, seed, json.dumps(d.get("rows")), json.dumps(d.get("levels")), _pct(d.get("true_error_rate"))]
                for arm, seeds in data.items() for seed, d in seeds.items()]
        lines += ["## What each arm trained on", "", *table(["arm", "data seed", "rows per stage", "level mix",
                                                             "true error rate %"], rows), ""]
    for bench in result.get("seen") or {}:
        lines += [f"## {bench}: test items in the training data", "", SEEN_ABOUT.format(base=result["arms"][0]), "",
                  *table(*_seen_table(result, bench)), ""]
    examples = result.get("examples") or {}
    if examples:
        for name, ex in examples.items():
            lines.append(f"- {name}: {ex['examples']} examples (set digest {ex['digest']}), epochs per stage {ex['epochs']}")
        same = len({ex["digest"] for ex in examples.values()}) == 1
        lines += ["", "The arms train on exactly the same examples." if same else
                  "**The arms train on different examples**: differences mix data and staging.", ""]
    return "\n".join(lines) + "\n"


def _replicate_line(result: dict[str, Any]) -> str:
    r = result.get("replicates") or {}
    if not r:
        return "training seeds"
    return f"data seeds {r['data_seeds']} x training seeds {r['train_seeds']}"


def html_blocks(result: dict[str, Any]) -> list[str]:
    """report.html: the tables of report.md and per-level bars with interval whiskers."""
    blocks = [H.paragraph(f"Accuracy ({result['metric']} grader), % with 95% bootstrap intervals; differences are "
                          f"paired on the same items ({result['difference_is']}).")]
    noise = _noise_lines(result)
    if noise:
        blocks += [H.heading("Noise floor"), H.paragraph(" ".join(n.lstrip("- ") for n in noise))]
    for bench, entry in result["benchmarks"].items():
        headers, body = _accuracy_table(entry, result["arms"])
        blocks += [H.heading(bench), H.table(headers, body)]
        headers, body = _difference_table(result, bench)
        blocks.append(H.table(headers, body))
        fig = _bars(entry, result["arms"], bench)
        if fig is not None:
            blocks.append(H.figure(fig, f"{bench}: accuracy per level for each arm (95% intervals)", f"levels-{bench}"))
        if bench in (result.get("seen") or {}):
            blocks += [H.heading(f"{bench}: test items in the training data"),
                       H.paragraph(SEEN_ABOUT.format(base=result["arms"][0])), H.table(*_seen_table(result, bench))]
    return blocks


def _bars(entry: dict[str, Any], arms: list[str], bench: str) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional (extra `plot`); the tables are the result
        return None
    plt.rcParams["svg.fonttype"] = "path"
    labels = list(entry["accuracy"])
    idx = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        ivs = [entry["accuracy"][g][arm] for g in labels]
        mean = np.array([100 * iv["estimate"] for iv in ivs])
        err = [mean - [100 * iv["lo"] for iv in ivs], [100 * iv["hi"] for iv in ivs] - mean]
        ax.bar(idx + (j - (len(arms) - 1) / 2) * width, mean, width, yerr=err, capsize=3, label=arm)
    ax.set_xticks(idx, labels)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(bench)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
