"""Seed sources: every real dataset format turned into `Record`s, streaming.

A source is named by a spec string `KIND:LOCATION[?key=value&...]`, or just a path whose kind is
guessed from its rows. Kinds (see `SOURCES`): math, gsm8k, olympiadbench, agieval, scibench,
jeebench, jsonl (any file with a field mapping), hf (Hugging Face Hub via `datasets`), and rg
(reasoning-gym procedural generators, no files needed).

Test splits are refused as seeds unless `allow_test=1`: MATH test ids (`test/<subject>/<n>.json`)
are recognised wherever they appear, which catches PRM800K's 12k "train" split (it holds 4,500 MATH
test problems); files named like a test split, and AGIEval's `math` task (all MATH test), are refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from mathforge.answers import boxed_answer, choice_letter, gsm8k_answer, option_text
from mathforge.io import DataError, ReadReport, read_rows
from mathforge.mini import load_mini
from mathforge.record import SUBJECTS, Lineage, Record, row_id, stable_id

# A file named by its format (`parquet:rows.parquet`) is rows under the generic field mapping.
_FORMAT_KINDS = {"parquet": "jsonl", "json": "jsonl"}
Rows = Iterator[tuple[str, dict[str, Any]]]  # (where: "file:line", raw row)
MATH_TEST_ID = re.compile(r"(?:^|/)test/[a-z_]+/\d+\.json$")


@dataclass(frozen=True)
class SourceSpec:
    """One seed source: its kind, where it lives, and kind-specific options."""

    kind: str
    location: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        loc, _, query = text.partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True))
        kind, sep, rest = loc.partition(":")
        kind = _FORMAT_KINDS.get(kind, kind) if sep else kind
        if sep and kind in SOURCES:
            return cls(kind, rest, options)
        return cls(guess_kind(loc), loc, options)

    def opt(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def flag(self, key: str) -> bool:
        return str(self.options.get(key, "")).lower() in ("1", "true", "yes")


class RefusedTestSplit(DataError):
    """A test split offered as seeds without `allow_test=1`."""


# ---------------------------------------------------------------- normalisation helpers


_SUBJECT_ALIASES = {s.lower(): s for s in SUBJECTS} | {
    "counting_and_probability": "Counting & Probability",
    "counting and probability": "Counting & Probability",
    "intermediate_algebra": "Intermediate Algebra",
    "number_theory": "Number Theory",
    "combinatorics": "Combinatorics",
    "calculus": "Calculus",
    "diff": "Differential Equations",
    "stat": "Statistics",
}


def normalize_subject(value: Any) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    return _SUBJECT_ALIASES.get(text.lower(), text)


def normalize_level(value: Any) -> int | None:
    """"Level 3", 3, "3" -> 3; "Level ?" and anything outside 1..5 -> None."""
    if value is None or isinstance(value, bool):
        return None
    m = re.search(r"\d+", str(value))
    n = int(m.group()) if m else None
    return n if n is not None and 1 <= n <= 5 else None


def is_math_test_id(value: Any) -> bool:
    return isinstance(value, str) and bool(MATH_TEST_ID.search(value))


def guess_kind(location: str) -> str:
    """Guess the source kind of a file from its first row's fields."""
    path = Path(location)
    if path.is_dir():
        return "math"
    if not path.exists():
        raise DataError(f"{location}: no such file (or prefix it with a kind, e.g. rg:basic_arithmetic)")
    try:
        _, row = next(read_rows(path))
    except StopIteration as e:
        raise DataError(f"{location}: empty file") from e
    keys = set(row)
    for kind, needed in _SIGNATURES:
        if needed <= keys:
            return kind
    raise DataError(f"{location}: cannot tell the source kind from fields {sorted(keys)}; use KIND:{location}")


_SIGNATURES = [
    ("math", {"problem", "solution", "level"}),
    ("olympiadbench", {"question", "final_answer"}),
    ("agieval", {"question", "options"}),
    ("gsm8k", {"question", "answer"}),
    ("scibench", {"problem_text", "answer_number"}),
    ("jeebench", {"question", "gold", "subject"}),
    ("jsonl", {"id", "source", "problem"}),
    ("jsonl", {"problem"}),  # plain {problem, solution, answer} rows: the generic field mapping
]


def _split_of(spec: SourceSpec, default: str = "train") -> str:
    explicit = spec.opt("split")
    if explicit:
        return explicit
    return "test" if re.search(r"(^|[/_.-])test([/_.-]|$)", Path(spec.location).name) else default


def _guard_split(spec: SourceSpec, split: str | None, where: str) -> None:
    if split == "test" and not spec.flag("allow_test"):
        raise RefusedTestSplit(
            f"{where}: test-split data refused as seeds (evaluation data must not be trained on); "
            "add ?allow_test=1 to the source if you really mean it"
        )


# ---------------------------------------------------------------- the sources


def load_math(spec: SourceSpec, rows: Rows) -> Iterator[Record]:
    """Hendrycks MATH: our JSONL (idx/unique_id/problem/level/type/solution) or the original
    one-JSON-file-per-problem tree `<split>/<subject>/<n>.json`."""
    for where, row in rows:
        uid = row.get("unique_id") or row.get("id")
        split = "test" if is_math_test_id(uid) else _split_of(spec)
        _guard_split(spec, split, where)
        solution = row.get("solution") or ""
        answer = row.get("answer") or boxed_answer(solution)
        yield Record(
            id=str(uid) if uid else stable_id("math", row.get("problem", "")),
            source=spec.opt("name", "math"),
            problem=_need(row, "problem", where),
            solution=solution or None,
            answer=answer,
            level=normalize_level(row.get("level")),
            subject=normalize_subject(row.get("type") or row.get("subject")),
            split=split,
            lineage=Lineage(stage="seed"),
            meta={"where": where},
        )


def _math_tree_rows(root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for file in sorted(root.rglob("*.json")):
        rel = file.relative_to(root.parent if root.name in ("train", "test") else root).as_posix()
        try:
            row = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{file}:{e.lineno}: invalid JSON ({e.msg})") from e
        yield str(file), {"unique_id": rel, **row}


def load_gsm8k(spec: SourceSpec, rows: Rows) -> Iterator[Record]:
    split = _split_of(spec)
    _guard_split(spec, split, spec.location)
    for i, (where, row) in enumerate(rows):
        rationale = _need(row, "answer", where)
        yield Record(
            id=f"gsm8k/{split}/{i}",
            source=spec.opt("name", "gsm8k"),
            problem=_need(row, "question", where),
            solution=rationale.rsplit("####", 1)[0].strip(),
            answer=gsm8k_answer(rationale),
            split=split,
            lineage=Lineage(stage="seed"),
            meta={"where": where},
        )


def load_olympiadbench(spec: SourceSpec, rows: Rows) -> Iterator[Record]:
    split = spec.opt("split", "train")  # the shared copy is OlympiadBench's only split
    _guard_split(spec, split, spec.location)
    for where, row in rows:
        answers = row.get("final_answer") or []
        answer = ", ".join(a.strip().strip("$") for a in answers) if answers else None
        solution = row.get("solution")
        yield Record(
            id=f"olympiadbench/{row.get('id')}",
            source=spec.opt("name", "olympiadbench"),
            problem=_need(row, "question", where),
            solution="\n\n".join(solution) if isinstance(solution, list) else solution,
            answer=answer,
            subject=normalize_subject(row.get("subfield")),
            split=split,
            lineage=Lineage(stage="seed"),
            meta={"where": where, "answer_type": row.get("answer_type"), "unit": row.get("unit"),
                  "is_multiple_answer": row.get("is_multiple_answer")},
        )


def load_agieval(spec: SourceSpec, rows: Rows) -> Iterator[Record]:
    """AGIEval multiple-choice (options + label) and cloze (answer) tasks."""
    task = spec.opt("task") or Path(spec.location).stem.removeprefix("agieval_")
    if task == "math" and not spec.flag("allow_test"):
        raise RefusedTestSplit(f"{spec.location}: AGIEval's 'math' task is MATH test problems; refused as seeds")
    split = spec.opt("split", "train")
    _guard_split(spec, split, spec.location)
    for i, (where, row) in enumerate(rows):
        options = row.get("options")
        letter = choice_letter(row.get("label"))
        problem = "\n".join(p for p in (row.get("passage"), _need(row, "question", where)) if p)
        if options:
            problem = problem.rstrip() + "\nAnswer choices: " + " ".join(options)
        answer = letter if options else _strip_dollars(row.get("answer"))
        other = row.get("other") or {}
        yield Record(
            id=f"agieval/{task}/{i}",
            source=spec.opt("name", f"agieval/{task}"),
            problem=problem,
            solution=other.get("solution") if isinstance(other, dict) else None,
            answer=answer,
            split=split,
            lineage=Lineage(stage="seed"),
            meta={"where": where, "choice_text": option_text(options, letter) if letter and "," not in letter else None,
                  "options": options,
                  "language": "zh" if task.startswith("gaokao") else "en"},
        )


def _strip_dollars(text: str | None) -> str | None:
    if text is None:
        return None
    parts = [p.strip().strip("$").strip() for p in str(text).split(";")]
    return ", ".join(p for p in parts if p) or None


_SCIBENCH_SUBJECTS = {"calculus": "Calculus", "diff": "Differential Equations", "stat": "Statistics",
                      "atkins": "Chemistry", "chemmc": "Chemistry", "matter": "Chemistry", "quan": "Chemistry",
                      "class": "Physics", "fund": "Physics", "thermo": "Physics"}


def load_scibench(spec: SourceSpec, rows: Rows) -> Iterator[Record]:
    split = spec.opt("split", "train")
    _guard_split(spec, split, spec.location)
    for where, row in rows:
        book = (row.get("source") or "").strip()
        unit = (row.get("unit") or "").strip()
        answer = (row.get("answer_number") or row.get("answer_latex") or "").strip() or None
        yield Record(
            id=f"scibench/{book}/{(row.get('problemid') or '').strip()}/{row.get('index_in_file', '')}",
            source=spec.opt("name", "scibench"),
            problem=_need(row, "problem_text", where),
            solution=row.get("solution"),
            answer=answer,
            subject=_SCIBENCH_SUBJECTS.get(book, book or None),
            split=split,
            lineage=Lineage(stage="seed"),
            meta={"where": where, "book": book, "unit": unit or None, "answer_latex": (row.get("answer_latex") or "").strip()},
        )


def load_jeebench(spec: SourceSpec, rows: Rows) -> Iterator[Record]:
    """JEEBench `dataset.json` rows (description, index, subject, type, gold, question); maths only
    unless `subject=all`."""
    want = spec.opt("subject", "math")
    split = spec.opt("split", "train")
    _guard_split(spec, split, spec.location)
    for where, row in rows:
        if want != "all" and row.get("subject") != want:
            continue
        qtype = row.get("type", "")
        gold = str(_need(row, "gold", where, text=False)).strip()
        yield Record(
            id=f"jeebench/{row.get('index')}",
            source=spec.opt("name", "jeebench"),
            problem=_need(row, "question", where),
            answer=", ".join(gold) if qtype == "MCQ(multiple)" else gold,
            subject=normalize_subject(row.get("subject")),
            split=split,
            lineage=Lineage(stage="seed"),
            meta={"where": where, "type": qtype, "description": row.get("description")},
        )


def load_mapped(spec: SourceSpec, rows: Rows) -> Iterator[Record]:
    """Any JSONL/JSON/Parquet: `?problem=q&answer=a&solution=s&level=l&subject=t&id=k` name the
    fields; a field holding a full solution can be parsed with `answer_from=boxed|gsm8k`."""
    fields = {k: spec.opt(k, k) for k in ("id", "problem", "solution", "answer", "level", "subject", "split")}
    parse = {"boxed": boxed_answer, "gsm8k": gsm8k_answer}.get(spec.opt("answer_from", ""))
    for i, (where, row) in enumerate(rows):
        if "lineage" in row and "problem" in row:  # already our record format
            try:
                yield Record.from_dict(row)
            except (TypeError, ValueError) as e:
                raise DataError(f"{where}: {e}") from e
            continue
        uid = row.get(fields["id"])
        split = row.get(fields["split"]) or ("test" if is_math_test_id(uid) else _split_of(spec))
        _guard_split(spec, split, where)
        solution = row.get(fields["solution"])
        answer = row.get(fields["answer"])
        if parse and answer is None and solution:
            answer = parse(solution)
        elif parse and answer is not None:
            answer = parse(str(answer)) or answer
        yield Record(
            id=str(uid) if uid is not None else row_id(spec.location, i),
            source=spec.opt("name", Path(spec.location).stem),
            problem=_need(row, fields["problem"], where),
            solution=solution,
            answer=None if answer is None else str(answer),
            level=normalize_level(row.get(fields["level"])),
            subject=normalize_subject(row.get(fields["subject"])),
            split=split,
            lineage=Lineage(stage="seed"),
            meta={"where": where},
        )


def hub_rows(spec: SourceSpec) -> Rows:
    """A Hugging Face Hub dataset (or a local dataset folder/files) via `datasets`, streamed.

    `hf:openai/gsm8k?config=main&split=train&format=gsm8k` reuses a known format; otherwise the
    field mapping of `load_mapped` applies. Needs the `data` extra and, for the Hub, network.
    """
    import datasets

    split = spec.opt("split", "train")
    _guard_split(spec, "test" if "test" in split else split, spec.location)
    kwargs: dict[str, Any] = {"split": split, "streaming": spec.opt("streaming", "1") == "1"}
    path = spec.location
    if spec.opt("data_files"):  # local files through the same code path ("json", "parquet" builders)
        kwargs["data_files"] = spec.opt("data_files")
    ds = datasets.load_dataset(path, spec.opt("config"), **kwargs)
    for i, row in enumerate(ds):
        yield f"{spec.location}[{split}]:{i + 1}", dict(row)


def load_reasoning_gym(spec: SourceSpec) -> Iterator[Record]:
    """Procedural problems with exact answers from `reasoning-gym`: `rg:NAME?size=100&seed=0`.

    Offline and file-free, so a fresh machine always has seeds. Any generator option can be
    passed as a query parameter (integers are converted).
    """
    import reasoning_gym

    options = {k: _intlike(v) for k, v in spec.options.items() if k not in ("split", "name", "allow_test")}
    options.setdefault("size", 100)
    options.setdefault("seed", 0)
    data = reasoning_gym.create_dataset(spec.location, **options)
    for i, entry in enumerate(data):
        meta = entry.get("metadata") or {}
        yield Record(
            id=f"rg/{spec.location}/{options['seed']}/{i}",
            source=spec.opt("name", f"rg/{spec.location}"),
            problem=entry["question"],
            answer=str(entry["answer"]),
            level=normalize_level(meta.get("difficulty", {}).get("level") if isinstance(meta.get("difficulty"), dict) else None),
            subject=spec.location,
            split="train",
            lineage=Lineage(stage="seed"),
            meta={"generator": spec.location, "rg": _jsonable(meta)},
        )


def _intlike(value: str) -> Any:
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# Row formats: each turns raw rows of one dataset's convention into records.
FORMATS: dict[str, Callable[[SourceSpec, Rows], Iterator[Record]]] = {
    "math": load_math,
    "gsm8k": load_gsm8k,
    "olympiadbench": load_olympiadbench,
    "agieval": load_agieval,
    "scibench": load_scibench,
    "jeebench": load_jeebench,
    "jsonl": load_mapped,
}
# Source kinds: the formats read from local files, plus the Hub and reasoning-gym.
SOURCES = (*FORMATS, "hf", "rg", "mini")


def file_rows(spec: SourceSpec, report: ReadReport) -> Rows:
    if Path(spec.location).is_dir():
        yield from _math_tree_rows(Path(spec.location))
        return
    for line, row in read_rows(spec.location, skip_bad=spec.flag("skip_bad"), report=report):
        yield f"{spec.location}:{line}", row


def _records(spec: SourceSpec, report: ReadReport) -> Iterator[Record]:
    if spec.kind == "rg":
        return load_reasoning_gym(spec)
    if spec.kind == "mini":  # the miniature world, generated, no files
        _guard_split(spec, "test" if spec.location == "test" else "train", "mini:test")
        return load_mini(spec)
    if spec.kind == "hf":  # `format=gsm8k` etc. reuses a known convention on Hub rows
        return FORMATS[spec.opt("format", "jsonl")](spec, hub_rows(spec))
    return FORMATS[spec.kind](spec, file_rows(spec, report))


def _need(row: dict[str, Any], key: str, where: str, text: bool = True) -> Any:
    """A required field's value: present, not blank, and (with `text`) a string."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: missing required field '{key}'")
    if text and not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def load(spec: SourceSpec | str, report: ReadReport | None = None) -> Iterator[Record]:
    """Stream the records of one source; bad rows raise DataError naming file:line, or with
    `?skip_bad=1` are skipped and listed in `report`."""
    spec = SourceSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.kind not in SOURCES:
        raise DataError(f"unknown source kind '{spec.kind}' (known: {', '.join(SOURCES)})")
    limit = int(spec.opt("limit", "0") or 0)
    for i, record in enumerate(_records(spec, report if report is not None else ReadReport())):
        if limit and i >= limit:
            return
        yield record
