"""Shared fixtures: a real llama.cpp OpenAI-compatible server (started once per
session), and a scripted fault-injection server (one per test, so its counts are the test's own)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> str:
    """Base URL (`http://127.0.0.1:PORT/v1`) of `python -m llama_cpp.server` with the SmolLM2 GGUF."""
    pytest.importorskip("llama_cpp.server")
    from mathforge.models import smollm2_gguf

    port = free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm2_gguf()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--model_alias",
        "smollm2",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(f"{url}/models", proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"llama.cpp server not ready after {limit_s}s:\n{log.read_text()[-2000:]}")


@pytest.fixture
def mock_server():
    """A fresh scripted OpenAI-compatible server; yields the MockServer (its `.url` is the base URL)."""
    from mathforge.sim.mockserver import MockServer

    server = MockServer(latency=0.005, slow_s=5.0, retry_after=0.3)
    server.url = server.start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def test_sets():
    """GSM8K test and MATH test as records: the evaluation sets decontamination protects."""
    from mathforge.sources import load

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    return {
        "gsm8k_test": list(load(f"gsm8k:{data}/gsm8k/test.jsonl?allow_test=1")),
        "math_test": list(load(f"math:{data}/math/math_test.jsonl?allow_test=1")),
    }


# The miniature run every pipeline-level test starts from: the offline recipe, cut to seconds.
# Every augmentation method is exercised by the synthesis tests; here the two the SmolLM2 teacher
# passes most often keep the run short, since these tests are about the steps around synthesis.
MINI_RUN_OVERRIDES = [
    "synth.mix={metamath/answer_aug: 1, metamath/rephrase: 0, metamath/fobar: 1, metamath/self_verify: 0, evol: 0, xwin: 0}", "synth.max_passes=2",
    "synth.stage1.initial_target=4", "synth.stage1.coreset_budget=2", "synth.stage1.target=3",
    "synth.stage2.target=3", "synth.sampling.solve_max_tokens=128", "synth.sampling.question_max_tokens=64",
    "train.max_steps=3", "eval.limit=2", "eval.settings.max_tokens=24",
]


@pytest.fixture(scope="session")
def mini_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished miniature `mathforge run` (session-wide; tests that change it work on a copy made
    with `copy_run`) and the command-line arguments that made it, less `--out`."""
    pytest.importorskip("llama_cpp")
    from typer.testing import CliRunner

    from mathforge.cli import app

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("mini_run") / "run"
    args = ["run", str(repo / "recipes" / "offline.yaml"), *MINI_RUN_OVERRIDES]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, args


def copy_run(run: Path, target: Path) -> Path:
    """A copy of a run directory elsewhere (mtimes and links kept, as `mv` or `cp -a` would)."""
    import shutil

    shutil.copytree(run, target, symlinks=True)
    return target
