"""Dedup on real MATH train rows with planted exact and near copies."""

import dataclasses
import random
from pathlib import Path

import pytest

from bench.oracles import dedup
from mathforge.filters import FilterStats, apply_filter
from mathforge.quality.dedup import ExactDedup, NearDedup, NearDedupConfig, near_duplicate
from mathforge.record import Record
from mathforge.sources import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def rows():
    return list(load(f"math:{DATA}/math/math_train.jsonl?limit=600"))


class Collect(list):
    def write(self, record: Record) -> None:
        self.append(record)


def _edit(rng: random.Random, text: str, changes: int) -> str:
    ws = text.split()
    for _ in range(changes):
        ws[rng.randrange(len(ws))] = rng.choice(["thus", "hence", "so", "now"])
    return " ".join(ws)


def _copy(record: Record, i: int, **fields) -> Record:
    return dataclasses.replace(record, id=f"copy-{i}-{record.id}", **fields)


def test_planted_exact_and_near_duplicates_are_found_and_name_the_kept_row(rows):
    rng = random.Random(0)
    originals = rng.sample(rows, 60)
    exact = [_copy(r, i, problem=r.problem.upper().replace(" ", "  \n")) for i, r in enumerate(originals[:30])]
    near = [_copy(r, i, solution=_edit(rng, r.solution, 2)) for i, r in enumerate(originals[30:])
            if len(r.solution.split()) > 60]
    data = rows + exact + near
    rejects, stats = Collect(), []
    kept = list(dedup(data, rejects=rejects, stats=stats))
    dropped = {r.id: r.meta["rejected"]["reason"] for r in rejects}
    for copy in exact:
        assert dropped[copy.id] == f"exact_duplicate:{copy.id.split('-', 2)[2]}"
    for copy in near:
        reason = dropped[copy.id]
        assert reason.startswith(f"near_duplicate:{copy.id.split('-', 2)[2]} (jaccard ")
    assert {r.id for r in originals} <= {r.id for r in kept}
    planted = {c.id for c in exact + near}
    assert len(set(dropped) - planted) <= 3  # MATH train itself holds at most a few near copies
    assert [s.name for s in stats] == ["dedup_exact", "dedup_near"]
    assert stats[0].to_dict()["dropped_by_reason"] == {"exact_duplicate": len(exact)}


def test_the_pair_check_synthesis_uses_agrees_with_the_minhash_filter(rows):
    """`near_duplicate` (exact Jaccard, for rejection sampling's few kept solutions) and `NearDedup`
    (MinHash) are one definition: they decide the same on planted copies and on unrelated rows."""
    rng = random.Random(1)
    originals = [r for r in rng.sample(rows, 80) if len(r.solution.split()) > 60][:20]
    for i, r in enumerate(originals):
        for changes, expected in ((1, True), (40, False)):
            copy = _copy(r, i, solution=_edit(rng, r.solution, changes))
            flt = NearDedup()
            flt.decide(r)
            assert near_duplicate(copy, [r]) == expected == (flt.decide(copy) is not None), (r.id, changes)
    assert not near_duplicate(originals[0], originals[1:])


@pytest.mark.parametrize("threshold, changes, caught", [
    (0.8, 2, True),
    (0.8, 40, False),
    (0.95, 8, False),
    (0.5, 8, True),
])
def test_near_threshold_is_configurable(rows, threshold, changes, caught):
    rng = random.Random(1)
    original = next(r for r in rows if len(r.solution.split()) > 120)
    copy = _copy(original, 0, solution=_edit(rng, original.solution, changes))
    flt = NearDedup(NearDedupConfig(threshold=threshold))
    assert flt.decide(original) is None
    assert (flt.decide(copy) is not None) == caught


def test_same_problem_different_solutions_are_not_duplicates_unless_asked(rows):
    a = rows[0]
    b = _copy(a, 1, solution="A different worked solution. The answer is 7")
    kept = list(apply_filter([a, b], ExactDedup(), FilterStats("x")))
    assert len(kept) == 2
    assert ExactDedup(fields=("problem",)).decide(a) is None
    by_problem = ExactDedup(fields=("problem",))
    by_problem.decide(a)
    assert by_problem.decide(b) == f"exact_duplicate:{a.id}"


def test_signer_matches_datasketch_value_for_value():
    from mathforge.quality.dedup import NearDedup, Signer
    from mathforge.simdata import simulated_records

    rows = list(simulated_records(200, data_dir=Path(__file__).resolve().parents[2] / "shared" / "data"))
    rows.append(Record(id="short", source="s", problem="Hi"))  # fewer words than a shingle
    keys, sigs, bands = Signer().sign(rows)
    reference = NearDedup()
    assert all((sigs[i] == reference.signature(r)).all() for i, r in enumerate(rows))
    assert bands.shape == (len(rows), Signer().bands) and len(set(keys.tolist())) <= len(rows)
    exact = [r for r in rows if r.meta.get("sim", {}).get("kind") == "exact"]
    assert exact and all(keys[rows.index(r)] in keys[: rows.index(r)] for r in exact)
