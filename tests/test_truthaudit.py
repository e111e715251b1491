"""The truth audit against a case computed by hand: a simulator log (with a duplicate line after a
resume, a refused request and a torn last line) joined by request key with kept and written rows."""

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
    {"key": "k11", "kind": "xwin_generate", "problem": "P3", "leak": False},
    {"key": "k12", "kind": "evol", "problem": "P1", "leak": False},
    {"key": "k13", "kind": "solve", "problem": "P1", "answer": 9, "level": 4, "well_posed": True},
    {"key": "k14", "kind": "fobar", "problem": "P2", "answer": 3, "level": 2, "well_posed": True},
    {"key": "k15", "kind": "fobar", "problem": "P2", "answer": 3, "level": 2, "well_posed": True},
    {"key": "k16", "kind": "xwin_generate", "problem": "L3", "leak": True},
    {"key": "k17", "kind": "xwin_revise", "problem": "P5", "leak": False},
    {"key": "k18", "kind": "solve", "parsed": False},  # an off-format prompt: no truth to join
    {"key": "k19", "kind": "solve", "problem": "P4", "answer": 7, "level": 3, "well_posed": True},
    {"key": "k20", "kind": "elicit", "parsed": True},
    {"key": "k23", "kind": "solve", "problem": "L2", "answer": 5, "level": 1, "well_posed": True},
]


def row(problem: str, answer: str, method: str, keys: list[str], check: bool | None = None) -> Record:
    meta = {"synth": {"requests": keys}, **({"answer_check": {"correct": check}} if check is not None else {})}
    # level 1 on every row: the audit's levels are the log's true levels, never the row's own
    return Record(id=f"{problem}/{answer}/{method}/{keys[-1]}", source="mini", problem=problem, answer=answer,
                  level=1, lineage=Lineage(method=method), meta=meta)


def test_the_audit_matches_the_hand_computed_case(tmp_path):
    path = tmp_path / "teacher_sim.jsonl"
    lines = [json.dumps({"status": 200, **r}) for r in LOG] + [json.dumps({"status": "429", "kind": "solve"})]
    path.write_text("\n".join(lines) + '\n{"t": 1, "status": 200, "ki')  # killed mid-write
    log, counts = read_log(path)
    assert counts == {"lines": len(LOG) + 2, "answered": len(LOG) - 1, "duplicate": 1, "not_answered": 1, "torn": 1}
    leaked_and_kept = row("L2", "5", "evol/rewrite", ["k10", "k23"])
    kept = [row("P1", "9", "evol/deepen", ["k12", "k1"]), row("P1", "10", "evol/deepen", ["k12", "k13"]),  # right, wrong
            row("P2", "3", "metamath/fobar", ["k2"], True),  # right
            row("P2", "4", "metamath/fobar", ["k14"], False),  # wrong, flagged
            row("P3", "-2", "xwin", ["k11", "k5", "k3"]),  # the arithmetic is right but the problem is ill-posed: wrong
            row("P9", "1", "xwin", ["k99"]),  # its request is not in the log
            row("P2", "3", "metamath/fobar", ["k15"], False),  # right, flagged all the same
            row("P1", "9", "evol/deepen", ["k18"]),  # P1's text is in the log, but not this request's truth
            row("P4", "7", "xwin", ["k19", "k20"]),  # an elicited answer line: the solve's truth counts
            leaked_and_kept]  # right
    written = [row("L1", "5", "evol/rewrite", ["k9", "k21"]), leaked_and_kept,
               row("P5", "5", "xwin", ["k16", "k6", "k17", "k22"]),  # the planted draft was revised away
               kept[0]]
    result = audit(log, kept, written)
    assert result["coverage"] == 0.8 and result["joined"] == 8 and result["kept"] == 10
    assert result["kept_error_rate"] == 0.375  # 3 wrong of 8 joined
    assert result["error_by_method"] == {"evol/deepen": {"rows": 2, "error_rate": 0.5},
                                         "evol/rewrite": {"rows": 1, "error_rate": 0.0},
                                         "metamath/fobar": {"rows": 3, "error_rate": 0.3333},
                                         "xwin": {"rows": 2, "error_rate": 0.5}}
    assert result["error_by_level"] == {"1": {"rows": 1, "error_rate": 0.0}, "2": {"rows": 3, "error_rate": 0.3333},
                                        "3": {"rows": 1, "error_rate": 0.0}, "4": {"rows": 2, "error_rate": 0.5},
                                        "5": {"rows": 1, "error_rate": 1.0}}
    # flagged: 2 of the 3 checked rows, 1 of them wrong; the one wrong checked row is flagged
    assert result["answer_check"] == {"checked": 3, "precision": 0.5, "recall": 1.0}
    assert result["judges"] == {"xwin_check": {"judged": 3, "precision": 0.5, "recall": 0.5},
                                "difficulty": {"judged": 2, "precision": 1.0, "recall": 0.5}}
    # planted: k9, k10, k16; reached: k9, k10 (k16's draft was revised); kept: k10
    assert result["leaks"] == {"planted": 3, "in_synthetic_data": 2, "caught": 1, "kept": 1}
