"""`mathforge generate`: a Jinja2 prompt template over a JSONL/Parquet file, any backend, one
output row per input x sample, with lineage. Resumable: responses live in the request cache, so a
rerun after a kill (or on a finished output) pays only for what is missing, then rewrites the
output atomically from cache and new responses alike.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pyarrow as pa

from mathforge import prompt
from mathforge.engine.config import EngineConfig
from mathforge.engine.engine import Engine
from mathforge.engine.types import Request, Result, Sampling
from mathforge.io import AtomicWriter, DataError, fmt, read_rows, write_json
from mathforge.prompt import Template
from mathforge.record import stable_id

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def load_template(spec: str | Path) -> Template:
    """A template file path, or the name of one shipped in `mathforge/templates` ("solve")."""
    return prompt.load_template(spec, TEMPLATES)


@dataclass(frozen=True)
class Job:
    """One generate run: what to read, how to prompt, where to write."""

    input: Path
    template: Template
    out: Path
    sampling: Sampling
    system: str | None = None
    raw: bool = False  # send the rendered text as a raw completion prompt (no chat template)
    id_field: str = "id"


def _input_id(job: Job, line: int, row: dict[str, Any]) -> str:
    value = row.get(job.id_field)
    return str(value) if value is not None else f"{job.input.name}:{line}"


def _requests(job: Job, pending: deque) -> Iterator[Request]:
    for line, row in read_rows(job.input):
        try:
            text = job.template.render(row)
        except (jinja2.TemplateError, TypeError, ValueError) as e:
            raise DataError(f"{job.input}:{line}: template '{job.template.name}': {e}") from e
        rid = _input_id(job, line, row)
        pending.append((rid, row, text))
        if job.raw:
            yield Request(key=rid, prompt=text, sampling=job.sampling)
        else:
            system = [{"role": "system", "content": job.system}] if job.system else []
            yield Request(
                key=rid, messages=[*system, {"role": "user", "content": text}], sampling=job.sampling
            )


def output_rows(job: Job, cfg: EngineConfig, rid: str, row: dict[str, Any], text: str, res: Result):
    """One row per sample: the response, its finish reason or error, the prompt and lineage."""
    parent_lineage = row.get("lineage") if isinstance(row.get("lineage"), dict) else {}
    for i, response in enumerate(res.texts):
        yield {
            "id": stable_id(rid, text, job.template.version, str(i)),
            "input_id": rid,
            "sample": i,
            "prompt": text,
            "response": response,
            "finish_reason": res.finish_reasons[i],
            "error": res.sample_errors[i] if res.sample_errors else res.error,
            "lineage": {
                "seed_id": parent_lineage.get("seed_id") or rid,
                "parent_id": rid,
                "method": f"generate/{job.template.name}",
                "step": int(parent_lineage.get("step") or 0) + 1,
                "teacher": f"{cfg.backend}:{cfg.model}",
                "prompt_version": job.template.version,
            },
            "input": row,
        }


# Parquet needs one schema for all batches (a first batch without errors would type `error` as null);
# the free-form input row is stored as JSON text there.
_LINEAGE = pa.struct(
    [
        (k, pa.int64() if k == "step" else pa.string())
        for k in ("seed_id", "parent_id", "method", "step", "teacher", "prompt_version")
    ]
)
PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("input_id", pa.string()),
        ("sample", pa.int64()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),
        ("lineage", _LINEAGE),
        ("input", pa.string()),
    ]
)


def estimate_generate(job: Job, cfg: EngineConfig, cache_path: Path | None = None) -> dict[str, Any]:
    """A dry run: how many samples are cached, how many would be sent, and the most they can cost."""
    cache_path = cache_path or job.out.with_name(job.out.name + ".cache.sqlite")
    with Engine(cfg, cache_path=cache_path) as engine:
        return engine.estimate(_requests(job, deque()))


def run_generate(
    job: Job, cfg: EngineConfig, cache_path: Path | None = None, resume: bool = True
) -> dict[str, Any]:
    """Run the job; returns the engine's stats (also written to `<out>.stats.json`)."""
    cache_path = cache_path or job.out.with_name(job.out.name + ".cache.sqlite")
    for stale in job.out.parent.glob(
        f".{job.out.name}.*.tmp"
    ):  # left by a killed run; the cache has its work
        stale.unlink()
    pending: deque = deque()
    parquet = fmt(job.out) == "parquet"
    writer = AtomicWriter(job.out, schema=PARQUET_SCHEMA if parquet else None)
    with Engine(cfg, cache_path=cache_path, refresh=not resume) as engine, writer:
        total = _count_rows(job.input) * job.sampling.n
        for res in engine.imap(_requests(job, pending), desc=f"generate {job.template.name}", total=total):
            rid, row, text = pending.popleft()
            for out in output_rows(job, cfg, rid, row, text, res):
                writer.write(
                    {**out, "input": json.dumps(row, ensure_ascii=False, default=str)} if parquet else out
                )
        stats = {**engine.stats(), "rows": writer.count, "out": str(job.out), "cache": str(cache_path)}
    write_json(job.out.with_name(job.out.name + ".stats.json"), stats)
    return stats


def _count_rows(path: Path) -> int | None:
    """Rows in the input, cheaply (Parquet metadata, JSONL non-blank lines), for the progress bar."""
    kind = fmt(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if kind == "jsonl":
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return None


def parse_prices(items: list[str]) -> dict[str, tuple[float, float]]:
    """["gpt-4o=2.5,10"] -> {"gpt-4o": (2.5, 10.0)}: USD per million prompt / completion tokens."""
    prices: dict[str, tuple[float, float]] = {}
    for item in items:
        model, sep, value = item.partition("=")
        parts = value.split(",")
        try:
            if not sep or len(parts) != 2:
                raise ValueError
            prices[model.strip()] = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise ValueError(f"--price '{item}' is not MODEL=IN,OUT (USD per million tokens)") from None
    return prices
