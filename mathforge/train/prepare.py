"""Tokenise once, on disk: a stage's records -> a memory-mapped Arrow training set, keyed by a fingerprint.

    prepared = prepare(spec, tokenizer, style="alpaca", max_length=2048, packing=True, root=run / "tokenized")
    rows = SFTRows(prepared.path)      # row i: one sample, or one packed row of samples

The folder `<root>/<fingerprint>/` holds the tokenised samples (Arrow files written by
`datasets.Dataset.from_generator`, `num_proc` workers, batched fast-tokenizer calls), the row plan
(`members.npy`/`offsets.npy`: which samples form training row i; one sample per row without packing)
and `prepared.json` (stats). The fingerprint hashes the data files (path, size, mtime), the
tokenizer (its full JSON), the prompt style, max length, packing and this module's format version,
so a rerun with the same inputs reuses the folder and any change builds a new one. It is built in a
temporary sibling and renamed into place: a killed build leaves nothing a later run would trust.

Dropped records (no target, too long) stay in the Arrow data with their reason in `drop` and no
tokens, so they can be inspected; training rows never point at them. Labels are not stored: they
are the input ids with -100 on the first `prompt_len` tokens, computed when a row is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mathforge.io import DataError, dataset_files, write_json
from mathforge.prompt import PromptStyle
from mathforge.train.data import IGNORE, eos_id, load_records, sft_texts

FORMAT = 2  # bump when the stored layout, the tokenisation or the row order changes: older folders then miss the cache
BLOCK = 1000  # records per batched tokenizer call, and the unit of work dealt round-robin to the workers
BAD_INPUT = "bad_input"  # the drop reason of the row that carries a worker's DataError


@dataclass(frozen=True)
class Prepared:
    """A prepared training set: where it is and what is in it."""

    path: Path
    samples: int
    tokens: int
    trained_tokens: int
    rows: int  # training rows: packed rows when packing, else samples
    packed: bool
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_examples: dict[str, list[str]] = field(default_factory=dict)
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def fingerprint(spec: str, tokenizer: Any, *, style: PromptStyle, max_length: int, packing: bool,
                max_samples: int | None = None, truncate: bool = False) -> str:
    """A hash of everything the prepared set depends on (data, tokenizer, prompt style, length, packing),
    made by the one step hasher: the data by its files' sizes and mtimes, a generated source by its spec."""
    from mathforge.rundir import step_key

    files = data_files(spec)
    config = {"spec": None if files else spec, "tokenizer": tokenizer_hash(tokenizer), "max_samples": max_samples,
              "style": style, "max_length": max_length, "packing": packing}
    if truncate:  # only then: the sets prepared before truncation existed keep their fingerprints
        config["truncate"] = True
    return step_key(FORMAT, config, files=files)


def tokenizer_hash(tokenizer: Any) -> str:
    """A hash of the tokenizer's vocabulary, merges, normalisation, special tokens and chat template."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: batched tokenisation needs one")
    text = tokenizer.backend_tokenizer.to_str() + str(getattr(tokenizer, "chat_template", None)) + str(eos_id(tokenizer))
    return hashlib.sha256(text.encode()).hexdigest()


def data_files(spec: str) -> list[Path]:
    """The files a spec reads. A generated source (`mini:`, `rg:`) or a Hub dataset has none: its
    spec string, hashed whole, is what it depends on."""
    from mathforge.sources import SOURCES, SourceSpec

    kind, sep, _ = spec.partition(":")
    if not (sep and kind in SOURCES):
        return dataset_files(spec) if Path(spec).exists() else []  # not made yet: keyed by its name
    location = Path(SourceSpec.parse(spec).location)
    return dataset_files(location) if location.exists() else []


def prepare(spec: str, tokenizer: Any, *, style: PromptStyle, max_length: int, packing: bool, root: str | Path,
            max_samples: int | None = None, num_proc: int | None = None, truncate: bool = False) -> Prepared:
    """The prepared training set of `spec` under `root`, built unless its fingerprint is already there.
    `truncate`: a sample longer than `max_length` is cut to it instead of dropped."""
    key = fingerprint(spec, tokenizer, style=style, max_length=max_length, packing=packing, max_samples=max_samples,
                      truncate=truncate)
    target = Path(root).resolve() / key  # absolute: datasets reports its cache files by absolute path
    if (target / "prepared.json").exists():
        return _load_stats(target, cached=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    try:
        _build(tmp, spec, tokenizer, style, max_length, packing, max_samples, num_proc or os.cpu_count() or 1, truncate)
        if target.exists():  # a folder without prepared.json is an unfinished build
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _load_stats(target, cached=False)


def _load_stats(path: Path, cached: bool) -> Prepared:
    stats = json.loads((path / "prepared.json").read_text(encoding="utf-8"))
    return Prepared(path=path, cached=cached, **{k: v for k, v in stats.items() if k != "files"})


def _build(folder: Path, spec: str, tokenizer: Any, style: PromptStyle, max_length: int, packing: bool,
           max_samples: int | None, workers: int, truncate: bool) -> None:
    from datasets import Dataset, Features, List, Value

    id_type = "uint16" if len(tokenizer) <= 65536 else "int32"  # half the disk and page cache for <=64k vocabularies
    features = Features({"id": Value("string"), "input_ids": List(Value(id_type)), "prompt_len": Value("int32"),
                         "length": Value("int32"), "drop": Value("string")})
    samples = Dataset.from_generator(
        _encode_part, features=features, cache_dir=str(folder / "arrow"), num_proc=workers if workers > 1 else None,
        gen_kwargs={"part": list(range(workers)), "parts": workers, "spec": spec, "max_samples": max_samples,
                    "tokenizer": tokenizer, "style": style, "max_length": max_length, "truncate": truncate})
    files = [str(Path(f["filename"]).relative_to(folder)) for f in samples.cache_files]
    stats = _plan(samples, folder, max_length if packing else 0)
    write_json(folder / "prepared.json", {**stats, "packed": packing, "files": files})


def _encode_part(part: list[int], parts: int, spec: str, max_samples: int | None, tokenizer: Any,
                 style: PromptStyle, max_length: int, truncate: bool) -> Iterator[dict[str, Any]]:
    """Rows of worker `part[0]`: every `parts`-th block of BLOCK records, each block tokenised in one call."""
    block: list = []
    try:
        for i, record in enumerate(load_records(spec, max_samples)):
            if (i // BLOCK) % parts == part[0]:
                block.append(record)
                if len(block) == BLOCK:
                    yield from encode_block(block, tokenizer, style, max_length, truncate)
                    block = []
    except DataError as e:
        # Raised in a pool worker, the error would reach the parent only as a formatted traceback:
        # it travels as a row instead, and `_plan` raises it with its file:line message intact.
        yield {"id": str(e), "input_ids": [], "prompt_len": 0, "length": 0, "drop": BAD_INPUT}
        return
    yield from encode_block(block, tokenizer, style, max_length, truncate)


def encode_block(records: list, tokenizer: Any, style: PromptStyle, max_length: int,
                 truncate: bool = False) -> Iterator[dict[str, Any]]:
    """Tokenise records with two batched calls (prompts, targets): prompt + target + EOS, or a drop reason.

    Prompt and target are tokenised separately and joined, so the model learns to continue exactly
    the token sequence it is given at evaluation. Over-long samples are dropped by default: a cut
    target loses its answer line and EOS and would teach the model to ramble (the paper filters at 2048).
    `truncate` cuts them to `max_length` instead (a model whose maximum length is below the data's, as
    in the paper's Table 10); a prompt that leaves no target token is still dropped.
    """
    texts = [sft_texts(r, style, tokenizer) for r in records]
    usable = [t for t in texts if t is not None]
    # A chat template already carries its special tokens; adding BOS again would double it.
    prompt_ids = tokenizer([p for p, _ in usable], add_special_tokens=style != "chat")["input_ids"] if usable else []
    target_ids = tokenizer([c for _, c in usable], add_special_tokens=False)["input_ids"] if usable else []
    eos = eos_id(tokenizer)
    encoded = iter(zip(prompt_ids, target_ids, strict=True))
    for record, pair in zip(records, texts, strict=True):
        if pair is None:
            yield {"id": record.id, "input_ids": [], "prompt_len": 0, "length": 0, "drop": "no_target"}
            continue
        prompt, response = next(encoded)
        n = len(prompt) + len(response) + 1
        if n > max_length and truncate and len(prompt) < max_length:
            yield {"id": record.id, "input_ids": (prompt + response)[:max_length], "prompt_len": len(prompt),
                   "length": max_length, "drop": None}
        elif n > max_length:
            yield {"id": record.id, "input_ids": [], "prompt_len": len(prompt), "length": n, "drop": "too_long"}
        else:
            yield {"id": record.id, "input_ids": prompt + response + [eos], "prompt_len": len(prompt),
                   "length": n, "drop": None}


def sample_lengths(spec: str, tokenizer: Any, style: PromptStyle, max_samples: int | None = None) -> np.ndarray:
    """Prompt + target + EOS tokens of every sample of `spec` with a target, as `encode_block` counts
    them: records streamed BLOCK at a time, 4 bytes a sample held (25M samples: 100 MB)."""
    parts, block = [], []
    for record in load_records(spec, max_samples):
        block.append(record)
        if len(block) == BLOCK:
            parts.append(_lengths(block, tokenizer, style))
            block = []
    parts.append(_lengths(block, tokenizer, style))
    return np.concatenate(parts)


def _lengths(block: list, tokenizer: Any, style: PromptStyle) -> np.ndarray:
    rows = encode_block(block, tokenizer, style, max_length=2**31 - 1)
    return np.array([row["length"] for row in rows if row["drop"] is None], np.int32)


def _plan(samples: Any, folder: Path, max_length: int) -> dict[str, Any]:
    """Write the row plan (packed when max_length > 0) and return the set's stats.

    Samples are planned in the order of their ids, not of the input file: synthesis writes rows as
    concurrent requests finish, so two runs of one recipe hold the same rows in other orders, and a
    model trained on the file's order would differ between them (and between a killed run and one
    never killed). Reads three scalar columns and the ids (about 12 bytes a sample plus the id
    strings, in Arrow), never the token lists.
    """
    import pyarrow.compute as pc

    table = samples.data
    drops = table.column("drop").to_pylist()
    if BAD_INPUT in drops:
        raise DataError(table.column("id")[drops.index(BAD_INPUT)].as_py())
    by_id = pc.sort_indices(table.column("id")).to_numpy()  # stable: equal ids keep the file's order
    kept = by_id[np.array([drops[i] is None for i in by_id], dtype=bool)] if len(by_id) else by_id.astype(np.int64)
    lengths = table.column("length").to_numpy()[kept]
    prompt_lens = table.column("prompt_len").to_numpy()[kept]
    if max_length:
        members, offsets = pack_lengths(lengths, max_length)
    else:
        members, offsets = np.arange(len(kept)), np.arange(len(kept) + 1)
    np.save(folder / "members.npy", kept[members].astype(np.int64))
    np.save(folder / "offsets.npy", offsets.astype(np.int64))
    return {"samples": len(kept), "tokens": int(lengths.sum()), "trained_tokens": int((lengths - prompt_lens).sum()),
            "rows": len(offsets) - 1, "dropped": dict(Counter(d for d in drops if d is not None).most_common()),
            "dropped_examples": _examples(drops, table.column("id"))}


def _examples(drops: list[str | None], ids: Any, per_reason: int = 5) -> dict[str, list[str]]:
    examples: dict[str, list[str]] = {}
    for i, reason in enumerate(drops):
        if reason is not None and len(examples.setdefault(reason, [])) < per_reason:
            examples[reason].append(ids[i].as_py())
    return examples


def pack_lengths(lengths: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-fit decreasing packing of samples with these lengths into rows of <= max_length tokens.

    Returns (members, offsets): row r holds samples members[offsets[r]:offsets[r + 1]]. Open rows
    are kept by remaining room, and there are at most max_length distinct rooms, so each sample
    costs O(log max_length) whatever the number of rows. Holds 8 bytes a sample (the row of each).
    """
    if len(lengths) and int(lengths.max()) > max_length:
        raise ValueError(f"a sample has {int(lengths.max())} tokens, more than max_length={max_length}")
    rooms: list[int] = []  # distinct remaining capacities of open rows, sorted
    open_rows: dict[int, list[int]] = {}
    row_of = np.empty(len(lengths), np.int64)
    count = 0
    for i in np.argsort(-lengths, kind="stable").tolist():
        n = int(lengths[i])
        slot = bisect_left(rooms, n)
        if slot == len(rooms):
            row, room, count = count, max_length - n, count + 1
        else:
            room = rooms[slot]
            row = open_rows[room].pop()
            if not open_rows[room]:
                del open_rows[room], rooms[slot]
            room -= n
        row_of[i] = row
        if room and room not in open_rows:
            insort(rooms, room)
        if room:
            open_rows.setdefault(room, []).append(row)
    members = np.argsort(row_of, kind="stable")
    return members, np.searchsorted(row_of[members], np.arange(count + 1))


class SFTRows:
    """Training rows read from a prepared folder, memory-mapped: only the rows asked for are touched.

    A row is one sample (input_ids, labels) or, when packed, several samples joined with
    position_ids restarting at 0 for each and the first label of each masked, so no sample is
    trained to predict the start of the next (the collators in data/packing batch them).
    """

    def __init__(self, path: str | Path):
        from datasets import Dataset, concatenate_datasets

        path = Path(path)
        stats = json.loads((path / "prepared.json").read_text(encoding="utf-8"))
        files, self.packed = stats["files"], stats["packed"]
        self.samples = concatenate_datasets([Dataset.from_file(str(path / f)) for f in files]).with_format("numpy")
        self._tokens = self.samples.select_columns(["input_ids", "prompt_len"])
        self.members = np.load(path / "members.npy", mmap_mode="r")
        self.offsets = np.load(path / "offsets.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        indices = self.members[self.offsets[i]:self.offsets[i + 1]].tolist()
        rows = self._tokens[indices]
        ids = [np.asarray(x, np.int64) for x in rows["input_ids"]]
        labels = [_labels(x, int(p)) for x, p in zip(ids, rows["prompt_len"], strict=True)]
        if not self.packed:
            return {"input_ids": ids[0], "labels": labels[0]}
        for own in labels:
            own[0] = IGNORE
        return {"input_ids": np.concatenate(ids), "labels": np.concatenate(labels),
                "position_ids": np.concatenate([np.arange(len(x)) for x in ids])}


def _labels(ids: np.ndarray, prompt_len: int) -> np.ndarray:
    labels = ids.copy()
    labels[:prompt_len] = IGNORE
    return labels
