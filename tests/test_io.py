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


def test_readers_name_file_and_line_for_undecodable_input_and_accept_a_bom(tmp_path):
    good = json.dumps(sample(1).to_dict())
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\n")
    assert [r.id for r in read_records(bom)] == ["r1"]
    cases = {"latin1.jsonl": good.encode() + b"\n" + b'{"id": "caf\xe9"}\n',  # invalid UTF-8 on line 2
             "random.jsonl": bytes(range(256)) * 4}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"{name}:\d+: invalid (UTF-8|JSON)"):
            list(read_records(tmp_path / name))
    with pytest.raises(DataError, match=r"latin1.jsonl:2: invalid UTF-8 \(byte 0xe9"):
        list(read_records(tmp_path / "latin1.jsonl"))


def test_corrupt_parquet_is_named(tmp_path):
    path = tmp_path / "rows.parquet"
    write_records(path, (sample(i) for i in range(5000)))
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64  # inside a row group's pages
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="rows.parquet: row group"):
        list(read_records(path))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="junk.parquet: not a readable Parquet file"):
        list(read_records(tmp_path / "junk.parquet"))


def test_spans_cut_a_file_at_lines_and_read_it_back_whole(tmp_path):
    from mathforge.io import plan_spans, read_span

    path = tmp_path / "rows.jsonl"
    write_records(path, (sample(i) for i in range(1000)))
    for rows in (1, 7, 250, 1000, 5000):
        spans = plan_spans(path, rows)
        assert len(spans) == -(-1000 // rows)
        assert [r.id for s in spans for r in read_span(s)] == [f"r{i}" for i in range(1000)]
    line = json.dumps(sample(0).to_dict()) + "\n"
    (tmp_path / "bad.jsonl").write_text(line + line + "{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl:3: invalid JSON"):
        [r for s in plan_spans(tmp_path / "bad.jsonl", 2) for r in read_span(s)]


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        import mathforge.io as io

        io._umask.cache_clear()
        write_records(tmp_path / "a.jsonl", [sample(0)])
        write_json(tmp_path / "a.json", {"x": 1})
        assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {"0o644"}
    finally:
        os.umask(old)
        io._umask.cache_clear()


def test_to_dict_is_every_field_and_jsonl_reads_back_unicode_and_numpy(tmp_path):
    import dataclasses

    import numpy as np

    record = Record(id="r", source="s", problem="Ünïcode \u2028 line sep", solution="x", answer="1", level=2,
                    subject="Algebra", split="train",
                    lineage=Lineage(seed_id="a", parent_id="b", method="m", step=3, stage="st", teacher="t",
                                    prompt_version="v"), meta={"k": {"n": [1, 2]}})
    assert record.to_dict() == dataclasses.asdict(record)  # the hand-written form misses no field
    path = tmp_path / "u.jsonl"
    write_records(path, [record, {**record.to_dict(), "id": "r2", "meta": {"x": np.float32(0.5), 3: "int key"}}])
    back = list(read_records(path))
    assert back[0] == record and back[1].meta == {"x": 0.5, "3": "int key"}
    assert "\u00dc" in path.read_text(encoding="utf-8")  # written as UTF-8, not escaped
