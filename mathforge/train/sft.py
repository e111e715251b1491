"""The SFT recipe: every stage of a `TrainConfig`, in order, each starting from the previous one.

Read top to bottom, `train` is the whole flow:

    student init -> for each stage: tokenise (+ pack) its records once, on disk (`prepare`), train
                    with the HF Trainer, save the stage's model -> next stage starts from it
    run dir: config.yaml, metrics.jsonl, stats/sft-<stage>.json, tokenized/<fingerprint>/,
             sft/<stage>/{checkpoints,model}, model

Stages are data (the paper's two stages are two entries of `cfg.stages`), not code paths. Each stage
and the student's initial checkpoint are keyed steps (`step_specs`): a changed learning rate,
dataset or student reruns that stage and every stage after it, from fresh checkpoints. A killed
run resumes: finished stages are skipped and an unfinished one continues from its
last complete checkpoint, with the optimizer, scheduler, RNG and data position restored by the
Trainer. Multi-GPU runs use the same code under `accelerate launch` (DeepSpeed ZeRO-3 or FSDP
configs in recipes/accelerate/); only the main process writes run-dir files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from mathforge.answers import sft_target
from mathforge.io import follow_umask
from mathforge.prompt import format_prompt
from mathforge.rundir import Planned, RunDir, StepSpec, step_key, step_spec
from mathforge.sources import SOURCES
from mathforge.train.config import StageConfig, TrainConfig, percentile
from mathforge.train.data import load_records, pad_collate
from mathforge.train.packing import packed_collate
from mathforge.train.prepare import Prepared, SFTRows, data_files, prepare
from mathforge.train.students import resolve_student

VERSION = 2  # of a stage's output (its model folder); bump when it changes (2: samples in id order)


def step_specs(cfg: TrainConfig, data_keys: dict[str, str] | None = None) -> dict[str, StepSpec]:
    """The key of the student's initial checkpoint and of every stage, from the config alone.
    `data_keys` names the key of a dataset made by an earlier step (a run's cleaning); any other
    dataset is keyed by its files' sizes and mtimes (a generated source by its spec)."""
    data = {s.name: (data_keys or {}).get(s.dataset) or data_key(s.dataset) for s in cfg.stages}
    if cfg.student.model == "tiny" and cfg.tokenizer_corpus:  # its tokenizer is trained on a fixed corpus
        corpus = {"prompt_style": cfg.prompt_style, "max_length": cfg.max_length, "seed": cfg.seed}
        init = step_spec(VERSION, {"student": cfg.student, **corpus},
                         after={"data:tokenizer_corpus": data_key(cfg.tokenizer_corpus)})
    elif cfg.student.model == "tiny":  # its tokenizer is trained on every stage's texts
        corpus = {"prompt_style": cfg.prompt_style, "max_length": cfg.max_length, "seed": cfg.seed,
                  "max_samples": [s.max_samples for s in cfg.stages]}
        init = step_spec(VERSION, {"student": cfg.student, **corpus}, after={f"data:{n}": k for n, k in data.items()})
    else:
        init = step_spec(VERSION, {"student": cfg.student})
    specs, start = {"student-init": init}, init.key
    if percentile(cfg.max_length):  # a length of stage 1's data in the student's tokenizer
        first = cfg.stages[0]
        specs["max-length"] = step_spec(VERSION, {"max_length": cfg.max_length, "prompt_style": cfg.prompt_style,
                                                  "max_samples": first.max_samples},
                                        after={"start": start, "data": data[first.name]})
    shared = {k: v for k, v in _fields(dataclasses.replace(cfg, stages=())).items() if not k.startswith("student.")}
    for stage in cfg.stages:  # the student and the data reach a stage through `start` and `data`
        fields = {**shared, **_fields(dataclasses.replace(stage, dataset="-"), "stage")}
        specs[f"sft-{stage.name}"] = spec = StepSpec(VERSION, fields, {"start": start, "data": data[stage.name]})
        start = spec.key
    return specs


def _fields(config: Any, prefix: str = "") -> dict[str, Any]:
    from mathforge.rundir import keyed_fields

    return keyed_fields(config, prefix)


def data_key(spec: str) -> str:
    """A dataset's key: its files' sizes and mtimes (a generated source: its spec)."""
    files = data_files(spec)
    return step_key(VERSION, {"spec": spec} if not files else None, files=files)


def planned(cfg: TrainConfig, root: Path, prefix: str = "", data_keys: dict[str, str] | None = None) -> list[Planned]:
    """The training steps of a dry run, in the order they run."""
    return [Planned(f"{prefix}{name}", root, name, spec) for name, spec in step_specs(cfg, data_keys).items()]


def train(cfg: TrainConfig, out: str | Path, data_keys: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of `cfg` in `out`; returns per-stage stats. The final model is `out/model`."""
    check(cfg)
    state = process_state()
    run = _run_dir(out, state)
    if state.is_main_process:
        run.save_config(cfg)
    specs = step_specs(cfg, data_keys)
    start = _student(cfg, run, specs["student-init"])
    cfg = resolve_max_length(cfg, start, run, specs)
    results: dict[str, Any] = {}
    for stage in cfg.stages:
        name, home = f"sft-{stage.name}", run.root / "sft" / stage.name
        results[stage.name] = run.run_step(name, specs[name], partial(train_stage, cfg, stage, start, run),
                                           reset=partial(shutil.rmtree, home, ignore_errors=True),
                                           writer=state.is_main_process)
        state.wait_for_everyone()
        start = str(home / "model")
    if state.is_main_process:
        _link(run.root / "model", Path("sft") / cfg.stages[-1].name / "model")
    state.wait_for_everyone()
    return results


def _student(cfg: TrainConfig, run: RunDir, spec: StepSpec) -> str:
    """The checkpoint stage 1 starts from (a tiny student's is built once per key, by the main process)."""
    state, init = process_state(), run.root / "student-init"
    with state.main_process_first():
        run.run_step("student-init", spec, lambda: {"checkpoint": resolve_student(
            cfg.student, init, tokenizer_texts(cfg), cfg.max_length, cfg.seed)},
            reset=partial(shutil.rmtree, init, ignore_errors=True), writer=state.is_main_process)
    return resolve_student(cfg.student, init, (), cfg.max_length, cfg.seed)


def resolve_max_length(cfg: TrainConfig, start: str, run: RunDir, specs: dict[str, StepSpec]) -> TrainConfig:
    """`cfg` with a percentile max length ("p90") made a number of tokens: that percentile of the
    prompt + target + EOS lengths of stage 1's samples in the student's tokenizer (at `start`), the
    smallest length at least that share of the samples fits in. Kept in the `max-length` step's stats."""
    q = percentile(cfg.max_length)
    if q is None:
        return cfg
    from mathforge.train.prepare import sample_lengths

    def resolve() -> dict[str, Any]:
        stage = cfg.stages[0]
        lengths = sample_lengths(stage.dataset, AutoTokenizer.from_pretrained(start), cfg.prompt_style,
                                 stage.max_samples)
        if not len(lengths):
            raise ValueError(f"max_length {cfg.max_length}: stage {stage.name} has no sample to measure")
        value = int(np.percentile(lengths, q, method="higher"))
        return {"max_length": value, "percentile": q, "samples": len(lengths), "longest": int(lengths.max()),
                "over": int((lengths > value).sum())}

    state = process_state()
    with state.main_process_first():
        stats = run.run_step("max-length", specs["max-length"], resolve, writer=state.is_main_process)
    run.log.info("max_length %s: %d tokens (%d of %d samples of stage 1 longer)", cfg.max_length,
                 stats["max_length"], stats["over"], stats["samples"])
    return dataclasses.replace(cfg, max_length=stats["max_length"])


def process_state() -> PartialState:
    """This process's place in the job; on a CPU-only machine ranks join over gloo (accelerate's MULTI_CPU)."""
    return PartialState(cpu=not torch.cuda.is_available())


def _run_dir(out: str | Path, state: PartialState) -> RunDir:
    run = RunDir(out)
    run.log.disabled = not state.is_main_process  # one writer per run directory: rank 0
    return run


def check(cfg: TrainConfig) -> None:
    """Reject configs that would train wrongly instead of failing hours in."""
    if not cfg.stages:
        raise ValueError("the recipe lists no stages: add at least one under 'stages'")
    names = [s.name for s in cfg.stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.global_batch % (cfg.micro_batch * world):
        raise ValueError(f"global_batch={cfg.global_batch} is not a multiple of micro_batch={cfg.micro_batch} "
                         f"x {world} processes")
    for stage in cfg.stages:
        kind = stage.dataset.partition(":")[0]
        if kind not in SOURCES and not Path(stage.dataset).exists():
            raise FileNotFoundError(f"stage {stage.name}: dataset {stage.dataset} does not exist")
        if not 0 <= stage.warmup_ratio < 1:
            raise ValueError(f"stage {stage.name}: warmup_ratio must be in [0, 1), got {stage.warmup_ratio}")


def prepare_stages(cfg: TrainConfig, out: str | Path) -> dict[str, Prepared]:
    """Tokenise (and pack) every stage's data without training: the `--prepare-only` flow."""
    check(cfg)
    run = _run_dir(out, process_state())
    specs = step_specs(cfg)
    start = _student(cfg, run, specs["student-init"])
    cfg = resolve_max_length(cfg, start, run, specs)
    tokenizer = AutoTokenizer.from_pretrained(start)
    return {stage.name: prepare_stage(cfg, stage, tokenizer, run) for stage in cfg.stages}


def prepare_stage(cfg: TrainConfig, stage: StageConfig, tokenizer: Any, run: RunDir) -> Prepared:
    """The stage's tokenised set: the main process builds it (or finds it by fingerprint), the others load it."""
    root = Path(cfg.data_cache) if cfg.data_cache else run.root / "tokenized"
    with process_state().main_process_first():
        prepared = prepare(stage.dataset, tokenizer, style=cfg.prompt_style, max_length=cfg.max_length,
                           packing=cfg.packing, root=root, max_samples=stage.max_samples, num_proc=cfg.num_proc,
                           truncate=cfg.overlong == "truncate")
    if not prepared.samples:
        raise ValueError(f"stage {stage.name}: no usable sample in {stage.dataset} (dropped: {prepared.dropped})")
    run.log.info("stage %s: %d samples (%d tokens) in %d rows at %s%s, dropped %s", stage.name, prepared.samples,
                 prepared.tokens, prepared.rows, prepared.path, " (cached)" if prepared.cached else "", prepared.dropped)
    return prepared


def train_stage(cfg: TrainConfig, stage: StageConfig, start: str, run: RunDir) -> dict[str, Any]:
    """Train one stage from checkpoint `start`; saves `sft/<stage>/model` and returns the stage stats."""
    home = run.root / "sft" / stage.name
    model, tokenizer = load_student(start, cfg)
    prepared = prepare_stage(cfg, stage, tokenizer, run)
    rows = SFTRows(prepared.path)
    if cfg.packing:
        flash = cfg.student.attn_implementation.startswith("flash")
        collate = partial(packed_collate, pad_id=tokenizer.pad_token_id, flatten=flash)
    else:
        collate = partial(pad_collate, pad_id=tokenizer.pad_token_id)
    trainer = StageTrainer(
        model=model,
        args=training_args(cfg, stage, home / "checkpoints", rows=len(rows)),
        train_dataset=rows,
        data_collator=collate,
        processing_class=tokenizer,
        callbacks=[MetricsLog(run.root / "metrics.jsonl", stage.name)],
    )
    resume = last_checkpoint(home / "checkpoints")
    if resume:
        run.log.info("stage %s: resuming from %s", stage.name, resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    save_model(trainer, cfg, start, home / "model")
    return {
        "samples": prepared.samples, "rows": prepared.rows, "tokens": prepared.tokens,
        "trained_tokens": prepared.trained_tokens, "dropped": prepared.dropped,
        "dropped_examples": prepared.dropped_examples, "data": str(prepared.path), "steps": trainer.state.global_step,
        "train_loss": result.training_loss, "train_runtime": result.metrics.get("train_runtime"),
        "resumed_from": str(resume) if resume else None, "start": start, "max_length": cfg.max_length,
    }


def load_student(path: str, cfg: TrainConfig) -> tuple[Any, Any]:
    """The model (with LoRA adapters when asked) and its tokenizer, ready for the Trainer."""
    kwargs: dict[str, Any] = {"attn_implementation": cfg.student.attn_implementation}
    if cfg.lora.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["dtype"] = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # With a KV cache transformers skips packed-row detection, and packed samples would attend to
    # each other; training never needs the cache.
    model.config.use_cache = False
    if cfg.lora.r > 0:
        model = _with_lora(model, cfg)
    return model, tokenizer


def _with_lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.lora.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed LoRA needs gradients flowing from frozen embeddings
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def training_args(cfg: TrainConfig, stage: StageConfig, output_dir: Path, rows: int) -> TrainingArguments:
    """TrainingArguments for one stage: the paper's optimiser settings and our checkpoint policy."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    bf16, fp16 = _precision(cfg.precision)
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=stage.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.global_batch // (cfg.micro_batch * world),
        learning_rate=stage.lr,
        lr_scheduler_type=stage.schedule,
        warmup_steps=stage.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        optim="adamw_torch",
        max_grad_norm=cfg.max_grad_norm,
        bf16=bf16,
        fp16=fp16,
        use_cpu=not torch.cuda.is_available(),  # also what makes CPU ranks one gloo job, not N lone runs
        activation_checkpointing=cfg.gradient_checkpointing,
        seed=cfg.seed,
        data_seed=cfg.seed,  # one fixed shuffle order per stage; stages are never mixed
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=list(cfg.report_to) or "none",
        remove_unused_columns=False,
        # N ranks would pad an epoch's last partial batch with repeated rows; dropping it instead keeps
        # an N-process run step for step the same as a 1-process one (a reshuffled epoch loses < 1 batch).
        # A set smaller than one batch on every rank keeps its partial batch, or an epoch has no step.
        dataloader_drop_last=rows >= cfg.micro_batch * world,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not process_state().is_main_process,
    )


def _precision(name: str) -> tuple[bool, bool]:
    if name == "auto":
        name = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return name == "bf16", name == "fp16"


class StageTrainer(Trainer):
    """The HF Trainer plus a count of real (non-padding) tokens, logged as tokens/s and per rank."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._tokens = torch.zeros((), dtype=torch.long, device=self.args.device)
        self._since = time.perf_counter()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        tokens = inputs.pop("num_tokens", None)
        if tokens is not None and model.training:
            self._tokens = self._tokens.to(tokens.device) + tokens.detach()  # stays on device: no sync per step
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            by_rank = self.accelerator.gather(self._tokens.reshape(1)).tolist()  # each rank's share of the batches
            tokens = sum(by_rank)
            now = time.perf_counter()
            logs["tokens"] = tokens
            logs["tokens_by_rank"] = by_rank
            logs["tokens_per_s"] = round(tokens / max(now - self._since, 1e-9), 1)
            if torch.cuda.is_available():
                logs["gpu_mem_peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            self._tokens.zero_()
            self._since = now
        super().log(logs, start_time)


class MetricsLog(TrainerCallback):
    """Appends every Trainer log (loss, lr, grad norm, tokens/s) as one JSON line tagged with the stage."""

    def __init__(self, path: Path, stage: str):
        self.path, self.stage = path, stage

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            row = {"stage": self.stage, "step": state.global_step, "time": round(time.time(), 3), **logs}
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (its trainer_state.json, written last, parses); incomplete ones are removed."""
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    for path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            return path
        except (OSError, ValueError):
            if process_state().is_main_process:
                shutil.rmtree(path, ignore_errors=True)  # killed mid-save: unusable, and it would confuse rotation
    return None


def save_model(trainer: Trainer, cfg: TrainConfig, start: str, target: Path) -> None:
    """Save the stage's model (LoRA merged into full weights) with its tokenizer, atomically."""
    tmp = target.with_name(target.name + ".tmp")
    trainer.save_model(str(tmp))  # distributed-aware: gathers ZeRO-3/FSDP shards
    if process_state().is_main_process:
        if cfg.lora.r > 0:
            _merge_adapter(start, tmp, cfg)
        if target.exists():
            shutil.rmtree(target)
        follow_umask(tmp)
        tmp.rename(target)
    process_state().wait_for_everyone()


def _merge_adapter(base: str, adapter_dir: Path, cfg: TrainConfig) -> None:
    # Merge into a full-precision copy of the base (not the 4-bit one, for QLoRA) so evaluation
    # backends load a plain checkpoint and the next stage starts from merged weights.
    from peft import PeftModel

    dtype = torch.bfloat16 if cfg.lora.load_in_4bit else None
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), adapter_dir)
    merged = merged.merge_and_unload()
    for name in ("adapter_model.safetensors", "adapter_config.json", "adapter_model.bin"):
        (adapter_dir / name).unlink(missing_ok=True)
    merged.save_pretrained(adapter_dir)


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target, target_is_directory=True)


def tokenizer_texts(cfg: TrainConfig):
    """Prompt + target texts of every stage, or of `tokenizer_corpus` (only a tiny student's tokenizer
    is trained on them)."""
    style = "plain" if cfg.prompt_style == "chat" else cfg.prompt_style  # a tokenizer-less template
    sources = [(cfg.tokenizer_corpus, None)] if cfg.tokenizer_corpus else [(s.dataset, s.max_samples) for s in cfg.stages]
    for dataset, max_samples in sources:
        for record in load_records(dataset, max_samples):
            target = sft_target(record.solution, record.answer)
            if target is not None:
                yield format_prompt(record.problem, style=style) + target
