"""The transformers backend on a tiny checkpoint laid out as our training writes one
(config + safetensors + tokenizer with a chat template), built here from scratch, offline."""

from __future__ import annotations

import os

import pytest

from mathforge.engine import Engine, EngineConfig, Request, Sampling

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "What is two plus three? The answer is 5.",
    "Natalia sold clips to 48 of her friends in April.",
] * 20


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<unk>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    config = transformers.LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=fast.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("ckpt") / "student"
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def requests() -> list[Request]:
    greedy = Sampling(temperature=0, max_tokens=6)
    texts = ["What is two plus three?", "Natalia sold clips", "What", "friends in April? " * 3]
    reqs = [
        Request(key=f"c{i}", messages=[{"role": "user", "content": t}], sampling=greedy)
        for i, t in enumerate(texts)
    ]
    reqs += [Request(key=f"r{i}", prompt=t, sampling=greedy) for i, t in enumerate(texts)]
    return reqs


def test_batched_left_padded_generation_matches_one_at_a_time(tiny_checkpoint):
    outs = {}
    for batch in (1, 8):
        cfg = EngineConfig(backend="hf", model=str(tiny_checkpoint), batch_size=batch, progress=False)
        with Engine(cfg) as engine:
            outs[batch] = engine.run(requests())
            assert engine.stats()["calls"] == 8
    for one, many in zip(outs[1], outs[8], strict=True):
        assert (one.texts, one.finish_reasons) == (many.texts, many.finish_reasons), one.key
        assert one.prompt_tokens == many.prompt_tokens > 0
        assert many.completion_tokens <= 6
    # chat requests went through the checkpoint's chat template: more prompt tokens than raw
    assert outs[8][0].prompt_tokens > outs[8][4].prompt_tokens


def test_retrained_weights_do_not_hit_the_cache(tiny_checkpoint, tmp_path):
    cfg = EngineConfig(backend="hf", model=str(tiny_checkpoint), progress=False)
    with Engine(cfg, cache_path=tmp_path / "c.sqlite") as engine:
        before = engine.backend.model_id
    os.utime(tiny_checkpoint / "model.safetensors", (1, 1))  # as if training wrote it again
    with Engine(cfg, cache_path=tmp_path / "c.sqlite") as engine:
        assert engine.backend.model_id != before
