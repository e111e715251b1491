"""The persistent request cache: one SQLite row per (request, sample), written as each arrives.

WAL mode with synchronous=NORMAL makes every committed row survive a `kill -9` of the process
(only a power loss could lose the last commits), and lets another process read while we write.
Only successful responses are stored: a failure is retried on the next run, a paid answer never.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mathforge.engine.types import Call, Completion, Sampling

SCHEMA_VERSION = 1


def cache_key(backend: str, model: str, payload: dict[str, Any], sampling: Sampling, sample: int) -> str:
    """Hash of everything that determines a response; the sample index keeps n samples apart."""
    blob = {
        "v": SCHEMA_VERSION,
        "backend": backend,
        "model": model,
        **payload,
        "sampling": {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.sample_seed(sample),
            "stop": list(sampling.stop),
        },
        "sample": sample,
    }
    text = json.dumps(blob, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class RequestCache:
    """SQLite-backed map from cache key to completion; `None` path keeps it in memory."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            str(self.path) if self.path else ":memory:", timeout=60, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, backend TEXT, model TEXT, "
            "request TEXT, text TEXT, finish_reason TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, "
            "created REAL)"
        )
        self.db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, Completion] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, text, finish_reason, prompt_tokens, completion_tokens FROM responses WHERE key IN ({marks})",
                chunk,
            )
            for key, text, finish, pt, ct in rows:
                found[key] = Completion(text, finish, pt, ct)
        return found

    def put(self, backend: str, model: str, call: Call, done: Completion) -> None:
        """Store one response and commit at once, so a kill right after loses nothing."""
        request = json.dumps({**call.payload(), "sample": call.sample}, ensure_ascii=False)
        self.put_many(backend, model, [(call.cache_key, request, done)])

    def put_many(self, backend: str, model: str, rows: Iterable[tuple[str, str, Completion]]) -> None:
        """Store (key, request JSON, response) rows in one transaction (a downloaded batch file)."""
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?)",
                [(key, backend, model, request, d.text, d.finish_reason, d.prompt_tokens, d.completion_tokens, now)
                 for key, request, d in rows],
            )

    def totals(self) -> tuple[int, int, int]:
        """(responses, prompt tokens, completion tokens) held: what this cache's owner has paid for."""
        n, pt, ct = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) FROM responses"
        ).fetchone()
        return n, pt, ct

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.db.close()
