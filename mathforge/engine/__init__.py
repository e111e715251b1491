"""The generation engine: any LLM backend, a crash-safe request cache, limits, retries, accounting.

    from mathforge.engine import Engine, EngineConfig, Request, Sampling

    cfg = EngineConfig(backend="openai", model="gpt-4o", base_url=None, api_key_env="OPENAI_API_KEY",
                       concurrency=64, rpm=5000, tpm=800_000, prices={"gpt-4o": (2.5, 10.0)})
    with Engine(cfg, cache_path="run/cache.sqlite") as engine:
        results = engine.run([Request(key="q1", messages=[{"role": "user", "content": "2+2?"}],
                                      sampling=Sampling(temperature=0.7, n=4))], desc="solve")
        print(engine.stats())  # requests, cache hits, calls, failures and retries by kind, tokens, cost

Backends: "openai" (any OpenAI-compatible endpoint), "openai-batch" (the same through `/v1/files` +
`/v1/batches` at the batch discount, engine/batch.py), "llama" (llama.cpp in-process; "smollm2" is
the embedded offline default), "hf" (transformers checkpoints, batched), "vllm" (GPU, optional).
Guarantees: each response is committed to the SQLite cache as it arrives (a `kill -9` loses none,
a rerun pays for none twice); failures come back as `Result.error` with a kind, never as exceptions;
the API key is read from the environment and written nowhere. `mathforge generate` runs a Jinja2
template over a file with it (`mathforge.engine.generate`).
"""

from mathforge.engine.config import BACKENDS, EngineConfig
from mathforge.engine.engine import Engine
from mathforge.engine.types import ERROR_KINDS, BackendError, Completion, Request, Result, Sampling

__all__ = [
    "BACKENDS",
    "ERROR_KINDS",
    "BackendError",
    "Completion",
    "Engine",
    "EngineConfig",
    "Request",
    "Result",
    "Sampling",
]
