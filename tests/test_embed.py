"""Embeddings with the embedded MiniLM, offline: shape, unit norm, order, and meaning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mathforge.embed import embed_texts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_unit_vectors_in_input_order():
    texts = ["What is 2 + 3?", "Compute the integral of x^2 from 0 to 1.", "What is 2 + 3?"]
    v = embed_texts(texts, batch_size=2)
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.allclose(v[0], v[2], atol=1e-5)
    assert embed_texts([]).shape == (0, 384)


def test_similar_problems_are_closer_than_unrelated_ones():
    v = embed_texts(["Find the area of a circle of radius 3.", "What is the area of a circle with radius 5?",
                     "How many ways can 5 books be arranged on a shelf?"])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_default_model_loads_with_the_hub_offline():
    code = "from mathforge.embed import embed_texts; print(embed_texts(['1+1']).shape)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(1, 384)" in out.stdout


def test_a_model_directory_can_be_named_explicitly():
    from mathforge.models import minilm_dir

    a = embed_texts(["a triangle"], model=str(minilm_dir()))
    assert np.allclose(a, embed_texts(["a triangle"]), atol=1e-5)


def test_onnx_runtime_embeds_as_torch_does_on_math_problems():
    pytest.importorskip("onnxruntime")
    from mathforge.sources import load

    problems = [r.problem[:512] for r in load(f"math:{DATA}/math/math_train.jsonl")][:200:7] + ["", "x"]
    onnx = embed_texts(problems, batch_size=8, backend="onnx")
    torch = embed_texts(problems, batch_size=8, backend="torch")
    assert onnx.shape == torch.shape == (len(problems), 384)
    assert np.abs(onnx - torch).max() < 1e-5  # fp32 ONNX keeps the embeddings (int8 did not)
    with pytest.raises(ValueError, match="backend"):
        embed_texts(["x"], backend="int8")
