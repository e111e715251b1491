"""Training configs: one recipe, a tuple of stages (the paper's two SFT stages are two entries).

Defaults are the paper's settings (§4.1.3): 3 epochs, global batch 32 via gradient accumulation,
AdamW without weight decay, warm-up ratio 0.03, max length 2048. A recipe YAML sets fields only;
`mathforge train RECIPE key=value` overrides the scalar fields (`micro_batch=8`, `student.model=smollm2`);
the stage list itself is written in the YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from mathforge.prompt import PromptStyle


@dataclass(frozen=True)
class StageConfig:
    """One SFT stage: its data and its optimisation schedule; it starts from the previous stage."""

    name: str
    dataset: str  # a record file (JSONL/Parquet) or a seed source spec such as "math:/path/train.jsonl"
    epochs: float = 3.0
    lr: float = 2e-5
    schedule: str = "cosine"  # any transformers scheduler name: cosine, linear, constant_with_warmup, ...
    warmup_ratio: float = 0.03
    max_samples: int | None = None  # first N records of the file (after nothing else: order is the file's)


@dataclass(frozen=True)
class StudentConfig:
    """The model to fine-tune.

    `model`: "tiny" (a small Llama built from the fields below, with a BPE tokenizer trained on the
    recipe's data), "smollm2" (SmolLM2-135M-Instruct converted once from the embedded GGUF), or any
    transformers checkpoint directory or Hub name.
    """

    model: str = "tiny"
    attn_implementation: str = "sdpa"  # "flash_attention_2" on GPUs with flash-attn installed
    # tiny student only
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    # a tokenizer directory to build on instead of training one on the recipe's texts: arms that
    # must share one vocabulary (the rehearsal's student, baseline and oracle) while each training
    # seed initialises its own weights
    tokenizer: str = ""


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters (r > 0 turns them on); merged into the weights at the end of every stage."""

    r: int = 0
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    load_in_4bit: bool = False  # QLoRA: needs a CUDA GPU and bitsandbytes


@dataclass(frozen=True)
class TrainConfig:
    """A whole SFT run: the student, the stages in order, and the shared training settings."""

    stages: tuple[StageConfig, ...] = ()
    student: StudentConfig = field(default_factory=StudentConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    prompt_style: PromptStyle = "alpaca"  # the same prompt as evaluation (mathforge.prompt)
    # tokens of prompt + target; "pNN": the NN-th percentile of stage 1's sample lengths in the student's
    # tokenizer, resolved when training starts (the `max-length` step; Table 10's ablation)
    max_length: int | str = 2048
    overlong: Literal["drop", "truncate"] = "drop"  # a longer sample: dropped, or cut to max_length (its tail unlearned)
    global_batch: int = 32  # samples per optimizer step (packed sequences when packing is on)
    micro_batch: int = 4  # per device; gradient accumulation makes up the rest
    packing: bool = True
    data_cache: str | None = None  # folder of tokenised sets shared by runs (by fingerprint); default <out>/tokenized
    num_proc: int | None = None  # tokenisation processes; default: all cores
    weight_decay: float = 0.0  # the paper: AdamW without weight decay
    max_grad_norm: float = 1.0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    gradient_checkpointing: bool = False
    seed: int = 42
    save_steps: int = 200  # checkpoint every N optimizer steps (and at the end of each stage)
    save_total_limit: int = 2
    logging_steps: int = 10
    max_steps: int = -1  # per stage; > 0 cuts every stage short (smoke runs)
    # A tiny student's tokenizer is trained on these texts (a source spec or path) instead of every
    # stage's: arms that change a stage's data (an ablation's) then share one vocabulary, so stage 1
    # is the same training in each of them.
    tokenizer_corpus: str | None = None
    report_to: tuple[str, ...] = ()  # "tensorboard", "wandb", "mlflow" (JSONL metrics are always written)

    def __post_init__(self) -> None:
        if isinstance(self.max_length, str) and percentile(self.max_length) is None:
            raise ValueError(f"max_length must be a number of tokens or a percentile 'p1'..'p100', got '{self.max_length}'")


def percentile(max_length: int | str) -> int | None:
    """The NN of a max length "pNN" (1-100), None for anything else."""
    found = re.fullmatch(r"p(\d{1,3})", max_length) if isinstance(max_length, str) else None
    return int(found[1]) if found and 1 <= int(found[1]) <= 100 else None
