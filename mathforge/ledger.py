"""A persistent ledger of named counters: (scope, key) -> {counter: int}, in SQLite.

One design for every "how far did we get" book a resumable step keeps: the synthesis quota ledger
(scope = stage, key = method: units committed, kept, requests, dropped by reason; key `_shards`:
shards written) and a per-problem ledger (scope = step, key = problem id: attempts, correct).
A commit adds a batch of deltas in one transaction, so after a `kill -9` the ledger holds every
commit or none of a partial one; a caller that writes files first and commits after can trust the
ledger over the files (a file the ledger does not know was written by a run that died before its
commit, and is rewritten). Notes hold the few facts that are not counts, as text per (scope, key):
the batch backend's batch ids and states (engine/batch.py).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping
from pathlib import Path


class Ledger:
    """Counters per (scope, key), persisted with WAL so another process can read while we write."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One event loop uses it at a time, possibly from the engine's worker thread (see Engine.drive).
        self.db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS counters (scope TEXT, key TEXT, counter TEXT, value INTEGER, "
                        "PRIMARY KEY (scope, key, counter))")
        self.db.execute("CREATE TABLE IF NOT EXISTS notes (scope TEXT, key TEXT, value TEXT, PRIMARY KEY (scope, key))")
        self.db.commit()

    def read(self, scope: str) -> dict[str, Counter]:
        """Every key's counters in `scope` (empty Counters for keys never committed are not listed)."""
        out: dict[str, Counter] = {}
        for key, counter, value in self.db.execute("SELECT key, counter, value FROM counters WHERE scope=?", (scope,)):
            out.setdefault(key, Counter())[counter] = value
        return out

    def commit(self, scope: str, deltas: Mapping[str, Mapping[str, int]]) -> None:
        """Add `deltas` ({key: {counter: delta}}) to `scope`, all in one transaction."""
        self.commit_scopes({scope: deltas})

    def commit_scopes(self, scoped: Mapping[str, Mapping[str, Mapping[str, int]]]) -> None:
        """Add deltas to several scopes ({scope: {key: {counter: delta}}}) in one transaction: a
        stage's quota counters and its per-problem counters never disagree after a kill."""
        rows = [(scope, key, counter, value) for scope, deltas in scoped.items()
                for key, cs in deltas.items() for counter, value in cs.items() if value]
        with self.db:
            self.db.executemany("INSERT INTO counters VALUES (?,?,?,?) ON CONFLICT(scope, key, counter) "
                                "DO UPDATE SET value = value + excluded.value", rows)

    def reset(self, scope: str) -> None:
        """Forget `scope` and the scopes within it (`scope:...`): a step whose key changed starts afresh."""
        with self.db:
            self.db.execute("DELETE FROM counters WHERE scope=? OR substr(scope, 1, ?)=?",
                            (scope, len(scope) + 1, scope + ":"))

    def notes(self, scope: str) -> dict[str, str]:
        """Every note in `scope`, by key, in the order they were first written."""
        rows = self.db.execute("SELECT key, value FROM notes WHERE scope=? ORDER BY rowid", (scope,))
        return dict(rows.fetchall())

    def note(self, scope: str, key: str, value: str) -> None:
        """Set one note (replacing the key's earlier value) and commit at once."""
        with self.db:
            self.db.execute("INSERT INTO notes VALUES (?,?,?) ON CONFLICT(scope, key) DO UPDATE SET value = "
                            "excluded.value", (scope, key, value))

    def close(self) -> None:
        self.db.close()
