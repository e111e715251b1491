import json
import os

import pytest

from mathforge.io import AtomicWriter, DataError, read_records, read_rows, write_json, write_records
from mathforge.record import Lineage, Record, annotate, derive


def sample(i: int) -> Record:
    return Record(id=f"r{i}", source="test", problem=f"What is {i}+{i}?", solution=f"{i}+{i}={2 * i}",
                  answer=str(2 * i), level=1 + i % 5, subject="Prealgebra",
                  lineage=Lineage(stage="seed"), meta={"where": f"x:{i}", "nested": {"k": [i]}})


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_roundtrip_streaming(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    n = 5000  # more than one Parquet batch
    assert write_records(path, (sample(i) for i in range(n))) == n
    back = read_records(path)
    assert next(back) == sample(0)  # a generator: nothing forces the whole file into memory
    rest = list(back)
    assert len(rest) == n - 1 and rest[-1] == sample(n - 1)


def test_atomic_write_keeps_old_file_and_partial_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    write_records(path, [sample(0)])
    with pytest.raises(RuntimeError), AtomicWriter(path) as w:
        w.write(sample(1))
        w.write(sample(2))
        raise RuntimeError("producer died")
    assert [r.id for r in read_records(path)] == ["r0"]  # the previous complete file is untouched
    partial = tmp_path / "out.jsonl.partial"
    assert [json.loads(line)["id"] for line in partial.read_text().splitlines()] == ["r1", "r2"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_bad_record_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(sample(0).to_dict())
    path.write_text(good + "\n" + json.dumps({**sample(1).to_dict(), "level": "hard"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'level'"):
        list(read_records(path))
    path.write_text(good + "\n" + json.dumps({**sample(1).to_dict(), "surprise": 1}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: unknown record field\(s\): surprise"):
        list(read_records(path))


def test_read_rows_rejects_non_objects_and_unknown_types(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"x\.jsonl:3: expected a JSON object"):
        list(read_rows(path))
    with pytest.raises(DataError, match="unsupported file type"):
        list(read_rows(tmp_path / "x.csv"))


def test_write_json_atomic(tmp_path):
    write_json(tmp_path / "a" / "stats.json", {"n": 1})
    assert json.loads((tmp_path / "a" / "stats.json").read_text()) == {"n": 1}


def test_annotate_and_derive_keep_parent_untouched():
    parent = sample(3)
    tagged = annotate(parent, "decontam", {"kept": True})
    assert "decontam" not in parent.meta and tagged.meta["decontam"] == {"kept": True}
    child = derive(parent, problem="Rephrased?", method="metamath/rephrase", stage="stage1", teacher="t")
    assert child.lineage.parent_id == "r3" and child.lineage.seed_id == "r3" and child.lineage.step == 1
    grandchild = derive(child, problem="Evolved?", method="evol/deepen")
    assert grandchild.lineage.seed_id == "r3" and grandchild.lineage.step == 2
    assert grandchild.lineage.stage == "stage1" and grandchild.id != child.id
    assert derive(parent, problem="Rephrased?", method="metamath/rephrase", stage="stage1").id == child.id
