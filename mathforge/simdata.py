"""Simulated synthetic records for benchmarks and rehearsals at scale (100k to millions of rows).

Real synthesis at 2.5M rows costs millions of teacher calls; the data steps after it (cleaning,
selection, export, tokenisation) only need rows that look like its output. Each simulated row is a
unique text recombined from MATH and GSM8K *train* sentences: a base item's problem and solution
with sentences of other items spliced in, the base item's answer, level and subject, a synthesis
lineage, and a solution ending in the answer line. About 5% of rows are planted near-duplicates
(a few words changed) and 1% exact duplicates of an earlier row, marked in `meta["sim"]` so a
benchmark can check dedup verdicts against them.

Row i depends only on (seed, i): generation streams in constant memory (the sentence pools of the
two train files, about 15 MB, are the only state) and any shard can be made independently.

    python -m mathforge.simdata 100000 rows.jsonl [--seed 0] [--data-dir DIR (default: mathforge.paths.data_dir)]
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mathforge import paths
from mathforge.answers import ANSWER_PREFIX
from mathforge.record import Lineage, Record, stable_id

EXACT_RATE = 0.01
NEAR_RATE = 0.05
METHODS = ("metamath/answer_aug", "metamath/rephrase", "metamath/fobar", "metamath/self_verify",
           "evol/deepen", "evol/constraints", "xwin")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z$\\(])")


@dataclass(frozen=True)
class _Pool:
    items: tuple[Record, ...]  # train items with an answer
    problem_sentences: tuple[str, ...]
    solution_sentences: tuple[str, ...]


@lru_cache(maxsize=4)
def _pool(root: str) -> _Pool:
    from mathforge.sources import SourceSpec, load

    items = [r for spec in (SourceSpec("math", str(paths.data_file("math/math_train.jsonl", root))),
                            SourceSpec("gsm8k", str(paths.data_file("gsm8k/train.jsonl", root))))
             for r in load(spec) if r.answer and r.solution]
    problems = tuple(s for r in items for s in _SENTENCE.split(r.problem) if len(s) > 20)
    solutions = tuple(s for r in items for s in _SENTENCE.split(_body(r.solution or "")) if len(s) > 20)
    return _Pool(tuple(items), problems, solutions)


def _body(solution: str) -> str:
    """A GSM8K solution without its `#### n` line and calculator annotations."""
    return re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()


def simulated_records(n: int, seed: int = 0, data_dir: str | Path | None = None,
                      start: int = 0) -> Iterator[Record]:
    """Rows `start .. n-1` of the simulated dataset for `seed` (see the module docstring);
    `data_dir`: the folder of the train files (None: `mathforge.paths.data_dir`)."""
    pool = _pool(str(paths.data_dir(data_dir).resolve()))
    for i in range(start, n):
        yield simulated_row(pool, seed, i)


def simulated_row(pool: _Pool, seed: int, i: int) -> Record:
    rng = random.Random(f"{seed}:{i}")
    roll = rng.random()
    if i == 0 or roll >= EXACT_RATE + NEAR_RATE:
        return _unique_row(pool, seed, i)
    # a copy of an earlier row as that row is (itself possibly a copy: 6% per level, so shallow)
    original = simulated_row(pool, seed, rng.randrange(i))
    if roll < EXACT_RATE:
        return _with_identity(original, seed, i, {"kind": "exact", "dup_of": original.id})
    return _with_identity(_perturb(original, rng), seed, i, {"kind": "near", "dup_of": original.id})


def _row_id(seed: int, i: int) -> str:
    return stable_id("sim", str(seed), str(i))


def _unique_row(pool: _Pool, seed: int, i: int) -> Record:
    rng = random.Random(f"{seed}:{i}:text")
    base = pool.items[rng.randrange(len(pool.items))]
    problem = " ".join([base.problem, rng.choice(pool.problem_sentences)])
    steps = _SENTENCE.split(_body(base.solution or ""))
    for _ in range(2):  # two foreign sentences: ~1e14 combinations, so texts do not repeat by chance
        steps.insert(rng.randrange(len(steps) + 1), rng.choice(pool.solution_sentences))
    solution = " ".join(steps) + f"\n{ANSWER_PREFIX} {base.answer}"
    method = rng.choice(METHODS)
    stage = "stage2" if (base.level or 0) >= 4 and rng.random() < 0.5 else "stage1"
    lineage = Lineage(seed_id=base.id, parent_id=base.id, method=method, step=1, stage=stage,
                      teacher="simulated", prompt_version="sim-1")
    return Record(id=_row_id(seed, i), source=base.source, problem=problem, solution=solution,
                  answer=base.answer, level=base.level, subject=base.subject, split="train",
                  lineage=lineage, meta={"sim": {"kind": "unique", "row": i}})


def _perturb(record: Record, rng: random.Random) -> Record:
    """A near-duplicate: 1 to 3 words of the solution body dropped or doubled."""
    words = record.solution.split(" ") if record.solution else []
    for _ in range(rng.randint(1, 3)):
        k = rng.randrange(max(1, len(words) - 8))  # never touch the answer line at the end
        if rng.random() < 0.5:
            del words[k]
        else:
            words.insert(k, words[k])
    return Record(**{**_fields(record), "solution": " ".join(words)})


def _with_identity(record: Record, seed: int, i: int, sim: dict) -> Record:
    return Record(**{**_fields(record), "id": _row_id(seed, i), "meta": {"sim": {**sim, "row": i}}})


def _fields(record: Record) -> dict:
    return {f: getattr(record, f) for f in record.__slots__}


def main(argv: list[str]) -> None:
    import argparse

    from mathforge.io import write_records

    ap = argparse.ArgumentParser(prog="python -m mathforge.simdata", description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    write_records(args.out, simulated_records(args.n, args.seed, args.data_dir))


if __name__ == "__main__":
    main(sys.argv[1:])
