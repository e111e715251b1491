"""The truth audit against a case computed by hand: a simulator log (with a duplicate line, a
refused request and a torn last line) joined with kept and written rows."""

from __future__ import annotations

import json

from mathforge.record import Lineage, Record
from mathforge.truthaudit import audit, read_log

LOG = [
    {"key": "k1", "kind": "solve", "problem": "P1", "answer": 9, "level": 4, "well_posed": True},
    {"key": "k1", "kind": "solve", "problem": "P1", "answer": 9, "level": 4, "well_posed": True},  # resumed
    {"key": "k2", "kind": "fobar", "problem": "P2", "answer": 3, "level": 2, "well_posed": True},
    {"key": "k3", "kind": "solve", "problem": "P3", "answer": -2, "level": 5, "well_posed": False},
    {"key": "k4", "kind": "check", "verdict": "flawed", "well_posed": False},
    {"key": "k5", "kind": "check", "verdict": "flawed", "well_posed": True},
    {"key": "k6", "kind": "check", "verdict": "sound", "well_posed": False},
    {"key": "k7", "kind": "difficulty", "said": 4, "level": 5},
    {"key": "k8", "kind": "difficulty", "said": 2, "level": 4},
    {"key": "k9", "kind": "evol", "problem": "L1", "leak": True},
    {"key": "k10", "kind": "evol", "problem": "L2", "leak": True},
    {"key": "k11", "kind": "xwin_generate", "problem": "P1", "leak": False},
]


def row(problem: str, answer: str, method: str, check: bool | None = None) -> Record:
    meta = {"answer_check": {"correct": check}} if check is not None else {}
    return Record(id=f"{problem}/{answer}/{method}", source="mini", problem=problem, answer=answer,
                  lineage=Lineage(method=method), meta=meta)


def test_the_audit_matches_the_hand_computed_case(tmp_path):
    path = tmp_path / "teacher_sim.jsonl"
    lines = [json.dumps({"status": 200, **r}) for r in LOG] + [json.dumps({"status": "429", "kind": "solve"})]
    path.write_text("\n".join(lines) + '\n{"t": 1, "status": 200, "ki')  # killed mid-write
    log, counts = read_log(path)
    assert counts == {"lines": 14, "answered": 11, "duplicate": 1, "not_answered": 1, "torn": 1}
    kept = [row("P1", "9", "evol/deepen"), row("P1", "10", "evol/deepen"),  # right, wrong
            row("P2", "3", "metamath/fobar", True), row("P2", "4", "metamath/fobar", False),  # right, wrong (flagged)
            row("P3", "-2", "xwin"),  # the arithmetic is right but the problem is ill-posed: wrong
            row("P9", "1", "xwin"),  # not in the log
            row("P2", "3", "metamath/fobar", False)]  # right, flagged all the same
    result = audit(log, kept, [row("L1", "5", "evol/rewrite"), row("P1", "9", "evol/deepen")])
    assert result["coverage"] == round(6 / 7, 4) and result["kept"] == 7
    assert result["kept_error_rate"] == 0.5  # 3 wrong of 6 joined
    assert result["error_by_method"] == {"evol/deepen": {"rows": 2, "error_rate": 0.5},
                                         "metamath/fobar": {"rows": 3, "error_rate": 0.3333},
                                         "xwin": {"rows": 1, "error_rate": 1.0}}
    assert result["error_by_level"] == {"2": {"rows": 3, "error_rate": 0.3333}, "4": {"rows": 2, "error_rate": 0.5},
                                        "5": {"rows": 1, "error_rate": 1.0}}
    # flagged: 2 of the 3 checked rows, 1 of them wrong; the one wrong checked row is flagged
    assert result["answer_check"] == {"checked": 3, "precision": 0.5, "recall": 1.0}
    assert result["judges"] == {"xwin_check": {"judged": 3, "precision": 0.5, "recall": 0.5},
                                "difficulty": {"judged": 2, "precision": 1.0, "recall": 0.5}}
    assert result["leaks"] == {"planted": 2, "in_synthetic_data": 1, "caught": 1, "kept": 0}
