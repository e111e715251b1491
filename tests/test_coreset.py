"""k-center greedy: the k-center property on real embeddings and on random data, agreement with
the plain NumPy loop, coverage report, given initial centres, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.oracles import k_center_greedy_numpy
from mathforge.quality.coreset import k_center_greedy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def math_vectors() -> np.ndarray:
    from mathforge.embed import embed_texts
    from mathforge.sources import load

    problems = [r.problem for r in load(f"math:{DATA / 'math' / 'math_train.jsonl'}?limit=150")]
    return embed_texts(problems)


def assert_k_center(x: np.ndarray, picks: np.ndarray) -> None:
    """Each pick after the first is a farthest point from the picks before it."""
    x64 = x.astype(np.float64)
    min_d = np.linalg.norm(x64 - x64[picks[0]], axis=1)
    for p in picks[1:]:
        assert min_d[p] >= min_d.max() - 1e-4, "pick is not the farthest point from the chosen set"
        min_d = np.minimum(min_d, np.linalg.norm(x64 - x64[p], axis=1))
    assert len(set(picks.tolist())) == len(picks)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_k_center_property_on_real_embeddings(math_vectors, chunk, backend):
    result = k_center_greedy(math_vectors, 40, seed=3, chunk_size=chunk, backend=backend)
    assert result.report["backend"] == backend
    assert_k_center(math_vectors, result.indices)
    assert result.indices.tolist() == k_center_greedy_numpy(math_vectors, 40, seed=3).tolist()


def test_k_center_property_on_clustered_and_random_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 10
    clustered = (centres[rng.integers(5, size=500)] + rng.normal(size=(500, 16))).astype(np.float32)
    picks = k_center_greedy(clustered, 5, seed=1).indices
    assert_k_center(clustered, picks)
    # Five well-separated clusters: the five picks land in five different clusters.
    labels = np.argmin(((clustered[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert len(set(labels[picks].tolist())) == 5
    uniform = rng.random((400, 8)).astype(np.float32)
    assert_k_center(uniform, k_center_greedy(uniform, 30).indices)


def test_coverage_report_before_after_and_random(math_vectors):
    report = k_center_greedy(math_vectors, 30, seed=0).report
    assert report["k"] == 30 and report["n"] == len(math_vectors) and report["device"] == "cpu"
    other = k_center_greedy(math_vectors, 30, seed=0, backend="torch").report
    for part in ("before", "after", "random"):
        assert report[part] == pytest.approx(other[part], abs=1e-4)
    assert report["after"]["max_dist"] < report["before"]["max_dist"]
    assert report["after"]["mean_dist"] < report["before"]["mean_dist"]
    # The point of k-center: a smaller covering radius than k random points.
    assert report["after"]["max_dist"] <= report["random"]["max_dist"]


def test_seed_picks_the_first_centre_and_is_reproducible(math_vectors):
    a = k_center_greedy(math_vectors, 10, seed=5).indices
    assert a.tolist() == k_center_greedy(math_vectors, 10, seed=5).indices.tolist()
    assert a[0] != k_center_greedy(math_vectors, 10, seed=6).indices[0]


def test_initial_centres_count_as_chosen(math_vectors):
    first = k_center_greedy(math_vectors, 10, seed=0).indices
    for backend in ("numpy", "torch"):
        rest = k_center_greedy(math_vectors, 5, initial=first[:5].tolist(), backend=backend).indices
        assert rest.tolist() == first[5:].tolist()


@pytest.mark.parametrize(("shape", "k", "initial"), [((0, 4), 1, ()), ((5, 4), 0, ()), ((5, 4), 6, ()),
                                                      ((5, 4), 5, (0,)), ((5,), 1, ())])
def test_bad_input_is_an_error(shape, k, initial):
    with pytest.raises(ValueError):
        k_center_greedy(np.zeros(shape, dtype=np.float32), k, initial=initial)


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="backend"):
        k_center_greedy(np.ones((3, 2), dtype=np.float32), 1, backend="faiss")


def test_vectors_embedded_per_shard_ahead_give_the_picks_of_embedding_at_once(tmp_path):
    """Shards embedded by the helper process as they are written, plus a shard rewritten after a kill
    (stale vectors) and one never handed over (both embedded by `problem_vectors`), give the same
    vectors and k-center picks as the whole id-sorted set embedded in one call, as before."""
    from mathforge.embed import embed_texts
    from mathforge.io import read_records, shard_name, write_records
    from mathforge.quality.coreset import ShardEmbedder, problem_vectors, vectors_path
    from mathforge.sources import load

    recs = list(load(f"math:{DATA / 'math' / 'math_train.jsonl'}?limit=40"))
    folder = tmp_path / "stage1" / "initial"
    embedder = ShardEmbedder(None, 16)
    embedder(folder / shard_name(0), last=True)
    assert embedder.pool is None  # a one-shard stage starts no helper
    for i in range(3):
        write_records(folder / shard_name(i), recs[i * 10 : (i + 1) * 10])
        embedder(folder / shard_name(i), last=i == 2)
    assert embedder.finish() == [] and all(vectors_path(folder / shard_name(i)).exists() for i in range(3))
    assert not list(folder.glob("*.npz"))  # the dataset folder holds record shards only
    write_records(folder / shard_name(2), recs[30:40])  # rewritten on resume with other rows
    write_records(folder / shard_name(3), recs[:3])  # never handed over; repeats problems
    ordered = list({r.problem: r for r in sorted(read_records(folder), key=lambda r: r.id)}.values())
    assert {r.problem for r in ordered} == {r.problem for r in recs[:20] + recs[30:]}
    vectors = problem_vectors(folder, [r.problem for r in ordered], None, 16)
    at_once = embed_texts([r.problem for r in ordered])
    np.testing.assert_allclose(vectors, at_once, atol=1e-5)
    assert (k_center_greedy(vectors, 8).indices == k_center_greedy(at_once, 8).indices).all()


HELPER_PARENT = """
import sys, time
from pathlib import Path
from mathforge.io import write_records
from mathforge.record import Record
from mathforge.quality.coreset import ShardEmbedder

if __name__ == "__main__":
    shard = Path(sys.argv[1])
    write_records(shard, [Record(id="a", problem="What is 2 + 2?", source="test")])
    embedder = ShardEmbedder(None, 16)
    embedder(shard, last=False)
    print(*embedder.pool._processes, flush=True)
    time.sleep(600)
"""


def test_the_helper_exits_when_the_synthesis_process_is_killed(tmp_path):
    """A SIGKILLed synthesis leaves no embedding helper behind (it would wait on its pipe for ever)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(HELPER_PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path / "initial" / "part-00000.jsonl")],
                              stdout=subprocess.PIPE, text=True)
    helper = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def alive() -> bool:
        try:
            return Path(f"/proc/{helper}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    still = alive()
    if still:
        os.kill(helper, signal.SIGKILL)
    assert not still
