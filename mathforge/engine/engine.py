"""The generation engine: cache first, then bounded-concurrency calls with limits and retries.

Every sample of every request is one `Call` with its own cache key. A run looks all keys up in
the SQLite cache, sends only the missing ones (identical calls once), writes each response the
moment it arrives, and hands back `Result`s in request order. Failures are classified by kind,
retried when that can help (429, 5xx, timeouts, dropped connections, malformed bodies), and
reported in the Result and in `stats()`; they are never raised and never cached.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mathforge.engine import batch
from mathforge.engine.backends import Backend, HFBackend, LlamaBackend, OpenAIBackend, VLLMBackend
from mathforge.engine.cache import RequestCache, cache_key
from mathforge.engine.config import EngineConfig
from mathforge.engine.limits import Budget, TokenBucket, backoff_delay
from mathforge.engine.progress import EngineProgress
from mathforge.engine.types import BackendError, BudgetExceeded, Call, Completion, Request, Result

CHUNK = 4096  # requests read ahead (the reorder buffer) or resolved per round: bounds memory; far above any concurrency



def _batch_backend(cfg: EngineConfig) -> Backend:
    return batch.ExportBackend(cfg) if cfg.batch_export_dir else batch.BatchBackend(cfg)


BACKEND_CLASSES: dict[str, Any] = {
    "openai": OpenAIBackend,
    "openai-batch": _batch_backend,
    "llama": LlamaBackend,
    "hf": HFBackend,
    "vllm": VLLMBackend,
}


def make_backend(cfg: EngineConfig) -> Backend:
    """The backend named by `cfg.backend` (explicit name -> class table)."""
    return BACKEND_CLASSES[cfg.backend](cfg)


class Engine:
    """Runs requests through one backend with a persistent request cache; use as a context manager."""

    def __init__(
        self,
        cfg: EngineConfig,
        cache_path: str | Path | None = None,
        backend: Backend | None = None,
        refresh: bool = False,
        budget: Budget | None = None,
    ):
        """`cache_path` None keeps the cache in memory; `refresh` ignores (and overwrites) cached
        responses; `budget` caps what the cache may hold in total (see `asubmit`)."""
        self.cfg = cfg
        self.refresh = refresh
        self.backend = backend if backend is not None else make_backend(cfg)
        self.cache = RequestCache(cache_path)
        self.cache_path = self.cache.path
        if hasattr(self.backend, "bind"):  # the batch backend writes downloaded files into this cache
            self.backend.bind(self.cache)
        self._loop = asyncio.new_event_loop()
        self._rpm = TokenBucket(cfg.rpm) if cfg.rpm else None
        self._tpm = TokenBucket(cfg.tpm) if cfg.tpm else None
        self._counts: Counter = Counter()
        self._failures: Counter = Counter()
        self._retries: Counter = Counter()
        self._models: dict[str, Counter] = defaultdict(Counter)
        self._cost = 0.0
        self._saved = 0.0
        self._busy = 0.0
        self._latency = 0.0  # seconds spent waiting on the backend, summed over batches
        self._progress: EngineProgress | None = None
        self._pause_until = 0.0  # a 429's Retry-After pauses every worker, not just the one that got it
        self.budget = budget or Budget()
        self._spent = self.cache.totals() if budget else (0, 0, 0)  # (requests, prompt, completion) paid before
        self._queue: asyncio.Queue | None = None  # the shared in-flight window of `asubmit`
        self._arrivals = itertools.count()
        self._workers: list[asyncio.Task] = []
        self._inflight: dict[str, asyncio.Future] = {}
        self._sending = 0

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._drive(self._stop_workers())
            self._drive(self.backend.aclose())
        finally:
            self._loop.close()
            self.cache.close()

    # -- public API -------------------------------------------------------------------------------

    def run(self, requests: Iterable[Request], desc: str = "generate") -> list[Result]:
        """Results for `requests`, in the same order; failed ones have `error` set."""
        requests = list(requests)
        return list(self.imap(requests, desc=desc, total=sum(r.sampling.n for r in requests)))

    def imap(
        self, requests: Iterable[Request], desc: str = "generate", total: int | None = None
    ) -> Iterator[Result]:
        """Stream results in request order, reading `requests` lazily (for huge inputs).

        Requests join the shared in-flight window of `asubmit` as they are read, up to `CHUNK`
        ahead of the oldest one not yet handed back (the bound of the reorder buffer), so a slow
        request holds back only its own place, never the start of the next ones. Batched in-process
        backends resolve `CHUNK` requests at a time instead, sorted by length (less padding).
        `total` is the number of samples expected, for the progress bar (None: unknown).
        """
        start = time.monotonic()
        resolved = 0
        with EngineProgress(desc, total, enabled=self.cfg.progress) as progress:
            self._progress = progress
            try:
                resolve = self._chunks if self.backend.batch_size > 1 else self._window
                for request, result in resolve(iter(requests)):
                    resolved += request.sampling.n
                    progress.complete_to(resolved)
                    yield result
            finally:
                self._progress = None
                self._busy += time.monotonic() - start

    def _window(self, requests: Iterator[Request]) -> Iterator[tuple[Request, Result]]:
        ahead: deque[tuple[Request, asyncio.Task]] = deque()
        try:
            while True:
                for r in itertools.islice(requests, CHUNK - len(ahead)):
                    ahead.append((r, self._loop.create_task(self.asubmit(r))))
                if not ahead:
                    return
                request, task = ahead.popleft()
                yield request, self._drive(task)  # the loop runs every request ahead meanwhile
        finally:
            for _, task in ahead:  # the caller stopped early: withdraw what was not sent
                task.cancel()
            if ahead and not self._loop.is_closed():
                self._drive(asyncio.gather(*(t for _, t in ahead), return_exceptions=True))

    def _chunks(self, requests: Iterator[Request]) -> Iterator[tuple[Request, Result]]:
        while chunk := list(itertools.islice(requests, CHUNK)):
            yield from zip(chunk, self._run_chunk(chunk), strict=True)

    def drive(self, coro: Any) -> Any:
        """Run a coroutine that awaits `asubmit` on the engine's own event loop; returns its result."""
        return self._drive(coro)

    async def asubmit(self, request: Request) -> Result:
        """One request through the shared in-flight window, for callers that chain requests.

        Cache first; the missing samples join one queue served by `concurrency` workers, so every
        caller's requests share one window with no chunk barrier: a caller moves on the moment its
        own response arrives. Cancelling the awaiting task withdraws calls not yet sent. Raises
        `BudgetExceeded` once the budget would be passed (calls already sent finish and are cached).
        """
        calls = [self._call(request, i) for i in range(request.sampling.n)]
        done: dict[str, Completion | BackendError] = {}
        if not self.refresh:
            done.update(self.cache.get_many(c.cache_key for c in calls))
        cached_keys = set(done)
        self._book_cached(1, calls, done)
        missing = [c for c in calls if c.cache_key not in done]
        if missing:
            groups = [missing] if getattr(self.backend, "native_n", False) else [[c] for c in missing]
            for outs in await asyncio.gather(*(self._enqueue(g, request.priority) for g in groups)):
                done.update(outs)
        return self._result(request, calls, done, cached_keys)

    async def _enqueue(self, calls: list[Call], priority: int) -> dict[str, Completion | BackendError]:
        key = calls[0].cache_key
        if key in self._inflight:  # the same call already queued by another caller: share its answer
            return await asyncio.shield(self._inflight[key])
        if self._queue is None and not getattr(self.backend, "collects", False):
            self._queue = asyncio.PriorityQueue()
            width = min(self.backend.max_concurrency or self.cfg.concurrency, self.cfg.concurrency)
            self._workers = [asyncio.create_task(self._worker()) for _ in range(width)]
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        future.add_done_callback(lambda _: self._inflight.pop(key, None))
        if getattr(self.backend, "collects", False):  # a batch backend gathers every waiting call itself
            task = asyncio.create_task(self._serve([(calls, future)]))
            future.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
        else:
            self._queue.put_nowait((priority, next(self._arrivals), calls, future))  # FIFO within a priority
        return await future

    async def _worker(self) -> None:
        while True:
            items = [(await self._queue.get())[2:]]
            while len(items) < self.backend.batch_size and not self._queue.empty():
                items.append(self._queue.get_nowait()[2:])  # in-process backends batch what is waiting
            await self._serve(items)

    async def _serve(self, items: list[tuple[list[Call], asyncio.Future]]) -> None:
        """Send the calls of `items` (with retries) and resolve each item's future."""
        items = [(calls, f) for calls, f in items if not f.done()]  # withdrawn by their callers
        calls = [c for cs, _ in items for c in cs]
        if not calls:
            return
        refused = self._over_budget(len(calls))
        if refused:
            for _, f in items:
                f.set_exception(BudgetExceeded(refused))
            return
        done: dict[str, Completion | BackendError] = {}
        self._sending += len(calls)
        try:
            await self._with_retries(calls, done)
        except BudgetExceeded as e:
            for _, f in items:
                f.done() or f.set_exception(e)
            return
        except Exception as e:  # noqa: BLE001 - a bug here fails these calls, never the window
            for c in calls:
                done.setdefault(c.cache_key, BackendError("backend", f"{type(e).__name__}: {e}"))
        finally:
            self._sending -= len(calls)
        for cs, f in items:
            if not f.done():
                f.set_result({c.cache_key: done[c.cache_key] for c in cs})

    def _over_budget(self, n: int) -> str | None:
        """Whether sending `n` more calls could pass a cap: what was paid (this run and before it,
        from the cache) plus what is in flight and these calls, at the mean cost per call so far."""
        c = self._counts
        paid_calls = self._spent[0] + self._models[self.cfg.model]["calls"]
        tokens = self._spent[1] + self._spent[2] + c["prompt_tokens"] + c["completion_tokens"]
        usd = self.cfg.cost(self.cfg.model, self._spent[1], self._spent[2]) + self._cost
        ahead = self._sending + n
        per_call = (tokens / paid_calls, usd / paid_calls) if paid_calls else (0.0, 0.0)
        return self.budget.passed(usd + ahead * per_call[1], tokens + ahead * per_call[0], paid_calls + ahead)

    async def _stop_workers(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers, self._queue = [], None

    def estimate(self, requests: Iterable[Request]) -> dict[str, Any]:
        """What a run would send and cost, without sending anything: the cache is consulted, the
        prompt size guessed at 4 characters a token, and the completion priced at its `max_tokens`
        (an upper bound)."""
        plan = Counter()
        it = iter(requests)
        while chunk := list(itertools.islice(it, CHUNK)):
            flat = [self._call(r, i) for r in chunk for i in range(r.sampling.n)]
            hits = set() if self.refresh else set(self.cache.get_many(c.cache_key for c in flat))
            missing = {c.cache_key: c for c in flat if c.cache_key not in hits}.values()
            plan["requests"] += len(chunk)
            plan["samples"] += len(flat)
            plan["cached"] += sum(c.cache_key in hits for c in flat)
            plan["to_send"] += len(missing)
            plan["prompt_tokens_est"] += sum(len(str(c.payload())) // 4 for c in missing)
            plan["completion_tokens_max"] += sum(c.sampling.max_tokens for c in missing)
        cost = self.cfg.cost(self.cfg.model, plan["prompt_tokens_est"], plan["completion_tokens_max"])
        priced = self.cfg.model in self.cfg.prices
        return {**plan, "cost_usd_max": round(cost, 4) if priced else None}

    def stats(self) -> dict[str, Any]:
        """Counts since this engine was made: requests, cache hits, calls, failures by kind, tokens, cost."""
        c = self._counts
        return {
            "backend": self.backend.name,
            "model": self.cfg.model,
            "requests": c["requests"],
            "samples": c["samples"],
            "cached": c["cached"],
            "calls": c["calls"],
            "batches": c["batches"],
            "ok": c["ok"],
            "failed": sum(self._failures.values()),
            "failures": dict(self._failures),
            "retries": dict(self._retries),
            "prompt_tokens": c["prompt_tokens"],
            "completion_tokens": c["completion_tokens"],
            "tokens": c["prompt_tokens"] + c["completion_tokens"],
            "cost_usd": round(self._cost, 6),
            "cost_saved_usd": round(self._saved, 6),
            "per_model": {m: dict(v) for m, v in self._models.items()},
            "elapsed_s": round(self._busy, 3),
            # mean seconds a batch (one call for API backends) took, for forecasts of wall time
            "mean_latency_s": round(self._latency / c["batches"], 4) if c["batches"] else None,
            **({"batch_api": self.backend.stats()} if hasattr(self.backend, "stats") else {}),
        }

    # -- one chunk ------------------------------------------------------------------------------

    def _run_chunk(self, requests: list[Request]) -> list[Result]:
        calls = [[self._call(r, i) for i in range(r.sampling.n)] for r in requests]
        flat = [c for cs in calls for c in cs]
        done: dict[str, Completion | BackendError] = {}
        if not self.refresh:
            done.update(self.cache.get_many(c.cache_key for c in flat))
        cached_keys = set(done)
        self._book_cached(len(requests), flat, done)
        missing = list({c.cache_key: c for c in flat if c.cache_key not in done}.values())
        # Similar lengths batch together: less padding for batched in-process backends.
        if self.backend.batch_size > 1:
            missing.sort(key=lambda c: len(str(c.payload())))
        if missing:
            self._drive(self._execute(missing, done))
        return [self._result(r, cs, done, cached_keys) for r, cs in zip(requests, calls, strict=True)]

    def _book_cached(self, n_requests: int, flat: list[Call], done: dict) -> None:
        hits = [done[c.cache_key] for c in flat if c.cache_key in done]
        self._counts["requests"] += n_requests
        self._counts["samples"] += len(flat)
        self._counts["cached"] += len(hits)
        self._saved += sum(self.cfg.cost(self.cfg.model, h.prompt_tokens, h.completion_tokens) for h in hits)
        if self._progress:
            self._progress.advance_cached(len(hits))

    def _call(self, request: Request, sample: int) -> Call:
        payload = (
            {"messages": request.messages} if request.messages is not None else {"prompt": request.prompt}
        )
        key = cache_key(self.backend.name, self.backend.model_id, payload, request.sampling, sample)
        group = (
            key
            if sample == 0
            else cache_key(self.backend.name, self.backend.model_id, payload, request.sampling, 0)
        )
        return Call(key, request.messages, request.prompt, request.sampling, sample, group, request.level)

    def _result(self, request: Request, calls: list[Call], done: dict, cached_keys: set[str]) -> Result:
        res = Result(
            key=request.key,
            texts=[],
            finish_reasons=[],
            cached=all(c.cache_key in cached_keys for c in calls),
            cache_keys=[c.cache_key for c in calls],
        )
        for c in calls:
            out = done.get(c.cache_key, BackendError("backend", "no outcome recorded"))
            err = out if isinstance(out, BackendError) else _empty_error(out)
            if isinstance(out, Completion):
                res.prompt_tokens += out.prompt_tokens
                res.completion_tokens += out.completion_tokens
            res.texts.append(out.text if isinstance(out, Completion) else "")
            res.finish_reasons.append(out.finish_reason if isinstance(out, Completion) else "error")
            res.sample_errors.append(str(err) if err else None)
            if err is not None and err.kind == "empty":
                self._failures["empty"] += 1
        errors = [(i, e) for i, e in enumerate(res.sample_errors) if e]
        if errors:
            res.error = errors[0][1] if len(calls) == 1 else "; ".join(f"sample {i}: {e}" for i, e in errors)
        else:
            self._counts["ok"] += 1
        return res

    # -- async execution ---------------------------------------------------------------------------

    def _drive(self, coro: Any) -> Any:
        """Run `coro` on the engine's own loop (kept across runs so HTTP connections are reused)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._run_until_complete(coro)
        # Called from inside a running loop (a notebook): drive ours from a worker thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(self._run_until_complete, coro).result()

    def _run_until_complete(self, coro: Any) -> Any:
        try:
            return self._loop.run_until_complete(coro)
        except BaseException:
            # Ctrl-C or an error: stop the workers, or they would go on sending while we shut down.
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:  # gather() of nothing would make its future on another loop
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._workers, self._queue = [], None  # cancelled above: the next `asubmit` starts new ones
            raise

    async def _execute(self, calls: list[Call], done: dict[str, Completion | BackendError]) -> None:
        if getattr(self.backend, "native_n", False):  # a request's missing samples go out as one call
            groups: dict[str, list[Call]] = {}
            for c in calls:
                groups.setdefault(c.group, []).append(c)
            batches = list(groups.values())
        else:
            size = self.backend.batch_size
            batches = [calls[i : i + size] for i in range(0, len(calls), size)]
        queue: asyncio.Queue[list[Call]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        width = min(self.backend.max_concurrency or self.cfg.concurrency, self.cfg.concurrency, len(batches))

        async def worker() -> None:
            while not queue.empty():
                await self._with_retries(queue.get_nowait(), done)

        await asyncio.gather(*(worker() for _ in range(width)))

    async def _with_retries(self, batch: list[Call], done: dict[str, Completion | BackendError]) -> None:
        for attempt in range(self.cfg.max_retries + 1):
            outcomes = await self._attempt(batch)
            retry: list[Call] = []
            waits: list[float] = []
            for call, out in zip(batch, outcomes, strict=True):
                if isinstance(out, Completion):
                    self._accept(call, out, done)
                elif out.retryable and attempt < self.cfg.max_retries:
                    self._retries[out.kind] += 1
                    if out.kind == "rate_limit" and out.retry_after:
                        wait = min(out.retry_after, self.cfg.backoff_max_s)
                        self._pause_until = max(self._pause_until, time.monotonic() + wait)
                    retry.append(call)
                    waits.append(out.retry_after or 0.0)
                else:
                    self._fail(call, out, done)
            if not retry:
                return
            await asyncio.sleep(
                backoff_delay(attempt, self.cfg.backoff_base_s, self.cfg.backoff_max_s, max(waits))
            )
            batch = retry

    async def _attempt(self, batch: list[Call]) -> list[Completion | BackendError]:
        pause = self._pause_until - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        if self._rpm:
            await self._rpm.acquire(len(batch))
        if self._tpm:
            # A rough count (4 characters a token) plus the completion budget; corrected on arrival.
            estimate = sum(len(str(c.payload())) // 4 + c.sampling.max_tokens for c in batch)
            await self._tpm.acquire(estimate)
        self._counts["calls"] += len(batch)
        self._counts["batches"] += 1
        sent = time.monotonic()
        try:
            outcomes = await self.backend.generate(batch)
        except BudgetExceeded:
            raise  # a batch export stops the run as a cap does
        except Exception as e:  # noqa: BLE001 - a backend bug fails its calls, not the run
            outcomes = [BackendError("backend", f"{type(e).__name__}: {e}")] * len(batch)
        self._latency += time.monotonic() - sent
        if self._tpm:
            used = sum(o.prompt_tokens + o.completion_tokens for o in outcomes if isinstance(o, Completion))
            self._tpm.adjust(used - estimate if used else 0)
        return outcomes

    def _accept(self, call: Call, out: Completion, done: dict) -> None:
        if not getattr(self.backend, "fills_cache", False):
            self.cache.put(self.backend.name, self.backend.model_id, call, out)
        done[call.cache_key] = out
        cost = self.cfg.cost(self.cfg.model, out.prompt_tokens, out.completion_tokens)
        self._cost += cost
        self._counts["prompt_tokens"] += out.prompt_tokens
        self._counts["completion_tokens"] += out.completion_tokens
        m = self._models[self.cfg.model]
        m["calls"] += 1
        m["prompt_tokens"] += out.prompt_tokens
        m["completion_tokens"] += out.completion_tokens
        m["cost_usd"] += cost
        if self._progress:
            self._progress.advance(out.prompt_tokens + out.completion_tokens, self._cost)

    def _fail(self, call: Call, err: BackendError, done: dict) -> None:
        done[call.cache_key] = err
        self._failures[err.kind] += 1
        if self._progress:
            self._progress.advance(0, self._cost, failed=True)


def _empty_error(out: Completion) -> BackendError | None:
    if out.text.strip():
        return None
    return BackendError("empty", f"the model returned no text (finish_reason={out.finish_reason})")
