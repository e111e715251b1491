"""Benchmark: the n-gram decontamination scans (one compiled kernel, `matchers.TokenIndex`) vs the
pinned pure-Python reference (`oracles.ReferenceIndex`), and the embedding matcher's rate.

Rows (~1 KB each) are built from the shared MATH and GSM8K train sets: a problem plus pieces of
three solutions, so some rows legitimately share 30-word spans with MATH test. The evaluation sets
are GSM8K test + MATH test. Each scan runs on the same rows as the reference, in turns of 8
batches so that load changes on a shared machine hit all sides alike, timed in CPU seconds of this
process (one thread each): `paper` (the 30-word filter as it was, `ngram` with `whole=False`,
which must agree with the reference row for row), `ngram`, `math-ngram` and `masked-ngram` (the
scans behind `mathforge decontam --matchers`). Peak memory (max RSS) is printed at the end.

Then, with --embed-rows, the embedding matcher on that many problems, prefiltered (`restates`
candidates only reach MiniLM, the default) beside the full path (every row and every test problem
embedded, `word_change=None`), timed in turns of 500 rows: rows per second of each, the ratio, how
many rows and test problems reached MiniLM, 100k extrapolations. The rows (--embed-source) are
MATH/GSM8K-train problems as they are (`train`, the default: what a teacher rewriting seed
problems writes back closest to them, and the harder case for the prefilter, since MATH train
holds number-swapped siblings and a few rewordings of test problems) or `mathforge.simdata`
problems (`sim`: a train problem with a sentence of another spliced in). With --backends, also
the embedding rate per backend (torch, ONNX Runtime) and cut (--cuts), timed in turns,
extrapolated to 100k rows, and the largest difference between the two backends' embeddings.

    python bench/decontam.py                                  # 32k rows
    python bench/decontam.py --rows items                     # MATH/GSM8K-train items as they are
    python bench/decontam.py --matcher-rows 0 --embed-rows 2000   # the embedding matcher only
    python bench/decontam.py --matcher-rows 0 --embed-rows 1000 --backends   # and the backends
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from oracles import ReferenceIndex

from mathforge.record import Record
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spread(pool: list[Record], count: int) -> Iterator[Record]:
    """`count` items of `pool` in a fixed shuffled order (7919 is prime), again from the start
    when `count` exceeds them."""
    return (pool[i * 7919 % len(pool)] for i in range(count))


def make_rows(pool: list[Record], count: int, size: int = 1024, mix: bool = True) -> Iterator[tuple[str, str]]:
    """Deterministic ~`size`-character (problem, solution) rows mixing several real items, or
    (`mix=False`) the items as they are, in a fixed shuffled order, again from the start when
    `count` exceeds them."""
    p = len(pool)
    if not mix:
        yield from ((r.problem, r.solution or "") for r in spread(pool, count))
        return
    for i in range(count):
        a, b, c = pool[i % p], pool[(i * 7919 + 13) % p], pool[(i * 104729 + 7) % p]
        budget = max(size - len(a.problem), 0)
        solution = "\n".join(x.solution or "" for x in (a, b, c))[:budget]
        yield a.problem, solution.rsplit(" ", 1)[0]


def batches(rows: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def as_records(rows: Iterator[tuple[str, str]]) -> Iterator[Record]:
    return (Record(id=str(i), source="bench", problem=p, solution=s) for i, (p, s) in enumerate(rows))


def matchers_side_by_side(sets: dict, pool: list[Record], count: int, batch_size: int, mix: bool = True) -> None:
    """Each n-gram scan (one thread) against the pure-Python reference on the same rows, in turns
    of 8 batches. Timed in CPU seconds of this process (all of it is one thread): on a shared
    2-core box wall time counted other users' jobs, and the ratios moved 2x between runs."""
    from mathforge.quality.matchers import Decontaminator, NgramMatcher

    reference = ReferenceIndex(sets, n=30)
    gc.freeze()  # the reference's half a million word tuples, walked by every full collection
    scans = {"paper": NgramMatcher(sets, n=30, whole=False).match}
    scans |= {name: Decontaminator(sets, [name]).matches for name in ("ngram", "math-ngram", "masked-ngram")}
    spent, removed = dict.fromkeys(("reference", *scans), 0.0), dict.fromkeys(("reference", *scans), 0)
    disagree = 0
    for turn in batches(make_rows(pool, count, mix=mix), 8 * batch_size):
        records = list(as_records(iter(turn)))
        t = time.process_time()
        slow = [reference.first_hit(row) for row in turn]
        spent["reference"] += time.process_time() - t
        removed["reference"] += sum(x is not None for x in slow)
        for name, scan in scans.items():
            t = time.process_time()
            found = [m for start in range(0, len(records), batch_size) for m in scan(records[start : start + batch_size])]
            spent[name] += time.process_time() - t
            removed[name] += sum(m is not None for m in found)
            if name == "paper":
                disagree += sum((m.set, m.test_id) != x if m else x is not None for m, x in zip(found, slow, strict=True))
    print(f"\nscans of the same {count:,} rows, timed in turns (1 thread each, rows per CPU second):")
    for name in spent:
        ratio = "" if name == "reference" else f", ratio {spent['reference'] / spent[name]:.1f}x"
        print(f"  {name:<13} {count / spent[name]:>9,.0f} rows/s{ratio}; {removed[name]:,} rows removed")
    print(f"  paper vs reference, row for row (first test item hit or none): {count - disagree:,}/{count:,} agree")
    print(f"  peak RSS {rss_mb():.0f} MiB")
    if disagree:
        raise SystemExit("the kernel and the reference disagree")


def embedding_rate(pool: list[Record], count: int, cuts: list[int], batch_size: int) -> None:
    """Embedding rates of `count` MATH/GSM8K-train problems per backend (torch, onnx) and cut, timed
    in turns on the same problems (load changes hit all alike); 100k rows at each rate, and how
    far the ONNX embeddings are from torch's."""
    import numpy as np

    from mathforge.embed import embed_texts

    problems = [r.problem for r in spread(pool, count)]
    embed_texts(problems[:64], backend="onnx")  # model load and the one-time export, not timed
    spent: dict[tuple[str, int], float] = {}
    diff = 0.0
    for start in range(0, count, 500):
        chunk = problems[start : start + 500]
        for cut in cuts:
            out = {}
            for backend in ("torch", "onnx"):
                t = time.perf_counter()
                out[backend] = embed_texts([p[:cut] for p in chunk], batch_size=batch_size, backend=backend)
                spent[backend, cut] = spent.get((backend, cut), 0.0) + time.perf_counter() - t
            diff = max(diff, float(np.abs(out["torch"] - out["onnx"]).max()))
    print(f"\nembedding {count:,} problems, batch {batch_size}, timed in turns of 500 (wall):")
    for (backend, cut), s in spent.items():
        ratio = f", {spent['torch', cut] / s:.2f}x torch" if backend == "onnx" else ""
        print(f"  {backend:<5} cut {cut:>4} chars: {count / s:6.1f} problems/s -> 100k in {100_000 / (count / s) / 60:5.1f} "
              f"min{ratio}")
    print(f"  max |onnx - torch| over all embeddings: {diff:.1e}; peak RSS {rss_mb():.0f} MiB")


def embed_problems(pool: list[Record], count: int, source: str, data: Path) -> list[Record]:
    """`count` problems as rows: MATH/GSM8K-train problems spread over the pool, or simulated ones."""
    if source == "sim":
        from mathforge.simdata import simulated_records

        return list(simulated_records(count, data_dir=data))
    return [Record(id=str(i), source="bench", problem=r.problem) for i, r in enumerate(spread(pool, count))]


def embedding_matcher_side_by_side(sets: dict, rows: list[Record]) -> None:
    """The embedding matcher prefiltered (the default, `word_change` 0.2) and on the full path
    (similarity alone: every row embedded against every test problem) on the same rows, in turns
    of 500 (wall time: the model uses both cores). The full path's one-time cost, embedding all
    test problems, is timed apart and counted once in its 100k extrapolation."""
    from mathforge.embed import load_model
    from mathforge.quality.matchers import EmbeddingMatcher

    load_model()  # loading the model is not timed
    t = time.perf_counter()
    prefiltered = EmbeddingMatcher(sets)
    setup = {"prefiltered": time.perf_counter() - t}
    t = time.perf_counter()
    full = EmbeddingMatcher(sets, word_change=None)
    tests = len(full.vectors)  # every test problem embedded: the full path's setup
    setup["full"] = time.perf_counter() - t
    spent, removed = dict.fromkeys(setup, 0.0), dict.fromkeys(setup, 0)
    reached = 0
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        for name, matcher in (("prefiltered", prefiltered), ("full", full)):
            t = time.perf_counter()
            removed[name] += sum(m is not None for m in matcher.match(chunk))
            spent[name] += time.perf_counter() - t
        reached += sum(bool(prefiltered.restating(r.problem)) for r in chunk)
    count = len(rows)
    print(f"\nembedding matcher on the same {count:,} problems, turns of 500 (wall; test problems: {tests:,}):")
    for name in spent:
        rate = count / spent[name]
        print(f"  {name:<11} {rate:9,.1f} rows/s; setup {setup[name]:6.1f} s; 100k rows in "
              f"{(setup[name] + 100_000 / rate) / 60:6.1f} min; {removed[name]:,} rows removed")
    print(f"  prefiltered / full: {spent['full'] / spent['prefiltered']:.0f}x the rows per second")
    print(f"  reached MiniLM, prefiltered: {reached:,} of {count:,} rows and {prefiltered.tests_embedded:,} test "
          f"problems (full: every row and every test problem)")
    print(f"  peak RSS {rss_mb():.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--matcher-rows", type=int, default=32_768, help="rows for the side by side (0: skip)")
    ap.add_argument("--rows", choices=("mix", "items"), default="mix",
                    help="mix: ~1 KB rows of a problem and pieces of three solutions; items: MATH/GSM8K-train items as they are")
    ap.add_argument("--embed-rows", type=int, default=0, help="problems for the embedding matcher (0: skip)")
    ap.add_argument("--embed-source", choices=("train", "sim"), default="train", help="where those problems come from")
    ap.add_argument("--backends", action="store_true", help="also time the embedding backends per cut")
    ap.add_argument("--cuts", default="512,256", help="characters kept of each problem, comma-separated")
    ap.add_argument("--embed-batch", type=int, default=64)
    args = ap.parse_args()

    sets = {"gsm8k_test": list(load(f"gsm8k:{args.data}/gsm8k/test.jsonl?allow_test=1")),
            "math_test": list(load(f"math:{args.data}/math/math_test.jsonl?allow_test=1"))}
    pool = list(load(f"math:{args.data}/math/math_train.jsonl")) + list(load(f"gsm8k:{args.data}/gsm8k/train.jsonl"))
    mean = sum(len(p) + len(s) for p, s in make_rows(pool, 2000, mix=args.rows == "mix")) / 2000
    print(f"rows of ~{mean:.0f} characters; evaluation sets: GSM8K test + MATH test")
    if args.matcher_rows:
        matchers_side_by_side(sets, pool, args.matcher_rows, args.batch_size, mix=args.rows == "mix")
    if args.embed_rows:
        embedding_matcher_side_by_side(sets, embed_problems(pool, args.embed_rows, args.embed_source, args.data))
    if args.embed_rows and args.backends:
        embedding_rate(pool, args.embed_rows, [int(c) for c in args.cuts.split(",")], args.embed_batch)


if __name__ == "__main__":
    main()
