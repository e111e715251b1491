"""The single-step commands (`mathforge decontam`, `dedup`, `check`, `select`): each is the cleaning
chain of `quality/clean.py` with only its own phase on, on the same executors (`--engine local|ray`:
one task per shard, records never pass through the driver), in a work folder beside the output
(`<out>.work/`, removed once the output is written, so a killed run resumes at the shard).

Each writes the kept records to `--out` (streamed from the kept shards), the removed rows with
reasons to `<stem>.removed.jsonl` and a report to `<stem>.report.json` in the shape the dataset
card reads: `{"filters": [FilterStats...], "decontam": {...}}`, `{"selection": {...}}`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mathforge.eval.benchmarks import BENCHMARKS
from mathforge.io import (
    AtomicWriter,
    Span,
    concat_records,
    plan_spans,
    read_records,
    read_span,
    shard_name,
    write_json,
)
from mathforge.paths import data_file
from mathforge.quality.clean import AnswerCheckConfig, CleanConfig, clean
from mathforge.quality.dedup import NearDedupConfig
from mathforge.quality.select import SelectConfig
from mathforge.record import Record
from mathforge.sources import SourceSpec, load

ENGINES = ("local", "ray")
SHARD_ROWS = 10_000
KEEP_ALL = SelectConfig(strategy="random", budget=2**62)  # a selection phase that keeps every row in order


def side_paths(out: Path) -> tuple[Path, Path]:
    """Where a step writes its removed rows and its report, next to its output."""
    stem = out.name.split(".")[0]
    return out.with_name(f"{stem}.removed.jsonl"), out.with_name(f"{stem}.report.json")


def default_against() -> list[str]:
    """GSM8K test and MATH test from the benchmark data folder (`mathforge.paths.data_dir`)."""
    return [f"{b.source_kind}:{data_file(b.file)}?name={b.name}_test" for b in (BENCHMARKS["gsm8k"], BENCHMARKS["math"])]


def evaluation_sets(specs: Sequence[str]) -> dict[str, list[Record]]:
    """Evaluation sets by name (`?name=` or the file stem), test splits explicitly allowed."""
    sets: dict[str, list[Record]] = {}
    for text in specs:
        spec = SourceSpec.parse(text)
        name = spec.opt("name") or Path(spec.location).stem
        sets[name] = list(load(SourceSpec(spec.kind, spec.location, {**spec.options, "allow_test": "1"})))
    return sets


def only(engine: str, workers: int | None, shard_rows: int = SHARD_ROWS, **on: Any) -> CleanConfig:
    """A cleaning config with every phase off but those in `on`, run on `engine` (local or ray)."""
    _check_engine(engine)
    off = {"decontam": False, "exact_dedup": False, "near_dedup": False, "answer_line": False, "max_tokens": 0,
           "answer_check": AnswerCheckConfig(mode="off"), "select": KEEP_ALL}
    return CleanConfig(**{**off, **on, "executor": engine, "workers": workers, "shard_rows": shard_rows})


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}' (local or ray)")


def run_phases(data: Path, out: Path, cfg: CleanConfig, *, style: str = "alpaca", judge: Any = None) -> dict[str, Any]:
    """`clean` into `<out>.work/`, then its kept shards streamed into `out` and its rejects into
    `<stem>.removed.jsonl`; returns the cleaning report."""
    work = out.with_name(out.name + ".work")
    report = clean(data, work, cfg, data_dir=os.environ.get("MATHFORGE_DATA") or ".", style=style, judge=judge)
    removed, _ = side_paths(out)
    concat_records([work / "data"], out)
    concat_records([work / "rejects" / "scan", work / "rejects" / "filter"], removed)
    shutil.rmtree(work)
    return report


def run_decontam(data: Path, against: Sequence[str], out: Path, *, matchers: Sequence[str] | None = None,
                 workers: int | None = None, engine: str = "local", judge: Any = None, n: int = 30,
                 threshold: float = 0.85, shard_rows: int = SHARD_ROWS) -> dict[str, Any]:
    """Decontaminate a record file against evaluation sets with `matchers` (None: the default;
    `judge`: the llm matcher's engine, which runs every shard on the driver); returns the report
    it writes, removals per matcher included."""
    from mathforge.quality.matchers import DEFAULT_MATCHERS

    names = tuple(matchers or DEFAULT_MATCHERS)
    if "llm" in names and judge is None:
        raise ValueError("the llm matcher needs a judge engine (it runs on the local engine only)")
    cfg = only(engine, workers, shard_rows, decontam=True, against=tuple(against), decontam_n=n,
               matchers=tuple(m for m in names if m != "llm"), embedding_threshold=threshold)
    report = run_phases(data, out, cfg, judge=judge if "llm" in names else None)
    result = {"step": "decontam", "input": str(data), "against": list(against), "engine": engine,
              "filters": report["filters"], "decontam": report["decontam"]}
    write_json(side_paths(out)[1], result)
    return result


def run_dedup(data: Path, out: Path, *, near: bool = True, threshold: float = 0.8, num_perm: int = 128,
              shingle: int = 3, fields: Sequence[str] = ("problem", "solution"), engine: str = "local",
              workers: int | None = None, shard_rows: int = SHARD_ROWS) -> dict[str, Any]:
    """Exact then near-duplicate removal of a record file; returns the report it writes."""
    cfg = only(engine, workers, shard_rows, exact_dedup=True, near_dedup=near, dedup_fields=tuple(fields),
               near=NearDedupConfig(threshold, num_perm, shingle))
    report = run_phases(data, out, cfg)
    result = {"step": "dedup", "input": str(data), "engine": engine, "filters": report["filters"]}
    write_json(side_paths(out)[1], result)
    return result


def run_check(data: Path, out: Path, *, max_tokens: int | None = 2048, tokenizer: str = "smollm2",
              style: str = "alpaca", engine: str = "local", workers: int | None = None,
              shard_rows: int = SHARD_ROWS) -> dict[str, Any]:
    """The format filter (answer line present and readable), then the token-length filter."""
    cfg = only(engine, workers, shard_rows, answer_line=True, max_tokens=max_tokens or 0, length_tokenizer=tokenizer)
    report = run_phases(data, out, cfg, style=style)
    result = {"step": "check", "input": str(data), "filters": report["filters"]}
    write_json(side_paths(out)[1], result)
    return result


def run_select(data: Path, out: Path, config: SelectConfig, *, checks: Sequence[str] = (), grader: str = "strict",
               judge_engine: Any = None, seeds: Path | None = None, engine: str = "local",
               workers: int | None = None, shard_rows: int = SHARD_ROWS) -> dict[str, Any]:
    """Optionally verify (answer / consistency / model) or judge difficulty first, then select.
    A random selection without checks is the cleaning chain's sharded select phase; the other
    strategies and the checks rank or vote over the whole set, so they run on the driver."""
    from mathforge.quality import verify
    from mathforge.quality.select import select

    _check_engine(engine)
    unknown = set(checks) - {"answer", "consistency", "model"}
    if unknown:
        raise ValueError(f"unknown --verify check(s) {sorted(unknown)} (answer, consistency, model)")
    judged = judge_engine is not None and config.strategy == "hard" and config.hard_by != "level"
    if config.strategy == "random" and not checks:
        report = run_phases(data, out, only(engine, workers, shard_rows, select=config))
        result = {"step": "select", "input": str(data), "selection": report["selection"],
                  "verification": _verification(data)}
        write_json(side_paths(out)[1], result)
        return result
    # the strategies and checks need the whole set: records are held (a few KB a row: problem,
    # solution, meta); a coreset's embeddings are 1.5 KB a row (384 float32) besides
    records = list(read_records(data))
    if "answer" in checks:
        seed_answers = {r.id: r.answer for r in read_records(seeds) if r.answer} if seeds else None
        records = verify.check_answers(records, grader=grader, seed_answers=seed_answers)
    if "consistency" in checks:
        records = verify.self_consistency(records)
    if judge_engine is not None and "model" in checks:
        from mathforge.quality.judge import SolutionVerifier

        records = SolutionVerifier(judge_engine).annotate(records)
    if judged:
        from mathforge.quality.judge import DifficultyJudge

        records = DifficultyJudge(judge_engine).annotate(records)
    vectors = None
    if config.strategy == "coreset" and config.budget < len(records):
        vectors = embed_shards(data, out.with_name(out.name + ".work"), config.embed_model, engine, workers, shard_rows)
    chosen = select(records, config, vectors=vectors)
    with AtomicWriter(out) as w:
        w.write_all(chosen.records)
    result = {"step": "select", "input": str(data), "selection": chosen.report,
              "verification": verify.verify_summary(records)}
    write_json(side_paths(out)[1], result)
    return result


def _verification(data: Path) -> dict[str, Any]:
    """`verify.verify_summary` of a record file, a batch at a time."""
    from mathforge.filters import batches
    from mathforge.quality.verify import verify_summary

    total: dict[str, Counter] = {}
    for batch in batches(read_records(data), 10_000):
        for check, counts in verify_summary(batch).items():
            total.setdefault(check, Counter()).update(counts)
    return {c: dict(v) for c, v in total.items()} or verify_summary([])


@dataclasses.dataclass(frozen=True)
class EmbedTask:
    span: Span
    model: str | None
    path: str


def embed_shards(data: Path, work: Path, model: str | None, engine: str, workers: int | None,
                 shard_rows: int = SHARD_ROWS) -> np.ndarray:
    """The problems' embeddings in input order, one executor task per shard, each writing its
    vectors to `work/embed/` (the driver reads the vectors back, never ships the records)."""
    from mathforge.executor import make_executor

    tasks = [EmbedTask(s, model, str(work / "embed" / shard_name(i, ".npy")))
             for i, s in enumerate(plan_spans(data, shard_rows))]
    for _ in make_executor(engine, workers).map(_embed, tasks, label="embed"):
        pass
    vectors = np.concatenate([np.load(t.path) for t in tasks])
    shutil.rmtree(work)
    return vectors


def _embed(task: EmbedTask) -> dict[str, Any]:
    from mathforge.embed import embed_texts

    vectors = embed_texts([r.problem for r in read_span(task.span)], model=task.model)
    path = Path(task.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return {"rows": len(vectors)}
