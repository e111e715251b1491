"""Evaluation: benchmarks, greedy generation through the engine, every grader side by side, and the
paper's breakdowns (per level, per subject), robustness (distractors) and bilingual suites.

    from mathforge.eval import EvalConfig, evaluate, load_benchmark, subset
    bench, records = load_benchmark("gsm8k")
    with Engine(EngineConfig(backend="llama", model="smollm2"), cache_path="out/cache.sqlite") as engine:
        summary = evaluate(subset(records, 20, seed=0), bench, engine, EvalConfig(), "out")
"""

from mathforge.eval.benchmarks import BENCHMARKS, Benchmark, gold_for, load_benchmark, resolve, subset
from mathforge.eval.report import render_markdown, summarize, wilson
from mathforge.eval.run import METAMATH_STOP, EvalConfig, evaluate

__all__ = [
    "BENCHMARKS",
    "METAMATH_STOP",
    "Benchmark",
    "EvalConfig",
    "evaluate",
    "gold_for",
    "load_benchmark",
    "render_markdown",
    "resolve",
    "subset",
    "summarize",
    "wilson",
]
