"""Core-set diversity selection: k-center greedy (Sener & Savarese, 2018).

Start from one random point (fixed seed) and repeatedly add the point farthest from the chosen set;
the chosen set then covers the data within twice the optimal radius. The cost is k passes over the
n x d matrix; each pass is one matrix-vector product on the data (chunked so memory stays bounded)
and an elementwise minimum, run by torch on a GPU when one is present and by NumPy on the CPU.
Written by hand because faiss has no k-center and scikit-learn's clustering minimises a different
objective (k-means inertia, not the covering radius).

The embeddings are made shard by shard while the synthesis writes them (`ShardEmbedder`, in a
helper process) and kept beside the dataset (`problem_vectors` reads them back, embedding
any shard that lacks valid vectors), so selection at the end of a stage takes seconds, not the
minutes of embedding the whole stage with the teacher's request window empty.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mathforge.io import dataset_files, read_records


@dataclass
class CoresetResult:
    """The chosen indices, in pick order, and the coverage before and after selection."""

    indices: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def k_center_greedy(
    vectors: np.ndarray, k: int, seed: int = 0, *, initial: Sequence[int] = (), chunk_size: int = 1 << 20,
    device: str | None = None, compare_random: bool = True, backend: str = "auto",
) -> CoresetResult:
    """Pick `k` indices of `vectors` (n x d) by k-center greedy, Euclidean distance.

    `initial` indices count as already chosen (they are not returned); without them the first pick
    is drawn with `seed`. The report gives max/mean distance to the nearest centre for the first
    centre(s) ("before"), for the k picks ("after") and, when `compare_random`, for k random points.
    `backend` "auto" runs torch on a GPU (`device`, default cuda when present) and NumPy on the CPU,
    because each pass is a memory-bound matrix-vector product that torch's CPU thread pool does no
    faster and, on a busy machine, measurably slower (bench/coreset.py); "torch" or "numpy" force one.
    """
    x = _as_matrix(vectors)
    n = x.shape[0]
    if not 0 < k <= n - len(initial):
        raise ValueError(f"k={k} must be between 1 and the {n - len(initial)} unchosen points")
    ops = _Ops(x, device, chunk_size, backend)
    picks: list[int] = []
    if initial:
        min_d = ops.min_sq_dist(list(initial))
    else:
        picks.append(int(np.random.default_rng(seed).integers(n)))
        min_d = ops.sq_dist_to(picks[0])
    before = _coverage(ops.numpy(min_d))
    while len(picks) < k:
        picks.append(ops.argmax(min_d))
        min_d = ops.minimum(min_d, ops.sq_dist_to(picks[-1]))
    report = {"n": n, "k": k, "seed": seed, "device": ops.device, "backend": ops.backend, "before": before, "after": _coverage(ops.numpy(min_d))}
    if compare_random:
        rand = np.random.default_rng(seed).choice(n, size=k, replace=False).tolist()
        report["random"] = _coverage(ops.numpy(ops.min_sq_dist(list(initial) + rand)))
    return CoresetResult(np.asarray(picks, dtype=np.int64), report)


class _Ops:
    """The few array operations of the greedy loop, on a torch device or in NumPy on the CPU.

    Squared distances are |x|^2 + |c|^2 - 2 x.c: one fused matrix-vector product per chunk, so no
    n x d temporary is ever made.
    """

    def __init__(self, x: np.ndarray, device: str | None, chunk: int, backend: str):
        if backend not in ("auto", "torch", "numpy"):
            raise ValueError(f"backend must be auto, torch or numpy, got {backend!r}")
        self.chunk = chunk
        self.torch = None
        if backend == "torch" or (backend == "auto" and device != "cpu"):
            import torch

            if backend == "torch" or device or torch.cuda.is_available():
                self.torch = torch
                device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = str(self.torch.device(device)) if self.torch else "cpu"
        self.backend = "torch" if self.torch else "numpy"
        self.x = self.torch.from_numpy(x).to(self.device) if self.torch else x
        self.sq = (self.x * self.x).sum(1)

    def sq_dist_to(self, j: int):
        n = self.x.shape[0]
        if self.torch:
            out = self.torch.empty_like(self.sq)
            for s in range(0, n, self.chunk):
                self.torch.addmv(self.sq[s : s + self.chunk], self.x[s : s + self.chunk], self.x[j], alpha=-2,
                                 out=out[s : s + self.chunk])
            return out.add_(self.sq[j]).clamp_(min=0)
        out = np.empty_like(self.sq)
        for s in range(0, n, self.chunk):
            np.matmul(self.x[s : s + self.chunk], self.x[j], out=out[s : s + self.chunk])
        out *= -2
        out += self.sq
        out += self.sq[j]
        return np.maximum(out, 0, out=out)

    def min_sq_dist(self, centres: list[int]):
        """Squared distance of every row to its nearest centre (blocks of rows x all centres)."""
        c, csq = self.x[centres], self.sq[centres]
        # A block of rows x centres holds about `chunk` distances (4 MB at the default): a bigger
        # block is no faster, and one of 64 chunks made the peak memory grow with n * k.
        rows = max(1, self.chunk // max(1, len(centres)))
        parts = []
        for s in range(0, self.x.shape[0], rows):
            block = self.sq[s : s + rows, None] + csq[None, :] - 2 * (self.x[s : s + rows] @ c.T)
            parts.append(block.min(1).values if self.torch else block.min(1))
        out = self.torch.cat(parts) if self.torch else np.concatenate(parts)
        return out.clamp_(min=0) if self.torch else np.maximum(out, 0)

    def argmax(self, v) -> int:
        return int(self.torch.argmax(v)) if self.torch else int(np.argmax(v))

    def minimum(self, a, b):
        return self.torch.minimum(a, b, out=a) if self.torch else np.minimum(a, b, out=a)

    def numpy(self, v) -> np.ndarray:
        return v.cpu().numpy() if self.torch else v


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n, d) matrix, got shape {x.shape}")
    return x


def _coverage(min_sq: np.ndarray) -> dict[str, float]:
    d = np.sqrt(min_sq.astype(np.float64))
    return {"max_dist": round(float(d.max()), 6), "mean_dist": round(float(d.mean()), 6)}


# ---------------------------------------------------------------- embeddings per shard


def vectors_path(shard: Path) -> Path:
    """Where a shard's problem embeddings live: `<dataset>.vectors/<shard>.npz` beside the dataset
    folder (not inside it: the folder holds only record shards)."""
    return shard.parent.with_name(shard.parent.name + ".vectors") / (shard.stem + ".npz")


def embed_shard(shard: str | Path, model: str | None, batch_size: int) -> None:
    """Embed the problems of one shard into its vectors file (atomically), unless it has valid ones."""
    texts = [r.problem for r in read_records(shard)]
    digest = _digest(texts, model)
    path = vectors_path(Path(shard))
    if _load(path, digest) is not None:
        return
    from mathforge.embed import embed_texts

    vectors = embed_texts(texts, model, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        np.savez(f, digest=np.array(digest), vectors=vectors)
    os.replace(tmp, path)


def problem_vectors(dataset: Path, problems: Sequence[str], model: str | None, batch_size: int) -> np.ndarray:
    """The embeddings of `problems` (the distinct problem texts of a sharded dataset), one row each
    in their order, from the shards' vectors files; a shard without valid vectors (never embedded,
    killed mid-way, rewritten on resume) is embedded now. The matrix is what k-center greedy needs
    in memory: 1.5 KB a row with MiniLM's 384 dimensions."""
    index = {t: i for i, t in enumerate(problems)}
    out: np.ndarray | None = None
    for shard in dataset_files(dataset):
        texts = [r.problem for r in read_records(shard)]
        vectors = _load(vectors_path(shard), _digest(texts, model))
        if vectors is None:
            embed_shard(shard, model, batch_size)
            vectors = _load(vectors_path(shard), _digest(texts, model))
        if out is None:
            out = np.zeros((len(problems), vectors.shape[1]), dtype=np.float32)
        out[[index[t] for t in texts]] = vectors
    if out is None:
        raise ValueError(f"{dataset}: no shards to embed")
    return out


def _digest(texts: list[str], model: str | None) -> str:
    """What a vectors file must match: the shard's texts in order and the model that embedded them."""
    h = hashlib.sha256(str(model).encode())
    for t in texts:
        h.update(b"\0" + t.encode())
    return h.hexdigest()


def _load(path: Path, digest: str) -> np.ndarray | None:
    try:
        with np.load(path) as f:
            return f["vectors"] if str(f["digest"]) == digest else None
    except (OSError, KeyError, ValueError):  # absent or unreadable: embed again
        return None


def _exit_with_parent(parent: int) -> None:
    """The helper's start: exit once the synthesis process `parent` is gone (after a SIGKILL it would
    wait on its job pipe for ever, holding a model's memory); given, not read here, because the
    parent may already be gone when the helper starts."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


class ShardEmbedder:
    """Embeds each shard of a dataset as it is written, in one helper process (separate so that
    embedding never holds the request loop's GIL; not niced, because once the stage's requests are
    done its work is what the next stage waits for). Only a cache for `problem_vectors`: a shard the
    helper did not finish is embedded there."""

    def __init__(self, model: str | None, batch_size: int):
        self.model, self.batch_size = model, batch_size
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.jobs: list[concurrent.futures.Future] = []

    def __call__(self, shard: Path, last: bool) -> None:
        """Hand `shard` to the helper; a stage's `last` shard starts no helper (the core-set step
        right after embeds it at once, without the helper's start-up)."""
        if last and self.pool is None:
            return
        if self.pool is None:
            self.pool = concurrent.futures.ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent,
                initargs=(os.getpid(),))
        with contextlib.suppress(BrokenProcessPool):  # the helper died: the core-set step embeds what it left
            self.jobs.append(self.pool.submit(embed_shard, str(shard), self.model, self.batch_size))

    def finish(self) -> list[str]:
        """Wait for the shards handed over; returns the helper's errors (those shards are embedded
        again by the core-set step, which raises its own error if that fails too)."""
        concurrent.futures.wait(self.jobs)
        errors = [f"{type(e).__name__}: {e}" for e in (j.exception() for j in self.jobs) if e is not None]
        self.close()
        return errors

    def close(self) -> None:
        """Stop the helper without waiting (what it finished is kept)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
