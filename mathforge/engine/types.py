"""The engine's data types: what a caller asks for and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters; temperature 0 means greedy decoding.

    `n` samples are `n` separate cache entries (the sample index is part of the key). With a
    `seed`, sample i is drawn with seed + i so that the samples differ but stay reproducible.
    """

    temperature: float = 0.7
    max_tokens: int = 512
    n: int = 1
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"Sampling.n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"Sampling.max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"Sampling.temperature must be >= 0, got {self.temperature}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))

    def sample_seed(self, index: int) -> int | None:
        return None if self.seed is None else self.seed + index


@dataclass(frozen=True, slots=True)
class Request:
    """One prompt: chat `messages`, or a raw completion `prompt` (no chat template applied)."""

    key: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    # The item's difficulty level (MATH 1-5), for a simulated teacher only: sent as a header when
    # EngineConfig.sim_hints is on, never part of the cache key.
    level: int | None = None
    # Which waiting requests of the shared window go first (lower first, then in arrival order), so
    # that work others wait on (stage 1 before its core-set step) is not queued behind work that only
    # fills the window; never part of the cache key.
    priority: int = 0

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError(f"request {self.key!r}: give exactly one of messages or prompt")
        if self.messages is not None:
            for i, m in enumerate(self.messages):
                if (
                    not isinstance(m, dict)
                    or not isinstance(m.get("role"), str)
                    or not isinstance(m.get("content"), str)
                ):
                    raise ValueError(f"request {self.key!r}: message {i} needs string 'role' and 'content'")


@dataclass(slots=True)
class Result:
    """The outcome of one request. A failure is a Result with `error` set, never an exception.

    `texts` and `finish_reasons` hold one entry per sample; a failed sample has text "" and finish
    reason "error", and `sample_errors` says why ("kind: detail").
    """

    key: str
    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None
    sample_errors: list[str | None] = field(default_factory=list)
    # The engine's cache key of each sample: what a simulated teacher's log is keyed by, so a row
    # can carry the requests that made it (mathforge.truthaudit)
    cache_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class Completion:
    """One sample as a backend returns it."""

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class BackendError(Exception):
    """A failed call, classified: `kind` is one of ERROR_KINDS; `retry_after` comes from the server."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


# Failure kinds, counted separately in Engine.stats().
ERROR_KINDS = (
    "rate_limit",
    "server_error",
    "timeout",
    "connection",
    "malformed",
    "empty",
    "bad_request",
    "auth",
    "backend",
)
RETRYABLE = frozenset({"rate_limit", "server_error", "timeout", "connection", "malformed"})


@dataclass(frozen=True, slots=True)
class Call:
    """One unit of backend work: one sample of one request, with its cache key."""

    cache_key: str
    messages: list[dict[str, str]] | None
    prompt: str | None
    sampling: Sampling
    sample: int
    group: str = ""  # same for every sample of one request (the key of its sample 0)
    level: int | None = None  # Request.level, for a simulated teacher's header

    def payload(self) -> dict[str, Any]:
        return {"messages": self.messages} if self.messages is not None else {"prompt": self.prompt}


class BudgetExceeded(RuntimeError):
    """A hard cap (dollars, tokens or requests) would be passed by the next call: the run stops."""


class BatchUnreachable(BudgetExceeded):
    """A batch could not be polled `batch_poll_errors` times in a row (for any reason but the
    provider no longer knowing it): the run stops as at a cap; the batch stays in the ledger and a
    rerun polls it again."""


class WaveExported(BudgetExceeded):
    """A wave of requests was written to batch files for an offline runner (`mathforge batch
    export`): the run stops here as at a cap, and goes on after `mathforge batch import`."""
