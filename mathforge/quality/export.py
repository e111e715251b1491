"""Export a cleaned dataset: Parquet shards + JSONL that `datasets.load_dataset(dir)` reads, and a
generated dataset card (README.md) that says what is in it and what was removed on the way.

The card is rendered from structured step reports (the JSON the `decontam`, `dedup`, `select`
commands write, or any `FilterStats.to_dict()`), never typed by hand: sources, methods and their
shares, levels and subjects, filters with drop counts by reason, decontamination sets and n,
selection strategy, size and token statistics.
"""

from __future__ import annotations

import json
import statistics
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mathforge.answers import sft_target
from mathforge.filters import batches
from mathforge.io import AtomicWriter, write_json, write_text
from mathforge.markdown import table
from mathforge.prompt import format_prompt
from mathforge.record import Record
from mathforge.train.data import sft_texts

BATCH_ROWS = 1024  # rows per tokenizer call and per Parquet row group

SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("problem", pa.string()), ("solution", pa.string()),
    ("answer", pa.string()), ("level", pa.int64()), ("subject", pa.string()), ("split", pa.string()),
    ("method", pa.string()), ("seed_id", pa.string()), ("parent_id", pa.string()), ("stage", pa.string()),
    ("teacher", pa.string()), ("prompt_version", pa.string()), ("text_prompt", pa.string()),
    ("text_response", pa.string()), ("meta", pa.string()),
    # What trainers read: TRL's prompt-completion pair (the texts our recipe trains on) and chat messages.
    ("prompt", pa.string()), ("completion", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
])


def flat_row(record: Record) -> dict[str, Any]:
    """One dataset row: the record's fields, its lineage flattened, the SFT texts (also as trainers name
    them), meta as JSON."""
    lin = record.lineage
    return {
        "id": record.id, "source": record.source, "problem": record.problem, "solution": record.solution,
        "answer": record.answer, "level": record.level, "subject": record.subject, "split": record.split,
        "method": lin.method, "seed_id": lin.seed_id, "parent_id": lin.parent_id, "stage": lin.stage,
        "teacher": lin.teacher, "prompt_version": lin.prompt_version,
        "text_prompt": format_prompt(record.problem),
        "text_response": sft_target(record.solution, record.answer),
        "meta": json.dumps(record.meta, ensure_ascii=False, default=str),
        **_trainer_columns(record),
    }


def _trainer_columns(record: Record) -> dict[str, Any]:
    """`prompt`/`completion` exactly as `mathforge train` tokenises them (alpaca prompt, target with its
    answer line; the trainer appends EOS), and `messages` for chat-format trainers; None without a target."""
    texts = sft_texts(record)
    if texts is None:
        return {"prompt": None, "completion": None, "messages": None}
    prompt, completion = texts
    return {"prompt": prompt, "completion": completion,
            "messages": [{"role": "user", "content": record.problem.strip()},
                         {"role": "assistant", "content": completion.strip()}]}


class _Profile:
    """Counts gathered while rows stream past, for the card. Token counts are held for the
    median and p95: 4 bytes per row (10 MB at 2.5M rows)."""

    def __init__(self, tokenizer: Any, tokenizer_name: str | None = None):
        self.tokenizer, self.tokenizer_name = tokenizer, tokenizer_name
        self.rows = 0
        self.sources: Counter = Counter()
        self.methods: Counter = Counter()
        self.levels: Counter = Counter()
        self.subjects: Counter = Counter()
        self.tokens = array("I")

    def add(self, records: list[Record], rows: list[dict[str, Any]]) -> None:
        """Count a batch of rows. Token counts come from the length step (`meta["length"]`) when it
        counted the same text with the same tokenizer, else from one tokenizer call for the batch."""
        for row in rows:
            self.rows += 1
            self.sources[row["source"]] += 1
            self.methods[row["method"] or "seed"] += 1
            self.levels[str(row["level"] or "unknown")] += 1
            self.subjects[row["subject"] or "unknown"] += 1
        if self.tokenizer is None or not rows:
            return
        counts = [self._counted(r) for r in records]
        todo = [i for i, n in enumerate(counts) if n is None]
        if todo:
            texts = [rows[i]["text_prompt"] + (rows[i]["text_response"] or "") for i in todo]
            for i, ids in zip(todo, self.tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True):
                counts[i] = len(ids)
        self.tokens.extend(counts)

    def _counted(self, record: Record) -> int | None:
        length = record.meta.get("length")
        # the card's text is the alpaca prompt + response, which the length step counts in that style
        if (isinstance(length, dict) and self.tokenizer_name and length.get("tokenizer") == self.tokenizer_name
                and length.get("style") == "alpaca"):
            return length.get("tokens")
        return None


def export(
    records: Iterable[Record], out: str | Path, *, name: str = "mathforge-data", shard_rows: int = 100_000,
    reports: Sequence[dict[str, Any]] = (), tokenizer: Any = None, tokenizer_name: str | None = None,
) -> dict[str, Any]:
    """Write `out/data/train-*.parquet`, `out/jsonl/train.jsonl`, `out/README.md` and
    `out/export.json`, streaming (one batch of rows in memory); returns the summary the card was rendered from."""
    out = Path(out)
    profile = _Profile(tokenizer, tokenizer_name)
    shards = _write(records, out, shard_rows, profile)
    summary = {"name": name, "rows": profile.rows, "shards": shards, "sources": dict(profile.sources.most_common()),
               "methods": dict(profile.methods.most_common()), "levels": dict(sorted(profile.levels.items())),
               "subjects": dict(profile.subjects.most_common()), "tokens": _token_stats(profile.tokens, tokenizer_name),
               "reports": list(reports)}
    write_json(out / "export.json", summary)
    write_text(out / "README.md", render_card(summary))
    return summary


def _write(records: Iterable[Record], out: Path, shard_rows: int, profile: _Profile) -> list[str]:
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("train-*.parquet"):  # a rerun replaces the previous export's shards
        old.unlink()
    shards: list[_Shard] = []
    with AtomicWriter(out / "jsonl" / "train.jsonl") as jsonl:
        for batch in batches(records, BATCH_ROWS):
            rows = [flat_row(r) for r in batch]
            profile.add(batch, rows)
            jsonl.write_all(rows)
            while rows:
                if not shards or shards[-1].rows >= shard_rows:
                    shards.append(_Shard(data, len(shards)))
                room = shard_rows - shards[-1].rows
                shards[-1].write(rows[:room])
                rows = rows[room:]
        if not shards:
            shards.append(_Shard(data, 0))
    return [s.close() for s in shards]


class _Shard:
    """One Parquet shard written a row group (a batch) at a time, renamed into place on close."""

    def __init__(self, folder: Path, index: int):
        self.path = folder / f"train-{index:05d}.parquet"
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, SCHEMA)
        self.rows = 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
        self.rows += len(rows)

    def close(self) -> str:
        self.writer.close()
        self.tmp.replace(self.path)
        return f"data/{self.path.name}"


def _token_stats(tokens: Sequence[int], tokenizer_name: str | None) -> dict[str, Any] | None:
    if not tokens:
        return None
    ordered = sorted(tokens)
    return {"tokenizer": tokenizer_name, "total": sum(tokens), "mean": round(statistics.fmean(tokens), 1),
            "median": statistics.median(ordered), "p95": ordered[int(0.95 * (len(ordered) - 1))],
            "max": ordered[-1], "over_512": sum(t > 512 for t in tokens), "over_2048": sum(t > 2048 for t in tokens)}


def _size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if rows < limit:
            return label
    return "10M<n<100M"


def _shares(counts: dict[str, int], total: int) -> str:
    return "\n".join(table(("value", "rows", "share"), ((k, v, f"{100 * v / max(total, 1):.1f}%") for k, v in counts.items())))


def render_card(summary: dict[str, Any]) -> str:
    """The dataset card: YAML header for the Hub, then what the data is and how it was cleaned."""
    rows = summary["rows"]
    parts = [
        "---", "language:\n- en", "task_categories:\n- text-generation", "tags:\n- math\n- synthetic\n- mathforge",
        f"size_categories:\n- {_size_category(rows)}",
        "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet", "---",
        f"# {summary['name']}", "",
        f"{rows} math problems with chain-of-thought solutions ending in \"The answer is X\", built with "
        "mathforge (a Skywork-Math reproduction). Load with `datasets.load_dataset(<this folder>)`; "
        "`jsonl/train.jsonl` holds the same rows. (`datasets` caches a local folder by its file pattern: "
        "after re-exporting to the same folder, load with `download_mode=\"force_redownload\"`.)", "",
        "## Sources", _shares(summary["sources"], rows), "",
        "## Methods", _shares(summary["methods"], rows), "",
        "## Difficulty levels", _shares(summary["levels"], rows), "",
        "## Subjects", _shares(summary["subjects"], rows), "",
    ]
    parts += _steps_section(summary["reports"])
    parts += _tokens_section(summary["tokens"])
    parts += ["## Size", f"{rows} rows in {len(summary['shards'])} Parquet shard(s): "
              + ", ".join(f"`{s}`" for s in summary["shards"]), ""]
    return "\n".join(parts)


def _steps_section(reports: Sequence[dict[str, Any]]) -> list[str]:
    filters = [f for r in reports for f in r.get("filters", [])] + [r for r in reports if "filter" in r]
    parts = []
    if filters:
        rows = [(f["filter"], f["seen"], f["kept"], f["dropped"],
                 ", ".join(f"{k}: {v}" for k, v in f["dropped_by_reason"].items()) or "-") for f in filters]
        parts += ["## Filters", "\n".join(table(("filter", "seen", "kept", "dropped", "dropped by reason"), rows)), ""]
    for r in reports:
        if r.get("decontam"):  # None: cleaning ran without decontamination (`clean.decontam: false`)
            d = r["decontam"]
            sets = ", ".join(f"{k} ({v} items)" for k, v in d["sets"].items())
            removed = ", ".join(f"{k}: {v}" for k, v in d["removed_by_set"].items()) or "none"
            parts += ["## Decontamination", _decontam_sentence(d, sets, removed), ""]
        if "selection" in r:
            s = r["selection"]
            parts += ["## Selection", f"Strategy `{s['strategy']}`, budget {s['budget']}: {s['selected']} of "
                      f"{s['seen']} rows kept; mean level {s['before'].get('mean_level')} -> {s['after'].get('mean_level')}.", ""]
    return parts


# What each matcher (`quality.matchers.MATCHERS`) calls a match, in a card's words
_MATCHER_READS = {
    "ngram": "{n} words in a row, or a whole test text shorter than that",
    "math-ngram": "{n} math-aware tokens (letter and digit runs, operators) in a row, or a whole test text shorter "
                  "than that",
    "masked-ngram": "the problem with every number masked: {masked_n} tokens in a row of a test problem, or all of one",
    "embedding": "a rewording of a test problem: embedding similarity of at least {threshold} with the same digits "
                 "and formulas",
    "llm": "a judge's verdict on the near candidates the embedding left",
}


def _decontam_sentence(d: dict[str, Any], sets: str, removed: str) -> str:
    """The card's decontamination paragraph: what each matcher matched and what it removed (the
    paper's plain n-gram filter for reports written before there were matchers)."""
    if "matchers" not in d:
        return (f"Rows sharing any {d['n']}-word span (after normalising case, spacing and LaTeX spacing) with the "
                f"problem or solution of an item in {sets} were removed. Removed: {removed}; evaluation items "
                f"touched: {d['test_items_hit']}.")
    by_matcher = d.get("removed_by_matcher", {})
    reads = "; ".join(f"`{m}`: {_MATCHER_READS.get(m, 'see mathforge.quality.matchers').format(**d)} "
                      f"({by_matcher.get(m, 0)} removed)" for m in d["matchers"])
    return (f"Rows matching an item of {sets} were removed (after normalising case, spacing and LaTeX spacing), "
            f"each by the first matcher that found it, with the matched span or similarity kept as evidence. "
            f"Matchers: {reads}. Removed per set: {removed}; evaluation items touched: {d['test_items_hit']}.")


def _tokens_section(tokens: dict[str, Any] | None) -> list[str]:
    if not tokens:
        return []
    return ["## Token statistics",
            f"Prompt + response in the SFT format, counted with the `{tokens['tokenizer']}` tokenizer.",
            "\n".join(table(("total", "mean", "median", "p95", "max", "> 512", "> 2048"),
                            [(tokens["total"], tokens["mean"], tokens["median"], tokens["p95"], tokens["max"],
                              tokens["over_512"], tokens["over_2048"])])), ""]


def push_to_hub(out: str | Path, repo_id: str, private: bool = True, token_env: str = "HF_TOKEN") -> str:
    """Upload an exported folder (shards, JSONL, card) as a Hub dataset repo; returns its URL.

    The token is read from the environment variable `token_env`, never passed on a command line.
    """
    import os

    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get(token_env))
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(out), repo_type="dataset")
    return f"https://huggingface.co/datasets/{repo_id}"
