"""Run directories: one folder per run holding its resolved config, per-stage stats, outputs and logs.

Layout::

    runs/<name>/
      config.yaml          the resolved config (recipe + overrides + defaults)
      stages/<stage>.done  completion marker: the stage's key, as JSON
      stats/<stage>.json   the stage's statistics
      manifest.json        dataset names -> paths (a record file or a folder of shards)
      logs/run.log         human-readable log
      <outputs>            whatever the stages write

A stage is skipped on rerun when its marker exists with the same key (a hash of the stage's
resolved config and of its inputs' keys, made by the caller); a changed key runs it again, and
one that was killed left no marker and runs again (stages make themselves resumable, e.g.
through the request cache or per-shard markers).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mathforge.config import dump_yaml
from mathforge.io import write_json, write_text


class RunDir:
    """A run directory; see the module docstring for its layout."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in ("stages", "stats", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.log = _file_logger(self.root / "logs" / "run.log")

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

    def is_done(self, stage: str, key: str | None = None) -> bool:
        """The stage finished, with this key (None: whatever key it had)."""
        marker = self.root / "stages" / f"{stage}.done"
        return marker.exists() and (key is None or json.loads(marker.read_text(encoding="utf-8")).get("key") == key)

    def stats(self, stage: str) -> dict[str, Any]:
        """The stats of a finished stage ({} when it has not finished)."""
        path = self.root / "stats" / f"{stage}.json"
        return json.loads(path.read_text(encoding="utf-8")) if self.is_done(stage) and path.exists() else {}

    def mark_done(self, stage: str, stats: dict[str, Any], key: str | None = None) -> None:
        write_json(self.root / "stats" / f"{stage}.json", stats)
        write_json(self.root / "stages" / f"{stage}.done", {"key": key})  # written last: the stats are complete

    def run_stage(self, stage: str, fn: Callable[[], dict[str, Any]], key: str | None = None) -> dict[str, Any]:
        """Run `fn` unless `stage` already finished with `key`; record its key, stats and timing."""
        if self.is_done(stage, key):
            self.log.info("stage %s: already done, skipped", stage)
            return self.stats(stage)
        if self.is_done(stage):
            self.log.info("stage %s: its config or inputs changed, running again", stage)
        (self.root / "stages" / f"{stage}.done").unlink(missing_ok=True)  # a stale marker must not outlive a kill
        self.log.info("stage %s: started", stage)
        start = time.time()
        stats = dict(fn() or {})
        stats["seconds"] = round(time.time() - start, 3)
        self.mark_done(stage, stats, key)
        self.log.info("stage %s: done in %.1fs", stage, stats["seconds"])
        return stats

    def manifest(self) -> dict[str, str]:
        """Dataset names -> paths."""
        path = self.root / "manifest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def register(self, datasets: dict[str, str]) -> None:
        """Add (or replace) named datasets in the manifest."""
        write_json(self.root / "manifest.json", {**self.manifest(), **datasets})


def _file_logger(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"mathforge.run.{path.parent.parent.resolve()}")
    if not logger.handlers:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
