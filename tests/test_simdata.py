"""The simulated-records generator: deterministic per row, unique texts, planted duplicates marked."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mathforge.answers import answer_line
from mathforge.simdata import simulated_records

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def test_rows_are_deterministic_and_independent_of_where_generation_starts():
    whole = list(simulated_records(600, seed=3, data_dir=DATA))
    tail = list(simulated_records(600, seed=3, data_dir=DATA, start=400))
    assert [r.to_dict() for r in whole[400:]] == [r.to_dict() for r in tail]
    assert [r.id for r in simulated_records(50, seed=4, data_dir=DATA)] != [r.id for r in whole[:50]]


def test_unique_texts_planted_duplicates_and_answer_lines():
    rows = list(simulated_records(3000, data_dir=DATA))
    kinds = Counter(r.meta["sim"]["kind"] for r in rows)
    assert 0.005 < kinds["exact"] / len(rows) < 0.02 and 0.035 < kinds["near"] / len(rows) < 0.065
    unique = [(r.problem, r.solution) for r in rows if r.meta["sim"]["kind"] == "unique"]
    assert len(set(unique)) == len(unique)
    by_id = {r.id: r for r in rows}
    for r in rows:
        assert answer_line(r.solution) == r.answer and r.lineage.seed_id and len({r.id}) == 1
        if r.meta["sim"]["kind"] == "exact":
            original = by_id[r.meta["sim"]["dup_of"]]
            assert (r.problem, r.solution) == (original.problem, original.solution) and r.id != original.id
        if r.meta["sim"]["kind"] == "near":
            original = by_id[r.meta["sim"]["dup_of"]]
            assert r.problem == original.problem and r.solution != original.solution
    assert len(by_id) == len(rows)
