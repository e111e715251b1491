"""The decontamination, dedup and embedding steps on Ray Data, for data that outgrows one machine.

Only execution changes: Ray workers run the same per-batch code as the local engine (the
`Decontaminator`'s matchers, the dedup keys and MinHash signatures, `embed_texts`), rows come back
in input order (`preserve_order`), and the same sequential decision code
(`Decontaminator.decide_batch`, `ExactDedup.admit`, `NearDedup.admit`) runs on the driver. So both
engines give identical output on the same input. Records travel as JSON text, because free-form `meta` dicts do not fit one Arrow
schema. `address=None` starts a local Ray (as the tests do); pass "auto" to join a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from mathforge.quality.dedup import ExactDedup, NearDedup
from mathforge.record import Record


def init(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once, quietly, with ordered Ray Data execution."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False


def _dataset(records: Iterable[Record]) -> Any:
    import ray

    return ray.data.from_items([{"record": json.dumps(r.to_dict(), ensure_ascii=False)} for r in records])


def _rows(ds: Any, batch_size: int) -> Iterator[dict[str, Any]]:
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        keys = list(batch)
        for i in range(len(batch[keys[0]])):
            yield {k: batch[k][i] for k in keys}


class _MatchBatch:
    """A Ray Data worker holding one `Decontaminator` (built once per worker from the test sets)."""

    def __init__(self, sets: dict[str, list[Record]], matchers: Sequence[str], opts: dict[str, Any]):
        from mathforge.quality.matchers import Decontaminator

        self.decontaminator = Decontaminator(sets, matchers, **opts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [Record.from_dict(json.loads(r)) for r in batch["record"]]
        found = [json.dumps(m.to_dict() if m else None) for m in self.decontaminator.matches(records)]
        return {"record": batch["record"], "match": np.array(found, dtype=object)}


def match_records(records: Iterable[Record], sets: dict[str, list[Record]], matchers: Sequence[str], *,
                  batch_size: int = 1024, workers: int = 1, **opts: Any) -> Iterator[tuple[Record, Any]]:
    """`Decontaminator.matches` on Ray Data: (record, its first match or None) in input order."""
    from mathforge.quality.matchers import Match

    ds = _dataset(records).map_batches(_MatchBatch, fn_constructor_args=(sets, matchers, opts),
                                       batch_size=batch_size, concurrency=workers)
    for row in _rows(ds, batch_size):
        match = json.loads(row["match"])
        yield Record.from_dict(json.loads(row["record"])), Match(**match) if match else None


class _DedupKeys:
    def __init__(self, exact: ExactDedup, near: NearDedup | None):
        self.exact, self.near = exact, near

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [Record.from_dict(json.loads(r)) for r in batch["record"]]
        out = {"record": batch["record"], "key": np.array([self.exact.key(r) for r in records], dtype=object)}
        if self.near is not None:
            out["signature"] = np.stack([self.near.signature(r) for r in records])
        return out


def dedup_decisions(records: Iterable[Record], exact: ExactDedup, near: NearDedup | None, *,
                    batch_size: int = 1024, workers: int = 1) -> Iterator[tuple[Record, str | None]]:
    """Keys and MinHash signatures computed on Ray, first-occurrence decisions on the driver."""
    ds = _dataset(records).map_batches(_DedupKeys, fn_constructor_args=(exact, near),
                                       batch_size=batch_size, concurrency=workers)
    for row in _rows(ds, batch_size):
        record = Record.from_dict(json.loads(row["record"]))
        reason = exact.admit(record, bytes(row["key"]))
        if reason is None and near is not None:
            reason = near.admit(record, np.asarray(row["signature"], dtype=np.uint64))
        yield record, reason


class _Embed:
    def __init__(self, model: str | None):
        self.model = model

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mathforge.embed import embed_texts

        return {"vector": embed_texts([str(t) for t in batch["text"]], model=self.model)}


def embed_texts(texts: Sequence[str], model: str | None = None, *, batch_size: int = 256,
                workers: int = 1) -> np.ndarray:
    """`mathforge.embed.embed_texts` on Ray Data workers, rows in input order."""
    import ray

    if not texts:
        from mathforge.embed import embed_texts as local

        return local([], model=model)
    ds = ray.data.from_items([{"text": t} for t in texts]).map_batches(
        _Embed, fn_constructor_args=(model,), batch_size=batch_size, concurrency=workers)
    return np.concatenate([b["vector"] for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy")])
