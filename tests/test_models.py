from transformers import AutoTokenizer

from mathforge.models import smollm2_gguf, smollm2_tokenizer_dir


def test_converted_smollm2_tokenizer_encodes_as_the_gguf_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MATHFORGE_CACHE", str(tmp_path))
    folder = smollm2_tokenizer_dir()
    assert folder.is_relative_to(tmp_path) and (folder / "tokenizer.json").exists()
    assert smollm2_tokenizer_dir() == folder  # converted once
    ours = AutoTokenizer.from_pretrained(str(folder))
    gguf = smollm2_gguf()
    theirs = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    texts = ["Let $x^2 + 3x = 10$. Find $x$.\nThe answer is 2", "Ünïcode \u2028 <|im_end|> tabs\tand  spaces",
             "A train travels 120 km in 1.5 hours; what is its speed in m/s?"]
    assert [ours(t)["input_ids"] for t in texts] == [theirs(t)["input_ids"] for t in texts]
    chat = [{"role": "user", "content": "What is 2+2?"}]
    assert ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert (ours.eos_token, ours.pad_token) == (theirs.eos_token, theirs.pad_token)
