"""SFT recipe tests on CPU with a tiny student: masking on real rows, packing isolation, stage
chaining, resume after SIGKILL, loss going down, LoRA merge, SmolLM2 conversion."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mathforge.config import load_config
from mathforge.io import write_records
from mathforge.prompt import format_prompt
from mathforge.record import Record
from mathforge.sources import load
from mathforge.train.config import StageConfig, StudentConfig, TrainConfig
from mathforge.train.data import IGNORE, NoTrainableLabels, check_trainable, pad_collate
from mathforge.train.packing import packed_collate
from mathforge.train.prepare import Prepared, SFTRows, pack_lengths, prepare
from mathforge.train.students import train_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]
MATH_TRAIN = f"math:{DATA / 'math' / 'math_train.jsonl'}"
GSM8K_TRAIN = f"gsm8k:{DATA / 'gsm8k' / 'train.jsonl'}"


def real(spec: str, n: int) -> list[Record]:
    """The first n records of a source, in id order: the order a prepared set plans its samples in,
    so row i of a prepared set is record i."""
    return sorted(islice(load(spec), n), key=lambda r: r.id)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [r.problem + (r.solution or "") for r in real(MATH_TRAIN, 300) + real(GSM8K_TRAIN, 300)]
    return train_tokenizer(texts, vocab_size=1024)


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    return LlamaForCausalLM(config).eval()


def prepared_rows(records, tokenizer, root: Path, *, packing=False, max_length=2048, **kw) -> tuple[Prepared, SFTRows]:
    data = root / f"data-{len(list(root.glob('data-*')))}.jsonl"
    write_records(data, records)
    prepared = prepare(str(data), tokenizer, style="alpaca", max_length=max_length, packing=packing, root=root / "tok", **kw)
    return prepared, SFTRows(prepared.path)


@pytest.mark.parametrize("spec", [MATH_TRAIN, GSM8K_TRAIN])
def test_labels_are_masked_exactly_on_prompt_and_padding(spec, tokenizer, tmp_path):
    records = real(spec, 8)
    _, rows = prepared_rows(records, tokenizer, tmp_path)
    batch = pad_collate([rows[i] for i in range(len(rows))], tokenizer.pad_token_id)
    for i, record in enumerate(records):
        # The prompt length is measured independently, from the evaluation prompt alone.
        n_prompt = len(tokenizer(format_prompt(record.problem))["input_ids"])
        n = len(rows[i]["input_ids"])
        expected = torch.zeros(batch["labels"].shape[1], dtype=torch.bool)
        expected[:n_prompt] = True
        expected[n:] = True
        assert torch.equal(batch["labels"][i] == IGNORE, expected), record.id
        assert torch.equal(batch["labels"][i, n_prompt:n], batch["input_ids"][i, n_prompt:n])
        assert tokenizer.decode(batch["input_ids"][i, :n_prompt]) == format_prompt(record.problem)
        response = tokenizer.decode(batch["input_ids"][i, n_prompt : n - 1])
        assert response.rstrip().endswith(f"The answer is {record.answer}")
        assert int(batch["labels"][i, n - 1]) == tokenizer.eos_token_id  # EOS is learned
        assert int(batch["attention_mask"][i].sum()) == n


# (solution, answer, the SFT target every consumer uses)
TARGETS = [
    ("2 + 2 = 4.\nThe answer is 4", "4", " 2 + 2 = 4.\nThe answer is 4"),
    ("3 + 3 = 6.", "6", " 3 + 3 = 6.\nThe answer is 6"),  # no answer line: the record's answer's, added
    ("It is 1/2.\nThe answer is 1/2 \n", "0.5", " It is 1/2.\nThe answer is 1/2"),  # its own line, not a second one
    ("So 5.\nThe answer is 5.", "5", " So 5.\nThe answer is 5.\nThe answer is 5"),
]


@pytest.mark.parametrize(("solution", "answer", "target"), TARGETS)
def test_the_sft_target_is_one_text_for_training_the_length_filter_and_export(tokenizer, solution, answer, target):
    from mathforge.quality.export import flat_row
    from mathforge.quality.formatcheck import LengthFilter
    from mathforge.train.data import eos_id
    from mathforge.train.prepare import encode_block

    record = Record("r", "t", "What is it?", solution=solution, answer=answer)
    prompt = format_prompt(record.problem)
    row = next(encode_block([record], tokenizer, "alpaca", 2048))
    trained = tokenizer(prompt)["input_ids"] + tokenizer(target, add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == trained + [eos_id(tokenizer)]
    assert LengthFilter(tokenizer).text(record) == prompt + target
    exported = flat_row(record)
    assert (exported["text_prompt"], exported["text_response"], exported["completion"]) == (prompt, target, target)


def test_batch_without_trainable_labels_fails_loudly():
    with pytest.raises(NoTrainableLabels, match="no trainable labels"):
        check_trainable(torch.full((2, 5), IGNORE))


def test_prepare_drops_and_counts_unusable_records(tokenizer, tmp_path):
    good = real(MATH_TRAIN, 3)
    no_solution = Record(id="x1", source="t", problem="What is 1+1?")
    no_answer = Record(id="x2", source="t", problem="What is 1+1?", solution="It is two.")
    with_line = Record(id="x3", source="t", problem="What is 1+1?", solution="1+1=2.\nThe answer is 2")
    prepared, rows = prepared_rows([*good, no_solution, no_answer, with_line], tokenizer, tmp_path)
    kept = list(rows.samples.select(rows.members.tolist())["id"])
    assert kept == [r.id for r in good] + ["x3"] and prepared.samples == 4
    assert prepared.dropped == {"no_target": 2} and prepared.dropped_examples["no_target"] == ["x1", "x2"]
    assert tokenizer.decode(rows[3]["input_ids"]).count("The answer is 2") == 1  # the line is not doubled
    short, _ = prepared_rows(good, tokenizer, tmp_path, max_length=16)
    assert short.dropped == {"too_long": 3} and short.samples == 0


def test_prepare_reuses_by_fingerprint_and_rebuilds_on_change(tokenizer, tmp_path, monkeypatch):
    import mathforge.train.prepare as prep

    records = real(GSM8K_TRAIN, 40)
    first, rows = prepared_rows(records, tokenizer, tmp_path, num_proc=1)
    data = str(tmp_path / "data-0.jsonl")
    again = prepare(data, tokenizer, style="alpaca", max_length=2048, packing=False, root=tmp_path / "tok")
    assert again.cached and again.path == first.path and not first.cached
    other = prepare(data, tokenizer, style="alpaca", max_length=1024, packing=False, root=tmp_path / "tok")
    assert not other.cached and other.path != first.path
    # Two workers dealt blocks of 7 records (fork keeps the patched block size) hold the same samples.
    monkeypatch.setattr(prep, "BLOCK", 7)
    write_records(data, records)  # rewritten: a new mtime is new data
    split = prepare(data, tokenizer, style="alpaca", max_length=2048, packing=False, root=tmp_path / "tok", num_proc=2)
    two = SFTRows(split.path)
    assert not split.cached and split.path != first.path and len(two.samples.cache_files) == 2
    by_id = {two.samples[i]["id"]: two.samples[i]["input_ids"].tolist() for i in range(len(two.samples))}
    assert len(by_id) == 40
    assert all(by_id[rows.samples[i]["id"]] == rows.samples[i]["input_ids"].tolist() for i in range(40))


def test_prepare_under_a_relative_root(tokenizer, tmp_path, monkeypatch):
    """`mathforge run ... --out runs/x` hands training a relative folder (the quickstart did)."""
    write_records(tmp_path / "data.jsonl", real(GSM8K_TRAIN, 12))
    monkeypatch.chdir(tmp_path)
    built = prepare("data.jsonl", tokenizer, style="alpaca", max_length=2048, packing=True, root="runs/x/tok")
    assert built.path.is_absolute() and len(SFTRows(built.path).samples) == 12


def test_pack_places_every_sample_once_within_max_length(tokenizer, tmp_path):
    prepared, rows = prepared_rows(real(GSM8K_TRAIN, 60), tokenizer, tmp_path, packing=True)
    lengths = np.array(list(rows.samples["length"]))
    assert sorted(rows.members.tolist()) == list(range(60)) and prepared.rows == len(rows)
    assert len(rows) <= math.ceil(1.25 * lengths.sum() / 2048) + 1  # best-fit decreasing is within 11/9 OPT + 1
    for i in range(len(rows)):
        row = rows[i]
        assert len(row["input_ids"]) <= 2048 and len(row["labels"]) == len(row["input_ids"])
        starts = [j for j, p in enumerate(row["position_ids"]) if p == 0]
        assert all(row["labels"][j] == IGNORE for j in starts)  # no sample learns the next one's start
    members, offsets = pack_lengths(np.array([5, 9, 3, 7, 1]), 10)
    assert [sorted(members[a:b].tolist()) for a, b in zip(offsets[:-1], offsets[1:], strict=True)] == [[1, 4], [2, 3], [0]]
    with pytest.raises(ValueError, match="more than max_length"):
        pack_lengths(lengths, 8)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_samples_do_not_attend_to_each_other(attn, tokenizer, tiny_model, tmp_path):
    tiny_model.config._attn_implementation = attn
    prepared, rows = prepared_rows(real(MATH_TRAIN, 5), tokenizer, tmp_path, packing=True, max_length=1024)
    packed_rows = [rows[i] for i in range(len(rows))]
    batch = packed_collate(packed_rows, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] >= 2 and "attention_mask" not in batch
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache transformers does not look for packed rows.
        packed = tiny_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        for r, row in enumerate(packed_rows):
            offset = 0
            for start_len in _segments(row["position_ids"]):
                ids = torch.as_tensor(row["input_ids"][offset : offset + start_len]).long()
                alone = tiny_model(input_ids=ids[None]).logits[0]
                assert torch.allclose(packed[r, offset : offset + start_len], alone, atol=1e-4)
                offset += start_len
        assert prepared.samples == sum(len(_segments(row["position_ids"])) for row in packed_rows)


def _segments(position_ids) -> list[int]:
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


@pytest.fixture(scope="module")
def stage_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    records = real(MATH_TRAIN, 600)
    write_records(root / "normal.jsonl", [r for r in records if (r.level or 0) <= 3][:160])
    write_records(root / "hard.jsonl", [r for r in records if (r.level or 0) >= 4][:48])
    return root


def tiny_cfg(stages, **kw) -> TrainConfig:
    student = StudentConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2)
    base = dict(stages=tuple(stages), student=student, max_length=768, global_batch=8, micro_batch=4,
                logging_steps=1, save_steps=1000)
    return TrainConfig(**{**base, **kw})


def _state(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def test_two_stages_chain_weights_and_loss_goes_down(stage_files, tmp_path):
    from mathforge.engine import Engine, EngineConfig, Request, Sampling
    from mathforge.train.sft import train

    stages = [StageConfig("normal", str(stage_files / "normal.jsonl"), epochs=2, lr=5e-3, warmup_ratio=0.0),
              # lr 0: stage 2's weights can only equal stage 1's if it really started from them
              StageConfig("hard", str(stage_files / "hard.jsonl"), epochs=1, lr=0.0, schedule="constant")]
    results = train(tiny_cfg(stages), tmp_path)
    assert results["hard"]["start"] == str(tmp_path / "sft" / "normal" / "model")
    init, one, two = (_state(tmp_path / d) for d in ("student-init", "sft/normal/model", "sft/hard/model"))
    assert any(not torch.equal(init[k], one[k]) for k in init)
    assert all(torch.equal(one[k], two[k]) for k in one)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["stage"] == "normal" and "loss" in r]
    assert len(losses) >= 10 and sum(losses[-3:]) / 3 < 0.85 * losses[0]
    assert all(r["tokens_per_s"] > 0 and "learning_rate" in r for r in rows if "loss" in r)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["stages"][1]["lr"] == 0.0
    # The final model is a plain checkpoint the evaluation's "hf" backend loads and runs.
    with Engine(EngineConfig(backend="hf", model=str(tmp_path / "model"), progress=False)) as engine:
        [result] = engine.run([Request(key="k", prompt=format_prompt("What is 1+1?"),
                                       sampling=Sampling(temperature=0.0, max_tokens=8))])
    assert result.error is None and result.completion_tokens > 0


def test_a_stage_smaller_than_one_batch_still_trains(tmp_path):
    """A weak teacher leaves a handful of samples (the quickstart's 7 packed into 2 rows): an epoch
    of fewer rows than a micro-batch keeps its partial batch instead of having no step at all."""
    from mathforge.train.sft import train

    write_records(tmp_path / "few.jsonl", real(MATH_TRAIN, 3))
    result = train(tiny_cfg([StageConfig("few", str(tmp_path / "few.jsonl"), epochs=2)]), tmp_path / "run")
    assert result["few"]["steps"] >= 2


def test_a_percentile_max_length_resolves_on_stage_one_and_truncation_keeps_every_sample(stage_files, tmp_path):
    from transformers import AutoTokenizer

    from mathforge.answers import sft_target
    from mathforge.train.sft import train

    stages = [StageConfig("normal", str(stage_files / "normal.jsonl"), max_samples=60)]
    results = train(tiny_cfg(stages, max_length="p50", overlong="truncate", max_steps=1, num_proc=1), tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path / "student-init")
    pairs = [(len(tok(format_prompt(r.problem))["input_ids"]), len(tok(sft_target(r.solution, r.answer),
              add_special_tokens=False)["input_ids"]) + 1) for r in islice(load(f"math:{stage_files}/normal.jsonl"), 60)]
    lengths = sorted(p + t for p, t in pairs)
    resolved = json.loads((tmp_path / "stats" / "max-length.json").read_text())
    assert resolved["max_length"] == lengths[29] and resolved["samples"] == 60  # the 30th of 60: half fit
    assert results["normal"]["max_length"] == lengths[29]
    # cut, not dropped, unless the prompt alone fills the length (no target token would be left)
    no_room = sum(p >= lengths[29] for p, _ in pairs)
    assert results["normal"]["samples"] == 60 - no_room and results["normal"]["dropped"] == ({"too_long": no_room} if no_room else {})
    rows = SFTRows(results["normal"]["data"])
    v = lengths[29]
    full = [rows[i]["input_ids"] for i in range(len(rows)) if len(rows[i]["input_ids"]) == v]
    assert len(full) == sum(p < v <= p + t for p, t in pairs)  # those that fit exactly, and those cut
    assert sum(ids[-1] != tok.eos_token_id for ids in full) == sum(p < v < p + t for p, t in pairs)  # cut: no EOS
    assert all(len(rows[i]["input_ids"]) <= lengths[29] for i in range(len(rows)))
    with pytest.raises(ValueError, match="percentile"):
        tiny_cfg(stages, max_length="p0")


def test_lora_stage_saves_merged_plain_weights(stage_files, tmp_path):
    from transformers import AutoModelForCausalLM

    from mathforge.train.config import LoraConfig
    from mathforge.train.sft import train

    stage = StageConfig("normal", str(stage_files / "normal.jsonl"), epochs=1, lr=1e-2, warmup_ratio=0.0)
    train(tiny_cfg([stage], max_steps=3, lora=LoraConfig(r=4, alpha=8, dropout=0.0)), tmp_path)
    model_dir = tmp_path / "model"
    assert not (model_dir / "adapter_config.json").exists()
    init, merged = _state(tmp_path / "student-init"), _state(model_dir)
    assert set(init) == set(merged)  # no lora_A/lora_B leftovers
    changed = [k for k in init if not torch.equal(init[k], merged[k])]
    assert changed and all("proj" in k for k in changed)  # only the adapted projections moved
    AutoModelForCausalLM.from_pretrained(model_dir)


def _losses(out: Path) -> dict[int, dict]:
    """The last logged row of every step (a resumed run logs the steps after its checkpoint again)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "loss" in r}


def test_two_processes_shard_batches_match_one_and_resume_after_sigkill(stage_files, tmp_path):
    from mathforge.train.sft import train

    stage = {"name": "normal", "dataset": str(stage_files / "normal.jsonl"), "epochs": 3, "lr": 1e-3}
    cfg = {"stages": [stage], "max_length": 512, "global_batch": 4, "micro_batch": 2, "max_steps": 12,
           "save_steps": 3, "logging_steps": 1, "precision": "fp32",
           "student": {"vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2}}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    train(load_config(TrainConfig, recipe), tmp_path / "one")  # 1 process: 2 micro-batches accumulated a step
    out = tmp_path / "two"
    command = [sys.executable, "-m", "mathforge.cli", "train", str(recipe), "--out", str(out), "--nproc", "2"]
    # Its own session: the SIGKILL reaches the launcher and both ranks, as a scheduler killing the job would.
    first_log = open(tmp_path / "first.log", "w")
    job = subprocess.Popen(command, stdout=first_log, stderr=subprocess.STDOUT, start_new_session=True)
    checkpoints = out / "sft" / "normal" / "checkpoints"
    deadline = time.time() + 150
    while time.time() < deadline and not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    first_log.close()
    assert not (out / "model").exists(), "training finished before the kill: make it longer"
    assert list(checkpoints.glob("checkpoint-*")), (tmp_path / "first.log").read_text()[-3000:]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((out / "stats" / "sft-normal.json").read_text())
    resumed_at = int(Path(stats["resumed_from"]).name.split("-")[1])
    assert stats["steps"] == 12 and resumed_at >= 3
    one, two = _losses(tmp_path / "one"), _losses(out)
    assert sorted(two) == list(range(1, 13))
    for step in range(1, 11):  # the same global batches in the same order, before and after the kill
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], rel=1e-3), step
        # each rank trained on its own half of the step's global batch, and only on it
        assert len(two[step]["tokens_by_rank"]) == 2 and min(two[step]["tokens_by_rank"]) > 0
        assert sum(two[step]["tokens_by_rank"]) == one[step]["tokens"] == two[step]["tokens"]
    assert abs(two[12]["loss"] - one[12]["loss"]) < 0.05
    # Only rank 0 writes: one metrics row per step and session, and each log line once.
    second = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in second if "loss" in r][-(12 - resumed_at):] == list(range(resumed_at + 1, 13))
    log = (out / "logs" / "run.log").read_text().splitlines()
    assert len([line for line in log if "samples" in line]) == 2  # one per session, not one per rank
    assert (out / "model" / "model.safetensors").exists()


REAL = str(DATA / "math" / "math_train.jsonl")


@pytest.mark.parametrize("fields, error", [
    ({"stages": ()}, "no stages"),
    ({"stages": (StageConfig("a", REAL), StageConfig("a", REAL))}, "unique"),
    ({"stages": (StageConfig("a", REAL),), "global_batch": 30, "micro_batch": 4}, "not a multiple"),
    ({"stages": (StageConfig("a", "/nowhere/data.jsonl"),)}, "does not exist"),
    ({"stages": (StageConfig("a", REAL, warmup_ratio=1.0),)}, "warmup_ratio"),
])
def test_bad_configs_fail_before_training(fields, error, tmp_path):
    from mathforge.train.sft import train

    with pytest.raises((ValueError, FileNotFoundError), match=error):
        train(TrainConfig(**fields), tmp_path)
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.parametrize("recipe", ["train_offline.yaml", "train_paper.yaml"])
def test_shipped_recipes_load(recipe):
    cfg = load_config(TrainConfig, ROOT / "recipes" / recipe)
    assert len(cfg.stages) == 2 and cfg.global_batch == 32
    for name in ("deepspeed_zero3.yaml", "fsdp.yaml"):
        assert yaml.safe_load((ROOT / "recipes" / "accelerate" / name).read_text())["distributed_type"]


def test_smollm2_converts_once_with_the_gguf_weights(tmp_path):
    import gguf
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathforge.models import smollm2_gguf
    from mathforge.train.students import smollm2_checkpoint

    path = smollm2_checkpoint(tmp_path / "smollm2")
    assert (path / "model.safetensors").exists() and not list(tmp_path.glob(".smollm2.*"))
    converted = load_file(path / "model.safetensors")
    tensors = {t.name: t for t in gguf.GGUFReader(smollm2_gguf()).tensors}
    for ours, theirs in (("model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"),
                         ("model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight")):
        t = tensors[theirs]
        expected = gguf.quants.dequantize(t.data, t.tensor_type).reshape(converted[ours].shape)
        assert torch.equal(converted[ours], torch.from_numpy(expected)), ours  # dequantized exactly, not re-rounded
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer(format_prompt("What is 2+3?"), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(path)(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer)) and torch.isfinite(logits).all()
    assert smollm2_checkpoint(tmp_path / "smollm2") == path  # converted once: the second call only finds it


def test_trl_sft_trainer_trains_on_an_export_with_completion_only_loss(tokenizer, tmp_path):
    from datasets import load_dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from mathforge.quality.export import export

    records = real(GSM8K_TRAIN, 24)
    export(records, tmp_path / "export")
    data = load_dataset(str(tmp_path / "export"), split="train")
    assert {"prompt", "completion", "messages", "seed_id", "method"} <= set(data.column_names) and len(data) == 24
    # The export's texts are the ones our recipe trains on: same tokens as the prepared set, less EOS.
    _, rows = prepared_rows(records, tokenizer, tmp_path)
    planned = [r.id for r in records]  # the prepared set's order (`real` gives them in id order)
    for i in (0, 23):
        ours = rows[planned.index(data[i]["id"])]["input_ids"].tolist()
        theirs = tokenizer(data[i]["prompt"])["input_ids"] + tokenizer(data[i]["completion"], add_special_tokens=False)["input_ids"]
        assert theirs + [tokenizer.eos_token_id] == ours
        assert data[i]["messages"][1] == {"role": "assistant", "content": data[i]["completion"].strip()}
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
                     completion_only_loss=True, max_length=1024, logging_steps=1, save_strategy="no", report_to="none",
                     use_cpu=True, dataloader_pin_memory=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.select_columns(["prompt", "completion"]),
                         processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    n_prompt = len(tokenizer(data[0]["prompt"])["input_ids"])
    assert (batch["labels"][0, :n_prompt] == IGNORE).all() and (batch["labels"][0, n_prompt:] != IGNORE).any()
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_prepare_only_prints_json_reuses_the_set_and_names_a_bad_line(tmp_path):
    from typer.testing import CliRunner

    from mathforge.cli import app

    write_records(tmp_path / "data.jsonl", real(GSM8K_TRAIN, 30))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"stages": [{"name": "s", "dataset": str(tmp_path / "data.jsonl")}],
                                      "max_length": 512, "num_proc": 2, "student": {"vocab_size": 512}}))
    command = ["train", str(recipe), "--out", str(tmp_path / "run"), "--prepare-only", "--json"]
    first, again = (json.loads(CliRunner().invoke(app, command).stdout) for _ in range(2))
    assert first["samples"] + sum(first["stages"]["s"]["dropped"].values()) == 30 and not first["cached"]
    assert first["tokens"] > first["samples"] * 50
    assert again["cached"] and again["path"] == first["path"] and Path(first["path"]).is_relative_to(tmp_path / "run")
    assert not (tmp_path / "run" / "sft").exists()  # prepared, not trained
    lines = (tmp_path / "data.jsonl").read_text().splitlines()
    (tmp_path / "data.jsonl").write_text("\n".join(lines[:7] + ["{not json"] + lines[7:]) + "\n")
    bad = CliRunner().invoke(app, command)
    assert bad.exit_code == 1 and "data.jsonl:8" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("text, digits", [
    ("Ana has 97 rocks.", ["Ġ9", "7"]),  # the space rides on the first digit, never a token alone
    ("x=1234.", ["1", "2", "3", "4"]),  # digits one by one, whatever BPE saw often
    ("12 + 9 = 21.\nThe answer is 486", ["1", "2", "Ġ9", "Ġ2", "1", "Ġ4", "8", "6"]),
])
def test_tiny_tokenizer_splits_digits_and_round_trips(tokenizer, text, digits):
    pieces = tokenizer.tokenize(text)
    assert [p for p in pieces if any(c.isdigit() for c in p)] == digits and "Ġ" not in pieces
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
