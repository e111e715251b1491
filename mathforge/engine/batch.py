"""Batch APIs (`engine.backend: openai-batch`): the engine's window, sent as batch files at half price.

OpenAI and most hosted providers with the same `/v1/files` + `/v1/batches` interface bill a
request in a batch at half the online price, answered within a window (24 h); vLLM's `run_batch`
reads the same JSONL files on a GPU box with no server. Here the engine's `asubmit` stays the
interface: calls wait in this backend until no new one has joined for `batch_settle_s` (a *wave*:
every unit of a synthesis stage that can run has sent its next request) or a file is full, then go
out as one batch file per `batch_max_requests` / `batch_max_bytes`, are polled with backoff, and
their output and error files are matched back by `custom_id` (the call's cache key) into the same
request cache that online calls fill: a batch-filled cache serves an online rerun, and the reverse.

Nothing is created twice, whatever kills the process: a file's content hash and lines are in the
ledger (scope `batches`, notes) *before* its batch is created, and before creating one the client
lists the provider's batches and adopts one whose metadata carries that hash (a kill between the
create and the ledger's record of its id). A rerun polls every batch its ledger holds open, and a
call whose key is in one waits for it. Failed lines (the error file) and lines an expired or
cancelled batch never ran come back as retryable failures, which the engine's retries put into a
later batch; what a batch did answer is kept. A batch the provider no longer knows (HTTP 404 on it
or on its output) is marked lost in the ledger, with a log line, and its requests come back the
same way (the engine asks the cache first, so nothing answered is asked again); `batch_poll_errors`
failed polls in a row for any other reason stop the run (`BatchUnreachable`, naming the batch),
which a rerun resumes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mathforge.engine.backends import Outcome, classify_status, parse_openai_body, request_body
from mathforge.engine.cache import RequestCache
from mathforge.engine.config import EngineConfig
from mathforge.engine.types import BackendError, BatchUnreachable, Call, Completion, WaveExported
from mathforge.io import write_text
from mathforge.ledger import Ledger

SCOPE = "batches"
DONE = ("completed", "expired", "cancelled", "failed")
# Test hook: the process SIGKILLs itself right after its N-th batch create returns, before the ledger
# records the batch's id (the window that listing and adopting batches covers).
DIE_AFTER_CREATE = "MATHFORGE_BATCH_DIE_AFTER_CREATE"
LOG_EVERY_S = 10.0


class Gone(BackendError):
    """HTTP 404 from the files/batches API: the provider does not know the batch or file (any more)."""


def batch_line(model: str, call: Call, sim_hints: bool = False) -> dict[str, Any]:
    """One line of a batch input file (OpenAI's and vLLM run_batch's format) for one call."""
    path, body = request_body(model, call)
    line = {"custom_id": call.cache_key, "method": "POST", "url": "/v1" + path, "body": body}
    if sim_hints and call.level:  # `mathforge teacher-sim` only: a line has no headers of its own
        line["headers"] = {"X-Sim-Level": str(call.level)}
    return line


def batch_file(lines: list[dict[str, Any]]) -> tuple[str, str]:
    """The text of a batch input file and its content hash (what names it everywhere)."""
    text = "".join(json.dumps(x, sort_keys=True, ensure_ascii=False) + "\n" for x in lines)
    return text, hashlib.sha256(text.encode()).hexdigest()[:32]


def read_output_line(line: dict[str, Any]) -> tuple[str, Outcome]:
    """The custom_id and outcome of one line of an output or error file (OpenAI / run_batch)."""
    response = line.get("response") or {}
    status = int(response.get("status_code") or 0)
    body = response.get("body")
    if status == 200 and not line.get("error") and isinstance(body, dict):
        chat = any(isinstance(c, dict) and "message" in c for c in body.get("choices") or [])
        return str(line["custom_id"]), parse_openai_body(json.dumps(body), chat=chat)[0]
    error = line.get("error") or (body or {}).get("error") or {}
    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    return str(line["custom_id"]), classify_status(status or 500, {}, f"in a batch: {message}")


class BatchBackend:
    """The batch backend; `bind` (by the engine) gives it the request cache it fills."""

    name = "openai"  # the cache key names the endpoint's kind: a batch answer is an online answer
    batch_size = 1
    max_concurrency = None
    collects = True  # the engine hands every waiting call over at once (no worker bound)
    whole_waves = False  # a full file goes out at once, before the wave settles
    fills_cache = True  # a downloaded file is written to the cache here, in one transaction

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.model_id = cfg.model
        urls = cfg.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.base_url = (urls if isinstance(urls, str) else urls[0]).rstrip("/")
        offline = cfg.batch_export_dir is not None
        if not (offline or os.environ.get(cfg.api_key_env) or cfg.base_url or os.environ.get("OPENAI_BASE_URL")):
            raise ValueError(f"backend 'openai-batch' needs an API key in ${cfg.api_key_env} (or a base_url)")
        self.counts: Counter = Counter()  # batches submitted / done, requests, tokens
        self.cost = 0.0
        self._session: Any = None
        self._cache: RequestCache | None = None
        self._ledger: Ledger | None = None
        self._dir = Path(tempfile.gettempdir())
        self._pending: dict[str, Call] = {}
        self._pending_bytes = 0
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._claimed: set[str] = set()  # keys in a batch not collected yet
        self._tasks: set[asyncio.Task] = set()
        self._settler: asyncio.Task | None = None
        self._resumed = False
        self._created = 0
        self._logged = 0.0

    def bind(self, cache: RequestCache) -> None:
        """Keep batch files and the batch ledger beside the cache (`<stem>.batches/`, `<stem>.batches.sqlite`)."""
        self._cache = cache
        if cache.path is None:
            self._dir = Path(tempfile.mkdtemp(prefix="mathforge-batches-"))
            self._ledger = Ledger(self._dir / "batches.sqlite")
        else:
            self._dir = cache.path.with_name(cache.path.stem + ".batches")
            self._ledger = Ledger(cache.path.with_name(cache.path.stem + ".batches.sqlite"))

    # -- the engine's side ------------------------------------------------------------------------

    async def generate(self, calls: list[Call]) -> list[Outcome]:
        if not self._resumed:
            self._resumed = True
            self._resume()
        futures = [self._wait_for(c) for c in calls]
        return list(await asyncio.gather(*futures))

    def _wait_for(self, call: Call) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        key = call.cache_key
        hit = self._cache.get_many([key]).get(key) if key not in self._claimed else None
        if hit is not None:  # a batch collected it after the engine looked: never asked twice
            future.set_result(hit)
            return future
        self._waiters.setdefault(key, []).append(future)
        if key not in self._claimed and key not in self._pending:
            self._pending[key] = call
            self._pending_bytes += len(json.dumps(batch_line(self.cfg.model, call, self.cfg.sim_hints))) + 1
            full = len(self._pending) >= self.cfg.batch_max_requests or self._pending_bytes >= self.cfg.batch_max_bytes
            if full and not self.whole_waves:
                self._flush()
            elif self._settler is None or self._settler.done():
                self._settler = asyncio.get_running_loop().create_task(self._settle())
        return future

    async def _settle(self) -> None:
        """Flush once the pending calls stop growing for `batch_settle_s` (every unit has sent)."""
        while self._pending:
            seen = len(self._pending)
            await asyncio.sleep(self.cfg.batch_settle_s)
            if len(self._pending) == seen:
                self._flush()

    def _flush(self) -> None:
        """Turn the pending calls (those someone still waits for) into batch files, one wave."""
        calls = [c for k, c in self._pending.items() if any(not f.done() for f in self._waiters.get(k, ()))]
        for k in self._pending:
            if not any(not f.done() for f in self._waiters.get(k, ())):
                self._waiters.pop(k, None)  # withdrawn by their callers before being sent
        self._pending, self._pending_bytes = {}, 0
        wave = self._ledger.read(SCOPE).get("_waves", Counter())["count"] + 1
        self._ledger.commit(SCOPE, {"_waves": {"count": 1}})
        lines = [batch_line(self.cfg.model, c, self.cfg.sim_hints) for c in calls]
        by_url = {x["url"]: [y for y in lines if y["url"] == x["url"]] for x in lines}  # one endpoint a batch
        for chunk in (c for same in by_url.values() for c in _split(same, self.cfg.batch_max_requests,
                                                                      self.cfg.batch_max_bytes)):
            text, digest = batch_file(chunk)
            path = self._dir / f"{digest}.jsonl"
            write_text(path, text)  # the file and its hash are recorded before any batch exists
            record = {"hash": digest, "wave": wave, "requests": len(chunk), "file": path.name, "state": "new"}
            self._ledger.note(SCOPE, digest, json.dumps(record))
            self._claimed.update(x["custom_id"] for x in chunk)
            self._spawn(self._run(record, resumed=False))

    def _resume(self) -> None:
        """Poll (or create, if the kill came first) every batch the ledger holds open."""
        for value in self._ledger.notes(SCOPE).values():
            record = json.loads(value)
            if record["state"] in ("new", "submitted"):
                self._claimed.update(json.loads(x)["custom_id"] for x in self._read_input(record))
                self._spawn(self._run(record, resumed=True))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one batch --------------------------------------------------------------------------------

    async def _run(self, record: dict[str, Any], resumed: bool) -> None:
        """Create the batch (or adopt it, when an earlier process may have created it), poll it to
        the end, collect its outputs."""
        lines = [json.loads(x) for x in self._read_input(record)]
        if record["state"] == "submitted":  # an earlier process created it: this one polls it to the end
            self.counts["submitted"] += 1
            self.counts["resumed"] += 1
        try:
            if record["state"] == "new":
                batch = (resumed and await self._adopt(record["hash"])) or await self._create(record, lines[0]["url"])
                record = {**record, "id": batch["id"], "state": "submitted"}
                self._ledger.note(SCOPE, record["hash"], json.dumps(record))
                self.counts["submitted"] += 1
                self._log()
            batch = await self._poll(record["id"])
            outcomes = await self._download(batch)
        except BatchUnreachable as e:  # stays 'submitted' in the ledger: a rerun polls it again
            outcomes, failure = {}, e
        except Exception as e:  # noqa: BLE001 - its calls get a retryable failure, go into a later batch
            outcomes = {}
            lost = isinstance(e, Gone) and "id" in record
            failure = e if isinstance(e, BackendError) and not lost else BackendError(
                "connection", f"batch {record.get('id', record['hash'])}: {type(e).__name__}: {e}")
            state = "lost" if lost else "abandoned"
            self._ledger.note(SCOPE, record["hash"], json.dumps({**record, "state": state, "error": str(e)}))
            if "id" in record:  # it was submitted: no longer running
                self.counts["lost" if lost else "abandoned"] += 1
            if lost:
                self._say(f"batch {record['id']} (wave {record['wave']}, {record['requests']} requests) is lost: "
                          f"the provider no longer knows it ({e}); its unanswered requests go into a later batch")
        else:
            failure = BackendError("timeout", f"batch {batch['id']} ended '{batch['status']}' before this request ran")
            self._store(lines, outcomes)
            self._ledger.note(SCOPE, record["hash"], json.dumps({**record, "state": "collected",
                                                                  "status": batch["status"]}))
            self.counts["done"] += 1
            self._log()
        for x in lines:
            key = x["custom_id"]
            self._claimed.discard(key)
            for f in self._waiters.pop(key, ()):
                if f.done():
                    continue
                if isinstance(failure, BatchUnreachable):
                    f.set_exception(failure)  # stops the run, as a cap does
                else:
                    f.set_result(outcomes.get(key, failure))

    def _read_input(self, record: dict[str, Any]) -> list[str]:
        return (self._dir / record["file"]).read_text(encoding="utf-8").splitlines()

    def _store(self, lines: list[dict[str, Any]], outcomes: dict[str, Outcome]) -> None:
        rows = []
        for x in lines:
            out = outcomes.get(x["custom_id"])
            if isinstance(out, Completion):
                body = x["body"]
                request = {k: body[k] for k in ("messages", "prompt") if k in body}
                rows.append((x["custom_id"], json.dumps({**request, "seed": body.get("seed")}, ensure_ascii=False), out))
                self.counts["prompt_tokens"] += out.prompt_tokens
                self.counts["completion_tokens"] += out.completion_tokens
                self.cost += self.cfg.cost(self.cfg.model, out.prompt_tokens, out.completion_tokens)
            else:
                self.counts["failed"] += 1
        self.counts["requests"] += len(rows)
        self._cache.put_many(self.name, self.model_id, rows)

    async def _adopt(self, digest: str) -> dict[str, Any] | None:
        """A batch the provider already holds for this file (created by a run killed before its
        ledger commit), or None."""
        after = None
        while True:
            page = await self._http("GET", "/batches", params={"limit": "100", **({"after": after} if after else {})})
            for b in page.get("data", []):
                if (b.get("metadata") or {}).get("content_hash") == digest and b.get("status") not in ("failed",):
                    return b
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]

    async def _create(self, record: dict[str, Any], endpoint: str) -> dict[str, Any]:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", (self._dir / record["file"]).read_bytes(), filename=record["file"],
                       content_type="application/jsonl")
        uploaded = await self._http("POST", "/files", data=form)
        metadata = {"run": self._dir.parent.name, "wave": str(record["wave"]), "content_hash": record["hash"]}
        batch = await self._http("POST", "/batches", json_body={
            "input_file_id": uploaded["id"], "endpoint": endpoint,
            "completion_window": self.cfg.batch_window, "metadata": metadata})
        self._created += 1
        if os.environ.get(DIE_AFTER_CREATE) == str(self._created):
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    async def _poll(self, batch_id: str) -> dict[str, Any]:
        """The batch once it is done. `Gone` when the provider no longer knows it; BatchUnreachable
        after `batch_poll_errors` failed polls in a row (each one already retried by `_http`)."""
        import aiohttp

        delay, errors = self.cfg.batch_poll_s, 0
        while True:
            try:
                batch = await self._http("GET", f"/batches/{batch_id}")
            except Gone:
                raise
            except (TimeoutError, OSError, RuntimeError, ValueError, BackendError, aiohttp.ClientError) as e:
                errors += 1  # a provider's hiccup: the batch is still theirs, keep polling a while
                if errors >= self.cfg.batch_poll_errors:
                    raise BatchUnreachable(
                        f"batch {batch_id}: polling failed {errors} times in a row (last: {type(e).__name__}: "
                        f"{' '.join(str(e).split())}); it stays in the ledger, and a rerun polls it again") from e
            else:
                errors = 0
                if batch.get("status") in DONE:
                    return batch
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.cfg.batch_poll_max_s)

    async def _download(self, batch: dict[str, Any]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        for fid in (batch.get("error_file_id"), batch.get("output_file_id")):  # an answer beats an error
            if fid:
                text = await self._http("GET", f"/files/{fid}/content", raw=True)
                outcomes.update(read_output_line(json.loads(x)) for x in text.splitlines() if x.strip())
        return outcomes

    async def _http(self, method: str, path: str, *, params: dict | None = None, data: Any = None,
                    json_body: Any = None, raw: bool = False) -> Any:
        """One call of the files/batches API, retried with backoff on 429, 5xx and lost connections."""
        import aiohttp

        if self._session is None:
            key = os.environ.get(self.cfg.api_key_env) or "no-key"
            self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"},
                                                  timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s))
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            try:
                async with self._session.request(method, self.base_url + path, params=params, data=data,
                                                 json=json_body) as resp:
                    text = await resp.text()
                    last = f"HTTP {resp.status}: {' '.join(text[:200].split())}"
                    if resp.status < 400:
                        return text if raw else json.loads(text)
                    if resp.status == 404:
                        raise Gone("bad_request", f"HTTP 404 on {method} {path}")
                    if resp.status != 429 and resp.status < 500:  # refused: asking again will not help
                        raise classify_status(resp.status, resp.headers, f"{method} {path}: {text[:200]}")
            except (TimeoutError, aiohttp.ClientConnectionError):
                if attempt == self.cfg.max_retries:
                    raise
            await asyncio.sleep(min(self.cfg.backoff_base_s * 2**attempt, self.cfg.backoff_max_s))
        raise RuntimeError(f"{method} {path}: still failing after {self.cfg.max_retries} retries ({last})")

    def _log(self) -> None:
        if not self.cfg.progress or time.monotonic() - self._logged < LOG_EVERY_S:
            return
        self._logged = time.monotonic()
        self._say(self.status_line())

    @staticmethod
    def _say(line: str) -> None:
        """One line on stderr, never wrapped nor read as markup."""
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(line, highlight=False, markup=False)

    def status_line(self) -> str:
        """Batches submitted / running / done (/ lost), requests answered, tokens, cost at batch prices."""
        c = self.counts
        tokens = c["prompt_tokens"] + c["completion_tokens"]
        lost = f", {c['lost']} lost" if c["lost"] else ""
        lost += f", {c['abandoned']} abandoned" if c["abandoned"] else ""
        resumed = f" ({c['resumed']} resumed)" if c["resumed"] else ""
        return (f"batches: {c['submitted']} submitted{resumed}, {self._running()} running, "
                f"{c['done']} done{lost}; {c['requests']:,} requests, {tokens:,} tokens, "
                f"${self.cost:.4f} at batch prices")

    def _running(self) -> int:
        """Batches submitted (by this process, or by an earlier one and resumed here) not yet ended."""
        c = self.counts
        return c["submitted"] - c["done"] - c["lost"] - c["abandoned"]

    def stats(self) -> dict[str, Any]:
        c = self.counts
        return {"submitted": c["submitted"], "resumed": c["resumed"], "running": self._running(), "done": c["done"],
                "lost": c["lost"], "abandoned": c["abandoned"],
                "requests": c["requests"], "failed_lines": c["failed"], "prompt_tokens": c["prompt_tokens"],
                "completion_tokens": c["completion_tokens"], "cost_usd": round(self.cost, 6)}

    async def aclose(self) -> None:
        for task in list(self._tasks) + ([self._settler] if self._settler else []):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if self._ledger is not None:
            self._ledger.close()


class ExportBackend(BatchBackend):
    """`mathforge batch export`: a wave's files go to `batch_export_dir` for an offline runner
    (vLLM's `run_batch`) instead of a provider, and the run stops there (`WaveExported`); `batch
    import` puts the runner's output files into the cache, and the next export goes one wave on."""

    whole_waves = True  # the run stops at the first flush: it must hold the whole wave

    def __init__(self, cfg: EngineConfig):
        super().__init__(cfg)
        self._resumed = True  # no provider holds batches of ours
        self.exported: list[Path] = []

    def bind(self, cache: RequestCache) -> None:
        self._cache = cache

    def _flush(self) -> None:
        calls = [c for k, c in self._pending.items() if any(not f.done() for f in self._waiters.get(k, ()))]
        self._pending, self._pending_bytes = {}, 0
        lines = [batch_line(self.cfg.model, c) for c in calls]
        out = Path(self.cfg.batch_export_dir)
        for chunk in _split(lines, self.cfg.batch_max_requests, self.cfg.batch_max_bytes):
            text, digest = batch_file(chunk)
            write_text(out / f"batch-{digest}.jsonl", text)
            self.exported.append(out / f"batch-{digest}.jsonl")
        stop = WaveExported(f"{len(lines)} requests written to {len(self.exported)} batch file(s) in {out}")
        for futures in self._waiters.values():
            for f in futures:
                f.done() or f.set_exception(stop)
        self._waiters = {}


def import_outputs(cache: RequestCache, paths: list[Path], model: str) -> Counter:
    """Put the answers of batch output files (OpenAI's or vLLM run_batch's) into `cache`; counts
    answered and failed lines (a failed line stays pending: the next export writes it again)."""
    counts: Counter = Counter()
    for path in paths:
        rows = []
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not text.strip():
                continue
            try:
                key, out = read_output_line(json.loads(text))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{path}:{n}: not a batch output line ({type(e).__name__}: {e})") from e
            if isinstance(out, Completion):
                rows.append((key, json.dumps({"custom_id": key}), out))
            counts["answered" if isinstance(out, Completion) else "failed"] += 1
        cache.put_many(BatchBackend.name, model, rows)
    return counts


def _split(lines: list[dict[str, Any]], max_requests: int, max_bytes: int) -> list[list[dict[str, Any]]]:
    """Lines in files within the provider's limits (requests and bytes per file)."""
    files: list[list[dict[str, Any]]] = [[]]
    size = 0
    for x in lines:
        n = len(json.dumps(x, sort_keys=True, ensure_ascii=False).encode()) + 1
        if files[-1] and (len(files[-1]) >= max_requests or size + n > max_bytes):
            files.append([])
            size = 0
        files[-1].append(x)
        size += n
    return [f for f in files if f]
