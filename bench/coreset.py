"""k-center greedy: ours (NumPy on the CPU, torch on a GPU) vs. plain NumPy loops of the same algorithm.

Both run side by side on the same input and must pick the same indices. Two inputs: random unit
vectors (100k x 384 by default; nearly equidistant, the worst case for ties) and real problem
embeddings (MATH train problems through the embedded MiniLM, tiled with small noise up to n rows).

    python bench/coreset.py                 # 100k x 384, k = 1000
    python bench/coreset.py --n 20000 --k 200 --device cuda
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from oracles import k_center_greedy_numpy

from mathforge.quality.coreset import k_center_greedy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def naive_numpy(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The textbook loop: Euclidean distance of every point to the newest centre, per pick."""
    picks = [int(np.random.default_rng(seed).integers(x.shape[0]))]
    min_d = np.linalg.norm(x - x[picks[0]], axis=1)
    while len(picks) < k:
        picks.append(int(np.argmax(min_d)))
        np.minimum(min_d, np.linalg.norm(x - x[picks[-1]], axis=1), out=min_d)
    return np.asarray(picks)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def real_embeddings(n: int, limit: int) -> np.ndarray:
    from mathforge.embed import embed_texts
    from mathforge.sources import load

    problems = [r.problem for r in load(f"math:{DATA / 'math' / 'math_train.jsonl'}?limit={limit}")]
    base = embed_texts(problems)
    rng = np.random.default_rng(1)
    reps = -(-n // len(base))
    tiled = np.tile(base, (reps, 1))[:n] + rng.normal(scale=0.01, size=(n, base.shape[1])).astype(np.float32)
    return (tiled / np.linalg.norm(tiled, axis=1, keepdims=True)).astype(np.float32)


def compare(name: str, x: np.ndarray, k: int, device: str | None) -> None:
    k_center_greedy(x[:1000], 2, device=device, compare_random=False)  # warm-up (torch init, GPU context)
    ours, t_ours = timed(k_center_greedy, x, k, device=device, compare_random=False)
    torch_run, t_torch = timed(k_center_greedy, x, k, device=device, compare_random=False, backend="torch")
    ref, t_ref = timed(k_center_greedy_numpy, x, k)
    naive, t_naive = timed(naive_numpy, x, k)
    same_ref = float((ours.indices == ref).mean())
    same_naive = float((ours.indices == naive).mean())
    print(f"{name}: n={x.shape[0]} d={x.shape[1]} k={k} device={ours.report['device']} backend={ours.report['backend']}")
    print(f"  ours (default backend)       {t_ours:8.2f} s")
    print(f"  torch on {torch_run.report['device']:<19} {t_torch:8.2f} s   same picks: {float((torch_run.indices == ours.indices).mean()):.3f}")
    print(f"  NumPy loop, x @ c form       {t_ref:8.2f} s   ours is {t_ref / t_ours:5.2f}x faster   same picks: {same_ref:.3f}")
    print(f"  NumPy loop, norm(x - c) form {t_naive:8.2f} s   ours is {t_naive / t_ours:5.2f}x faster   same picks: {same_naive:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--real-limit", type=int, default=2000, help="MATH problems embedded for the real input")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, args.d)).astype(np.float32)
    compare("random unit vectors", x / np.linalg.norm(x, axis=1, keepdims=True), args.k, args.device)
    compare("MATH problem embeddings (tiled + noise)", real_embeddings(args.n, args.real_limit), args.k, args.device)


if __name__ == "__main__":
    main()
