"""The data-scaling study (the paper's Figure 5, Tables 2, 11 and 12): train on nested subsets of
increasing size with several training seeds, evaluate each on the same items, and say with
intervals how accuracy grows with data and how much more data is worth generating.

    data -> nested subsets (each contains every smaller one)
         -> for each size and training seed: SFT from scratch -> evaluation, per-item results kept
         -> per size: accuracy with a bootstrap interval over items and seeds (mathforge.stats)
         -> fits (log-linear, saturating power law) refitted on every bootstrap replicate
         -> leave-largest-out check, size to reach a target, gain from doubling, per level/subject
         -> scaling.json, report.md, report.html, scaling.png, levels.png

Rows are appended to `scaling.jsonl` as runs finish, keyed by size, seed and a hash of everything
else that decides a result (data, training and evaluation config): a rerun skips exactly the rows
whose key is unchanged, and a changed learning rate reruns everything. Reports are rendered from
the rows, never parsed back from text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mathforge.config import config_to_dict
from mathforge.eval.run import EvalStage
from mathforge.fits import FITS, FORMULAS, PARAMS
from mathforge.io import AtomicWriter, read_rows, write_json
from mathforge.stats import as_matrix, percentile_interval, replicate_means
from mathforge.train.config import StageConfig, TrainConfig


@dataclass(frozen=True)
class ScaleConfig:
    """`mathforge scale`: the data-scaling study (the paper's Figure 5, Tables 2 and 12)."""

    data: str = "runs/offline/datasets/normal_clean/data"  # a dataset (file or shard folder) or a seed source spec
    sizes: tuple[int, ...] = (7_500, 60_000, 360_000, 1_000_000, 1_500_000, 2_100_000, 2_500_000)
    seed: int = 0  # the draw of the nested subsets (the same for every training seed)
    train_seeds: tuple[int, ...] = (42,)  # one SFT run per size and seed: model init and data order
    metric: str = "symbolic"  # the grader the curves and fits use
    target: float | None = None  # accuracy the practical answer aims at; None: halfway from the largest size to 100%
    n_boot: int = 1_000
    # A floor on optimisation, the same for every size: a run trains for its stages' epochs or this
    # many optimizer steps, whichever is more (see `stages_for`). 0: epochs only, as the paper does.
    min_steps: int = 0
    data_dir: str | None = None  # None: mathforge.paths.data_dir
    workers: int = 1  # runs trained at once, each in a process of its own (see `run_jobs`)
    threads: int | None = None  # torch threads per run; None: torch's default (every core)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalStage = field(default_factory=EvalStage)


def nested_subsets(data: str | Path, sizes: Sequence[int], out_dir: str | Path, seed: int = 0) -> dict[int, Path]:
    """Write nested random subsets (each one contains every smaller one) of a record file.

    One random rank per row; the subset of size s holds the rows of rank < s, in file order. Only
    the ranks are held in memory (8 bytes a row), never the rows, so 2.5M-row files are fine.
    Subsets already written (same data, sizes and seed: the sweep's config hash) are reused.
    """
    n = sum(1 for _ in read_rows(data))
    sizes = sorted({min(int(s), n) for s in sizes})
    out_dir = Path(out_dir)
    paths = {s: out_dir / f"subset_{s}.jsonl" for s in sizes}
    if all(p.exists() for p in paths.values()):
        return paths
    ranks = np.random.default_rng(seed).permutation(n)
    with ExitStack() as stack:
        writers = {s: stack.enter_context(AtomicWriter(p)) for s, p in paths.items()}
        for i, (_, row) in enumerate(read_rows(data)):
            for s in sizes:
                if ranks[i] < s:
                    writers[s].write(row)
    return paths


def _try_fit(name: str, sizes: Sequence[float], accs: Sequence[float]) -> Any:
    try:
        return FITS[name](sizes, accs)
    except (RuntimeError, ValueError):  # a replicate the optimiser cannot fit counts as failed
        return None


# ---------------------------------------------------------------- the study's statistics


def curve_point(size: int, scores: np.ndarray, seeds: Sequence[int], n_boot: int) -> dict[str, Any]:
    """One size: mean accuracy, its interval over items and seeds, and each seed's accuracy."""
    reps = replicate_means(scores, n_boot, seed=0)
    iv = percentile_interval(float(scores.mean()), reps)
    return {"size": size, "mean": iv.estimate, "lo": iv.lo, "hi": iv.hi, "n_items": scores.shape[1],
            "per_seed": {str(s): float(v) for s, v in zip(seeds, scores.mean(axis=1), strict=True)}}


def analyse(matrices: dict[int, np.ndarray], seeds: dict[int, list[int]], n_boot: int,
            target: float | None, forms: Sequence[str] = tuple(FITS)) -> dict[str, Any]:
    """Curve, fits with parameter intervals, leave-largest-out and the practical answer.

    `matrices[size]` is the (seeds, items) 0/1 score matrix of that size, items in the same order
    for every size; `seeds[size]` names its rows (sizes may have different seeds in a study that
    is still running). Replicates use the same seed for every size, so items are resampled jointly
    across sizes (the test set is shared by all of them) and every fit sees one coherent replicate.
    """
    sizes = sorted(matrices)
    points = [curve_point(s, matrices[s], seeds[s], n_boot) for s in sizes]
    means = np.array([p["mean"] for p in points])
    reps = np.stack([replicate_means(matrices[s], n_boot, seed=0) for s in sizes])  # (sizes, n_boot)
    if target is None:
        target = (means[-1] + 1.0) / 2
    out: dict[str, Any] = {"points": points, "target": target, "fits": {}}
    for name in forms:
        if len(sizes) < (3 if name == "power_law" else 2):
            continue
        out["fits"][name] = _fit_block(name, sizes, means, reps, target)
    return out


def _fit_block(name: str, sizes: list[int], means: np.ndarray, reps: np.ndarray, target: float) -> dict[str, Any]:
    point = _try_fit(name, sizes, means)
    if point is None:
        return {"formula": FORMULAS[name], "failed": "the point estimate did not converge"}
    boots = [_try_fit(name, sizes, reps[:, b]) for b in range(reps.shape[1])]
    ok = [f for f in boots if f is not None]
    largest = sizes[-1]
    block = {
        "formula": FORMULAS[name], "r2": point.r2, "largest": largest, "replicates": len(boots), "failed_replicates": len(boots) - len(ok),
        "params": {p: _iv(getattr(point, p), [getattr(f, p) for f in ok]) for p in PARAMS[name]},
        "size_for_target": _iv(point.size_for(target), [f.size_for(target) for f in ok]),
        "gain_from_doubling": _iv(point.predict(2 * largest) - point.predict(largest),
                                  [f.predict(2 * largest) - f.predict(largest) for f in ok]),
        "predicted_at_2x": _iv(point.predict(2 * largest), [f.predict(2 * largest) for f in ok]),
    }
    if len(sizes) > (3 if name == "power_law" else 2):
        block["leave_largest_out"] = leave_largest_out(name, sizes, means, reps)
    return block


def leave_largest_out(name: str, sizes: list[int], means: np.ndarray, reps: np.ndarray) -> dict[str, Any]:
    """Fit on every size but the largest, predict the largest, compare with what was measured.

    `prediction` carries the fit's uncertainty (refitted per replicate); `covered` says whether the
    measured mean falls inside it; `error` (predicted - measured) has an interval from the same
    replicates, which also carries the measurement's own noise.
    """
    point = _try_fit(name, sizes[:-1], means[:-1])
    if point is None:
        return {"failed": "the point estimate did not converge"}
    fits = [_try_fit(name, sizes[:-1], reps[:-1, b]) for b in range(reps.shape[1])]
    preds = np.array([f.predict(sizes[-1]) if f else math.nan for f in fits])
    pred = _iv(point.predict(sizes[-1]), preds)
    error = _iv(point.predict(sizes[-1]) - float(means[-1]), preds - reps[-1])
    return {"size": sizes[-1], "prediction": pred, "measured": float(means[-1]), "error": error,
            "covered": bool(pred["lo"] <= means[-1] <= pred["hi"])}


def _iv(estimate: float, replicates: Iterable[float]) -> dict[str, Any]:
    """An interval as a dict; `never` counts replicates that never reach (inf) a target."""
    vals = np.array(list(replicates), dtype=float)
    return {**percentile_interval(float(estimate), vals).to_dict(), "never": int(np.isinf(vals).sum())}


# ---------------------------------------------------------------- rows: per-item results


def item_matrix(rows: list[dict[str, Any]], bench: str, grader: str,
                group: tuple[str, str] | None = None) -> tuple[np.ndarray, list[int]]:
    """The (seeds, items) 0/1 matrix of one size's rows (items sorted by id) and the seeds in row order.

    `group=("level", "3")` keeps the items of one level (or subject) only.
    """
    seeds, cols = [], []
    for row in sorted(rows, key=lambda r: r["seed"]):
        items = row["items"][bench]
        order = sorted(range(len(items["ids"])), key=lambda i: items["ids"][i])
        if group:
            order = [i for i in order if str(items[group[0]][i]) == group[1]]
        cols.append([items["correct"][grader][i] for i in order])
        seeds.append(row["seed"])
    return as_matrix(cols), seeds


def groups_of(rows: list[dict[str, Any]], bench: str, key: str) -> list[str]:
    """The levels (or subjects) present among a benchmark's items, sorted."""
    return sorted({str(v) for r in rows for v in r["items"][bench][key] if v is not None})


def study(rows: list[dict[str, Any]], cfg: ScaleConfig) -> dict[str, Any]:
    """Everything `scaling.json` holds, computed from the sweep's rows."""
    benches = sorted({b for r in rows for b in r["items"]})
    by_size: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_size.setdefault(r["size"], []).append(r)
    out: dict[str, Any] = {"metric": cfg.metric, "runs": [_run_summary(r, cfg.metric) for r in rows], "benchmarks": {}}
    for bench in benches:
        mats = {s: item_matrix(rs, bench, cfg.metric) for s, rs in by_size.items()}
        seeds = {s: seeds for s, (_, seeds) in mats.items()}
        entry = analyse({s: m for s, (m, _) in mats.items()}, seeds, cfg.n_boot, cfg.target)
        for key in ("level", "subject"):
            entry[f"by_{key}"] = {
                g: analyse({s: item_matrix(rs, bench, cfg.metric, (key, g))[0] for s, rs in by_size.items()},
                           seeds, cfg.n_boot, None, forms=("log_linear",))
                for g in groups_of(rows, bench, key)
            } if len(groups_of(rows, bench, key)) > 1 else {}
        out["benchmarks"][bench] = entry
    return out


def guess_floor(data: Path, cfg: ScaleConfig, bench: str) -> dict[str, Any]:
    """Accuracy of answering every evaluated item with the most common training answer of its level.

    The floor a student reaches without reading a problem: on data whose answers pile up on a few
    values (sums of small numbers, differences that hit 0) it is far above 0 and an accuracy near
    it says nothing. The miniature flattens its answers (`mini.make_problem`) to keep it near 3%. Holds one answer counter per level (the distinct answers, not the rows).
    """
    from mathforge.eval import load_benchmark, subset
    from mathforge.grading import answer_key
    from mathforge.io import read_records
    from mathforge.paths import data_dir

    counts: dict[Any, Counter[str]] = {}
    for record in read_records(data):
        counts.setdefault(record.level, Counter())[answer_key(str(record.answer))] += 1
    _, records = load_benchmark(bench, root=data_dir(cfg.data_dir))
    hits: dict[Any, list[bool]] = {}
    for record in subset(records, cfg.eval.limit, cfg.eval.seed):
        guess = (counts.get(record.level) or sum(counts.values(), Counter())).most_common(1)
        hits.setdefault(record.level, []).append(bool(guess) and guess[0][0] == answer_key(str(record.answer)))
    every = [h for level in hits.values() for h in level]
    return {"accuracy": float(np.mean(every)) if every else 0.0,
            "by_level": {str(k): float(np.mean(v)) for k, v in hits.items() if k is not None}}


def _run_summary(row: dict[str, Any], metric: str) -> dict[str, Any]:
    acc = {b: float(np.mean(v["correct"][metric])) for b, v in row["items"].items()}
    return {"size": row["size"], "seed": row["seed"], "key": row["key"], "accuracy": acc,
            "train_loss": row.get("train_loss"), "train_steps": row.get("train_steps"), "seconds": row.get("seconds")}


# ---------------------------------------------------------------- the sweep


# The declared version of a row (part of its key): bumped when the code changes what a row means
# (2: one tokenizer for every size, trained on the whole data; 3: the miniature's answers
# flattened, so its test sets changed; 4: keyed by the one step hasher), so rows of an older study
# are never mixed into a new one.
VERSION = 4


def config_hash(cfg: ScaleConfig) -> str:
    """The key of everything that decides a row's result except its size and training seed: the one
    step hasher over the config and the data file's size and mtime."""
    from mathforge.rundir import step_key
    from mathforge.train.prepare import data_files

    plain = config_to_dict(cfg)
    for key in ("sizes", "train_seeds", "metric", "target", "n_boot"):  # change no single result
        plain.pop(key, None)
    plain["train"].pop("seed", None)
    for stage in plain["train"]["stages"]:
        stage.pop("dataset", None)  # replaced by the subset, which `data` and `seed` decide
    return step_key(VERSION, plain, files=data_files(cfg.data))[:12]


def row_key(size: int, seed: int, chash: str) -> str:
    return f"n{size}-s{seed}-{chash}"


def completed(results: Path) -> dict[str, dict[str, Any]]:
    """Rows already in the sweep's results file, by key (rows of other configs included)."""
    if not results.exists():
        return {}
    return {row["key"]: row for _, row in read_rows(results)}


def append_row(results: Path, row: dict[str, Any]) -> None:
    """Append one finished run; a line is written whole and flushed (a crash loses no finished run)."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


def sweep(subsets: dict[int, Path], seeds: Sequence[int], chash: str, results: Path,
          train_and_eval: Callable[[int, int, Path], dict[str, Any]],
          log: Callable[[str], None] = print, workers: int = 1, threads: int | None = None) -> list[dict[str, Any]]:
    """Run `train_and_eval(size, seed, subset)` for every (size, seed) whose key is not in `results`.

    Returns the rows of this config, sizes ascending. Rows are appended as runs finish (`run_jobs`
    with `workers`/`threads`). Progress (runs done, ETA) goes to `log`; the ETA assumes a run costs
    in proportion to its size, as training does.
    """
    done = completed(results)
    # Seed-major order: a study stopped early still has whole curves for its first seeds. Largest
    # first within a seed: parallel workers then end a seed's curve together (list scheduling).
    jobs = [(s, seed) for seed in seeds for s in sorted(subsets, reverse=True)]
    todo = [(s, seed, subsets[s]) for s, seed in jobs if row_key(s, seed, chash) not in done]
    start, work_done, work_all = time.monotonic(), 0, sum(s for s, _, _ in todo)
    for i, ((size, seed, _), (result, seconds)) in enumerate(run_jobs(partial(timed, train_and_eval), todo, workers, threads)):
        key = row_key(size, seed, chash)
        row = {"key": key, "size": size, "seed": seed, "config": chash, **result, "seconds": round(seconds, 1)}
        append_row(results, row)
        done[key] = row
        work_done += size
        eta = (time.monotonic() - start) / work_done * (work_all - work_done)
        log(f"scale: run {i + 1}/{len(todo)} (size {size}, seed {seed}) in {row['seconds']:.0f} s; ETA {eta / 60:.1f} min")
    return [done[row_key(s, seed, chash)] for s, seed in sorted(jobs)]


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """(fn(*args), the seconds it took): timed where it runs, not where its result arrives."""
    t0 = time.monotonic()
    return fn(*args), time.monotonic() - t0


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int = 1,
             threads: int | None = None) -> Iterator[tuple[tuple, Any]]:
    """(job, fn(*job)) for every job, yielded the moment each finishes.

    `workers=1` without `threads` runs inline. Otherwise each job runs in one of `workers` spawned
    processes with `threads` torch threads: a tiny student's matmuls are too small for threads to
    pay, so two 1-thread trainings side by side beat one 2-thread training, and a 2-thread run
    collapses when other processes share the cores (OpenMP barriers wait on descheduled threads;
    `bench/scale_workers.py` measures both). Not `executor.LocalExecutor`: that yields in task
    order and keeps its pool's default threads; a study records each run as soon as it ends.
    A failed job cancels the ones not started and raises once the running ones end.
    """
    if workers == 1 and threads is None:
        yield from ((job, fn(*job)) for job in jobs)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: torch's thread pools do not survive a fork
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(fn, *job): job for job in jobs}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(cancel_futures=True)


def _init_worker(threads: int | None) -> None:
    import torch

    from mathforge.train.launch import die_with_parent

    die_with_parent()  # a killed study leaves no run training on its own, racing the rerun that resumes it
    if threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- the sweep as a command


def run_scale(cfg: ScaleConfig, out: str | Path, report_only: bool = False) -> dict[str, Any]:
    """`mathforge scale`: nested subsets of `cfg.data`, one SFT run and evaluation per size and
    training seed, then `scaling.json`, `report.md`, `report.html` and plots; returns the study.

    Each run trains `cfg.train` from scratch with every stage's dataset replaced by the subset and
    evaluates it like `mathforge run` does, on the same fixed items for every run. `report_only`
    trains nothing: it reports the rows of this config finished so far (a study still running).
    """
    from mathforge.rundir import RunDir

    rd = RunDir(out)
    rd.save_config(cfg)
    chash = config_hash(cfg)
    data = _materialise(cfg.data, rd.root / "data" / f"{hashlib.sha256(cfg.data.encode()).hexdigest()[:12]}.jsonl")
    subsets = nested_subsets(data, cfg.sizes, rd.root / "subsets" / chash, seed=cfg.seed)
    if report_only:
        rows = [r for r in completed(rd.root / "scaling.jsonl").values() if r["config"] == chash]
        if not rows:
            raise ValueError(f"{rd.root / 'scaling.jsonl'}: no finished run of this config to report")
    else:
        note_other_rows(rd, rd.root / "scaling.jsonl", lambda row: row.get("config") == chash)
        students = shared_students(cfg, data, rd.root / "students" / chash)
        runner = partial(train_and_eval, cfg, rd.root / "runs", chash, students)
        rows = sweep(subsets, cfg.train_seeds, chash, rd.root / "scaling.jsonl", runner, log=rd.log.info,
                     workers=cfg.workers, threads=cfg.threads)
    result = study(rows, cfg)
    for bench, entry in result["benchmarks"].items():
        entry["guess_floor"] = guess_floor(data, cfg, bench)
    write_json(rd.root / "scaling.json", _finite(result))
    from mathforge.scale_report import write_reports

    write_reports(result, rd.root)
    return result


def note_other_rows(rd: Any, results: Path, ours: Callable[[dict[str, Any]], bool]) -> None:
    """Say once, in one line, that rows of other configs (or of an older mathforge) are not reused."""
    other = sum(not ours(row) for row in completed(results).values())
    if other:
        line = f"note: {other} rows of {results} were made by another config or an older mathforge: kept, not reused"
        rd.log.warning(line)
        print(line, file=sys.stderr, flush=True)


def dry_run(cfg: ScaleConfig, out: str | Path) -> list[str]:
    """`--dry-run`: each (size, seed) row as run or reuse (its key: size, seed, `config_hash`)."""
    chash, done = config_hash(cfg), completed(Path(out) / "scaling.jsonl")
    keys = [row_key(size, seed, chash) for seed in cfg.train_seeds for size in sorted(cfg.sizes)]
    return [f"{k}  {'reuse' if k in done else 'run'}" for k in keys]


def shared_students(cfg: ScaleConfig, data: Path, root: Path) -> dict[int, str]:
    """A tiny student's initial checkpoint per training seed, with one tokenizer for every size.

    Trained per run, a tiny student's tokenizer would come from that run's subset: a 32-sample
    vocabulary splits the names a 3,200-sample one keeps whole, and the curve would mix data size
    with tokenisation. Here it is trained once on the whole data (`data`, never the test items);
    the seed decides the initial weights. Other students are used as they are (empty dict).
    """
    from mathforge.train.sft import tokenizer_texts
    from mathforge.train.students import resolve_student

    if cfg.train.student.model != "tiny":
        return {}
    whole = dataclasses.replace(cfg.train, stages=(StageConfig("all", str(data)),))
    return {seed: resolve_student(cfg.train.student, root / f"s{seed}", tokenizer_texts(whole), cfg.train.max_length, seed)
            for seed in cfg.train_seeds}


def stages_for(cfg: ScaleConfig, size: int, subset: Path) -> tuple[StageConfig, ...]:
    """The training stages of one size: every stage reads the subset, for its epochs or enough
    epochs to reach `cfg.min_steps` optimizer steps, whichever is more.

    With epochs alone a 32-sample run takes a handful of steps and measures only that it was not
    trained; with the floor a small set is repeated until the student has had the optimisation a
    larger one gets, so the curve's low end says what the data can teach. The rule is the same for
    every size (nothing is tuned per size), and the largest sizes, past the floor, keep their epochs.
    """
    floor = cfg.min_steps * cfg.train.global_batch / size
    return tuple(dataclasses.replace(s, dataset=str(subset), epochs=max(s.epochs, floor)) for s in cfg.train.stages)


def train_and_eval(cfg: ScaleConfig, runs: Path, chash: str, students: dict[int, str],
                   size: int, seed: int, subset: Path) -> dict[str, Any]:
    """One row of a sweep: train `cfg.train` from scratch on `subset`, evaluate every benchmark."""
    from mathforge.eval.benchmarks import slug
    from mathforge.eval.run import evaluate_model
    from mathforge.paths import data_dir
    from mathforge.train.sft import train

    train_cfg = dataclasses.replace(cfg.train, stages=stages_for(cfg, size, subset), seed=seed)
    if seed in students:
        train_cfg = dataclasses.replace(train_cfg, student=dataclasses.replace(cfg.train.student, model=students[seed]))
    run_dir = runs / row_key(size, seed, chash)
    stats = train(train_cfg, run_dir / "train")
    items = {}
    for bench in cfg.eval.benchmarks:
        summary = evaluate_model(cfg.eval, run_dir / "train" / "model", bench, data_dir(cfg.data_dir),
                                 run_dir / "eval" / slug(bench))
        items[bench] = summary["items"]
    last = stats[cfg.train.stages[-1].name]
    return {"items": items, "train_loss": last.get("train_loss"), "train_steps": last.get("steps")}


def _finite(obj: Any) -> Any:
    """JSON has no inf/NaN: they become null (an interval end that does not exist)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _materialise(spec: str, target: Path) -> Path:
    """The sweep's data as one record file (a seed source spec is loaded once)."""
    from mathforge.sources import SOURCES, load

    kind, sep, _ = spec.partition(":")
    if not (sep and kind in SOURCES):
        return Path(spec)
    if not target.exists():
        with AtomicWriter(target) as w:
            w.write_all(load(spec))
    return target
