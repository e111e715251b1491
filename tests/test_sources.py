import json
from pathlib import Path

import pytest

from mathforge.io import DataError, ReadReport
from mathforge.sources import (
    RefusedTestSplit,
    SourceSpec,
    guess_kind,
    load,
    normalize_level,
    normalize_subject,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MATH_TRAIN = DATA / "math" / "math_train.jsonl"


def test_math_train_all_rows_level_subject_answer():
    records = list(load(f"math:{MATH_TRAIN}"))
    assert len(records) == 7500
    assert all(r.subject for r in records)
    assert sum(r.level is None for r in records) == 2  # the two "Level ?" geometry rows stay unknown
    # every solution with a box has an answer, except two real rows whose box is empty ("$\\boxed{}$")
    no_answer = [r.id for r in records if not r.answer]
    assert no_answer == ["train/number_theory/7115.json", "train/number_theory/7117.json"]
    assert {r.split for r in records} == {"train"}
    first = records[0]
    assert first.id == "train/algebra/0.json" and first.level == 5 and first.subject == "Algebra"
    assert first.answer == "0"


def test_gsm8k_test_integer_answers():
    records = list(load(f"gsm8k:{DATA / 'gsm8k' / 'test.jsonl'}?allow_test=1"))
    assert len(records) == 1319
    assert all(r.answer is not None and r.answer.lstrip("-").isdigit() for r in records)
    assert records[0].answer == "18" and records[0].split == "test"
    assert "####" not in records[0].solution


@pytest.mark.parametrize(
    "name,count,first_answer",
    [
        ("olympiadbench_oe_to_maths_en_comp.jsonl", 675, "2"),
        ("agieval_sat-math.jsonl", 220, "D"),
        ("agieval_aqua-rat.jsonl", 254, "A"),
        ("agieval_gaokao-mathqa.jsonl", 351, "D"),
        ("agieval_gaokao-mathcloze.jsonl", 118, "2"),
        ("scibench_textbook.jsonl", 580, "50.7"),
    ],
)
def test_seed_files_load_with_answers(name, count, first_answer):
    records = list(load(str(DATA / "seeds" / name)))  # kind guessed from the fields
    assert len(records) == count
    assert all(r.answer for r in records)
    assert records[0].answer == first_answer


def test_agieval_multi_select_and_cloze_parts():
    records = list(load(str(DATA / "seeds" / "agieval_gaokao-mathqa.jsonl")))
    assert any(r.answer == "A, B, D" for r in records)
    cloze = list(load(str(DATA / "seeds" / "agieval_gaokao-mathcloze.jsonl")))
    assert cloze[1].answer == "5, 10"  # "$5$;$10$": two blanks kept whole
    assert cloze[0].meta["language"] == "zh"


def test_scibench_subjects_and_units():
    records = list(load(str(DATA / "seeds" / "scibench_textbook.jsonl")))
    subjects = {r.subject for r in records}
    assert {"Calculus", "Differential Equations", "Statistics"} <= subjects
    assert records[0].meta["unit"]


def test_test_splits_refused_unless_insisted():
    with pytest.raises(RefusedTestSplit, match="allow_test"):
        list(load(str(DATA / "gsm8k" / "test.jsonl")))
    with pytest.raises(RefusedTestSplit):
        list(load(str(DATA / "math" / "math_test.jsonl")))
    # MATH-500 rows carry test/... unique ids: recognised whatever the file is called
    with pytest.raises(RefusedTestSplit):
        list(load(f"jsonl:{DATA / 'math' / 'prm800k_math_splits_test.jsonl'}?id=unique_id"))
    assert len(list(load(f"{DATA / 'math' / 'math_test.jsonl'}?allow_test=1&limit=3"))) == 3


def test_math_test_ids_recognised_inside_a_train_named_file(tmp_path):
    # PRM800K's 12k "train" split holds MATH test problems with test/... ids.
    rows = [json.loads(line) for line in open(DATA / "math" / "math_test.jsonl", encoding="utf-8")][:3]
    path = tmp_path / "prm800k_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RefusedTestSplit):
        list(load(f"math:{path}"))


def test_agieval_math_task_refused(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps({"question": "q", "options": None, "label": None, "answer": "1"}) + "\n")
    with pytest.raises(RefusedTestSplit):
        list(load(f"agieval:{path}"))


def test_math_folder_layout(tmp_path):
    rows = [json.loads(line) for line in open(MATH_TRAIN, encoding="utf-8")][:4]
    for row in rows:
        target = tmp_path / "train" / row["unique_id"].split("/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({k: row[k] for k in ("problem", "level", "type", "solution")}))
    records = list(load(f"math:{tmp_path / 'train'}"))
    assert sorted(r.id for r in records) == sorted(r["unique_id"] for r in rows)
    assert all(r.answer and r.level and r.subject for r in records)


def test_jeebench_style_json(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps([
        {"description": "JEE Adv 2016 Paper 1", "index": 1, "subject": "math", "type": "MCQ(multiple)",
         "question": "Which are true?", "gold": "ABD"},
        {"description": "JEE Adv 2016 Paper 1", "index": 2, "subject": "phy", "type": "Integer",
         "question": "Speed?", "gold": "4"},
        {"description": "JEE Adv 2017 Paper 2", "index": 3, "subject": "math", "type": "Numeric",
         "question": "Compute", "gold": "0.5"},
    ]))
    records = list(load(f"jeebench:{path}"))
    assert [r.answer for r in records] == ["A, B, D", "0.5"]


def test_mapped_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": "What is 2+2?", "sol": "2+2=\\boxed{4}", "lvl": "Level 1", "topic": "prealgebra"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    spec = f"jsonl:{tmp_path / 'x.parquet'}?problem=q&solution=sol&level=lvl&subject=topic&answer_from=boxed"
    (record,) = load(spec)
    assert (record.problem, record.answer, record.level, record.subject) == ("What is 2+2?", "4", 1, "Prealgebra")


def test_hf_loader_through_datasets_offline(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    lines = open(DATA / "gsm8k" / "train.jsonl", encoding="utf-8").readlines()[:5]
    (tmp_path / "train.jsonl").write_text("".join(lines))
    spec = f"hf:json?data_files={tmp_path / 'train.jsonl'}&split=train&format=gsm8k"
    records = list(load(spec))
    assert len(records) == 5 and records[0].answer == "72"


def test_reasoning_gym_offline_exact_answers():
    records = list(load("rg:basic_arithmetic?size=5&seed=3"))
    assert len(records) == 5
    assert all(r.answer for r in records)
    again = list(load("rg:basic_arithmetic?size=5&seed=3"))
    assert [r.problem for r in records] == [r.problem for r in again]  # seeded, reproducible


def test_broken_lines_fail_with_file_line_or_are_skipped(tmp_path):
    good = open(DATA / "gsm8k" / "train.jsonl", encoding="utf-8").readlines()[:3]
    path = tmp_path / "gsm_train.jsonl"
    path.write_text(good[0] + good[1] + '{"question": "broken\n' + good[2])
    with pytest.raises(DataError, match=r"gsm_train\.jsonl:3"):
        list(load(f"gsm8k:{path}"))
    report = ReadReport()
    records = list(load(f"gsm8k:{path}?skip_bad=1", report))
    assert len(records) == 3 and [b.line for b in report.bad] == [3]


def test_missing_field_names_file_line_and_field(tmp_path):
    path = tmp_path / "gsm_train.jsonl"
    path.write_text('{"question": "x", "answer": "#### 1"}\n{"question": "y"}\n')
    with pytest.raises(DataError, match=r"gsm_train\.jsonl:2: missing required field 'answer'"):
        list(load(f"gsm8k:{path}"))


@pytest.mark.parametrize("value,expected", [("Level 3", 3), (5, 5), ("Level ?", None), ("7", None), (None, None)])
def test_normalize_level(value, expected):
    assert normalize_level(value) == expected


@pytest.mark.parametrize("value,expected", [("counting_and_probability", "Counting & Probability"),
                                            ("Intermediate Algebra", "Intermediate Algebra"), ("", None)])
def test_normalize_subject(value, expected):
    assert normalize_subject(value) == expected


def test_spec_parsing_and_guessing():
    spec = SourceSpec.parse("rg:basic_arithmetic?size=10&seed=2")
    assert (spec.kind, spec.location, spec.options) == ("rg", "basic_arithmetic", {"size": "10", "seed": "2"})
    assert guess_kind(str(MATH_TRAIN)) == "math"
    assert guess_kind(str(DATA / "seeds" / "agieval_gaokao-mathcloze.jsonl")) == "agieval"
    with pytest.raises(DataError, match="no such file"):
        guess_kind("/nonexistent.jsonl")
