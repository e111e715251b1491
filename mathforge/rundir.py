"""Run directories and keyed steps: the one mechanism every depth of mathforge resumes with.

Layout of a run directory (the same at every depth: `mathforge run`'s folder, and the nested
`synth/` and `train/` folders of its steps, are each one)::

    <run>/
      config.yaml           the resolved config (recipe + overrides + defaults)
      steps/<step>.json     the step's marker: its key, what the key was made of, running or done
      stats/<step>.json     the step's statistics (complete when its marker says done)
      manifest.json         dataset names -> paths, relative to the run directory
      logs/run.log          human-readable log
      <outputs>             whatever the steps write (see each step)

A step is keyed by `step_key`, the one hasher: its declared version (bumped when the step's output
changes), the config fields it reads (less those in `UNKEYED`, which cannot change an output), the
keys of the steps it reads from, and the size and mtime of the external files it reads. `run_step`
skips a step whose marker is done with the same key, resumes one that was killed with the same key,
and resets (through the step's `reset`) one whose key changed before running it again. Everything is
relative to the run directory, so a moved run directory still resumes. `plan_lines` compares keys
with markers without running anything: the `--dry-run` of every command.

Outputs inside a run directory are fixed paths per step, not folders per key: a changed step
replaces its outputs, and the request cache (keyed by request) makes its rerun cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathforge.config import config_to_dict, dump_yaml
from mathforge.io import write_json, write_text

# Fields that decide where or how fast a step runs, never what it writes: outside every key.
UNKEYED = frozenset({
    "base_url", "api_key_env", "concurrency", "rpm", "tpm", "timeout_s", "max_retries", "backoff_base_s",
    "backoff_max_s", "http", "progress", "prices", "n_threads", "workers", "threads", "executor",
    "num_proc", "data_cache", "logging_steps", "report_to", "save_steps", "save_total_limit",
    "batch_max_requests", "batch_max_bytes", "batch_settle_s", "batch_poll_s", "batch_poll_max_s", "batch_window",
    "batch_discount", "batch_export_dir", "median_s", "start_timeout_s",
})


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class StepSpec:
    """What a step's key is made of: version, config fields read, upstream keys, external files."""

    version: int
    fields: dict[str, Any] = field(default_factory=dict)  # dotted name -> plain value
    after: dict[str, str] = field(default_factory=dict)  # upstream step -> its key
    files: dict[str, list[Any]] = field(default_factory=dict)  # name -> [size, mtime_ns]

    @property
    def key(self) -> str:
        blob = json.dumps([self.version, self.fields, self.after, self.files], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, **dataclasses.asdict(self)}


def step_spec(version: int, config: Any = None, prefix: str = "", after: dict[str, str] | None = None,
              files: Iterable[Path] = ()) -> StepSpec:
    """The spec of a step reading `config` (a dataclass, a mapping or a plain value, its fields
    named under `prefix`), after the steps in `after`, from the external `files`."""
    return StepSpec(version, keyed_fields(config, prefix), dict(after or {}), file_stamps(files))


def step_key(version: int, config: Any = None, after: dict[str, str] | None = None, files: Iterable[Path] = ()) -> str:
    """The key alone (rows of a study, tokenised sets, cleaning shards: see `step_spec`)."""
    return step_spec(version, config, after=after, files=files).key


def keyed_fields(config: Any, prefix: str = "") -> dict[str, Any]:
    """`config` flattened to dotted names (lists of mappings indexed, `stages[1].lr`), less `UNKEYED`."""
    plain = config_to_dict(config) if dataclasses.is_dataclass(config) else config
    out: dict[str, Any] = {}
    _flatten(plain, prefix, out)
    return out


def _flatten(value: Any, name: str, out: dict[str, Any]) -> None:
    if dataclasses.is_dataclass(value):
        value = config_to_dict(value)
    if isinstance(value, dict) and value:
        for k, v in value.items():
            if k not in UNKEYED:
                _flatten(v, f"{name}.{k}" if name else str(k), out)
    elif isinstance(value, list | tuple) and value and all(isinstance(v, dict) or dataclasses.is_dataclass(v)
                                                          for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{name}[{i}]", out)
    elif name:
        out[name] = list(value) if isinstance(value, tuple) else value


def file_stamps(files: Iterable[Path]) -> dict[str, list[Any]]:
    """Size and mtime of each file by name: content changes show, a moved folder keeps its stamps
    (hashing content would cost more than the rerun it saves at 2.5M records)."""
    out = {}
    for path in files:
        st = Path(path).stat()
        out[Path(path).name if Path(path).name not in out else str(path)] = [st.st_size, st.st_mtime_ns]
    return out


def combined_key(version: int, keys: dict[str, str]) -> str:
    """The key of a step made of nested steps: unchanged exactly when every nested key is."""
    return StepSpec(version, after=keys).key


# ---------------------------------------------------------------- markers


def read_marker(path: Path) -> dict[str, Any] | None:
    """A marker's JSON (None when missing or torn)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def marker_has(path: Path, key: str) -> bool:
    """The marker at `path` is done with `key` (also for shard markers of cleaning)."""
    marker = read_marker(path)
    return bool(marker) and marker.get("key") == key and marker.get("state", "done") == "done"


def write_marker(path: Path, key: str, **extra: Any) -> None:
    write_json(path, {"key": key, "state": "done", **extra})


def changes(old: dict[str, Any] | None, new: StepSpec) -> list[str]:
    """Why `new` differs from the marker `old`: changed fields, upstream steps, files, version."""
    if old is None:
        return ["not run yet"]
    if "fields" not in old:
        return ["made by an older mathforge"]
    why = [f"version {old.get('version')} -> {new.version}"] if old.get("version") != new.version else []
    fields = old.get("fields") or {}
    why += [f"{k}: {_short(fields.get(k))} -> {_short(new.fields.get(k))}"
            for k in sorted(set(fields) | set(new.fields)) if fields.get(k) != new.fields.get(k)]
    why += [f"{k} changed" for k in sorted(set(old.get("after") or {}) | set(new.after))
            if (old.get("after") or {}).get(k) != new.after.get(k)]
    why += [f"file {k} changed" for k in sorted(set(old.get("files") or {}) | set(new.files))
            if (old.get("files") or {}).get(k) != new.files.get(k)]
    if not why and old.get("state") != "done":
        why = ["interrupted: resumes"]
    return why


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- run directories


class RunDir:
    """A run directory; see the module docstring for its layout."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in ("steps", "stats", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.log = _file_logger(self.root / "logs" / "run.log")
        if (self.root / "stages").is_dir() and not any((self.root / "steps").iterdir()):
            self.log.warning("run directory made by an older mathforge (stages/ markers): its steps run once again")
            print(f"note: {self.root} was made by an older mathforge: its steps run once again", flush=True)

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_config(self, cfg: Any) -> None:
        """Write the resolved config; a changed config on rerun is logged, the old one kept aside."""
        target = self.root / "config.yaml"
        text = dump_yaml(cfg)
        if target.exists() and target.read_text(encoding="utf-8") != text:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            target.rename(self.root / f"config.{stamp}.yaml")
            self.log.warning("config changed since the last run; previous one saved as config.%s.yaml", stamp)
        write_text(target, text)

    def marker(self, step: str) -> dict[str, Any] | None:
        return read_marker(self._marker_path(step))

    def is_done(self, step: str, key: str | None = None) -> bool:
        """The step finished, with this key (None: whatever key it had)."""
        marker = self.marker(step)
        return bool(marker) and marker.get("state") == "done" and (key is None or marker.get("key") == key)

    def stats(self, step: str) -> dict[str, Any]:
        """The stats of a finished step ({} when it has not finished)."""
        path = self.root / "stats" / f"{step}.json"
        return json.loads(path.read_text(encoding="utf-8")) if self.is_done(step) and path.exists() else {}

    def run_step(self, step: str, spec: StepSpec, fn: Callable[[], dict[str, Any]],
                 reset: Callable[[], None] | None = None, writer: bool = True) -> dict[str, Any]:
        """Run `fn` unless `step` already finished with `spec`'s key; a changed key first calls
        `reset` (the step's outputs, counters and checkpoints of the old key must not be resumed).
        `writer=False`: a process of a distributed job other than the main one runs `fn` alongside
        it and writes nothing."""
        if not writer:
            return self.stats(step) if self.is_done(step, spec.key) else dict(fn() or {})
        with self._lock(step):
            if self.is_done(step, spec.key):
                self.log.info("step %s: already done, skipped", step)
                return self.stats(step)
            start = self._begin(step, spec, reset)
            return self._finish(step, spec, dict(fn() or {}), start)

    async def arun_step(self, step: str, spec: StepSpec, make: Callable[[], Awaitable[dict[str, Any]]],
                        reset: Callable[[], None] | None = None) -> dict[str, Any]:
        """`run_step` for a coroutine (synthesis's stages run at once on one event loop)."""
        if self.is_done(step, spec.key):
            self.log.info("step %s: already done, skipped", step)
            return self.stats(step)
        start = self._begin(step, spec, reset)
        return self._finish(step, spec, dict(await make() or {}), start)

    def _begin(self, step: str, spec: StepSpec, reset: Callable[[], None] | None) -> float:
        old = self.marker(step)
        if old is not None and old.get("key") != spec.key:
            self.log.info("step %s: changed (%s), running again", step, "; ".join(changes(old, spec)))
            if reset:
                reset()
        elif old is not None:
            self.log.info("step %s: interrupted, resuming", step)
        (self.root / "stats" / f"{step}.json").unlink(missing_ok=True)
        write_json(self._marker_path(step), {**spec.to_dict(), "state": "running"})
        self.log.info("step %s: started", step)
        return time.time()

    def _finish(self, step: str, spec: StepSpec, stats: dict[str, Any], start: float) -> dict[str, Any]:
        stats["seconds"] = round(time.time() - start, 3)
        write_json(self.root / "stats" / f"{step}.json", stats)
        write_json(self._marker_path(step), {**spec.to_dict(), "state": "done"})  # last: the stats are complete
        self.log.info("step %s: done in %.1fs", step, stats["seconds"])
        return stats

    @contextlib.contextmanager
    def _lock(self, step: str) -> Iterator[None]:
        """One builder per step: a second process waits, then finds the step done."""
        with open(self.path("steps", f"{step}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _marker_path(self, step: str) -> Path:
        return self.root / "steps" / f"{step}.json"

    def manifest(self) -> dict[str, str]:
        """Dataset names -> absolute paths (stored relative to the run directory)."""
        path = self.root / "manifest.json"
        stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        return {name: str(self.root / p) if not Path(p).is_absolute() else p for name, p in stored.items()}

    def register(self, datasets: dict[str, str]) -> None:
        """Add (or replace) named datasets in the manifest."""
        path = self.root / "manifest.json"
        stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        write_json(path, {**stored, **{name: self.relative(p) for name, p in datasets.items()}})

    def relative(self, path: str | Path) -> str:
        """`path` relative to the run directory when inside it (so a moved run directory resumes)."""
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


# ---------------------------------------------------------------- dry runs


@dataclass(frozen=True)
class Planned:
    """One step of a dry run: where its marker lives, its spec, and whether data decides it."""

    name: str  # shown name, e.g. "synth/stage1_initial"
    rundir: Path
    step: str  # the marker's name inside `rundir`
    spec: StepSpec
    note: str = ""  # e.g. "count known after clean_hard"


def plan_lines(steps: Sequence[Planned]) -> list[str]:
    """One line per step: run or reuse, and why it runs (nothing is executed)."""
    width = max((len(p.name) for p in steps), default=4)
    lines = []
    for p in steps:
        old = read_marker(p.rundir / "steps" / f"{p.step}.json")
        done = bool(old) and old.get("state") == "done" and old.get("key") == p.spec.key
        why = "" if done else "; ".join(changes(old, p.spec))
        note = f" ({p.note})" if p.note else ""
        lines.append(f"{p.name:<{width}}  {'reuse' if done else 'run  '}  {why}{note}".rstrip())
    return lines


def to_run(steps: Sequence[Planned]) -> list[str]:
    """The names of the planned steps that would run."""
    out = []
    for p in steps:
        old = read_marker(p.rundir / "steps" / f"{p.step}.json")
        if not (old and old.get("state") == "done" and old.get("key") == p.spec.key):
            out.append(p.name)
    return out


def _file_logger(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"mathforge.run.{path.parent.parent.resolve()}")
    if not logger.handlers:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
