"""Filters only decide: keep a record, or drop it with a reason. One mechanism counts the reasons,
keeps the rejects for inspection, and records the level/subject distribution before and after.

A filter is any object with a `name` and `decide(record) -> str | None` (None keeps the record,
a string is the drop reason). Stateful filters (dedup) keep their state on the object. A filter
may also offer a batch form, `decide_batch(records) -> [(record, reason)]` (a tokenizer or a grader
is many times faster on a batch); it may return the records annotated with what it learned.
Per-shard stats merge into one with `merge_stats`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from mathforge.record import Record, annotate


class Filter(Protocol):
    name: str

    def decide(self, record: Record) -> str | None: ...


@dataclass
class Distribution:
    """Counts of records per difficulty level and per subject."""

    levels: Counter = field(default_factory=Counter)
    subjects: Counter = field(default_factory=Counter)
    total: int = 0

    def add(self, record: Record) -> None:
        self.total += 1
        self.levels[str(record.level) if record.level is not None else "unknown"] += 1
        self.subjects[record.subject or "unknown"] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "levels": dict(sorted(self.levels.items())),
                "subjects": dict(self.subjects.most_common())}


@dataclass
class FilterStats:
    name: str
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    before: Distribution = field(default_factory=Distribution)
    after: Distribution = field(default_factory=Distribution)

    def to_dict(self) -> dict[str, Any]:
        return {"filter": self.name, "seen": self.before.total, "kept": self.kept,
                "dropped": sum(self.dropped.values()), "dropped_by_reason": dict(self.dropped.most_common()),
                "before": self.before.to_dict(), "after": self.after.to_dict()}


def apply_filter(records: Iterable[Record], flt: Filter, stats: FilterStats, rejects: Any = None,
                 batch_size: int = 256) -> Iterator[Record]:
    """Yield the records `flt` keeps; count the rest by reason and write them to `rejects`
    (anything with `.write(record)`) annotated with `meta["rejected"] = {filter, reason}`.
    A filter with `decide_batch` is called on batches of `batch_size` records."""
    if hasattr(flt, "decide_batch"):
        decisions: Iterable[tuple[Record, str | None]] = (
            pair for batch in batches(records, batch_size) for pair in flt.decide_batch(batch))
    else:
        decisions = ((record, flt.decide(record)) for record in records)
    for record, reason in decisions:
        stats.before.add(record)
        if reason is None:
            stats.kept += 1
            stats.after.add(record)
            yield record
            continue
        stats.dropped[reason.split(":", 1)[0]] += 1
        if rejects is not None:
            rejects.write(annotate(record, "rejected", {"filter": flt.name, "reason": reason}))


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` items (the last one shorter); `itertools.batched` arrives in Python 3.12."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def merge_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One `FilterStats.to_dict()` from the dicts of the same filter on several shards."""
    total = FilterStats(parts[0]["filter"])
    for part in parts:
        total.kept += part["kept"]
        total.dropped.update(part["dropped_by_reason"])
        for dist, data in ((total.before, part["before"]), (total.after, part["after"])):
            dist.total += data["total"]
            dist.levels.update(data["levels"])
            dist.subjects.update(data["subjects"])
    return total.to_dict()
