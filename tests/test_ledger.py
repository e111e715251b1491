"""The persistent counter ledger shared by the synthesis quotas and per-problem bookkeeping."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

from mathforge.ledger import Ledger


def test_commits_add_up_per_scope_and_key_and_survive_reopening(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.commit("stage1", {"evol": {"kept": 3, "units": 1, "dropped:truncated": 0}, "_shards": {"count": 1}})
    ledger.commit("stage1", {"evol": Counter(kept=2, units=1)})
    ledger.commit("problems", {"math/train/1": {"attempts": 4, "correct": 1}})
    ledger.close()
    again = Ledger(tmp_path / "ledger.sqlite")
    assert again.read("stage1") == {"evol": Counter(kept=5, units=2), "_shards": Counter(count=1)}
    assert again.read("problems")["math/train/1"] == Counter(attempts=4, correct=1)
    assert again.read("nothing") == {}


def test_a_killed_writer_leaves_whole_commits_only(tmp_path):
    """Each commit adds a = b = 1 in one transaction: whenever the writer dies, a == b."""
    path = tmp_path / "ledger.sqlite"
    code = ("import sys; from mathforge.ledger import Ledger; L = Ledger(sys.argv[1])\n"
            "while True: L.commit('s', {'k': {'a': 1, 'b': 1}})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
    time.sleep(2.5)
    proc.kill()
    proc.wait()
    counts = Ledger(path).read("s")["k"]
    assert counts["a"] == counts["b"] > 0
