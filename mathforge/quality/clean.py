"""The cleaning chain, the one copy every caller runs (`mathforge clean`, `mathforge run`, and with
one phase on, `mathforge decontam`, `dedup`, `check` and `select`: see `quality/steps.py`):

    decontam -> exact dedup -> near dedup -> format -> length -> answer check -> select

on a record file or a sharded dataset, in bounded memory, resumable at the shard, on the local or
the Ray executor (byte-identical outputs). Like datatrove's MinHash dedup it runs in phases, each
a set of shard tasks with completion markers:

1. scan (per shard): decontamination; for the rows it keeps, exact keys, MinHash signatures and
   LSH band hashes to `work/scan/` (the kept rows too, so later phases do not scan again);
2. dedup (once, global): keep-first verdicts from the keys and band hashes alone, candidate pairs
   checked on the full signatures read from disk, the same verdicts as today's `NearDedup`;
3. filter (per shard): the dedup verdicts, then format, length and answer check (batched);
4. select (per shard, from a global plan): the kept dataset in `data/`. `random` plans from the row
   counts alone; `hard` (hard rows first, then the rest by descending difficulty, as
   `quality.select`'s `hard`) from one pass over the filtered shards.

Output folder::

    OUT/data/part-NNNNN.jsonl       the kept rows (`datasets.load_dataset("json", data_dir=OUT/data)`)
    OUT/rejects/<phase>/part-*.jsonl dropped rows, each with meta.rejected = {filter, reason}
    OUT/report.json                 rows_in, rows_out, output, steps [{name, seen, kept, dropped}], ...
    OUT/work/                       intermediate shards and the per-shard markers

A marker is keyed by a hash of the cleaning config and the input files (`key`): a rerun with the
same key skips finished shards; another key starts the folder afresh.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from mathforge.config import config_to_dict
from mathforge.executor import make_executor
from mathforge.filters import FilterStats, apply_filter, batches, merge_stats
from mathforge.io import (
    AtomicWriter,
    DataError,
    Span,
    dataset_files,
    plan_spans,
    read_records,
    read_span,
    shard_name,
    write_json,
)
from mathforge.quality.dedup import NearDedupConfig, Signer
from mathforge.quality.select import SelectConfig, describe, merge_descriptions
from mathforge.record import Record
from mathforge.rundir import marker_has, step_key, write_marker

MAX_BUCKET_PAIRS = 64  # an LSH bucket row is compared with at most this many earlier rows of its bucket


@dataclass(frozen=True)
class AnswerCheckConfig:
    mode: str = "annotate"  # annotate | drop | off; drop lowers difficulty and hurts (paper §4.3.3, Table 4)
    grader: str = "symbolic"  # symbolic | strict


@dataclass(frozen=True)
class CleanConfig:
    """The data-quality steps applied to a dataset before training (a run recipe's `clean:` section)."""

    decontam: bool = True  # the single-step commands (`mathforge dedup`, ...) turn off what they do not run
    decontam_n: int = 30  # the paper's filter; 10 is measurably too strict (its Table 9)
    # benchmarks (gsm8k, math, math500) or source specs `KIND:PATH[?name=...]` whose problems and solutions must not leak
    against: tuple[str, ...] = ("gsm8k", "math")
    matchers: tuple[str, ...] = field(default_factory=lambda: _matchers().DEFAULT_MATCHERS)  # see quality/matchers.py
    embedding_threshold: float = 0.85  # embedding matcher: cosine similarity that removes a row
    exact_dedup: bool = True
    near_dedup: bool = True
    near: NearDedupConfig = field(default_factory=NearDedupConfig)
    dedup_fields: tuple[str, ...] = ("problem", "solution")  # fields compared ("problem": one row per problem)
    answer_line: bool = True  # drop rows without a readable "The answer is X" line
    max_tokens: int = 2048  # prompt + response, in the length tokenizer; 0: no length check
    length_tokenizer: str = "smollm2"
    answer_check: AnswerCheckConfig = field(default_factory=AnswerCheckConfig)
    select: SelectConfig = field(default_factory=lambda: SelectConfig(strategy="random", budget=1_000_000))
    shard_rows: int = 10_000  # rows per shard: the unit of parallelism and of resumption
    executor: str = "local"  # local | ray: where shards run (not part of the key: outputs are identical)
    workers: int | None = None  # processes or Ray CPUs (None: one per core)

    def __post_init__(self) -> None:
        try:
            if self.matchers:  # none: the llm judge alone, whose engine `clean` takes (see `clean(judge=)`)
                _matchers().parse_matchers(self.matchers)
        except ValueError as e:
            raise ValueError(f"clean.matchers: {e}") from e
        if "llm" in self.matchers:
            raise ValueError("clean.matchers: the llm judge needs an engine; run it with `mathforge decontam --judge`")
        if self.answer_check.mode not in ("annotate", "drop", "off"):
            raise ValueError(f"clean.answer_check.mode must be annotate, drop or off, got '{self.answer_check.mode}'")
        if self.answer_check.grader not in ("symbolic", "strict"):
            raise ValueError(f"clean.answer_check.grader must be symbolic or strict, got '{self.answer_check.grader}'")
        if self.shard_rows < 1:
            raise ValueError(f"clean.shard_rows must be >= 1, got {self.shard_rows}")
        if self.select.strategy not in CHAIN_STRATEGIES:
            raise ValueError(_unplannable(self.select.strategy))
        if self.select.hard_by not in ("level", "judge", "both"):
            raise ValueError(f"clean.select.hard_by must be level, judge or both, got '{self.select.hard_by}'")


CHAIN_STRATEGIES = ("random", "hard")  # the selections the chain plans globally in bounded memory


def _unplannable(strategy: str) -> str:
    return (f"clean.select.strategy '{strategy}': the cleaning chain selects {' or '.join(CHAIN_STRATEGIES)} "
            "(run `mathforge select` on its output for verifier or coreset)")
VERSION = 1  # of the cleaning outputs (shards, rejects, report); bump when one changes


@dataclass(frozen=True)
class Job:
    """What every shard task needs: small and picklable (paths and configs, never records)."""

    out: str
    cfg: CleanConfig
    data_dir: str
    seeds: str | None
    style: str
    judge: Any = None  # the llm matcher's engine: set only when every task runs inline on the driver


@dataclass(frozen=True)
class Task:
    job: Job
    index: int
    span: Span | None = None  # scan: the input piece
    plan: tuple[int, Any, int] = (0, 0, 0)  # select: (first global row, threshold, rows in total)


def clean(data: str | Path, out: str | Path, cfg: CleanConfig, *, data_dir: str | Path, seeds: str | Path | None = None,
          style: str = "alpaca", key: str | None = None, judge: Any = None) -> dict[str, Any]:
    """Run (or resume) the cleaning chain on `data` into `out`; returns the report it writes. `key`:
    the caller's step key for this cleaning (a run's), else one made from the config and input files.
    `judge`: an engine for the `llm` matcher (added to `cfg.matchers`); an engine is not shipped to
    workers, so then every shard runs inline on the driver, still streamed shard by shard from disk."""
    out = Path(out)
    spans = plan_spans(data, cfg.shard_rows)
    if not spans:
        raise DataError(f"{data}: no record files (part-*.jsonl or part-*.parquet)")
    if judge is not None and cfg.executor != "local":
        raise ValueError("the llm matcher runs on the local executor only (its judge is not shipped to workers)")
    if cfg.decontam and not cfg.matchers and judge is None:
        raise ValueError("clean.matchers: none given")
    key = key or clean_key(cfg, data, seeds, data_dir, style, judged=judge is not None)
    if _marker(out / "report.json", key):
        return json.loads((out / "report.json").read_text(encoding="utf-8"))
    if not _marker(out / "work" / "key.json", key):  # another config or input: start afresh
        _reset(out)
        write_marker(out / "work" / "key.json", key)
    job = Job(str(out), cfg, str(data_dir), str(seeds) if seeds else None, style, judge)
    executor = make_executor(cfg.executor, 1 if judge is not None else cfg.workers)
    scans = _phase(executor, _scan, [Task(job, i, span=s) for i, s in enumerate(spans)], out, "scan", key)
    counts = [s["rows"] for s in scans]
    _once(out / "work" / "dedup.done.json", key, lambda: _dedup(out, counts, cfg))
    filtered = _phase(executor, _filter, [Task(job, i) for i in range(len(spans))], out, "filter", key)
    plans = _select_plan([f["rows"] for f in filtered], cfg.select, job)
    selected = _phase(executor, _select, [Task(job, i, plan=p) for i, p in enumerate(plans)], out, "select", key)
    report = _report(data, out, scans, filtered, selected, cfg, key)
    write_json(out / "report.json", report)
    return report


def _reset(out: Path) -> None:
    (out / "report.json").unlink(missing_ok=True)
    for sub in ("data", "rejects", "work"):
        shutil.rmtree(out / sub, ignore_errors=True)


def clean_key(cfg: CleanConfig, data: str | Path, seeds: Any, data_dir: Any, style: str, judged: bool = False) -> str:
    """The key its markers carry: the one step hasher over the config (less where it runs), the data
    directory, the prompt style, whether the llm judge runs, and the input files' sizes and mtimes."""
    files = [*dataset_files(data), *([Path(seeds)] if seeds else [])]
    keyed = {"clean": cfg, "data_dir": str(Path(data_dir).resolve()), "style": style, **({"judge": True} if judged else {})}
    return step_key(VERSION, keyed, files=files)


def _marker(path: Path, key: str) -> bool:
    return marker_has(path, key)


def _phase(executor: Any, fn: Any, tasks: list[Task], out: Path, phase: str, key: str) -> list[dict[str, Any]]:
    """Run the tasks whose marker is missing; every task's stats come back, in order."""
    markers = [out / "work" / phase / f"{shard_name(t.index, '.done.json')}" for t in tasks]
    todo = [t for t, m in zip(tasks, markers, strict=True) if not _marker(m, key)]
    for task, stats in zip(todo, executor.map(fn, todo, label=phase), strict=True):
        write_marker(markers[task.index], key, **stats)
    return [json.loads(m.read_text(encoding="utf-8")) for m in markers]


def _once(marker: Path, key: str, fn: Any) -> None:
    if not _marker(marker, key):
        fn()
        write_marker(marker, key)


def _paths(job: Job, phase: str, index: int) -> tuple[Path, Path]:
    """(output shard, rejects shard) of a phase."""
    out, name = Path(job.out), shard_name(index)
    target = out / "data" / name if phase == "select" else out / "work" / phase / name
    return target, out / "rejects" / phase / name


# ---------------------------------------------------------------- phase 1: scan


class Decontaminate:
    """The decontamination step: the recipe's matchers (`quality/matchers.py`) as one batch filter."""

    def __init__(self, data_dir: str, against: Sequence[str], n: int, matchers: Sequence[str], threshold: float = 0.85,
                 judge: Any = None):
        sets = dict(_evaluation_set(b, data_dir) for b in against)
        self.decontaminator = _matchers().Decontaminator(sets, matchers, n=n, threshold=threshold, engine=judge)
        self.name = self.decontaminator.name

    def run(self, records: Iterable[Record], stats: FilterStats, rejects: Any) -> tuple[Iterator[Record], Any]:
        """The kept records, and this shard's tally of removals, which fills as they stream."""
        tally = self.decontaminator.new_tally()
        return apply_filter(records, self.decontaminator, stats, rejects, batch_size=1024), tally


def _evaluation_set(against: str, data_dir: str) -> tuple[str, list[Record]]:
    """(name, records) of a benchmark by name, or of a source spec (named by `?name=` or its file stem)."""
    from mathforge.eval.benchmarks import BENCHMARKS, load_benchmark
    from mathforge.sources import SourceSpec, load

    if against in BENCHMARKS:
        return against, load_benchmark(against, root=data_dir)[1]
    spec = SourceSpec.parse(against)
    name = spec.opt("name") or Path(spec.location).stem
    return name, list(load(SourceSpec(spec.kind, spec.location, {**spec.options, "allow_test": "1"})))


def _matchers() -> Any:
    from mathforge.quality import matchers  # numba-compiled: imported when a recipe is checked or run

    return matchers


@lru_cache(maxsize=2)
def _decontaminator(data_dir: str, against: tuple[str, ...], n: int, matchers: tuple[str, ...],
                    threshold: float) -> Decontaminate:
    return Decontaminate(data_dir, against, n, matchers, threshold)  # one index per worker process, reused across shards


def _decontamination(job: Job) -> Decontaminate | None:
    cfg = job.cfg
    if not cfg.decontam:
        return None
    if job.judge is not None:  # inline on the driver (see `clean`): the judge's engine is not cached
        return Decontaminate(job.data_dir, cfg.against, cfg.decontam_n, (*cfg.matchers, "llm"),
                             cfg.embedding_threshold, judge=job.judge)
    return _decontaminator(job.data_dir, cfg.against, cfg.decontam_n, cfg.matchers, cfg.embedding_threshold)


def _scan(task: Task) -> dict[str, Any]:
    job, cfg = task.job, task.job.cfg
    step = _decontamination(job)
    signer = Signer(cfg.near, cfg.dedup_fields) if cfg.exact_dedup or cfg.near_dedup else None
    stats = FilterStats("decontam")
    target, rejected = _paths(job, "scan", task.index)
    parts: list[tuple[np.ndarray, ...]] = []
    ids: list[str] = []
    with AtomicWriter(target) as kept, AtomicWriter(rejected) as rejects:
        stream, report = step.run(read_span(task.span), stats, rejects) if step else (read_span(task.span), None)
        for batch in batches(stream, 1024):
            kept.write_all(batch)
            if signer is not None:
                parts.append(signer.sign(batch))
            ids += [r.id for r in batch]
    if signer is not None:
        keys, sigs, bands = (np.concatenate([p[i] for p in parts or [signer.sign([])]]) for i in range(3))
        for name, array in (("keys", keys), ("sigs", sigs), ("bands", bands)):
            _save(target.with_name(shard_name(task.index, f".{name}.npy")), array)
    (target.with_name(shard_name(task.index, ".ids.txt"))).write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    decontam = {**report.to_dict(), "test_items_hit": sorted(report.test_items_hit)} if report is not None else None
    return {"rows": len(ids), "rows_in": stats.before.total if step else len(ids), "stats": stats.to_dict(),
            "decontam": decontam}


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


# ---------------------------------------------------------------- phase 2: dedup


def _dedup(out: Path, counts: list[int], cfg: CleanConfig) -> None:
    """Global keep-first verdicts. Holds 8 bytes per row (exact keys) plus, one band at a time,
    16 bytes per row (band hash and row number); signatures stay on disk."""
    scan = out / "work" / "scan"
    if not (cfg.exact_dedup or cfg.near_dedup):
        for i in range(len(counts)):
            write_json(out / "work" / "dedup" / shard_name(i, ".json"), {"exact": {}, "near": {}})
        return
    offsets = np.cumsum([0, *counts])
    keys = np.concatenate([np.load(scan / shard_name(i, ".keys.npy")) for i in range(len(counts))] or [np.empty(0)])
    first = _first_occurrence(keys.astype(np.uint64))
    rows = np.arange(len(keys))
    exact = {int(i): ("exact_duplicate", int(first[i]), 1.0) for i in np.nonzero(first != rows)[0]} \
        if cfg.exact_dedup else {}
    near = _near(scan, offsets, rows[first == rows] if cfg.exact_dedup else rows, cfg.near) if cfg.near_dedup else {}
    named = _ids(scan, len(counts), {j for _, j, _ in (*exact.values(), *near.values())})
    for i in range(len(counts)):
        lo, hi = offsets[i], offsets[i + 1]
        verdicts = {kind: {str(r - lo): _reason(v, named) for r, v in found.items() if lo <= r < hi}
                    for kind, found in (("exact", exact), ("near", near))}
        write_json(out / "work" / "dedup" / shard_name(i, ".json"), verdicts)


def _reason(verdict: tuple[str, int, float], ids: dict[int, str]) -> str:
    kind, kept, sim = verdict
    return f"{kind}:{ids[kept]}" if kind == "exact_duplicate" else f"{kind}:{ids[kept]} (jaccard {sim:.2f})"


def _first_occurrence(keys: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same key."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if len(keys) else np.empty(0, bool)
    first = np.empty(len(keys), np.int64)
    first[order] = order[starts][np.cumsum(starts) - 1]
    return first


def _near(scan: Path, offsets: np.ndarray, candidates: np.ndarray, cfg: NearDedupConfig) -> dict[int, tuple[str, int, float]]:
    """Keep-first near-duplicate verdicts among `candidates` (rows that survived exact dedup),
    as `NearDedup` decides them: a row is dropped when a kept earlier row shares an LSH band and
    its full-signature Jaccard reaches the threshold; the most similar kept row is named."""
    shards = len(offsets) - 1
    later, earlier = _candidate_pairs(scan, shards, Signer(cfg).bands, candidates)
    sims = _jaccard(scan, offsets, later, earlier)
    hit = sims >= cfg.threshold
    later, earlier, sims = later[hit], earlier[hit], sims[hit]
    order = np.lexsort((earlier, -sims, later))
    kept = np.ones(int(offsets[-1]), bool)
    verdicts: dict[int, tuple[str, int, float]] = {}
    for i, j, sim in zip(later[order].tolist(), earlier[order].tolist(), sims[order].tolist(), strict=True):
        if i not in verdicts and kept[j]:  # pairs of a row come best first: the first kept one decides
            verdicts[i] = ("near_duplicate", j, sim)
            kept[i] = False
    return verdicts


def _candidate_pairs(scan: Path, shards: int, bands: int, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique (later row, earlier row) pairs sharing an LSH band (sorted buckets, one band at a time)."""
    found: list[np.ndarray] = []
    for band in range(bands):
        column = np.concatenate([np.load(scan / shard_name(i, ".bands.npy"), mmap_mode="r")[:, band]
                                 for i in range(shards)])[candidates]
        order = np.argsort(column, kind="stable")  # rows of a bucket stay in row order
        hashes, rows = column[order], candidates[order]
        for lag in range(1, MAX_BUCKET_PAIRS + 1):
            same = hashes[lag:] == hashes[:-lag]
            if not same.any():
                break
            found.append(rows[lag:][same].astype(np.int64) << 32 | rows[:-lag][same].astype(np.int64))
    pairs = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    return pairs >> 32, pairs & 0xFFFFFFFF


def _jaccard(scan: Path, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard (share of equal MinHash values) of row pairs, signatures read from disk."""
    sigs = [np.load(scan / shard_name(i, ".sigs.npy"), mmap_mode="r") for i in range(len(offsets) - 1)]
    out = np.empty(len(a))
    for lo in range(0, len(a), 65_536):
        x, y = _rows(sigs, offsets, a[lo : lo + 65_536]), _rows(sigs, offsets, b[lo : lo + 65_536])
        out[lo : lo + 65_536] = (x == y).mean(axis=1)
    return out


def _rows(sigs: list[np.ndarray], offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    shard = np.searchsorted(offsets, rows, side="right") - 1
    out = np.empty((len(rows), sigs[0].shape[1] if sigs else 0), np.uint32)
    for s in np.unique(shard):
        mask = shard == s
        out[mask] = sigs[s][rows[mask] - offsets[s]]
    return out


def _ids(scan: Path, shards: int, wanted: set[int]) -> dict[int, str]:
    """Record ids of the rows named in drop reasons, read from the scan's id lists (ids are never all held)."""
    ids, row = {}, 0
    for i in range(shards):
        with open(scan / shard_name(i, ".ids.txt"), encoding="utf-8") as f:
            for line in f:
                if row in wanted:
                    ids[row] = line.rstrip("\n")
                row += 1
    return ids


# ---------------------------------------------------------------- phase 3: filter


class Decided:
    """A filter whose verdicts an earlier global pass made, by row position in the scan shard."""

    def __init__(self, name: str, reasons: dict[str, str], positions: Iterator[int]):
        self.name, self.reasons, self.positions = name, reasons, positions

    def decide(self, record: Record) -> str | None:
        return self.reasons.get(str(next(self.positions)))


def _filter(task: Task) -> dict[str, Any]:
    from mathforge.quality.formatcheck import AnswerLineFilter, LengthFilter
    from mathforge.quality.verify import AnswerCheck

    job, cfg = task.job, task.job.cfg
    verdicts = json.loads((Path(job.out) / "work" / "dedup" / shard_name(task.index, ".json")).read_text())
    steps: list[Any] = [Decided("dedup_exact", verdicts["exact"], count())] if cfg.exact_dedup else []
    if cfg.near_dedup:
        steps.append(Decided("dedup_near", verdicts["near"], (p for p in count() if str(p) not in verdicts["exact"])))
    if cfg.answer_line:
        steps.append(AnswerLineFilter())
    if cfg.max_tokens:
        steps.append(LengthFilter(cfg.length_tokenizer, cfg.max_tokens, job.style))
    if cfg.answer_check.mode != "off":
        steps.append(AnswerCheck(cfg.answer_check.mode, cfg.answer_check.grader, _seed_answers(job.seeds)))
    stats = [FilterStats(s.name) for s in steps]
    source, _ = _paths(job, "scan", task.index)
    target, rejected = _paths(job, "filter", task.index)
    with AtomicWriter(target) as kept, AtomicWriter(rejected) as rejects:
        stream: Iterable[Record] = read_records(source)
        for step, st in zip(steps, stats, strict=True):
            stream = apply_filter(stream, step, st, rejects)
        rows = kept.write_all(stream)
    checks = dict(steps[-1].verdicts) if cfg.answer_check.mode != "off" else {}
    return {"rows": rows, "stats": [s.to_dict() for s in stats], "answer_check": checks}


@lru_cache(maxsize=2)
def _seed_answers(seeds: str | None) -> dict[str, str] | None:
    # the seed answers are held (a few bytes per seed): seeds are thousands where samples are millions
    return {r.id: r.answer for r in read_records(seeds) if r.answer} if seeds else None


# ---------------------------------------------------------------- phase 4: select


def _select_plan(counts: list[int], cfg: SelectConfig, job: Job | None = None) -> list[tuple[int, Any, int]]:
    """Per shard (first global row, threshold, total rows). `random` keeps the `budget` rows of
    lowest hashed rank, found from the row count alone (8 bytes per row, once). `hard` keeps the
    `budget` first rows in the order (not hard, -difficulty, hashed rank): hard rows first, then the
    hardest of the rest, random among equals; its threshold is that order's key of the last row kept.
    Hashed ranks are distinct (splitmix64 is a bijection), so either threshold keeps exactly `budget`."""
    if cfg.strategy not in CHAIN_STRATEGIES:
        raise ValueError(_unplannable(cfg.strategy))
    total = sum(counts)
    starts = [int(s) for s in np.cumsum([0, *counts])[:-1]]
    if cfg.budget == 0 or total <= cfg.budget:
        threshold: Any = -1 if cfg.budget == 0 else 2**64 - 1
    elif cfg.strategy == "random":
        ranks = _ranks(cfg.seed, 0, total)
        threshold = int(np.partition(ranks, cfg.budget - 1)[cfg.budget - 1])
    else:
        if job is None:
            raise ValueError("hard selection reads the filtered shards: the plan needs the job")
        # The global order needs every row's key: 17 bytes a row held (tier 1, difficulty 8, rank 8),
        # about 41 at the sort (its int64 order and the negated difficulties), once per cleaning.
        tier, difficulty = np.empty(total, np.uint8), np.empty(total, np.float64)
        for i, start in enumerate(starts):
            rows = read_records(_paths(job, "filter", i)[0])
            for j, r in enumerate(rows, start):
                tier[j], difficulty[j] = _hard_tier_and_difficulty(r, cfg)
        ranks = _ranks(cfg.seed, 0, total)
        last = np.lexsort((ranks, -difficulty, tier))[cfg.budget - 1]
        threshold = (int(tier[last]), float(-difficulty[last]), int(ranks[last]))
    return [(s, threshold, total) for s in starts]


def _hard_key(record: Record, rank: Any, cfg: SelectConfig) -> tuple[int, float, int]:
    """A row's place in the hard-first order, as the plan compares it."""
    tier, difficulty = _hard_tier_and_difficulty(record, cfg)
    return tier, -difficulty, int(rank)


def _hard_tier_and_difficulty(record: Record, cfg: SelectConfig) -> tuple[int, float]:
    from mathforge.quality.select import difficulty, is_hard

    return (0 if is_hard(record, cfg.min_level, cfg.hard_by) else 1), difficulty(record)


def _ranks(seed: int, start: int, stop: int) -> np.ndarray:
    """splitmix64 of (seed, row): a fixed random order of rows, computable for any range."""
    x = np.arange(start, stop, dtype=np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _select(task: Task) -> dict[str, Any]:
    job, (start, threshold, _) = task.job, task.plan
    source, _ = _paths(job, "filter", task.index)
    target, _ = _paths(job, "select", task.index)
    rows = list(read_records(source))  # one shard: at most shard_rows records
    ranks = _ranks(job.cfg.select.seed, start, start + len(rows))
    if isinstance(threshold, tuple):  # hard first: the plan's order, compared key by key
        picked = [r for r, rank in zip(rows, ranks, strict=True)
                  if _hard_key(r, rank, job.cfg.select) <= threshold]
    else:
        picked = [r for r, rank in zip(rows, ranks, strict=True) if threshold >= 0 and int(rank) <= threshold]
    with AtomicWriter(target) as w:
        w.write_all(picked)
    return {"rows": len(picked), "before": describe(rows), "after": describe(picked)}


# ---------------------------------------------------------------- the report


def _report(data: Any, out: Path, scans: list[dict], filtered: list[dict], selected: list[dict],
            cfg: CleanConfig, key: str) -> dict[str, Any]:
    filters = [merge_stats([s["stats"] for s in scans])] if cfg.decontam else []
    filters += [merge_stats([f["stats"][k] for f in filtered]) for k in range(len(filtered[0]["stats"]))] if filtered else []
    sel = cfg.select
    selection = {"strategy": sel.strategy, "budget": sel.budget, "seen": sum(f["rows"] for f in filtered),
                 "selected": sum(s["rows"] for s in selected),
                 "before": merge_descriptions([s["before"] for s in selected]) if selected else describe([]),
                 "after": merge_descriptions([s["after"] for s in selected]) if selected else describe([])}
    steps = [{"name": f["filter"], "seen": f["seen"], "kept": f["kept"], "dropped": f["dropped_by_reason"]}
             for f in filters]
    steps.append({"name": "select", "seen": selection["seen"], "kept": selection["selected"],
                  "dropped": {"over_budget": selection["seen"] - selection["selected"]}})
    checks = Counter()
    for f in filtered:
        checks.update(f["answer_check"])
    rows_in = sum(s["rows_in"] for s in scans)
    return {"key": key, "input": str(data), "rows_in": rows_in, "rows_out": selection["selected"],
            "output": str(out / "data"), "steps": steps, "filters": filters, "decontam": _decontam(scans),
            "answer_check": {"mode": cfg.answer_check.mode, "grader": cfg.answer_check.grader, **checks},
            "selection": selection, "config": {k: v for k, v in config_to_dict(cfg).items()
                                               if k not in ("executor", "workers")}}


def _decontam(scans: list[dict[str, Any]]) -> dict[str, Any] | None:
    if scans and scans[0]["decontam"] is None:
        return None
    by_set, by_matcher, items = Counter(), Counter(), set()
    for s in scans:
        by_set.update(s["decontam"]["removed_by_set"])
        by_matcher.update(s["decontam"]["removed_by_matcher"])
        items.update(s["decontam"]["test_items_hit"])
    first = scans[0]["decontam"] if scans else {"n": None, "sets": {}}
    return {**first, "removed_by_set": dict(by_set), "removed_by_matcher": dict(by_matcher),
            "test_items_hit": len(items)}
