import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.io import read_records

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
runner = CliRunner()


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "mathforge.cli", "--help"], capture_output=True, text=True, check=True)
    assert "seeds" in out.stdout


def test_seeds_counts_and_unparsed_with_file_line(tmp_path):
    out = tmp_path / "seeds.jsonl"
    result = runner.invoke(app, ["seeds", str(DATA / "math" / "math_train.jsonl"),
                                 str(DATA / "seeds" / "agieval_sat-math.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "7720 seed records" in result.output
    assert "answers not parsed: 2" in result.output
    assert "math_train.jsonl:7118" in result.output or "math_train.jsonl:" in result.output
    assert sum(1 for _ in read_records(out)) == 7720


def test_seeds_broken_file_fails_with_line_and_keeps_what_was_read(tmp_path):
    good = open(DATA / "gsm8k" / "train.jsonl", encoding="utf-8").readlines()[:4]
    bad = tmp_path / "gsm_train.jsonl"
    bad.write_text("".join(good[:2]) + "not json\n" + "".join(good[2:]))
    out = tmp_path / "seeds.jsonl"
    result = runner.invoke(app, ["seeds", f"gsm8k:{bad}", "--out", str(out)])
    assert result.exit_code == 1
    assert "gsm_train.jsonl:3" in result.output
    assert not out.exists()
    assert len((tmp_path / "seeds.jsonl.partial").read_text().splitlines()) == 2  # nothing read is lost
    result = runner.invoke(app, ["seeds", f"gsm8k:{bad}", "--out", str(out), "--skip-bad"])
    assert result.exit_code == 0 and "skipped bad row" in result.output and "gsm_train.jsonl:3" in result.output
    assert sum(1 for _ in read_records(out)) == 4


def test_seeds_refuses_test_split(tmp_path):
    result = runner.invoke(app, ["seeds", str(DATA / "gsm8k" / "test.jsonl"), "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 1 and "refused" in result.output
    result = runner.invoke(app, ["seeds", str(DATA / "gsm8k" / "test.jsonl"), "--allow-test",
                                 "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0 and "1319 seed records" in result.output


def test_leakage_counts_math_train_overlap_with_math_test(tmp_path):
    # Real finding (FACTS.md): a few percent of MATH train rows share a 30-word span with MATH test.
    out = tmp_path / "leak.json"
    result = runner.invoke(app, ["leakage", f"math:{DATA / 'math' / 'math_train.jsonl'}?limit=800",
                                 "-b", "math", "--data-dir", str(DATA), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (stats,) = __import__("json").loads(out.read_text())
    assert stats["train_rows"] == 800 and stats["benchmark_items"] == 5000
    assert 0 < stats["train_rows_overlapping"] < 80
    assert stats["benchmark_items_hit"] == len(stats["hit_item_ids"]) > 0


def test_seeds_refuses_an_input_with_no_records(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["seeds", str(tmp_path / "empty"), "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code != 0 and "no records" in result.output
