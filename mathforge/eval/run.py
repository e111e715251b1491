"""One evaluation run: benchmark records -> greedy generations through the engine -> every grader
-> `samples.jsonl`, `summary.json` and `summary.md` in the output directory.

With `samples` K > 1 (and a temperature > 0), K solutions are drawn per item (sample i seeded with
`seed + i`, so a rerun draws the same ones from the cache); samples.jsonl holds one row per
(item, sample), the summary adds pass@k / maj@k for every k <= K and avg@K with intervals
(mathforge.eval.sampled; the markdown shows k = 1, 2, 4, ... K),
and its accuracy, tables and per-item results are those of sample 0, one draw per item.

The paper's protocol (§4.1.3) is the default: zero-shot chain of thought with the SFT prompt,
greedy decoding, responses up to 2,048 tokens, MetaMath's stop strings. Generations live in the
engine's request cache inside the output directory, so a killed run resumes where it stopped and a
rerun with other graders costs no generation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathforge.config import config_to_dict
from mathforge.eval.benchmarks import Benchmark, gold_for
from mathforge.eval.report import render_markdown, summarize
from mathforge.eval.sampled import render_sampled, summarize_sampled
from mathforge.grading import DEFAULT_TIMEOUT_S, GRADERS, grade_batch
from mathforge.io import AtomicWriter, write_json, write_text
from mathforge.prompt import format_prompt
from mathforge.record import Record

# MetaMath's evaluation stops generation at any of these (eval_gsm8k.py / eval_math.py).
METAMATH_STOP = ("Question:", "Question", "USER:", "USER", "ASSISTANT:", "ASSISTANT",
                 "Instruction:", "Instruction", "Response:", "Response")


@dataclass(frozen=True)
class EvalConfig:
    """How a model is evaluated. `prompt_style` "alpaca"/"plain" sends a raw prompt (SFT students);
    "chat" sends the problem as a chat message so the backend applies the model's chat template."""

    prompt_style: str = "alpaca"
    max_tokens: int = 2048
    stop: tuple[str, ...] | None = None  # None: MetaMath's stops for raw prompts, none for chat
    graders: tuple[str, ...] = ("strict", "symbolic")
    grade_timeout_s: float = DEFAULT_TIMEOUT_S
    grade_workers: int | None = None
    samples: int = 1  # solutions per item; > 1 needs a temperature > 0
    temperature: float = 0.0  # 0: greedy, the paper's protocol
    seed: int = 0  # sample i of an item is drawn with seed + i

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.samples > 1 and self.temperature <= 0:
            raise ValueError(f"{self.samples} samples per item need a temperature > 0 (greedy draws one answer)")
        if self.prompt_style not in ("alpaca", "plain", "chat"):
            raise ValueError(f"unknown prompt style '{self.prompt_style}' (alpaca, plain, chat)")
        unknown = [g for g in self.graders if g not in GRADERS]
        if unknown or not self.graders:
            raise ValueError(f"unknown grader(s) {unknown} (known: {', '.join(GRADERS)})")

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is not None:
            return tuple(self.stop)
        return () if self.prompt_style == "chat" else METAMATH_STOP


def build_request(record: Record, cfg: EvalConfig, key_prefix: str = "") -> Any:
    """The engine request for one item: greedy (or `cfg.samples` seeded samples), the SFT prompt
    (or the problem as a chat turn)."""
    from mathforge.engine import Request, Sampling

    seed = cfg.seed if cfg.temperature > 0 else None
    sampling = Sampling(temperature=cfg.temperature, max_tokens=cfg.max_tokens, n=cfg.samples, seed=seed,
                        stop=cfg.stops)
    key = f"{key_prefix}{record.id}"
    if cfg.prompt_style == "chat":
        return Request(key=key, messages=[{"role": "user", "content": record.problem.strip()}], sampling=sampling)
    return Request(key=key, prompt=format_prompt(record.problem, cfg.prompt_style), sampling=sampling)


def generate(requests: list[Any], engine: Any, desc: str) -> tuple[list[Any], float]:
    """Engine results for `requests` (same order) and the wall seconds generation took."""
    start = time.monotonic()
    results = engine.run(requests, desc=desc)
    return results, time.monotonic() - start


def grade_results(
    records: list[Record], results: list[Any], kind: str, cfg: EvalConfig, progress: bool = False
) -> dict[str, list]:
    """Verdicts of every grader for every generation ({grader: [Verdict, ...]}, item-major: item i's
    sample j is at i * samples + j)."""
    responses = [text for res in results for text in texts_of(res, cfg.samples)]
    golds = [r for r in records for _ in range(cfg.samples)]
    return {
        g: grade_batch([(gold_for(r, g), text) for r, text in zip(golds, responses, strict=True)],
                       grader=g, benchmark=kind, workers=cfg.grade_workers, timeout_s=cfg.grade_timeout_s,
                       progress=progress)
        for g in cfg.graders
    }


def texts_of(result: Any, samples: int) -> list[str]:
    """A result's `samples` texts; a failed request reads as empty responses."""
    texts = list(result.texts) if result.ok and result.texts else []
    return (texts + [""] * samples)[:samples]


def sample_row(record: Record, request: Any, result: Any, verdicts: dict[str, Any], sample: int = 0) -> dict[str, Any]:
    """One line of samples.jsonl (`sample`: which of the item's samples)."""
    finish = result.finish_reasons[sample] if len(result.finish_reasons) > sample else "error"
    return {
        "id": record.id,
        "sample": sample,
        "level": record.level,
        "subject": record.subject,
        "problem": record.problem,
        "gold": str(record.answer),
        "prompt": request.prompt if request.prompt is not None else request.messages,
        "response": result.texts[sample] if len(result.texts) > sample else "",
        "finish_reason": finish,
        "truncated": finish == "length",
        "error": result.error,
        "cached": result.cached,
        "completion_tokens": result.completion_tokens,
        "extracted": {g: v.extracted for g, v in verdicts.items()},
        "verdicts": {g: v.to_dict() for g, v in verdicts.items()},
    }


def evaluate(
    records: list[Record], bench: Benchmark, engine: Any, cfg: EvalConfig, out_dir: str | Path,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate, grade, write samples.jsonl / summary.json / summary.md under `out_dir`; the summary."""
    out = Path(out_dir)
    requests = [build_request(r, cfg) for r in records]
    results, seconds = generate(requests, engine, desc=f"eval {bench.name}")
    verdicts = grade_results(records, results, bench.kind, cfg, progress=engine.cfg.progress)
    k = cfg.samples
    rows = [
        sample_row(r, req, res, {g: verdicts[g][i * k + j] for g in cfg.graders}, j)
        for i, (r, req, res) in enumerate(zip(records, requests, results, strict=True)) for j in range(k)
    ]
    with AtomicWriter(out / "samples.jsonl") as writer:
        writer.write_all(rows)
    fresh_tokens = sum(res.completion_tokens for res in results if not res.cached)
    summary = summarize(rows[::k], cfg.graders, {
        "benchmark": bench.name, "kind": bench.kind, **(meta or {}), "config": config_to_dict(cfg),
        "tokens_per_s": fresh_tokens / seconds if fresh_tokens and seconds > 0 else None,
        "generation_s": round(seconds, 3), "engine": engine.stats(),
    })
    markdown = render_markdown(summary, cfg.graders)
    if k > 1:
        summary.update(summarize_sampled([rows[i : i + k] for i in range(0, len(rows), k)], cfg.graders,
                                         list(range(1, k + 1))))
        markdown += "\n" + render_sampled(summary, cfg.graders)
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", markdown)
    return summary


@dataclass(frozen=True)
class EvalStage:
    """Evaluation as a step of a run, a study or a comparison: which benchmarks, which items, which engine."""

    benchmarks: tuple[str, ...] = ("gsm8k", "math")
    limit: int | None = 20  # a fixed random subset (None: the whole benchmark)
    seed: int = 0
    settings: EvalConfig = field(default_factory=EvalConfig)
    engine: dict[str, Any] = field(default_factory=lambda: {"backend": "hf", "batch_size": 8})


def evaluate_model(ev: EvalStage, model: Path, bench_name: str, data: Path, out: Path) -> dict[str, Any]:
    """Evaluate a trained checkpoint on one benchmark (a fixed subset when `ev.limit` is set)."""
    from mathforge.engine import Engine, EngineConfig
    from mathforge.eval.benchmarks import load_benchmark, subset

    bench, records = load_benchmark(bench_name, root=data)
    records = subset(records, ev.limit, ev.seed)
    engine_cfg = EngineConfig(**{"model": str(model), **ev.engine})
    with Engine(engine_cfg, cache_path=out / "cache.sqlite") as engine:
        return evaluate(records, bench, engine, ev.settings, out, {"model": str(model), "limit": ev.limit, "seed": ev.seed})
