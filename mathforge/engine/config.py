"""EngineConfig: which backend and model, and how hard to push it."""

from __future__ import annotations

from dataclasses import dataclass, field

BACKENDS = ("openai", "openai-batch", "llama", "hf", "vllm")
HTTP_TRANSPORTS = ("aiohttp", "sdk")


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings; a recipe YAML sets these fields (see `mathforge.config.load_config`).

    The API key is never a field: `api_key_env` names the environment variable holding it, so it
    cannot end up in a saved config, a cache or a log. `prices` maps a model name to
    (USD per million prompt tokens, USD per million completion tokens).
    """

    backend: str = "llama"
    model: str = "smollm2"
    base_url: str | tuple[str, ...] | None = None  # a list: replicas of one model, least in flight first
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    prices: dict[str, tuple[float, ...]] = field(default_factory=dict)
    progress: bool = True
    # openai: send a request's missing samples as one call with n=k, so its prompt is paid once.
    # Not every server takes n > 1 (llama.cpp's does not); with a seed, all k share the first one's.
    native_n: bool = False
    # openai: "aiohttp" posts the JSON itself (lean, fastest); "sdk" goes through the openai client.
    http: str = "aiohttp"
    # openai: send each request's level as an X-Sim-Level header (for `mathforge teacher-sim`).
    sim_hints: bool = False
    # openai-batch: requests waiting in the window go out as batch files (`/v1/files` + `/v1/batches`),
    # billed at `batch_discount` times the online price. A wave is flushed once no request has
    # joined for `batch_settle_s`, or when a file reaches the provider's limits; batches are polled
    # every `batch_poll_s`, backing off to `batch_poll_max_s`; after `batch_poll_errors` failed polls
    # of one batch in a row the run stops (a batch the provider answers 404 for is lost instead: its
    # requests go into a later batch). `concurrency` is the synthesis's window of units in batch
    # mode: set it high, each wave carries all the units it can.
    batch_max_requests: int = 50_000
    batch_max_bytes: int = 190_000_000  # OpenAI takes 200 MB a file
    batch_settle_s: float = 2.0
    batch_poll_s: float = 10.0
    batch_poll_max_s: float = 300.0
    batch_poll_errors: int = 10
    batch_window: str = "24h"
    batch_discount: float = 0.5
    # openai-batch: write each wave's files here for an offline runner (vLLM's run_batch) instead of
    # sending them; the run stops at each wave (see `mathforge batch export`).
    batch_export_dir: str | None = None
    # In-process backends (llama, hf, vllm)
    batch_size: int = 8
    n_ctx: int = 4096
    n_threads: int | None = None
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend '{self.backend}' (choose from {', '.join(BACKENDS)})")
        if self.http not in HTTP_TRANSPORTS:
            raise ValueError(
                f"unknown http transport '{self.http}' (choose from {', '.join(HTTP_TRANSPORTS)})"
            )
        if isinstance(self.base_url, list):
            object.__setattr__(self, "base_url", tuple(self.base_url))
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not 0 < self.batch_discount <= 1:
            raise ValueError(f"batch_discount must be in (0, 1], got {self.batch_discount}")
        if self.batch_max_requests < 1 or self.batch_max_bytes < 1:
            raise ValueError("batch_max_requests and batch_max_bytes must be >= 1")
        if self.batch_poll_errors < 1:
            raise ValueError(f"batch_poll_errors must be >= 1, got {self.batch_poll_errors}")
        for model, price in self.prices.items():
            if len(price) != 2:
                raise ValueError(f"prices['{model}'] must be [prompt_usd_per_M, completion_usd_per_M]")

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD at this backend's prices: the batch discount applies in batch mode."""
        return self.online_cost(model, prompt_tokens, completion_tokens) * (
            self.batch_discount if self.backend == "openai-batch" else 1.0)

    def online_cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.prices.get(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
