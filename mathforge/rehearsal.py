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
import json
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

from mathforge.io import write_json
from mathforge.sim.miniteacher import LEVELS, MiniConfig, model_name

LOG_NAME = "teacher_sim.jsonl"


@dataclass(frozen=True)
class TeacherSimStage:
    """The run's simulated teacher; `world: ""` (the default) starts none."""

    world: str = ""  # "mini": the miniature world's teacher (mathforge.sim.miniteacher)
    levels: tuple[float, ...] = LEVELS  # P(a solution is right) at true levels 1-5
    accuracy: float | None = None  # one P(right) for every level (overrides `levels`): teacher error 1 - accuracy
    verdict_right: float = 0.9
    ill_posed: float = 0.05
    leak: float = 0.01
    seed: int = 0
    median_s: float = 0.0  # latency: none by default (a rehearsal measures the pipeline, not the wire)
    start_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.accuracy is not None and not 0 <= self.accuracy <= 1:
            raise ValueError(f"teacher_sim.accuracy must be in [0, 1] (or null), got {self.accuracy}")

    def mini(self) -> MiniConfig:
        """The simulator's settings: what it is started with and what names its model (the keys see them)."""
        levels = tuple(self.levels) if self.accuracy is None else (self.accuracy,) * len(self.levels)
        return MiniConfig(levels=levels, verdict_right=self.verdict_right, ill_posed=self.ill_posed, leak=self.leak)


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
    mini = sim.mini()
    return [sys.executable, "-m", "mathforge.cli", "teacher-sim", "--world", sim.world, "--port", str(port),
            "--median", str(sim.median_s), "--sigma", "0", "--levels", ",".join(map(str, mini.levels)),
            "--verdict-right", str(mini.verdict_right), "--ill-posed", str(mini.ill_posed), "--leak", str(mini.leak),
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


SHARE_SEED = "share"  # fixed, not the training seed: every seed trains on the same subset, and shares nest


def dataset_parts(spec: str, where: str) -> list[tuple[str, float]]:
    """A stage's dataset `a+b*0.25` as (part, share) pairs: all of `a` and a fixed 25% of `b` (the
    rows whose `hash_fraction(id, SHARE_SEED)` is below the share); a part of share 0 is left out."""
    from mathforge.config import ConfigError

    out = []
    for part in spec.split("+"):
        name, star, text = part.partition("*")
        try:
            share = float(text) if star else 1.0
        except ValueError:
            share = -1.0
        if not name or not 0 <= share <= 1:
            raise ConfigError(f"{where}: dataset '{spec}': part '{part}' must be a name with an optional share "
                              "in [0, 1] (normal_clean*0.25)")
        if share > 0:
            out.append((name, share))
    if not out:
        raise ConfigError(f"{where}: dataset '{spec}': every part has share 0, no data is left")
    return out


def part_name(name: str, share: float) -> str:
    """The part as a key and a folder name see it (`normal_clean@0.25`; a whole part is its name)."""
    return name if share == 1 else f"{name}@{share:g}"


def shared_records(path: str, share: float) -> Iterator[Any]:
    """The rows of dataset `path` that a share keeps, streamed."""
    from mathforge.io import read_records
    from mathforge.record import hash_fraction

    return (r for r in read_records(path) if share == 1 or hash_fraction(r.id, SHARE_SEED) < share)


def union(manifest: dict[str, str], name: str, root: Path) -> str | None:
    """The dataset a stage names as `a+b` or `a+b*0.25` (the paper's stage 2 trains on hard and normal
    data together; a share replays part of one): a folder of links to the parts' shards, in order,
    a part with a share below 1 first written out as its subset (once per subset and source files).
    None for any other name."""
    from mathforge.io import dataset_files

    if ("+" not in name and "*" not in name) or Path(name).exists():
        return None
    parts = dataset_parts(name, f"dataset {name}")
    if any(p not in manifest for p, _ in parts):
        return None
    folders = [manifest[p] if s == 1 else _subset(manifest[p], s, root / "datasets" / part_name(p, s)) for p, s in parts]
    if len(folders) == 1:  # `a*0.25` alone is its subset, `a+b*0` is `a`
        return folders[0]
    out = root / "datasets" / "+".join(part_name(p, s) for p, s in parts)
    out.mkdir(parents=True, exist_ok=True)
    files = [f for folder in folders for f in dataset_files(folder) if f.exists()]
    for stale in out.iterdir():
        stale.unlink()
    for i, f in enumerate(files):
        # relative links: a moved run directory still reads its own shards
        (out / f"part-{i:05d}{f.suffix}").symlink_to(os.path.relpath(f.resolve(), out.resolve()))
    return str(out)


def _subset(source: str, share: float, out: Path) -> str:
    """`source`'s rows kept by `share`, written once as one shard (rewritten when the source's files change)."""
    from mathforge.io import dataset_files, write_records
    from mathforge.rundir import marker_has, step_key, write_marker

    key = step_key(1, {"share": share, "seed": SHARE_SEED}, files=dataset_files(source))  # 1: the subset's format
    if not marker_has(out / "subset.json", key):
        rows = write_records(out / "part-00000.jsonl", shared_records(source, share))
        write_marker(out / "subset.json", key, rows=rows)
    return str(out)


# ---------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class RehearseStage:
    """Student, baseline and oracle trained side by side on the run's data (`rehearse` step).

    student: the recipe's SFT stages on the cleaned synthetic data; baseline: the same student and
    optimizer steps on the seeds' own worked solutions; oracle: as many generator problems as the
    student's stages, with true solutions (the ceiling the synthetic data is measured against).
    One tokenizer, trained once on a fixed corpus, for all three; each training seed draws its own
    initial weights (the same for every arm at that seed, so the arms' differences stay paired).
    """

    enabled: bool = False  # off: the step never starts (pipeline.Step.when)
    train_seeds: tuple[int, ...] = (1, 2)
    workers: int = 2  # runs at once, one process each
    threads: int | None = 1  # torch threads per run (None with workers 1: inline, in this process)
    metric: str = "strict"
    n_boot: int = 1000
    oracle_seed: int = 101
    tokenizer_corpus: str = "mini:train?levels=1-5&size=2000&seed=7"


def truth_audit(rd: Any) -> dict[str, Any]:
    """The truth audit (mathforge.truthaudit) of the kept data, when the run's teacher logged it."""
    from mathforge.io import read_records
    from mathforge.truthaudit import audit, read_log

    path = rd.root / LOG_NAME
    if not path.exists():
        return {}
    log, lines = read_log(path)
    # How the log read (answered, duplicate and torn lines) depends on where a run was killed, not on
    # what it made: beside report.json, so that a killed and resumed run gives the same report.
    write_json(rd.root / "rehearse" / "truth_log.json", lines)
    manifest = rd.manifest()
    kept = (r for n in ("normal_clean", "hard_clean") if n in manifest for r in read_records(manifest[n]))
    written = (r for n in ("normal", "hard") if n in manifest for r in read_records(manifest[n]))
    # The requests answered include ones a killed run had in flight and its rerun no longer needed:
    # a count of the run's history, beside report.json with the other read counts, not in it.
    return {"truth": audit(log, kept, written)}


def report_lines(rd: Any) -> list[str]:
    """report.md's section of the rehearsal, from report.json (written by the `rehearse` step)."""
    path = rd.root / "report.json"
    if not path.exists():
        return []
    rep = json.loads(path.read_text(encoding="utf-8"))

    def cell(f: dict[str, float]) -> str:
        return f"{100 * f['accuracy']:.1f}% [{100 * f['lo']:.1f}, {100 * f['hi']:.1f}]"

    paired, truth = rep["paired"], rep.get("truth", {})
    lines = ["## Rehearsal: student vs baseline vs oracle", "",
             f"{rep['n']} test items ({rep['benchmark']}, {rep['metric']} grader), {rep['samples']} kept samples; "
             "95% intervals over items and training seeds (details: `rehearse/arms/report.md`).", "",
             "| items | student | baseline (seeds only) | oracle (true solutions) |", "|---|---|---|---|"]
    lines += [f"| {label} | {cell(a['student'])} | {cell(a['baseline'])} | {cell(a['oracle'])} |"
              for label, a in rep["per_level"].items()]
    verdict = "above 0: the synthetic data beat the seeds alone" if paired["lo"] > 0 else "not above 0"
    lines += ["", f"Paired difference student - baseline on the same items: {100 * paired['difference']:+.1f} points "
              f"[{100 * paired['lo']:+.1f}, {100 * paired['hi']:+.1f}], {verdict}.", ""]
    if truth:
        log = json.loads((rd.root / "rehearse" / "truth_log.json").read_text(encoding="utf-8"))
        lines += ["### Truth audit (the simulated teacher's log joined with the kept data)", "",
                  f"Coverage: {truth['joined']} of {truth['kept']} kept rows joined to the log by the cache keys of "
                  f"their requests ({100 * (truth['coverage'] or 0):.1f}%); the log's {log['lines']} lines held "
                  f"{log.get('duplicate', 0)} duplicate(s) and {log.get('torn', 0)} torn line(s) "
                  "(a killed run's; the first complete line of a request counts).", "", "```json",
                  json.dumps(truth, indent=1), "```", ""]
    return lines


