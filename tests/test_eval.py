"""Evaluation: benchmarks on the real files, summaries and tables, the grade and eval commands with
real models (SmolLM2 under llama.cpp, a tiny HF checkpoint), robustness and bilingual suites.

A scripted backend behind the real Engine supplements the real models where a test needs known
responses (accuracy tables, disagreements, distractor and translation checks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.engine import Completion, Engine, EngineConfig
from mathforge.eval import EvalConfig, evaluate, gold_for, load_benchmark, subset, wilson
from mathforge.eval.bilingual import (
    agreement,
    evaluate_bilingual,
    load_translations,
    translate,
    translation_problem,
)
from mathforge.eval.robustness import inject, make_variants, parse_sentences, removes_to_original
from mathforge.io import DataError, read_rows
from mathforge.record import Record

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
runner = CliRunner()


class Scripted:
    """A backend answering each call with `reply(text of the call)`; for known responses only."""

    name = "scripted"
    model_id = "scripted-v1"
    batch_size = 1
    max_concurrency = None

    def __init__(self, reply):
        self.reply = reply
        self.calls: list[str] = []

    async def generate(self, calls):
        texts = [c.prompt if c.prompt is not None else c.messages[-1]["content"] for c in calls]
        self.calls += texts
        return [Completion(self.reply(t), "stop", 10, 5) for t in texts]

    async def aclose(self) -> None:
        pass


def scripted_engine(reply) -> Engine:
    return Engine(EngineConfig(progress=False), backend=Scripted(reply))


# ---------------------------------------------------------------- statistics and benchmarks

# (correct, n, lower, upper) of the 95% Wilson interval
WILSON = [(0, 3, 0.0, 0.5615), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (0, 0, 0.0, 0.0)]


@pytest.mark.parametrize(("k", "n", "lo", "hi"), WILSON)
def test_wilson_interval(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


@pytest.mark.parametrize(("name", "size", "kind"), [("gsm8k", 1319, "gsm8k"), ("math", 5000, "math"), ("math500", 500, "math")])
def test_benchmarks_load_whole_from_the_data_dir(name: str, size: int, kind: str) -> None:
    bench, records = load_benchmark(name, root=DATA)
    assert (len(records), bench.kind) == (size, kind)
    assert all(r.split == "test" and r.answer for r in records)
    if name != "gsm8k":
        assert {r.level for r in records} == {1, 2, 3, 4, 5}
        assert len({r.subject for r in records}) == 7


def test_a_missing_benchmark_file_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="math/math_test.jsonl"):
        load_benchmark("math", root=tmp_path)


def test_without_local_files_gsm8k_and_math500_come_from_the_hub(tmp_path: Path) -> None:
    from mathforge.eval.benchmarks import BENCHMARKS, _source_spec

    spec = _source_spec(BENCHMARKS["gsm8k"], "gsm8k", tmp_path)
    assert (spec.kind, spec.location, spec.opt("split"), spec.opt("format")) == ("hf", "openai/gsm8k", "test", "gsm8k")
    assert spec.flag("allow_test")
    assert _source_spec(BENCHMARKS["math500"], "math500", tmp_path).location == "HuggingFaceH4/MATH-500"


@pytest.mark.parametrize(("kwargs", "message"), [({"prompt_style": "fancy"}, "prompt style"),
                                                  ({"graders": ("strict", "loose")}, "loose"),
                                                  ({"graders": ()}, "grader")])
def test_eval_config_rejects_unknown_choices(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EvalConfig(**kwargs)


def test_any_file_with_a_field_mapping(tmp_path: Path) -> None:
    path = tmp_path / "quiz.jsonl"
    path.write_text("\n".join(json.dumps({"key": f"q{i}", "q": f"What is {i}+{i}?", "a": str(2 * i)}) for i in range(5)))
    bench, records = load_benchmark(f"jsonl:{path}?id=key&problem=q&answer=a", kind="gsm8k")
    assert (bench.name, bench.kind, len(records)) == ("quiz", "gsm8k", 5)
    assert (records[3].id, records[3].answer) == ("q3", "6")


def test_subset_is_fixed_by_its_seed_and_keeps_benchmark_order() -> None:
    _, records = load_benchmark("gsm8k", root=DATA)
    a, b, c = subset(records, 20, 0), subset(records, 20, 0), subset(records, 20, 1)
    assert [r.id for r in a] == [r.id for r in b] != [r.id for r in c]
    positions = [records.index(r) for r in a]
    assert positions == sorted(positions) and len(set(positions)) == 20
    assert subset(records, None) is records and len(subset(records, 5000)) == 1319


def test_metamath_gold_is_the_last_box_of_the_solution() -> None:
    _, records = load_benchmark("math", root=DATA)
    multi = next(r for r in records if r.solution.count("\\boxed") > 1 and ", " in r.answer)
    assert gold_for(multi, "strict") == multi.answer
    assert gold_for(multi, "metamath") == multi.answer.split(", ")[-1]


# ---------------------------------------------------------------- evaluate with known responses


def _answer_all(records: list[Record], wrong: set[str], form: dict[str, str]):
    by_problem = {r.problem.strip(): r for r in records}

    def reply(prompt: str) -> str:
        r = next(rec for p, rec in by_problem.items() if p in prompt)
        if r.id in wrong:
            return "I am not sure.\nThe answer is 123456789"
        return "Let me work it out.\nThe answer is " + form.get(r.id, r.answer)

    return reply


def test_evaluate_writes_samples_summary_and_tables(tmp_path: Path) -> None:
    _, records = load_benchmark("math500", root=DATA)
    records = subset(records, 12, seed=3)
    bench = load_benchmark("math500", root=DATA)[0]
    wrong = {records[0].id, records[1].id}
    form = {records[2].id: f"${records[2].answer}$"}  # strict rejects the dollars, symbolic accepts
    with scripted_engine(_answer_all(records, wrong, form)) as engine:
        summary = evaluate(records, bench, engine, EvalConfig(), tmp_path, {"model": "scripted"})
    assert summary["accuracy"]["symbolic"]["correct"] == 10
    assert summary["accuracy"]["strict"]["correct"] == 9
    assert [d["id"] for d in summary["disagreements"]] == [records[2].id]
    assert sum(v["strict"]["n"] for v in summary["by_level"].values()) == 12
    assert sum(v["symbolic"]["n"] for v in summary["by_subject"].values()) == 12
    assert summary["truncation_rate"] == 0.0
    rows = [row for _, row in read_rows(tmp_path / "samples.jsonl")]
    assert [r["id"] for r in rows] == [r.id for r in records]
    first = rows[0]
    assert first["prompt"].startswith("Below is an instruction") and first["prompt"].endswith("Let's think step by step.")
    assert set(first["verdicts"]) == {"strict", "symbolic"} and first["extracted"]["strict"] == "123456789"
    md = (tmp_path / "summary.md").read_text()
    assert "By MATH level (Table 2)" in md and "By subject (Table 12)" in md and records[2].id in md
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["max_tokens"] == 2048


def test_evaluate_requests_are_greedy_with_metamath_stops_or_chat(tmp_path: Path) -> None:
    _, records = load_benchmark("gsm8k", root=DATA)
    records = records[:2]
    bench = load_benchmark("gsm8k", root=DATA)[0]
    backend = Scripted(lambda text: "The answer is 1")
    with Engine(EngineConfig(progress=False), backend=backend) as engine:
        evaluate(records, bench, engine, EvalConfig(prompt_style="chat", graders=("metamath",)), tmp_path)
    assert backend.calls == [r.problem.strip() for r in records]  # chat: the problem alone, as a user turn
    row = next(read_rows(tmp_path / "samples.jsonl"))[1]
    assert row["prompt"] == [{"role": "user", "content": records[0].problem.strip()}]
    assert row["verdicts"]["metamath"]["reason"] == "no_answer"  # MetaMath needs "The answer is: "


# ---------------------------------------------------------------- the commands with real models


def test_grade_command_reports_both_graders_and_disagreements(tmp_path: Path) -> None:
    _, records = load_benchmark("math", root=DATA)
    picked = records[:6]
    src = tmp_path / "responses.jsonl"
    lines = [{"id": r.id, "solution": r.solution, "response": f"Work.\nThe answer is {r.answer}"} for r in picked[:4]]
    lines.append({"id": "b1", "answer": "0.24", "response": "The answer is 24%"})  # Appendix B
    lines.append({"id": "b2", "gold": "19", "response": "The correct answer is 19, but this assumes order."})
    src.write_text("\n".join(json.dumps(x) for x in lines))
    out = tmp_path / "verdicts.jsonl"
    res = runner.invoke(app, ["grade", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [row for _, row in read_rows(out)]
    assert [r["id"] for r in rows] == [x["id"] for x in lines]
    assert [r["strict"]["correct"] for r in rows] == [True] * 4 + [False, False]
    assert [r["symbolic"]["correct"] for r in rows] == [True] * 6
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    assert summary["accuracy"]["strict"]["correct"] == 4 and summary["accuracy"]["symbolic"]["correct"] == 6
    assert [d["id"] for d in summary["disagreements"]] == ["b1", "b2"]


def test_grade_command_names_a_row_without_gold(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"id": 1, "response": "The answer is 2"}) + "\n")
    res = runner.invoke(app, ["grade", str(src), "--out", str(tmp_path / "v.jsonl")])
    assert res.exit_code == 1 and "bad.jsonl:1" in res.output


@pytest.mark.parametrize("bench_name", ["gsm8k", "math"])
def test_eval_command_runs_smollm2_under_llama_cpp(tmp_path: Path, bench_name: str) -> None:
    pytest.importorskip("llama_cpp")
    out = tmp_path / bench_name
    args = ["eval", "--backend", "llama", "--model", "smollm2", "-b", bench_name, "--data-dir", str(DATA),
            "--limit", "20", "--seed", "0", "--max-tokens", "12", "--out", str(out), "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 20 and set(summary["accuracy"]) == {"strict", "symbolic"}
    assert summary["engine"]["calls"] == 20 and summary["tokens_per_s"] > 0
    assert 0 < summary["truncation_rate"] <= 1  # 12 tokens cut most responses short
    if bench_name == "math":
        assert summary["by_level"] and summary["by_subject"]
    again = runner.invoke(app, args)  # resumed from the cache: no new generation
    assert again.exit_code == 0
    assert json.loads((out / "summary.json").read_text())["engine"]["cached"] == 20


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-layer Llama with the SmolLM2 tokenizer (read from the embedded GGUF), saved like a run's model."""
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mathforge.models import smollm2_gguf

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("bench_name", ["gsm8k", "math"])
def test_eval_command_runs_a_tiny_hf_checkpoint(tmp_path: Path, tiny_checkpoint: Path, bench_name: str) -> None:
    out = tmp_path / bench_name
    res = runner.invoke(app, ["eval", "--backend", "hf", "--model", str(tiny_checkpoint), "-b", bench_name,
                              "--data-dir", str(DATA), "--limit", "20", "--max-tokens", "8", "--batch-size", "10",
                              "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 20 and summary["generation_errors"] == 0
    assert summary["accuracy"]["strict"]["correct"] == 0  # random weights never write an answer line
    assert summary["truncation_rate"] > 0.5  # and rarely stop before 8 tokens
    rows = [row for _, row in read_rows(out / "samples.jsonl")]
    assert all(r["completion_tokens"] <= 8 for r in rows)


# ---------------------------------------------------------------- robustness (Table 7)

STORY = "Tom has 3 apples. He buys 4 more at the market. How many apples does Tom have now?"


def test_inject_keeps_the_original_and_puts_distractors_before_the_question() -> None:
    extra = ["His sister likes pears.", "The market opens at 8 am."]
    variant = inject(STORY, extra)
    assert variant == ("Tom has 3 apples. He buys 4 more at the market. His sister likes pears. "
                       "The market opens at 8 am. How many apples does Tom have now?")
    assert removes_to_original(variant, extra, STORY)
    assert not removes_to_original(variant.replace("4 more", "5 more"), extra, STORY)


def test_parse_sentences_reads_numbered_and_bulleted_lines() -> None:
    reply = "Here you go:\n1. His sister likes pears.\n2) The market is busy.\n- It is sunny.\nThanks"
    assert parse_sentences(reply) == ["His sister likes pears.", "The market is busy.", "It is sunny."]


def _teacher(text: str) -> str:
    if "VERDICT" in text:  # the check prompt: reject the sentence that talks about apples
        return "It adds apples.\nVERDICT: REJECT" if "apples too" in text else "Irrelevant.\nVERDICT: KEEP"
    return ("1. His sister likes pears.\n2. Is it raining?\n3. Tom buys 2 apples too.\n"
            "4. The market opens at 8 am.\n5. Tom has 3 apples.")


def test_variants_pass_the_structural_and_teacher_checks() -> None:
    record = Record(id="g1", source="gsm8k", problem=STORY, answer="7", split="test")
    with scripted_engine(_teacher) as teacher:
        variants, stats = make_variants([record], teacher, max_distractors=5)
    assert stats["rejected_question"] == 1 and stats["rejected_copies_problem"] == 1
    assert stats["check_reject"] == 1 and stats["check_keep"] == 2
    assert [v.meta["robustness"]["count"] for v in variants] == [1, 2]
    assert variants[1].meta["robustness"]["distractors"] == ["His sister likes pears.", "The market opens at 8 am."]
    assert all(v.answer == "7" and v.lineage.parent_id == "g1" for v in variants)


def test_robustness_suite_through_the_command(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    res = runner.invoke(app, ["eval", "--suite", "robustness", "-b", "gsm8k", "--data-dir", str(DATA), "--limit", "1",
                              "--max-tokens", "8", "--max-distractors", "1", "--no-check", "--out", str(tmp_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "robustness.json").read_text())
    assert result["by_distractors"]["0"]["n"] == 1 and result["variant_stats"]["items"] == 1
    assert "Table 7" in (tmp_path / "robustness.md").read_text()


def test_a_real_teacher_writes_checks_and_translates(tmp_path: Path) -> None:
    """SmolLM2 is no math teacher; this proves the prompts, parsing and checks run on a real model."""
    pytest.importorskip("llama_cpp")
    record = Record(id="g1", source="gsm8k", problem=STORY, answer="7", split="test")
    cfg = EngineConfig(backend="llama", model="smollm2", progress=False)
    with Engine(cfg, cache_path=tmp_path / "teacher.sqlite") as teacher:
        variants, stats = make_variants([record], teacher, max_distractors=2, check=True, check_tokens=24)
        translated, tstats = translate([record], teacher, max_tokens=40)
        assert teacher.stats()["failed"] == 0
    assert stats["items"] == 1
    assert sum(stats.get(k, 0) for k in ("check_keep", "check_reject", "check_none")) == stats.get("well_formed", 0)
    assert all(removes_to_original(v.problem, v.meta["robustness"]["distractors"], STORY) for v in variants)
    assert sum(tstats.values()) == 1 and len(translated) == tstats.get("kept", 0)


# ---------------------------------------------------------------- bilingual (Table 6)

# (source, translation, problem found)
TRANSLATIONS = [
    ("Tom has 3 apples and buys 4.", "汤姆有3个苹果，又买了4个。", None),
    ("Tom has 3 apples and buys 4.", "汤姆有3个苹果。", "numbers_changed"),
    ("Tom has 3 apples.", "Tom has 3 apples.", "untranslated"),
    ("Tom has 3 apples.", "  ", "empty"),
    ("It costs $1,200.", "它的价格是1200美元。", None),
]


@pytest.mark.parametrize(("source", "translated", "problem"), TRANSLATIONS)
def test_translation_check(source: str, translated: str, problem: str | None) -> None:
    assert translation_problem(source, translated) == problem


def test_bilingual_suite_side_by_side(tmp_path: Path) -> None:
    bench, records = load_benchmark("gsm8k", root=DATA)
    records = records[:4]
    zh = {r.problem.strip(): "翻译：" + r.problem.strip() for r in records[:3]}  # the 4th keeps English: rejected

    def reply(text: str) -> str:
        if text.startswith("Translate"):
            src = next(p for p in zh if p in text) if any(p in text for p in zh) else records[3].problem.strip()
            return zh.get(src, src)
        if "翻译" in text:  # the student fails every Chinese item but the first
            return "The answer is " + (records[0].answer if records[0].problem.strip() in text else "0")
        return "The answer is " + next(r.answer for r in records if r.problem.strip() in text)

    with scripted_engine(reply) as engine:
        translated, stats = translate(records, engine)
        assert stats == {"kept": 3, "untranslated": 1}
        summary = evaluate_bilingual(records, translated, bench, engine, EvalConfig(), tmp_path)
    row = summary["graders"]["strict"]
    assert (row["original"]["correct"], row["Chinese"]["correct"]) == (3, 1)
    assert (row["both_correct"], row["only_first"], row["only_second"], row["both_wrong"]) == (1, 2, 0, 0)
    assert "Table 6" in (tmp_path / "bilingual.md").read_text()


def test_translations_from_a_file(tmp_path: Path) -> None:
    _, records = load_benchmark("gsm8k", root=DATA)
    path = tmp_path / "zh.jsonl"
    path.write_text(json.dumps({"id": records[1].id, "problem": "第二题"}) + "\n")
    [t] = load_translations(path, records)
    assert (t.problem, t.answer, t.meta["translation"]["source_id"]) == ("第二题", records[1].answer, records[1].id)
    path.write_text(json.dumps({"id": records[1].id}) + "\n")
    with pytest.raises(DataError, match="zh.jsonl:1"):
        load_translations(path, records)


def test_bilingual_suite_through_the_command_with_a_translation_file(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    _, records = load_benchmark("gsm8k", root=DATA)
    picked = subset(records, 2, seed=0)
    zh = tmp_path / "gsm8k_zh.jsonl"
    zh.write_text("\n".join(json.dumps({"id": r.id, "problem": "请解答：" + r.problem}) for r in picked))
    res = runner.invoke(app, ["eval", "--suite", "bilingual", "-b", "gsm8k", "--data-dir", str(DATA), "--limit", "2",
                              "--translations", str(zh), "--max-tokens", "8", "--out", str(tmp_path / "run"),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "run" / "bilingual.json").read_text())
    assert result["n_paired"] == 2 and result["graders"]["strict"]["n"] == 2
    rows = [row for _, row in read_rows(tmp_path / "run" / "chinese" / "samples.jsonl")]
    assert all("请解答" in row["prompt"] for row in rows)


def test_agreement_counts() -> None:
    assert agreement([True, True, False, False], [True, False, True, False]) == {
        "n": 4, "both_correct": 1, "only_first": 1, "only_second": 1, "both_wrong": 1, "agreement": 0.5}
