"""Backends behind one small interface: a batch of calls in, one Completion or BackendError per call out.

- `openai`: any OpenAI-compatible endpoint (OpenAI, vLLM/SGLang servers, llama.cpp server, Ollama),
  async, one call per sample, many in flight, on aiohttp (or the openai client, `http: sdk`).
- `openai-batch`: the same requests as batch files at the batch discount (engine/batch.py).
- `llama`: llama.cpp in-process (the offline default, SmolLM2 embedded); one call at a time.
- `hf`: transformers checkpoints (ours or the Hub's), batched left-padded generation.
- `vllm`: vLLM offline on GPUs, a thin wrapper; optional extra.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from mathforge.engine.config import EngineConfig
from mathforge.engine.limits import parse_retry_after
from mathforge.engine.types import BackendError, Call, Completion

Outcome = Completion | BackendError


class Backend(Protocol):
    name: str
    model_id: str  # what the cache key names: includes a fingerprint for local weight files
    batch_size: int  # calls per generate()
    max_concurrency: int | None  # a hard cap on generate() calls in flight (None: the config's)

    async def generate(self, calls: list[Call]) -> list[Outcome]: ...

    async def aclose(self) -> None: ...


def _fingerprint(path: Path) -> str:
    """Cheap identity of local weights (names, sizes, mtimes): retrained weights must not hit the cache."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    parts = [f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files if f.is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


class OpenAIBackend:
    """Any OpenAI-compatible HTTP endpoint; the key is read from the environment, never stored.

    Two transports send the same JSON body to the same path (`cfg.http`):
    - `aiohttp` (default): one POST per call on a shared aiohttp session. Hand-written because the
      wire protocol is a single JSON POST, while the openai client spends ~1 ms of CPU per request
      building and validating its request objects: at 64 in flight that CPU, not the server, is
      what caps a single process (bench/generate_throughput.py: 0.88 of ideal with it, 0.95 without).
    - `sdk`: the official `openai` client (on aiohttp), for endpoints that need its extras.
    Both classify failures the same way (`classify_status` for HTTP errors).
    """

    name = "openai"
    batch_size = 1
    max_concurrency = None

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.model_id = cfg.model
        self.native_n = cfg.native_n
        self._client: Any = None
        urls = cfg.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.endpoints = Endpoints([urls] if isinstance(urls, str) else list(urls))
        self.base_url = self.endpoints.urls[0]
        if len(self.endpoints.urls) > 1 and cfg.http != "aiohttp":
            raise ValueError("several base_url endpoints need engine.http=aiohttp")
        if not os.environ.get(cfg.api_key_env) and not (cfg.base_url or os.environ.get("OPENAI_BASE_URL")):
            # Without a key, every paid call would come back 401: refuse before sending any.
            raise ValueError(f"backend 'openai' needs an API key in ${cfg.api_key_env} (or a base_url)")

    def _make_client(self) -> Any:
        # Local servers need no key, but clients insist on one: a placeholder is sent then.
        key = os.environ.get(self.cfg.api_key_env) or "no-key"
        if self.cfg.http == "aiohttp":
            from importlib.metadata import version

            import aiohttp

            return aiohttp.ClientSession(
                headers={
                    "Authorization": f"Bearer {key}",
                    "Content-Type": "application/json",
                    "User-Agent": f"mathforge/{version('mathforge')}",
                },
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s),
                connector=aiohttp.TCPConnector(limit=0),  # the engine bounds what is in flight
            )
        import openai

        return openai.AsyncOpenAI(
            api_key=key,
            base_url=self.base_url,
            timeout=self.cfg.timeout_s,
            max_retries=0,  # the engine retries, so that every failure is classified and counted
            http_client=openai.DefaultAioHttpClient(timeout=self.cfg.timeout_s),
        )

    async def generate(self, calls: list[Call]) -> list[Outcome]:
        if self._client is None:
            self._client = self._make_client()
        if self.native_n:  # the engine hands over all missing samples of one request
            return await self._post(calls[0], n=len(calls))
        return [(await self._post(call, n=1))[0] for call in calls]

    async def _post(self, call: Call, n: int) -> list[Outcome]:
        path, body = request_body(self.cfg.model, call, n)
        chat = call.messages is not None
        try:
            async with asyncio.timeout(self.cfg.timeout_s + 5):  # a guard in case the transport hangs
                if self.cfg.http == "aiohttp":
                    return await self._post_to_endpoint(path, body, call, chat, n)
                else:
                    # The client's documented raw-request path: the typed `create()` spends more CPU
                    # on validating params and building response models than the request costs.
                    raw = await self._client.post(path, body=body, cast_to=str)
        except Exception as e:  # noqa: BLE001 - every failure becomes a classified outcome
            return [classify_openai_error(e)] * n
        return parse_openai_body(raw, chat=chat, n=n)

    async def _post_to_endpoint(self, path: str, body: dict[str, Any], call: Call, chat: bool, n: int) -> list[Outcome]:
        """POST to the endpoint with the fewest calls in flight; its health is booked by outcome."""
        i = self.endpoints.pick()
        headers = {"X-Sim-Level": str(call.level)} if self.cfg.sim_hints and call.level else None
        outcomes: list[Outcome] = []
        try:
            url = self.endpoints.urls[i] + path
            async with self._client.post(url, data=json.dumps(body), proxy=self.endpoints.proxies[i], headers=headers) as resp:
                raw = await resp.text()
                if resp.status >= 400:
                    outcomes = [classify_status(resp.status, resp.headers, _error_message(raw))] * n
                else:
                    outcomes = parse_openai_body(raw, chat=chat, n=n)
        except Exception as e:  # noqa: BLE001 - every failure becomes a classified outcome
            outcomes = [classify_openai_error(e)] * n
        finally:
            self.endpoints.done(i, outcomes)
        return outcomes

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def request_body(model: str, call: Call, n: int = 1) -> tuple[str, dict[str, Any]]:
    """The path (below `/v1`) and JSON body of one call; batch files carry the same bodies, so a
    request answered in a batch is the request answered online."""
    s = call.sampling
    body: dict[str, Any] = dict(model=model, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens)
    if n > 1:
        body["n"] = n
    if s.sample_seed(call.sample) is not None:
        body["seed"] = s.sample_seed(call.sample)
    if s.stop:
        body["stop"] = list(s.stop)
    if call.messages is not None:
        return "/chat/completions", {**body, "messages": call.messages}
    return "/completions", {**body, "prompt": call.prompt}


class Endpoints:
    """Replicas of one model (N vLLM/SGLang servers): each call goes to the one with the fewest
    calls in flight; one whose calls fail `pause_after` times in a row (connection, timeout, 5xx) is
    paused for `pause_s` seconds, doubled at each new pause, while the others carry on. The cache
    key never depends on which endpoint answered."""

    DOWN = frozenset({"connection", "timeout", "server_error"})

    def __init__(self, urls: list[str], pause_after: int = 3, pause_s: float = 5.0):
        self.urls = [u.rstrip("/") for u in urls]
        self.proxies = [env_proxy(u) for u in self.urls]  # looked up once, not per call
        self.inflight = [0] * len(urls)
        self.failures = [0] * len(urls)
        self.pauses = [0] * len(urls)
        self.paused_until = [0.0] * len(urls)
        self.pause_after, self.pause_s = pause_after, pause_s

    def pick(self) -> int:
        now = time.monotonic()
        live = [j for j in range(len(self.urls)) if self.paused_until[j] <= now]
        # All paused: the one whose pause ends first (it failed least recently), whatever its load.
        i = min(live, key=lambda j: self.inflight[j]) if live else min(range(len(self.urls)), key=self.paused_until.__getitem__)
        self.inflight[i] += 1
        return i

    def done(self, i: int, outcomes: list[Outcome]) -> None:
        """Book call outcomes (none: the call was cancelled, which says nothing about the endpoint)."""
        self.inflight[i] -= 1
        if not outcomes:
            return
        if not any(isinstance(o, BackendError) and o.kind in self.DOWN for o in outcomes):
            self.failures[i], self.pauses[i] = 0, 0
            return
        self.failures[i] += 1
        if self.failures[i] >= self.pause_after and len(self.urls) > 1:
            self.paused_until[i] = time.monotonic() + self.pause_s * 2 ** self.pauses[i]
            self.pauses[i] += 1
            self.failures[i] = 0


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY, NO_PROXY, ...), looked up once.

    aiohttp's `trust_env` does this lookup in a worker thread on every request, which costs more
    CPU than the request itself at high concurrency."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    if parts.hostname and proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


def classify_status(status: int, headers: Any, message: str) -> BackendError:
    """Map an HTTP error status (and the server's Retry-After) to a failure kind."""
    retry_after = parse_retry_after({k.lower(): v for k, v in headers.items()})
    if status == 429:
        return BackendError("rate_limit", f"HTTP 429: {_short(message)}", retry_after)
    if status == 408:
        return BackendError("timeout", f"HTTP 408: {_short(message)}", retry_after)
    if status in (401, 403):
        return BackendError("auth", f"HTTP {status}: {_short(message)} (check the key named by api_key_env)")
    if status >= 500:
        return BackendError("server_error", f"HTTP {status}: {_short(message)}", retry_after)
    return BackendError("bad_request", f"HTTP {status}: {_short(message)}")


def _error_message(raw: str) -> str:
    """The `error.message` of an OpenAI-style error body, else the body itself."""
    try:
        err = json.loads(raw).get("error")
    except (json.JSONDecodeError, AttributeError):
        return raw
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    return str(err) if err else raw


def classify_openai_error(e: BaseException) -> BackendError:
    """Map a transport exception (openai client or aiohttp) to a failure kind."""
    import openai

    if isinstance(e, openai.APIStatusError):
        return classify_status(e.status_code, e.response.headers, e.message)
    if _dropped(e):
        return BackendError("connection", f"connection lost: {_short(str(_root(e)))}")
    if isinstance(e, openai.APITimeoutError | TimeoutError):
        return BackendError("timeout", "no response within the timeout")
    if isinstance(e, openai.APIConnectionError):
        return BackendError("connection", _short(str(e.__cause__ or e)))
    if isinstance(e, openai.APIResponseValidationError | json.JSONDecodeError | ValueError | TypeError):
        return BackendError("malformed", f"unreadable response body: {_short(str(e))}")
    return BackendError("backend", f"{type(e).__name__}: {_short(str(e))}")


def _chain(e: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and x not in chain:
        chain.append(x)
        x = x.__cause__ or x.__context__
    return chain


def _root(e: BaseException) -> BaseException:
    return _chain(e)[-1]


def _dropped(e: BaseException) -> bool:
    """A connection the server closed or reset; the openai client reports some as timeouts."""
    import aiohttp

    return any(
        isinstance(x, aiohttp.ClientConnectionError | ConnectionError) and not isinstance(x, TimeoutError)
        for x in _chain(e)
    )


def parse_openai_body(raw: str, *, chat: bool, n: int = 1) -> list[Outcome]:
    """Read a completion body into `n` samples; anything unusable is `malformed`, with the reason.

    With n > 1 the usage covers all choices: the prompt is booked on the first sample and the
    completion tokens are shared out evenly (the API does not say which choice used how many).
    """
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return [BackendError("malformed", f"response body is not JSON: {_short(str(raw))}")] * n
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        return [BackendError("malformed", f"no choices in the response body: {_short(raw)}")] * n
    by_index = {c.get("index", i): c for i, c in enumerate(choices) if isinstance(c, dict)}
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    completion = int(usage.get("completion_tokens") or 0)
    out: list[Outcome] = []
    for i in range(n):
        choice = by_index.get(i, {})
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        if not isinstance(text, str):
            out.append(BackendError("malformed", f"choice {i} has no text content: {_short(raw)}"))
            continue
        out.append(
            Completion(
                text=text,
                finish_reason=str(choice.get("finish_reason") or "unknown"),
                prompt_tokens=int(usage.get("prompt_tokens") or 0) if i == 0 else 0,
                completion_tokens=completion // n + (completion % n if i == 0 else 0),
            )
        )
    return out


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LlamaBackend:
    """llama.cpp in-process; model "smollm2" is the embedded SmolLM2-135M-Instruct GGUF."""

    name = "llama"
    batch_size = 1
    max_concurrency = 1  # one llama.cpp context decodes one sequence at a time here

    def __init__(self, cfg: EngineConfig):
        from llama_cpp import Llama

        from mathforge.models import smollm2_gguf

        path = smollm2_gguf() if cfg.model == "smollm2" else Path(cfg.model)
        if not path.exists():
            raise FileNotFoundError(f"GGUF model file not found: {path}")
        self.model_id = f"{path.name}@{_fingerprint(path)}"
        self.llm = Llama(model_path=str(path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, verbose=False)
        # A cancelled request's thread keeps decoding: the next one, and closing the model, wait for
        # it (two decodes on one context, or freeing it under one, crash the process).
        self.busy = threading.Lock()

    async def generate(self, calls: list[Call]) -> list[Outcome]:
        return [await asyncio.to_thread(self._one, call) for call in calls]

    def _one(self, call: Call) -> Outcome:
        with self.busy:
            if self.llm is None:
                return BackendError("bad_request", "the engine was closed")
            return self._decode(call)

    def _decode(self, call: Call) -> Outcome:
        s = call.sampling
        args: dict[str, Any] = dict(
            temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, stop=list(s.stop) or None
        )
        if s.sample_seed(call.sample) is not None:
            args["seed"] = s.sample_seed(call.sample)
        try:
            if call.messages is not None:
                out = self.llm.create_chat_completion(messages=call.messages, **args)
                text = out["choices"][0]["message"]["content"]
            else:
                out = self.llm.create_completion(prompt=call.prompt, **args)
                text = out["choices"][0]["text"]
        except ValueError as e:  # llama.cpp reports an over-long prompt this way
            return BackendError("bad_request", _short(str(e)))
        usage = out.get("usage") or {}
        return Completion(
            text or "",
            str(out["choices"][0].get("finish_reason") or "unknown"),
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self.busy:
            llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()


class HFBackend:
    """transformers generation, batched and left-padded; loads our training's checkpoint directories."""

    name = "hf"
    max_concurrency = 1

    def __init__(self, cfg: EngineConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.batch_size = cfg.batch_size
        local = Path(cfg.model)
        self.model_id = f"{cfg.model}@{_fingerprint(local)}" if local.exists() else cfg.model
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = getattr(torch, cfg.dtype) if cfg.dtype else "auto"
        self.device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype).to(self.device).eval()

    async def generate(self, calls: list[Call]) -> list[Outcome]:
        # One generate() per sampling setting (a batch shares its generation config) and kind of
        # prompt (chat and raw prompts are tokenized differently).
        groups: dict[Any, list[int]] = {}
        for i, call in enumerate(calls):
            s = call.sampling
            key = (
                s.temperature,
                s.top_p,
                s.max_tokens,
                s.stop,
                s.sample_seed(call.sample),
                call.prompt is None,
            )
            groups.setdefault(key, []).append(i)
        out: list[Outcome] = [BackendError("backend", "not generated")] * len(calls)
        for idx in groups.values():
            batch = [calls[i] for i in idx]
            for i, o in zip(idx, await asyncio.to_thread(self._batch, batch), strict=True):
                out[i] = o
        return out

    def render(self, call: Call) -> str:
        if call.prompt is not None:
            return call.prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError("bad_request", "chat messages given but the tokenizer has no chat template")
        return self.tokenizer.apply_chat_template(call.messages, tokenize=False, add_generation_prompt=True)

    def _batch(self, calls: list[Call]) -> list[Outcome]:
        try:
            texts = [self.render(c) for c in calls]
        except BackendError as e:
            return [e] * len(calls)
        s = calls[0].sampling
        seed = s.sample_seed(calls[0].sample)
        if seed is not None:
            self.torch.manual_seed(seed)
        # As in training: a raw prompt gets the tokenizer's special tokens (BOS); a rendered chat
        # template already holds its own.
        raw = calls[0].prompt is not None
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=raw).to(self.device)
        gen: dict[str, Any] = dict(
            max_new_tokens=s.max_tokens, do_sample=s.temperature > 0, pad_token_id=self.tokenizer.pad_token_id
        )
        if s.temperature > 0:
            gen.update(temperature=s.temperature, top_p=s.top_p)
        if s.stop:
            gen.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        with self.torch.inference_mode():
            seqs = self.model.generate(**enc, **gen)
        new = seqs[:, enc["input_ids"].shape[1] :]
        return [self._decode(row, int(enc["attention_mask"][i].sum()), s.stop) for i, row in enumerate(new)]

    def _decode(self, row: Any, prompt_tokens: int, stop: tuple[str, ...]) -> Completion:
        ids = row.tolist()
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        finish = "length"
        if eos in ids:
            ids, finish = ids[: ids.index(eos)], "stop"
        ids = [t for t in ids if t != pad]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for s in stop:
            if s in text:
                text, finish = text[: text.index(s)], "stop"
        return Completion(text, finish, prompt_tokens, len(ids))

    async def aclose(self) -> None:
        self.model = None


def vllm_sampling_kwargs(call: Call) -> dict[str, Any]:
    """vLLM SamplingParams arguments for one call (pure, so it is testable without vLLM)."""
    s = call.sampling
    return dict(
        n=1,
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        seed=s.sample_seed(call.sample),
        stop=list(s.stop) or None,
    )


class VLLMBackend:
    """vLLM offline (`vllm.LLM`) for GPUs: whole batches at once, vLLM schedules them itself."""

    name = "vllm"
    max_concurrency = 1

    def __init__(self, cfg: EngineConfig):
        try:
            import vllm
        except ImportError as e:
            raise ImportError(
                "the vllm backend needs vLLM on a CUDA machine: pip install 'mathforge[gpu]'"
            ) from e
        self.vllm = vllm
        self.batch_size = max(cfg.batch_size, 256)
        local = Path(cfg.model)
        self.model_id = f"{cfg.model}@{_fingerprint(local)}" if local.exists() else cfg.model
        self.llm = vllm.LLM(model=cfg.model, dtype=cfg.dtype or "auto", max_model_len=cfg.n_ctx)

    async def generate(self, calls: list[Call]) -> list[Outcome]:
        return await asyncio.to_thread(self._batch, calls)

    def _batch(self, calls: list[Call]) -> list[Outcome]:
        params = [self.vllm.SamplingParams(**vllm_sampling_kwargs(c)) for c in calls]
        out: list[Outcome] = [BackendError("backend", "not generated")] * len(calls)
        chat = [i for i, c in enumerate(calls) if c.messages is not None]
        raw = [i for i, c in enumerate(calls) if c.messages is None]
        if chat:
            got = self.llm.chat([calls[i].messages for i in chat], [params[i] for i in chat], use_tqdm=False)
            for i, r in zip(chat, got, strict=True):
                out[i] = _vllm_completion(r)
        if raw:
            got = self.llm.generate([calls[i].prompt for i in raw], [params[i] for i in raw], use_tqdm=False)
            for i, r in zip(raw, got, strict=True):
                out[i] = _vllm_completion(r)
        return out

    async def aclose(self) -> None:
        self.llm = None


def _vllm_completion(r: Any) -> Completion:
    o = r.outputs[0]
    return Completion(
        o.text, str(o.finish_reason or "unknown"), len(r.prompt_token_ids or ()), len(o.token_ids)
    )
