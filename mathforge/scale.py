"""The data-scaling study (the paper's Figure 5, Tables 2 and 12): train on nested subsets of
increasing size, evaluate each, fit accuracy against data size, and say how much more data is
worth generating.

The sweep is resumable: each finished (size) row is appended to `scaling.jsonl` and skipped on
rerun; the report and plot are rendered from that file, never parsed back from text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mathforge.io import AtomicWriter, read_rows, write_text


def nested_subsets(data: str | Path, sizes: Sequence[int], out_dir: str | Path, seed: int = 0) -> dict[int, Path]:
    """Write nested random subsets (each one contains every smaller one) of a record file.

    One random rank per row; the subset of size s holds the rows of rank < s, in file order. Only
    the ranks are held in memory (8 bytes a row), never the rows, so 2.5M-row files are fine.
    """
    n = sum(1 for _ in read_rows(data))
    sizes = sorted({min(int(s), n) for s in sizes})
    ranks = np.random.default_rng(seed).permutation(n)
    out_dir = Path(out_dir)
    paths = {s: out_dir / f"subset_{s}.jsonl" for s in sizes}
    with ExitStack() as stack:
        writers = {s: stack.enter_context(AtomicWriter(p)) for s, p in paths.items()}
        for i, (_, row) in enumerate(read_rows(data)):
            for s in sizes:
                if ranks[i] < s:
                    writers[s].write(row)
    return paths


@dataclass(frozen=True)
class Fit:
    """acc(N) = a + b * log10(N): the straight line of the paper's Figure 5 (log-x axis)."""

    a: float
    b: float
    r2: float

    def predict(self, n: float) -> float:
        return self.a + self.b * math.log10(n)

    def size_for(self, accuracy: float) -> float | None:
        """Data size at which the fitted line reaches `accuracy` (None if it never does)."""
        return 10 ** ((accuracy - self.a) / self.b) if self.b > 0 else None


def fit_log_linear(sizes: Sequence[float], accuracies: Sequence[float]) -> Fit:
    """Least-squares fit of accuracy against log10(size); needs two or more distinct sizes."""
    x = np.log10(np.asarray(sizes, dtype=float))
    y = np.asarray(accuracies, dtype=float)
    if len(set(x.tolist())) < 2:
        raise ValueError("a scaling fit needs at least two distinct data sizes")
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return Fit(a=float(a), b=float(b), r2=1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0)


def advice(fit: Fit, largest: int, cost_per_sample: float | None = None) -> dict[str, Any]:
    """The practical answer: what doubling (and 10x) the data buys, per the fitted line."""
    gain_2x = fit.b * math.log10(2)
    out = {"gain_per_doubling": gain_2x, "gain_per_10x": fit.b,
           "predicted_at_2x": fit.predict(2 * largest), "predicted_at_10x": fit.predict(10 * largest)}
    if cost_per_sample is not None:
        out["cost_of_doubling"] = cost_per_sample * largest
        out["accuracy_points_per_unit_cost"] = 100 * gain_2x / (cost_per_sample * largest) if largest else None
    return out


def completed(results: Path) -> dict[int, dict[str, Any]]:
    """Rows already in the sweep's results file, by data size."""
    if not results.exists():
        return {}
    return {int(row["size"]): row for _, row in read_rows(results)}


def append_row(results: Path, row: dict[str, Any]) -> None:
    """Append one finished run; a line is written whole and fsynced (a crash loses no finished run)."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


def sweep(sizes: Iterable[int], subsets: dict[int, Path], results: Path,
          train_and_eval: Callable[[int, Path], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run `train_and_eval(size, subset)` for every size not yet in `results`; return all rows."""
    done = completed(results)
    for size in sorted(set(sizes)):
        real = max(s for s in subsets if s <= size) if size not in subsets else size
        if real in done:
            continue
        row = {"size": real, **train_and_eval(real, subsets[real])}
        append_row(results, row)
        done[real] = row
    return [done[s] for s in sorted(done)]


def report(rows: list[dict[str, Any]], out_dir: Path, metric: str = "symbolic") -> str:
    """Render `report.md` (and `scaling.png` when matplotlib is present) from the sweep rows."""
    lines = ["# Data scaling", "", f"Accuracy ({metric} grader) against SFT data size.", ""]
    benches = sorted({b for r in rows for b in r.get("accuracy", {})})
    lines += ["| size | " + " | ".join(benches) + " |", "|---:|" + "---:|" * len(benches)]
    for r in rows:
        lines.append(f"| {r['size']} | " + " | ".join(_pct(r["accuracy"].get(b, {}).get(metric)) for b in benches) + " |")
    for bench in benches:
        pts = [(r["size"], r["accuracy"][bench][metric]) for r in rows if bench in r.get("accuracy", {})]
        if len({s for s, _ in pts}) >= 2:
            fit = fit_log_linear([s for s, _ in pts], [a for _, a in pts])
            tip = advice(fit, max(s for s, _ in pts))
            lines += ["", f"**{bench}**: acc = {fit.a:.4f} + {fit.b:.4f}·log10(N) (R² {fit.r2:.2f}); "
                      f"doubling the data adds {100 * tip['gain_per_doubling']:+.2f} points "
                      f"(predicted {100 * tip['predicted_at_2x']:.1f}% at {2 * max(s for s, _ in pts)})."]
    for key, title in (("by_level", "MATH accuracy per level"), ("by_subject", "MATH accuracy per subject")):
        lines += _breakdown(rows, key, title, metric)
    text = "\n".join(lines) + "\n"
    write_text(out_dir / "report.md", text)
    _plot(rows, benches, metric, out_dir / "scaling.png")
    return text


def _breakdown(rows, key, title, metric) -> list[str]:
    groups = sorted({g for r in rows for g in r.get(key, {})})
    if not groups:
        return []
    out = ["", f"## {title}", "", "| size | " + " | ".join(groups) + " |", "|---:|" + "---:|" * len(groups)]
    for r in rows:
        out.append(f"| {r['size']} | " + " | ".join(_pct(r.get(key, {}).get(g, {}).get(metric)) for g in groups) + " |")
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _plot(rows, benches, metric, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional (extra `plot`); the table is the result
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for bench in benches:
        pts = [(r["size"], 100 * r["accuracy"][bench][metric]) for r in rows if bench in r.get("accuracy", {})]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=bench)
    ax.set_xscale("log")
    ax.set_xlabel("SFT samples")
    ax.set_ylabel(f"accuracy (%), {metric} grader")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


# ---------------------------------------------------------------- the sweep as a command


def run_scale(cfg: Any, out: str | Path) -> list[dict[str, Any]]:
    """`mathforge scale`: nested subsets of `cfg.data`, one SFT run and evaluation per size, report.

    `cfg` is a `ScaleConfig` (mathforge.pipeline); each size trains `cfg.train` with every stage's
    dataset replaced by the subset, from scratch, and evaluates it like `mathforge run` does.
    """
    import dataclasses

    from mathforge.pipeline import evaluate_model, resolve_data_dir
    from mathforge.rundir import RunDir
    from mathforge.train.sft import train

    rd = RunDir(out)
    rd.save_config(cfg)
    data = _materialise(cfg.data, rd.root / "data.jsonl")
    subsets = nested_subsets(data, cfg.sizes, rd.root / "subsets", seed=cfg.seed)
    bench_dir = resolve_data_dir(cfg.data_dir)

    def train_and_eval(size: int, subset: Path) -> dict[str, Any]:
        stages = tuple(dataclasses.replace(s, dataset=str(subset)) for s in cfg.train.stages)
        run_dir = rd.root / "runs" / f"n{size}"
        train(dataclasses.replace(cfg.train, stages=stages), run_dir / "train")
        row: dict[str, Any] = {"accuracy": {}, "by_level": {}, "by_subject": {}}
        for bench in cfg.eval.benchmarks:
            summary = evaluate_model(cfg.eval, run_dir / "train" / "model", bench, bench_dir, run_dir / "eval" / bench)
            row["accuracy"][bench] = {g: a["accuracy"] for g, a in summary["accuracy"].items()}
            if bench.startswith("math"):
                row["by_level"] = _flatten(summary["by_level"])
                row["by_subject"] = _flatten(summary["by_subject"])
        return row

    rows = sweep(cfg.sizes, subsets, rd.root / "scaling.jsonl", train_and_eval)
    report(rows, rd.root, metric=cfg.metric)
    return rows


def _flatten(groups: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {k: {g: a["accuracy"] for g, a in v.items()} for k, v in groups.items()}


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
