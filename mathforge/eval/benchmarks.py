"""Evaluation benchmarks as records: GSM8K test, MATH test, MATH-500, or any file with a field mapping.

Benchmark files are test splits, so they are loaded through `mathforge.sources` with
`allow_test=1` (the seed loaders refuse them otherwise). Local files are looked up under a data
directory (`mathforge.paths.data_dir`: `--data-dir`, else `$MATHFORGE_DATA`, else `../shared/data`
next to the repository); GSM8K and MATH-500 fall back to the Hugging Face Hub for users with network.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mathforge.answers import last_boxed
from mathforge.io import DataError
from mathforge.paths import data_dir, missing
from mathforge.record import Record
from mathforge.sources import SourceSpec, load


@dataclass(frozen=True)
class Benchmark:
    """A named evaluation set: where its file lives and how its answers are compared."""

    name: str
    kind: str  # "gsm8k" (numeric answers) or "math" (LaTeX answers); picks the graders' comparison
    file: str | None  # relative to the data directory
    source_kind: str  # the mathforge.sources format of the file
    hub: str | None = None  # a `hf:` source spec used when the file is absent
    size: int | None = None  # the published size, checked on a full load


BENCHMARKS = {
    "gsm8k": Benchmark("gsm8k", "gsm8k", "gsm8k/test.jsonl", "gsm8k",
                       "hf:openai/gsm8k?config=main&split=test&format=gsm8k", 1319),
    "math": Benchmark("math", "math", "math/math_test.jsonl", "math", None, 5000),
    "math500": Benchmark("math500", "math", "math/prm800k_math_splits_test.jsonl", "math",
                         "hf:HuggingFaceH4/MATH-500?split=test&format=math", 500),
}


def slug(name: str) -> str:
    """A benchmark name or spec as one safe folder name: `gsm8k` stays `gsm8k`, and
    `/data/my test.jsonl` or `mini:test?per_level=200` never become paths outside the run folder."""
    text = re.sub(r"[^A-Za-z0-9._=-]+", "_", name.strip()).strip("._")
    if text == name:
        return text
    return f"{text[-60:]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def resolve(name: str, kind: str | None = None) -> Benchmark:
    """A known benchmark by name, or a file/source spec evaluated with answer comparison `kind`.

    A file is any source `mathforge.sources.load` reads, e.g. `jsonl:my.jsonl?problem=q&answer=a`
    (field mapping), `math:/path/to/test.jsonl`, or a path whose format is recognised.
    """
    if name in BENCHMARKS:
        bench = BENCHMARKS[name]
        return bench if kind is None else Benchmark(bench.name, kind, bench.file, bench.source_kind, bench.hub)
    spec = SourceSpec.parse(name)
    return Benchmark(Path(spec.location).stem or "custom", kind or "math", None, spec.kind)


def load_benchmark(name: str, kind: str | None = None, root: str | Path | None = None) -> tuple[Benchmark, list[Record]]:
    """The benchmark and all its records that have a gold answer."""
    bench = resolve(name, kind)
    spec = _source_spec(bench, name, root)
    records = [r for r in load(spec) if r.answer is not None and str(r.answer).strip()]
    if not records:
        raise DataError(f"{spec.location}: no records with a gold answer")
    return bench, records


def _source_spec(bench: Benchmark, name: str, root: str | Path | None) -> SourceSpec:
    if bench.file is None:  # a user file: its own spec, test data allowed
        parsed = SourceSpec.parse(name)
        return SourceSpec(parsed.kind, parsed.location, {**parsed.options, "allow_test": "1"})
    path = data_dir(root) / bench.file
    if path.exists():
        return SourceSpec(bench.source_kind, str(path), {"allow_test": "1", "name": bench.name, "split": "test"})
    if bench.hub:
        hub = SourceSpec.parse(bench.hub)
        return SourceSpec(hub.kind, hub.location, {**hub.options, "allow_test": "1", "name": bench.name})
    raise missing(path)


def benchmark_files(names: Iterable[str], root: str | Path | None = None) -> list[Path]:
    """The local files that benchmarks `names` are read from (for step keys: a changed test set
    reruns the steps that read it); Hub-only and generated benchmarks have none."""
    files = []
    for name in names:
        bench = resolve(name)
        path = Path(SourceSpec.parse(name).location) if bench.file is None else data_dir(root) / bench.file
        files += [path] if path.is_file() else []
    return files


def subset(records: list[Record], limit: int | None, seed: int = 0) -> list[Record]:
    """A fixed random subset of `limit` records (same seed, same items), kept in benchmark order."""
    if not limit or limit >= len(records):
        return records
    picked = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in picked]


def gold_for(record: Record, grader: str) -> str:
    """The gold answer a grader compares with.

    MetaMath's MATH gold is the content of the *last* `\\boxed{}` of the solution; our loaders join
    multi-part boxed answers ("3, 5"), which the other graders use.
    """
    if grader == "metamath" and record.solution:
        return last_boxed(record.solution) or str(record.answer)
    return str(record.answer)
