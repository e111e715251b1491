"""SFT throughput: our recipe (packing) vs TRL's SFTTrainer with its own packing, side by side.

Same tiny Llama student (same initial weights), same BPE tokenizer, same synthetic samples, same
optimizer settings, 8 packed rows of <= 1024 tokens a step, one epoch each; we report trained tokens
per second (real, non-padding tokens over the Trainer's train_runtime) as a ratio, and the final
logged loss of each arm. The fair peer is TRL with `packing=True, padding_free=True`; before it
trains, the bench checks that its packed samples do not attend to each other on this machine.
"ours-nopack" and "trl" (unpacked) separate what packing buys from the rest of each recipe.

    python bench/sft_throughput.py                 # 2,000 samples: ours vs packed TRL
    python bench/sft_throughput.py --samples 500 --arms ours,ours-nopack,trl-packed,trl
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from mathforge.answers import sft_target
from mathforge.io import write_records
from mathforge.prompt import format_prompt
from mathforge.record import Record
from mathforge.train.config import StageConfig, StudentConfig, TrainConfig
from mathforge.train.students import build_tiny

STUDENT = StudentConfig(vocab_size=2048, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2)
MAX_LENGTH = 1024
LR = 1e-3


def synthetic_records(n: int, seed: int = 0) -> list[Record]:
    """Arithmetic word problems whose solutions have a long-tailed number of steps, like real SFT data."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        steps = min(40, max(1, int(rng.lognormvariate(1.6, 0.8))))
        total, lines = a, []
        for s in range(steps):
            c = rng.randint(2, 99)
            op = rng.choice(["+", "-", "*"])
            new = {"+": total + c, "-": total - c, "*": total * c}[op]
            lines.append(f"Step {s + 1}: we take {total} {op} {c}, which gives {new}.")
            total = new
        problem = f"A shop starts with {a} items and receives {b} crates. Follow the {steps} operations. What is left?"
        records.append(Record(id=f"syn-{i}", source="synthetic", problem=problem,
                              solution="\n".join(lines), answer=str(total)))
    return records


def run_ours(records_path: Path, student: Path, out: Path, packing: bool) -> dict:
    from mathforge.train.sft import train

    stage = StageConfig("bench", str(records_path), epochs=1, lr=LR, warmup_ratio=0.03)
    micro = 2 if packing else 8  # ~2k token slots per micro-batch in both arms
    # 8 packed rows of <= 1024 tokens per step; on this data a row holds ~6 samples, so a packed
    # step sees ~47 samples and an epoch has fewer steps than the unpacked arms (compare losses with that in mind).
    global_batch = 8 if packing else 32
    cfg = TrainConfig(stages=(stage,), student=StudentConfig(model=str(student)), max_length=MAX_LENGTH,
                      global_batch=global_batch, micro_batch=micro, packing=packing, precision="fp32",
                      save_steps=10**6, logging_steps=1)
    stats = train(cfg, out)["bench"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    return {"tokens": stats["tokens"], "seconds": stats["train_runtime"], "final_loss": losses[-1],
            "mean_loss": stats["train_loss"], "steps": stats["steps"]}


def run_trl(records: list[Record], student: Path, out: Path, packing: bool) -> dict:
    """TRL's SFTTrainer on the same prompt/completion texts; packed, it is the fair peer of ours
    (its best-fit packing, padding-free rows with restarting position_ids, the same 8 rows a step)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": format_prompt(r.problem), "completion": sft_target(r.solution, r.answer)}
                              for r in records])
    micro, accumulation = (2, 4) if packing else (8, 4)
    args = SFTConfig(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=micro,
                     gradient_accumulation_steps=accumulation, learning_rate=LR, lr_scheduler_type="cosine",
                     warmup_steps=0.03, weight_decay=0.0, max_length=MAX_LENGTH, packing=packing,
                     padding_free=packing, logging_steps=1, save_strategy="no", report_to="none", seed=42,
                     bf16=False, use_cpu=True, dataloader_pin_memory=False)
    model = AutoModelForCausalLM.from_pretrained(student)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=AutoTokenizer.from_pretrained(student))
    if packing:
        check_isolation(trainer, model)
    result = trainer.train()
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"tokens": tokens, "seconds": result.metrics["train_runtime"], "final_loss": losses[-1],
            "mean_loss": result.training_loss, "steps": trainer.state.global_step}


def check_isolation(trainer, model) -> None:
    """TRL's packed batch on this CPU: every sample's logits equal those of the sample run alone."""
    import torch

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    ids, positions = batch["input_ids"][0], batch["position_ids"][0]
    starts = [*(torch.nonzero(positions == 0).flatten().tolist()), len(ids)]
    assert len(starts) > 3, "the first packed rows hold one sample each: nothing to check"
    with torch.no_grad():
        packed = model(input_ids=ids[None], position_ids=positions[None], use_cache=False).logits[0]
        for a, b in zip(starts, starts[1:], strict=False):
            alone = model(input_ids=ids[None, a:b], use_cache=False).logits[0]
            if not torch.allclose(packed[a:b], alone, atol=1e-4):
                raise SystemExit(f"TRL's packed samples see each other on this machine (tokens {a}:{b})")
    print(f"TRL packing check: {len(starts) - 1} samples in 2 packed rows, each attends only to itself")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--arms", default="ours,trl-packed", help="ours, ours-nopack, trl-packed, trl (unpacked)")
    args = parser.parse_args()
    arms = args.arms.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = synthetic_records(args.samples)
        write_records(root / "data.jsonl", records)
        texts = [format_prompt(r.problem) + sft_target(r.solution, r.answer) for r in records]
        build_tiny(STUDENT, root / "student", texts, MAX_LENGTH, seed=0)
        results = {}
        for arm in arms:
            if arm.startswith("trl"):
                results[arm] = run_trl(records, root / "student", root / arm, packing=arm == "trl-packed")
            else:
                results[arm] = run_ours(root / "data.jsonl", root / "student", root / arm, packing=arm == "ours")
    print(f"\n{args.samples} synthetic samples, tiny Llama ({STUDENT.hidden_size}d x {STUDENT.num_layers}, "
          f"vocab {STUDENT.vocab_size}), 1 epoch, CPU fp32")
    print(f"{'arm':<14}{'tokens':>10}{'seconds':>10}{'tokens/s':>10}{'steps':>7}{'final loss':>12}{'mean loss':>11}")
    for arm, r in results.items():
        print(f"{arm:<14}{r['tokens']:>10}{r['seconds']:>10.1f}{r['tokens'] / r['seconds']:>10.0f}"
              f"{r['steps']:>7}{r['final_loss']:>12.4f}{r['mean_loss']:>11.4f}")
    for peer in (a for a in ("trl-packed", "trl") if a in results):
        base = results[peer]["tokens"] / results[peer]["seconds"]
        for arm in (a for a in results if not a.startswith("trl")):
            print(f"{arm} / {peer} tokens per second: {results[arm]['tokens'] / results[arm]['seconds'] / base:.2f}x; "
                  f"final loss {results[arm]['final_loss'] - results[peer]['final_loss']:+.3f}")


if __name__ == "__main__":
    main()
