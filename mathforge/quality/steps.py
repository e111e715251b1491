"""File-to-file quality steps behind the CLI: read records, run one step on the chosen engine,
write the kept records, the removed ones (with reasons) and a JSON report for the dataset card.

Each report has the shape the card reads: `{"filters": [FilterStats...], "decontam": {...}}`,
`{"selection": {...}}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mathforge.eval.benchmarks import BENCHMARKS
from mathforge.filters import FilterStats, apply_filter
from mathforge.io import AtomicWriter, read_records, write_json, write_records
from mathforge.paths import data_file
from mathforge.record import Record
from mathforge.sources import SourceSpec, load

ENGINES = ("local", "ray")


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


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}' (local or ray)")


def run_decontam(data: Path, against: Sequence[str], out: Path, *, matchers: Sequence[str] | None = None,
                 workers: int | None = None, engine: str = "local", batch_size: int = 1024, judge: Any = None,
                 **opts: Any) -> dict[str, Any]:
    """Decontaminate a record file against evaluation sets with `matchers` (None: the default;
    `judge`: the llm matcher's engine; `opts`: the `Decontaminator`'s, e.g. n, threshold);
    returns the report it writes, removals per matcher included. `workers`: Ray workers (None:
    1). Rows stream through a batch at a time: memory holds the test sets and one batch."""
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from mathforge.quality.matchers import DEFAULT_MATCHERS, Decontaminator

    _check_engine(engine)
    sets, names = evaluation_sets(against), tuple(matchers or DEFAULT_MATCHERS)
    if engine == "ray" and "llm" in names:
        raise ValueError("the llm matcher runs on the local engine only (its judge is not shipped to workers)")
    dc = Decontaminator(sets, names, engine=judge, **opts)
    stats = FilterStats(dc.name)
    step: Any = dc
    records: Iterable[Record] = read_records(data)
    if engine == "ray":
        from mathforge.quality import ray_engine

        ray_engine.init()
        step = _Found(dc, ray_engine.match_records(records, sets, names, batch_size=batch_size,
                                                   workers=workers or 1, **opts))
        records = step.records()
    removed, report_path = side_paths(out)
    columns = (*Progress.get_default_columns()[:1], TextColumn("{task.completed:,} rows"), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress, AtomicWriter(out) as kept, \
            AtomicWriter(removed) as rejects:
        task = progress.add_task("decontam", total=None)
        for record in apply_filter(records, step, stats, rejects, batch_size=batch_size):
            kept.write(record)
            progress.advance(task)
    result = {"step": "decontam", "input": str(data), "against": list(against), "engine": engine,
              "filters": [stats.to_dict()], "decontam": dc.removals.to_dict()}
    write_json(report_path, result)
    return result


class _Found:
    """The Decontaminator's decisions on matches found on Ray workers: `records()` yields each
    record as it comes back and keeps its match until `decide_batch` takes it (like `Replay`)."""

    def __init__(self, dc: Any, pairs: Iterable[tuple[Record, Any]]):
        self.dc, self.pairs, self.name, self.pending = dc, pairs, dc.name, {}

    def records(self) -> Iterator[Record]:
        for record, match in self.pairs:
            self.pending[id(record)] = match
            yield record

    def decide_batch(self, records: Sequence[Record]) -> list[tuple[Record, str | None]]:
        return self.dc.decide_batch(records, [self.pending.pop(id(r)) for r in records])


def run_dedup(data: Path, out: Path, *, near: bool = True, threshold: float = 0.8, num_perm: int = 128,
              shingle: int = 3, fields: Sequence[str] = ("problem", "solution"), engine: str = "local",
              workers: int = 1) -> dict[str, Any]:
    """Exact then near-duplicate removal of a record file; returns the report it writes."""
    from mathforge.quality.dedup import ExactDedup, NearDedup, NearDedupConfig

    _check_engine(engine)
    exact = ExactDedup(fields)
    near_step = NearDedup(NearDedupConfig(threshold, num_perm, shingle), fields) if near else None
    removed, report_path = side_paths(out)
    if engine == "ray":
        from mathforge.quality import ray_engine

        ray_engine.init()
        decisions = ray_engine.dedup_decisions(read_records(data), exact, near_step, workers=workers)
        reasons: dict[int, str | None] = {}
        records: Iterable[Record] = _remember(decisions, reasons)
        names = [exact.name] + ([near_step.name] if near_step else [])
        steps: list[Any] = [Replay(n, reasons, last=n == names[-1]) for n in names]
    else:
        steps, records = [exact] + ([near_step] if near_step else []), read_records(data)
    stats = [FilterStats(s.name) for s in steps]
    with AtomicWriter(out) as kept, AtomicWriter(removed) as rejects:
        for step, st in zip(steps, stats, strict=True):
            records = apply_filter(records, step, st, rejects)
        kept.write_all(records)
    result = {"step": "dedup", "input": str(data), "engine": engine, "filters": [s.to_dict() for s in stats]}
    write_json(report_path, result)
    return result


def _remember(decisions: Iterable[tuple[Record, str | None]], reasons: dict[int, str | None]) -> Iterator[Record]:
    for record, reason in decisions:
        reasons[id(record)] = reason
        yield record


class Replay:
    """One dedup filter's share of decisions made elsewhere (the Ray engine decides exact and near
    dedup in one pass), so `apply_filter` counts them like any other filter's. A record's entry is
    dropped as soon as it is decided: one record is in flight at a time."""

    def __init__(self, name: str, reasons: dict[int, str | None], last: bool):
        self.name, self.reasons, self.last = name, reasons, last
        self.kind = "exact_duplicate" if name == "dedup_exact" else "near_duplicate"

    def decide(self, record: Record) -> str | None:
        reason = self.reasons.get(id(record))
        mine = reason if reason and reason.startswith(self.kind) else None
        if mine or self.last:
            self.reasons.pop(id(record), None)
        return mine


def run_check(data: Path, out: Path, *, max_tokens: int | None = 2048, tokenizer: str = "smollm2",
              style: str = "alpaca") -> dict[str, Any]:
    """The format filter (answer line present and readable), then the token-length filter."""
    from mathforge.quality.formatcheck import AnswerLineFilter, LengthFilter

    steps: list[Any] = [AnswerLineFilter()]
    if max_tokens:
        steps.append(LengthFilter(tokenizer, max_tokens=max_tokens, style=style))
    stats = [FilterStats(s.name) for s in steps]
    removed, report_path = side_paths(out)
    with AtomicWriter(out) as kept, AtomicWriter(removed) as rejects:
        stream: Any = read_records(data)
        for step, st in zip(steps, stats, strict=True):
            stream = apply_filter(stream, step, st, rejects)
        kept.write_all(stream)
    result = {"step": "check", "input": str(data), "filters": [s.to_dict() for s in stats]}
    write_json(report_path, result)
    return result


def run_select(data: Path, out: Path, config: Any, *, checks: Sequence[str] = (), grader: str = "strict",
               judge_engine: Any = None, seeds: Path | None = None) -> dict[str, Any]:
    """Optionally verify (answer / consistency / model) or judge difficulty first, then select."""
    from mathforge.quality import verify
    from mathforge.quality.select import select

    unknown = set(checks) - {"answer", "consistency", "model"}
    if unknown:
        raise ValueError(f"unknown --verify check(s) {sorted(unknown)} (answer, consistency, model)")
    records = list(read_records(data))
    if "answer" in checks:
        seed_answers = {r.id: r.answer for r in read_records(seeds) if r.answer} if seeds else None
        records = verify.check_answers(records, grader=grader, seed_answers=seed_answers)
    if "consistency" in checks:
        records = verify.self_consistency(records)
    if judge_engine is not None and "model" in checks:
        from mathforge.quality.judge import SolutionVerifier

        records = SolutionVerifier(judge_engine).annotate(records)
    if judge_engine is not None and config.strategy == "hard" and config.hard_by != "level":
        from mathforge.quality.judge import DifficultyJudge

        records = DifficultyJudge(judge_engine).annotate(records)
    chosen = select(records, config)
    write_records(out, chosen.records)
    result = {"step": "select", "input": str(data), "selection": chosen.report,
              "verification": verify.verify_summary(records)}
    write_json(side_paths(out)[1], result)
    return result
