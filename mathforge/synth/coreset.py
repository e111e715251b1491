"""Core-set diversity selection: k-center greedy (Sener & Savarese, 2018).

Start from one random point (fixed seed) and repeatedly add the point farthest from the chosen set;
the chosen set then covers the data within twice the optimal radius. The cost is k passes over the
n x d matrix; each pass is one matrix-vector product on the data (chunked so memory stays bounded)
and an elementwise minimum, run by torch on a GPU when one is present and on the CPU otherwise.
Written by hand because faiss has no k-center and scikit-learn's clustering minimises a different
objective (k-means inertia, not the covering radius).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CoresetResult:
    """The chosen indices, in pick order, and the coverage before and after selection."""

    indices: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def k_center_greedy(
    vectors: np.ndarray, k: int, seed: int = 0, *, initial: Sequence[int] = (), chunk_size: int = 1 << 20,
    device: str | None = None, compare_random: bool = True,
) -> CoresetResult:
    """Pick `k` indices of `vectors` (n x d) by k-center greedy, Euclidean distance.

    `initial` indices count as already chosen (they are not returned); without them the first pick
    is drawn with `seed`. The report gives max/mean distance to the nearest centre for the first
    centre(s) ("before"), for the k picks ("after") and, when `compare_random`, for k random points.
    """
    import torch

    x = _as_matrix(vectors)
    n = x.shape[0]
    if not 0 < k <= n - len(initial):
        raise ValueError(f"k={k} must be between 1 and the {n - len(initial)} unchosen points")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = torch.from_numpy(x).to(dev)
    sq = (data * data).sum(1)
    picks: list[int] = []
    if initial:
        min_d = _min_sq_dist(data, sq, list(initial), chunk_size)
    else:
        first = int(np.random.default_rng(seed).integers(n))
        picks.append(first)
        min_d = _sq_dist_to(data, sq, first, chunk_size)
    before = _coverage(min_d)
    while len(picks) < k:
        nxt = int(torch.argmax(min_d))
        picks.append(nxt)
        torch.minimum(min_d, _sq_dist_to(data, sq, nxt, chunk_size), out=min_d)
    report = {"n": n, "k": k, "seed": seed, "device": str(dev), "before": before, "after": _coverage(min_d)}
    if compare_random:
        rand = np.random.default_rng(seed).choice(n, size=k, replace=False).tolist()
        report["random"] = _coverage(_min_sq_dist(data, sq, list(initial) + rand, chunk_size))
    return CoresetResult(np.asarray(picks, dtype=np.int64), report)


def k_center_greedy_numpy(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The same algorithm as a plain NumPy loop (one full distance pass per pick, float32): the
    reference that the benchmark and the tests compare the torch version with."""
    x = _as_matrix(vectors)
    sq = np.einsum("ij,ij->i", x, x)
    picks = [int(np.random.default_rng(seed).integers(x.shape[0]))]
    min_d = np.maximum(sq + sq[picks[0]] - 2 * (x @ x[picks[0]]), 0)
    while len(picks) < k:
        nxt = int(np.argmax(min_d))
        picks.append(nxt)
        np.minimum(min_d, np.maximum(sq + sq[nxt] - 2 * (x @ x[nxt]), 0), out=min_d)
    return np.asarray(picks, dtype=np.int64)


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n, d) matrix, got shape {x.shape}")
    return x


def _sq_dist_to(data: Any, sq: Any, j: int, chunk: int) -> Any:
    """Squared distances of every row to row j as |x|^2 + |c|^2 - 2 x.c, one fused matrix-vector
    product per chunk (the pass is memory-bound, so no n x d temporary is ever made)."""
    import torch

    out = torch.empty_like(sq)
    for s in range(0, data.shape[0], chunk):
        torch.addmv(sq[s : s + chunk], data[s : s + chunk], data[j], alpha=-2, out=out[s : s + chunk])
    return out.add_(sq[j]).clamp_(min=0)


def _min_sq_dist(data: Any, sq: Any, centres: list[int], chunk: int) -> Any:
    """Squared distance of every row to its nearest centre (a few centre blocks at a time)."""
    import torch

    c = data[centres]
    csq = sq[centres]
    out = torch.empty_like(sq)
    rows = max(1, chunk * 64 // max(1, len(centres)))
    for s in range(0, data.shape[0], rows):
        block = sq[s : s + rows, None] + csq[None, :] - 2 * (data[s : s + rows] @ c.T)
        out[s : s + rows] = block.min(1).values
    return out.clamp_(min=0)


def _coverage(min_sq: Any) -> dict[str, float]:
    d = min_sq.sqrt()
    return {"max_dist": round(float(d.max()), 6), "mean_dist": round(float(d.mean()), 6)}
