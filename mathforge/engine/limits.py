"""Rate limits (requests and tokens per minute) and retry timing.

Hand-written rather than taken from `aiolimiter`/`tenacity`: the token bucket must take variable
costs and be corrected after the fact (a response's real token count is known only when it
arrives), and the retry delay must honour a server's Retry-After; both are a few lines here.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass


class TokenBucket:
    """An async token bucket for a per-minute limit.

    It holds at most `burst_s` seconds of budget: providers enforce per-minute limits over shorter
    windows (60,000 RPM may mean 1,000 per second), so a full minute's burst would draw 429s. A cost
    larger than the bucket is taken once the bucket is full and leaves a debt that later callers
    wait out, so the long-run rate holds for any mix of request sizes.
    """

    def __init__(self, per_minute: float, burst_s: float = 1.0):
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be > 0 per minute, got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, amount: float) -> None:
        """Wait until `amount` (or a full bucket, for big costs) is available, then take `amount`."""
        need = min(amount, self.capacity)
        async with self.lock:  # first come, first served: waiters queue on the lock
            self._refill()
            while self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def adjust(self, delta: float) -> None:
        """Correct an earlier estimate: positive `delta` takes more, negative gives back."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a floor, not a suggestion."""
    delay = random.uniform(0, min(cap, base * 2**attempt))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def parse_retry_after(headers: dict[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Budget:
    """Hard caps on what a run directory may spend, counted over every response in its request
    cache (so a rerun with a raised cap continues where the last one stopped); None = no cap."""

    max_usd: float | None = None
    max_tokens: int | None = None
    max_requests: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_usd", "max_tokens", "max_requests"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"budget.{name} must be > 0 (or null for no cap), got {value}")

    def passed(self, usd: float, tokens: float, requests: float) -> str | None:
        """The cap these totals would pass, as a message, or None while all are within."""
        for name, value in (("max_usd", usd), ("max_tokens", tokens), ("max_requests", requests)):
            cap = getattr(self, name)
            if cap is not None and value > cap:
                return f"budget.{name}={cap} would be passed (spent and in flight: {value:,.4g})"
        return None
