"""The generation engine: any LLM backend, a crash-safe request cache, limits, retries, accounting.

from mathforge.engine import Engine, EngineConfig, Request, Sampling
with Engine(EngineConfig(backend="llama", model="smollm2"), cache_path="run/cache.sqlite") as engine:
    results = engine.run([Request(key="q1", messages=[{"role": "user", "content": "2+2?"}])])
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
