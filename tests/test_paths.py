from pathlib import Path

import pytest

from mathforge.eval.benchmarks import load_benchmark
from mathforge.io import DataError
from mathforge.paths import REPO_ROOT, data_dir, data_file, repo_path
from mathforge.quality.steps import default_against
from mathforge.synth.pipeline import resolve_spec

SHARED = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory outside the repository, without $MATHFORGE_DATA."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MATHFORGE_DATA", raising=False)
    return tmp_path


def test_explicit_then_environment_then_shared_data(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_dir() == SHARED
    monkeypatch.setenv("MATHFORGE_DATA", str(elsewhere / "env"))
    assert data_dir() == elsewhere / "env"
    assert data_dir(elsewhere / "flag") == elsewhere / "flag"


def test_a_relative_path_is_read_from_the_working_directory_else_the_repository(elsewhere: Path) -> None:
    assert data_dir("../shared/data") == SHARED.resolve()  # how recipes name it
    (elsewhere / "mine").mkdir()
    assert data_dir("mine") == Path("mine")
    assert repo_path("no/such/dir") == Path("no/such/dir")  # neither: as given, so errors name it


def test_seed_specs_follow_the_same_rule(elsewhere: Path) -> None:
    spec = resolve_spec("math:../shared/data/math/math_train.jsonl?limit=4")
    assert spec == f"math:{SHARED.resolve() / 'math' / 'math_train.jsonl'}?limit=4"
    assert resolve_spec("rg:chain_sum?size=3") == "rg:chain_sum?size=3"


def test_a_missing_file_names_the_path_the_flag_and_the_variable(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATHFORGE_DATA", str(elsewhere))
    for load in (lambda: data_file("math/math_test.jsonl"), default_against, lambda: load_benchmark("math")):
        with pytest.raises(DataError) as e:
            load()
        assert all(word in str(e.value) for word in (f"{elsewhere}/", "test.jsonl: ", "--data-dir", "data_dir",
                                                    "MATHFORGE_DATA"))


def test_benchmarks_and_decontamination_read_the_same_folder(elsewhere: Path) -> None:
    assert default_against()[1] == f"math:{SHARED / 'math' / 'math_test.jsonl'}?name=math_test"
    _, records = load_benchmark("math500")
    assert len(records) == 500
