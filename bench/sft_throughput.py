"""SFT throughput: our recipe (packing) vs a plain TRL SFTTrainer (no packing), side by side.

Same tiny Llama student (same initial weights), same BPE tokenizer, same synthetic samples, same
optimizer settings and one epoch each; we report trained tokens per second (real, non-padding
tokens over the Trainer's train_runtime) as a ratio, and the final logged loss of each arm.
The "ours, no packing" arm separates what packing buys from the rest of the recipe.

    python bench/sft_throughput.py                 # 2,000 samples, three arms
    python bench/sft_throughput.py --samples 500 --arms ours,trl
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from mathforge.io import write_records
from mathforge.prompt import format_prompt, format_response
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


def run_trl(records: list[Record], student: Path, out: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": format_prompt(r.problem), "completion": format_response(r.solution, r.answer)}
                              for r in records])
    args = SFTConfig(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=8,
                     gradient_accumulation_steps=4, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.03,
                     weight_decay=0.0, max_length=MAX_LENGTH, packing=False, logging_steps=1, save_strategy="no",
                     report_to="none", seed=42, bf16=False, dataloader_pin_memory=False)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(student), args=args, train_dataset=data,
                         processing_class=AutoTokenizer.from_pretrained(student))
    result = trainer.train()
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"tokens": tokens, "seconds": result.metrics["train_runtime"], "final_loss": losses[-1],
            "mean_loss": result.training_loss, "steps": trainer.state.global_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--arms", default="ours,ours-nopack,trl")
    args = parser.parse_args()
    arms = args.arms.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = synthetic_records(args.samples)
        write_records(root / "data.jsonl", records)
        texts = [format_prompt(r.problem) + format_response(r.solution, r.answer) for r in records]
        build_tiny(STUDENT, root / "student", texts, MAX_LENGTH, seed=0)
        results = {}
        for arm in arms:
            if arm == "trl":
                results[arm] = run_trl(records, root / "student", root / arm)
            else:
                results[arm] = run_ours(root / "data.jsonl", root / "student", root / arm, packing=arm == "ours")
    print(f"\n{args.samples} synthetic samples, tiny Llama ({STUDENT.hidden_size}d x {STUDENT.num_layers}, "
          f"vocab {STUDENT.vocab_size}), 1 epoch, CPU fp32")
    print(f"{'arm':<14}{'tokens':>10}{'seconds':>10}{'tokens/s':>10}{'steps':>7}{'final loss':>12}{'mean loss':>11}")
    for arm, r in results.items():
        print(f"{arm:<14}{r['tokens']:>10}{r['seconds']:>10.1f}{r['tokens'] / r['seconds']:>10.0f}"
              f"{r['steps']:>7}{r['final_loss']:>12.4f}{r['mean_loss']:>11.4f}")
    if "trl" in results:
        base = results["trl"]["tokens"] / results["trl"]["seconds"]
        for arm in (a for a in results if a != "trl"):
            print(f"{arm} / trl tokens per second: {results[arm]['tokens'] / results[arm]['seconds'] / base:.2f}x")


if __name__ == "__main__":
    main()
