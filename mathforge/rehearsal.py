"""A run's own simulated teacher (`teacher_sim:` in a run recipe): the whole recipe rehearsed with no
server started by hand.

`mathforge run` starts `mathforge teacher-sim` as a child process on a free port, points the
synthesis engine at it and stops it when the run ends; the child also dies with the run when the
run is killed (Linux's parent-death signal). The simulator's settings name the model the engine's
cache and the steps' keys see (`mini-sim@<hash>`); its port never does, so a rerun reuses every
answer. The simulator's log (`teacher_sim.jsonl` in the run directory) holds the truth the audit
joins, keyed by the engine's cache keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathforge.engine.miniteacher import LEVELS, MiniConfig, model_name

LOG_NAME = "teacher_sim.jsonl"


@dataclass(frozen=True)
class TeacherSimStage:
    """The run's simulated teacher; `world: ""` (the default) starts none."""

    world: str = ""  # "mini": the miniature world's teacher (mathforge.engine.miniteacher)
    levels: tuple[float, ...] = LEVELS  # P(a solution is right) at true levels 1-5
    verdict_right: float = 0.9
    ill_posed: float = 0.05
    leak: float = 0.01
    seed: int = 0
    median_s: float = 0.0  # latency: none by default (a rehearsal measures the pipeline, not the wire)
    start_timeout_s: float = 60.0

    def mini(self) -> MiniConfig:
        return MiniConfig(levels=tuple(self.levels), verdict_right=self.verdict_right, ill_posed=self.ill_posed,
                          leak=self.leak)


def resolved(cfg: Any) -> Any:
    """The run config as its keys see it: with a simulated teacher, the synthesis engine is that
    teacher under its settings' model name (no URL: the port is not part of any key)."""
    sim = cfg.teacher_sim
    if not sim.world:
        return cfg
    engine = {**cfg.synth.engine, "backend": "openai", "model": model_name(sim.mini(), sim.seed)}
    return dataclasses.replace(cfg, synth=dataclasses.replace(cfg.synth, engine=engine))


@contextlib.contextmanager
def teacher(cfg: Any, root: Path) -> Iterator[Any]:
    """The run config to execute with: `cfg` itself, or with a live simulated teacher's URL."""
    sim = cfg.teacher_sim
    if not sim.world:
        yield cfg
        return
    port, err = _free_port(), root / "teacher_sim.err"
    root.mkdir(parents=True, exist_ok=True)
    with open(err, "ab") as sink:  # a file, not a pipe: a pipe nobody reads would block the child
        proc = subprocess.Popen(_command(sim, port, root / LOG_NAME), stdout=subprocess.DEVNULL, stderr=sink,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        _wait_ready(proc, port, sim.start_timeout_s, err)
        engine = {**cfg.synth.engine, "base_url": f"http://127.0.0.1:{port}/v1"}
        yield dataclasses.replace(cfg, synth=dataclasses.replace(cfg.synth, engine=engine))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _command(sim: TeacherSimStage, port: int, log: Path) -> list[str]:
    return [sys.executable, "-m", "mathforge.cli", "teacher-sim", "--world", sim.world, "--port", str(port),
            "--median", str(sim.median_s), "--sigma", "0", "--levels", ",".join(map(str, sim.levels)),
            "--verdict-right", str(sim.verdict_right), "--ill-posed", str(sim.ill_posed), "--leak", str(sim.leak),
            "--seed", str(sim.seed), "--log", str(log)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies, even by SIGKILL."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl: nobody will use this teacher
        os._exit(0)


def _wait_ready(proc: subprocess.Popen, port: int, timeout_s: float, err: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            last = err.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"teacher_sim: the simulated teacher exited ({proc.returncode}): {' '.join(last)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"teacher_sim: the simulated teacher did not answer within {timeout_s:.0f} s")


def union(manifest: dict[str, str], name: str, root: Path) -> str | None:
    """The dataset a stage names as `a+b` (the paper's stage 2 trains on hard and normal data
    together): a folder of links to the parts' shards, in order; None for any other name."""
    from mathforge.io import dataset_files

    parts = name.split("+")
    if len(parts) < 2 or any(p not in manifest for p in parts):
        return None
    out = root / "datasets" / name
    out.mkdir(parents=True, exist_ok=True)
    files = [f for p in parts for f in dataset_files(manifest[p]) if f.exists()]
    for stale in out.iterdir():
        stale.unlink()
    for i, f in enumerate(files):
        (out / f"part-{i:05d}{f.suffix}").symlink_to(f.resolve())
    return str(out)
