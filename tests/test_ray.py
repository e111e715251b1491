"""The single-step commands on the Ray executor give byte-identical outputs to the local one (Ray in
local mode), and records never pass through the driver: the executor hands back stats dicts only."""

import dataclasses
import json
from pathlib import Path

import pytest

from mathforge.executor import RayExecutor
from mathforge.io import write_records
from mathforge.quality.steps import embed_shards, run_decontam, run_dedup
from mathforge.record import Record
from mathforge.sources import load

pytest.importorskip("ray")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AGAINST = [f"gsm8k:{DATA}/gsm8k/test.jsonl?name=gsm8k_test", f"math:{DATA}/math/math_test.jsonl?name=math_test"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real MATH train rows (some overlap MATH test) plus planted exact and near copies."""
    rows = list(load(f"math:{DATA}/math/math_train.jsonl"))[::6][:400]
    copies = [dataclasses.replace(r, id=f"copy/{r.id}", problem=r.problem.upper()) for r in rows[:20]]
    nears = [dataclasses.replace(r, id=f"near/{r.id}", solution=r.solution.replace(" the ", " a ", 1))
             for r in rows[20:40]]
    path = tmp_path_factory.mktemp("ray") / "data.jsonl"
    write_records(path, rows + copies + nears)
    yield path
    import ray

    ray.shutdown()


@pytest.fixture
def watch(monkeypatch):
    """Once called: fails the test if the driver parses a record or a Ray task returns more than a
    stats dict; returns the list of the tasks' results."""
    results = []
    ray_map = RayExecutor.map

    def watched(self, fn, tasks, label):
        for result in ray_map(self, fn, tasks, label):
            assert isinstance(result, dict) and len(json.dumps(result)) < 20_000  # stats, not rows
            results.append(result)
            yield result

    def boom(*args, **kwargs):
        raise AssertionError("a record was materialised on the driver")

    def start() -> list[dict]:
        monkeypatch.setattr(RayExecutor, "map", watched)
        monkeypatch.setattr(Record, "from_dict", boom)  # in this process only, not in Ray's workers
        return results

    return start


def outputs(tmp_path: Path, stem: str) -> list[bytes]:
    return [(tmp_path / f"{stem}{suffix}").read_bytes() for suffix in (".jsonl", ".removed.jsonl")]


def test_decontam_ray_equals_local(tmp_path, data, watch):
    local = run_decontam(data, AGAINST, tmp_path / "local.jsonl", workers=1, shard_rows=150)
    results = watch()
    ray = run_decontam(data, AGAINST, tmp_path / "ray.jsonl", engine="ray", workers=2, shard_rows=150)
    assert outputs(tmp_path, "local") == outputs(tmp_path, "ray")
    assert local["filters"] == ray["filters"] and local["decontam"] == ray["decontam"]
    assert local["filters"][0]["dropped"] > 0
    assert len(results) == 3 * 3  # scan, filter, select: one stats dict per shard each
    assert not (tmp_path / "ray.jsonl.work").exists()


def test_dedup_ray_equals_local(tmp_path, data, watch):
    local = run_dedup(data, tmp_path / "local.jsonl", workers=1, shard_rows=150)
    results = watch()
    ray = run_dedup(data, tmp_path / "ray.jsonl", engine="ray", workers=2, shard_rows=150)
    assert outputs(tmp_path, "local") == outputs(tmp_path, "ray")
    assert local["filters"] == ray["filters"]
    dropped = {f["filter"]: f["dropped_by_reason"] for f in local["filters"]}
    # solutions without " the " make exact copies, the others near copies (a very short one can fall
    # below Jaccard 0.8: one changed word alters three 3-word shingles)
    assert dropped["dedup_exact"]["exact_duplicate"] + dropped["dedup_near"]["near_duplicate"] >= 35
    assert dropped["dedup_near"]["near_duplicate"] >= 5
    assert results and all("rows" in r for r in results)


def test_embeddings_ray_equal_local(tmp_path, data):  # `data`: shuts Ray down after the module
    import numpy as np

    from mathforge.embed import embed_texts

    path = tmp_path / "rows.jsonl"
    rows = list(load(f"math:{DATA}/math/math_train.jsonl?limit=8"))
    write_records(path, rows)
    on_ray = embed_shards(path, tmp_path / "work", None, "ray", 1, shard_rows=4)
    assert np.allclose(on_ray, embed_texts([r.problem for r in rows]), atol=1e-5)
