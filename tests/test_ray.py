"""The Ray Data engine gives byte-identical outputs to the local engine (Ray in local mode)."""

import dataclasses
from pathlib import Path

import pytest

from mathforge.io import write_records
from mathforge.quality.steps import run_decontam, run_dedup
from mathforge.sources import load

pytest.importorskip("ray")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AGAINST = [f"gsm8k:{DATA}/gsm8k/test.jsonl?name=gsm8k_test", f"math:{DATA}/math/math_test.jsonl?name=math_test"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real MATH train rows (some overlap MATH test) plus planted exact and near copies."""
    rows = list(load(f"math:{DATA}/math/math_train.jsonl"))[::6][:1000]
    copies = [dataclasses.replace(r, id=f"copy/{r.id}", problem=r.problem.upper()) for r in rows[:20]]
    nears = [dataclasses.replace(r, id=f"near/{r.id}", solution=r.solution.replace(" the ", " a ", 1))
             for r in rows[20:40]]
    path = tmp_path_factory.mktemp("ray") / "data.jsonl"
    write_records(path, rows + copies + nears)
    yield path
    import ray

    ray.shutdown()


def test_decontam_ray_equals_local(tmp_path, data):
    local = run_decontam(data, AGAINST, tmp_path / "local.jsonl", n=30)
    ray = run_decontam(data, AGAINST, tmp_path / "ray.jsonl", n=30, engine="ray", batch_size=300, workers=2)
    assert (tmp_path / "local.jsonl").read_bytes() == (tmp_path / "ray.jsonl").read_bytes()
    assert (tmp_path / "local.removed.jsonl").read_bytes() == (tmp_path / "ray.removed.jsonl").read_bytes()
    assert local["filters"] == ray["filters"] and local["decontam"] == ray["decontam"]
    assert local["filters"][0]["dropped"] > 0


def test_dedup_ray_equals_local(tmp_path, data):
    local = run_dedup(data, tmp_path / "local.jsonl")
    ray = run_dedup(data, tmp_path / "ray.jsonl", engine="ray", workers=2)
    assert (tmp_path / "local.jsonl").read_bytes() == (tmp_path / "ray.jsonl").read_bytes()
    assert (tmp_path / "local.removed.jsonl").read_bytes() == (tmp_path / "ray.removed.jsonl").read_bytes()
    assert local["filters"] == ray["filters"]
    dropped = {f["filter"]: f["dropped_by_reason"] for f in local["filters"]}
    # solutions without " the " make exact copies, the others near copies (a very short one can fall
    # below Jaccard 0.8: one changed word alters three 3-word shingles)
    assert dropped["dedup_exact"]["exact_duplicate"] + dropped["dedup_near"]["near_duplicate"] >= 35
    assert dropped["dedup_near"]["near_duplicate"] >= 5


def test_embeddings_ray_equal_local(data):
    import numpy as np

    from mathforge.embed import embed_texts
    from mathforge.quality import ray_engine

    texts = [r.problem for r in load(f"math:{DATA}/math/math_train.jsonl?limit=8")]
    ray_engine.init()
    assert np.allclose(ray_engine.embed_texts(texts, batch_size=4, workers=1), embed_texts(texts), atol=1e-5)
