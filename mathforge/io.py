"""Streaming, atomic reads and writes of records and raw rows (JSONL and Parquet).

Nothing here loads a whole file: readers yield rows, writers take rows one at a time. A writer
writes to a temporary sibling and renames it over the target only when it closes cleanly, so a
reader never sees half a file. If the producer fails, what was already written is kept as
`<target>.partial` (never silently lost) and the error is re-raised.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from mathforge.record import Record, row_id

PARQUET_BATCH = 2048


class DataError(ValueError):
    """Bad input data; the message names the file and line (or row) at fault."""


@dataclass
class BadRow:
    path: str
    line: int
    error: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.error}"


@dataclass
class ReadReport:
    """What a lenient read skipped; empty when every row was good."""

    bad: list[BadRow] = field(default_factory=list)


def fmt(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl" if suffix != ".json" else "json"
    raise DataError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .json or .parquet)")


def read_rows(
    path: str | Path, *, skip_bad: bool = False, report: ReadReport | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_or_row_number, row) from a JSONL, JSON array or Parquet file, streaming.

    A malformed row raises DataError naming `path:line`, or, with `skip_bad`, is recorded in
    `report` and skipped. Line numbers are 1-based.
    """
    kind = fmt(path)
    check_readable(path)
    if kind == "parquet":
        yield from _read_parquet_rows(path)
    elif kind == "json":
        yield from _read_json_array(path, skip_bad, report)
    else:
        yield from _read_jsonl_rows(path, skip_bad, report)


def check_readable(path: str | Path) -> None:
    """A missing file, a folder or a file we may not read is a DataError naming it (not an OSError
    deep in a reader)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{path}: is a folder, not a record file")
    if not p.is_file():
        raise DataError(f"{path}: no such file")
    if not os.access(p, os.R_OK):
        raise DataError(f"{path}: not readable (permission denied)")


def _bad(path: str | Path, line: int, error: str, skip_bad: bool, report: ReadReport | None) -> None:
    bad = BadRow(str(path), line, error)
    if not skip_bad:
        raise DataError(str(bad))
    if report is not None:
        report.bad.append(bad)


def _read_jsonl_rows(path, skip_bad, report, span: Span | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in _jsonl_lines(path, span or Span(str(path)), skip_bad, report):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except json.JSONDecodeError as e:  # orjson's error is a JSONDecodeError
            _bad(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})", skip_bad, report)
            continue
        if not isinstance(row, dict):
            _bad(path, lineno, f"expected a JSON object, got {type(row).__name__}", skip_bad, report)
            continue
        yield lineno, row


def _jsonl_lines(path, span: Span, skip_bad, report) -> Iterator[tuple[int, str]]:
    """Decoded lines of `span`; bytes that are not UTF-8 are an error naming the line and column.
    A UTF-8 byte-order mark (files saved on Windows) is skipped."""
    with open(path, "rb") as f:
        f.seek(span.start)
        pos, lineno = span.start, span.first_line - 1
        for raw in f:
            if span.end is not None and pos >= span.end:
                return
            pos += len(raw)
            lineno += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                _bad(path, lineno, f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})", skip_bad, report)
                continue
            yield lineno, line.removeprefix("\ufeff") if lineno == 1 else line


def _read_json_array(path, skip_bad, report) -> Iterator[tuple[int, dict[str, Any]]]:
    # A single JSON document (JEEBench, SciBench originals) must be parsed whole; such files are small.
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: invalid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from e
    rows = data if isinstance(data, list) else [data]
    for i, row in enumerate(rows, 1):
        if isinstance(row, dict):
            yield i, row
        else:
            _bad(path, i, f"item {i} is not a JSON object", skip_bad, report)


def _read_parquet_rows(path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e
    n = 0
    for group in range(file.num_row_groups):
        try:
            rows = file.read_row_group(group).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: row group {group} (after row {n}) is corrupt ({e})") from e
        for row in rows:
            n += 1
            yield n, row


@dataclass(frozen=True)
class Span:
    """A piece of one record file that a task reads on its own: JSONL bytes [start, end) starting at
    line `first_line` (end None: to the end), or a whole file."""

    path: str
    start: int = 0
    end: int | None = None
    first_line: int = 1


def plan_spans(path: str | Path, rows: int) -> list[Span]:
    """Cut a dataset into spans of about `rows` lines: each shard file, and each large JSONL file
    at line boundaries (one binary pass counting newlines; nothing is parsed or held)."""
    spans: list[Span] = []
    for file in dataset_files(path):
        check_readable(file)
        if fmt(file) != "jsonl":
            spans.append(Span(str(file)))
            continue
        starts, pos, line = [(0, 1)], 0, 1
        with open(file, "rb") as f:
            for raw in f:
                pos += len(raw)
                line += 1
                if (line - 1) % rows == 0:
                    starts.append((pos, line))
        if len(starts) > 1 and starts[-1][0] == pos:  # the file ended exactly at a cut
            starts.pop()
        ends = [p for p, _ in starts[1:]] + [None]
        spans += [Span(str(file), p, e, n) for (p, n), e in zip(starts, ends, strict=True)]
    return spans


def read_span(span: Span) -> Iterator[Record]:
    """The records of one span (see `plan_spans`)."""
    if fmt(span.path) != "jsonl":
        yield from _read_record_file(Path(span.path))
        return
    for line, row in _read_jsonl_rows(span.path, False, None, span):
        yield _record(span.path, line, row)


SHARD_GLOB = "part-*"  # shard files of a dataset folder, read in name order: part-00000.jsonl, ...


def shard_name(index: int, suffix: str = ".jsonl") -> str:
    """The file name of shard `index` in a dataset folder."""
    return f"part-{index:05d}{suffix}"


def dataset_files(path: str | Path) -> list[Path]:
    """The files of a dataset: the file itself, or a folder's `part-*` shards in name order."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.glob(SHARD_GLOB) if p.suffix.lower() in (".jsonl", ".parquet"))


def read_records(path: str | Path) -> Iterator[Record]:
    """Stream records written by `write_records` (JSONL or Parquet), or a folder of such shards."""
    for shard in dataset_files(path):
        yield from _read_record_file(shard)


def _read_record_file(path: Path) -> Iterator[Record]:
    for line, row in read_rows(path):
        yield _record(path, line, row)


def _record(path: str | Path, line: int, row: dict[str, Any]) -> Record:
    try:
        if "meta" in row and isinstance(row["meta"], str):  # Parquet stores meta as JSON text
            row = {**row, "meta": json.loads(row["meta"])}
        if "id" not in row or "source" not in row:  # a plain {problem, solution, answer} row, named as `seeds` would
            row = {"id": row_id(path, line - 1), "source": Path(path).stem, **row}
        return Record.from_dict(row)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}:{line}: {e}") from e


@lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; set straight back, once per process
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give the files and folders under `folder` the modes a plain `open`/`mkdir` would: writers that
    go through temporary files (safetensors, mkdtemp) leave 0600/0700, which hides a run from teammates."""
    mask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _temp(path: Path, mode: str) -> tuple[Any, Path]:
    """An open temporary sibling of `path` with the mode a plain `open` would give (mkstemp's is 0600,
    which would hide a run from teammates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    return (os.fdopen(fd, mode, encoding="utf-8") if "b" not in mode else os.fdopen(fd, mode)), Path(tmp)


class AtomicWriter:
    """Write rows to `path` atomically: temp file + rename on clean close.

    On an exception inside the `with` block, the rows written so far are kept in
    `<path>.partial` and the exception propagates; an existing `path` is left untouched.
    """

    def __init__(self, path: str | Path, *, schema: pa.Schema | None = None):
        self.path = Path(path)
        self.kind = fmt(self.path)
        self.count = 0
        self._schema = schema
        self._buffer: list[dict[str, Any]] = []
        self._pq: pq.ParquetWriter | None = None

    def __enter__(self) -> AtomicWriter:
        self._file, self._tmp = _temp(self.path, "wb" if self.kind == "parquet" else "w")
        return self

    def write(self, row: dict[str, Any] | Record) -> None:
        if isinstance(row, Record):
            row = row.to_dict()
        self.count += 1
        if self.kind == "parquet":
            self._buffer.append(row)
            if len(self._buffer) >= PARQUET_BATCH:
                self._flush_parquet()
        else:
            self._file.write(dumps_line(row))

    def write_all(self, rows: Iterable[dict[str, Any] | Record]) -> int:
        for row in rows:
            self.write(row)
        return self.count

    def _flush_parquet(self) -> None:
        if not self._buffer:
            return
        rows = [{**r, "meta": json.dumps(r["meta"], ensure_ascii=False)} if "meta" in r else r for r in self._buffer]
        table = pa.Table.from_pylist(rows, schema=self._schema)
        if self._pq is None:
            self._schema = table.schema
            self._pq = pq.ParquetWriter(self._file, table.schema)
        self._pq.write_table(table)
        self._buffer.clear()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.kind == "parquet":
            self._flush_parquet()
            if self._pq is not None:
                self._pq.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        elif self.count:
            os.replace(self._tmp, self.path.with_name(self.path.name + ".partial"))
        else:
            self._tmp.unlink(missing_ok=True)


# orjson: 4x json.dumps on our rows. Non-string keys become strings and NumPy values are written, as
# a reader of the line would expect; NaN and infinities become null (JSON has neither).
_ORJSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


def dumps_line(row: dict[str, Any]) -> str:
    """One JSONL line (with its newline) for `row`, UTF-8 text as written."""
    return orjson.dumps(row, option=_ORJSON).decode()


def write_records(path: str | Path, records: Iterable[Record | dict[str, Any]]) -> int:
    """Atomically write records (or plain rows) to JSONL or Parquet; returns the count."""
    with AtomicWriter(path) as w:
        return w.write_all(records)


def concat_records(folders: Sequence[str | Path], path: str | Path) -> None:
    """The shards of dataset folders, in order, as one record file, atomically: JSONL bytes copied
    as they are (no record is parsed), rows re-encoded for Parquet."""
    shards = [s for folder in folders for s in dataset_files(folder)]
    if fmt(path) != "jsonl" or any(fmt(s) != "jsonl" for s in shards):
        with AtomicWriter(path) as w:
            for shard in shards:
                w.write_all(read_records(shard))
        return
    f, tmp = _temp(Path(path), "wb")
    with f:
        for shard in shards:
            with open(shard, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write one JSON document (stats, summaries, configs)."""
    f, tmp = _temp(Path(path), "w")
    with f:
        json.dump(obj, f, ensure_ascii=False, indent=2, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file (reports, cards)."""
    f, tmp = _temp(Path(path), "w")
    with f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
