"""The generation engine against real local engines (llama.cpp in-process and its OpenAI-compatible
server) and against a scripted server that injects faults."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from mathforge.engine import Completion, Engine, EngineConfig, Request, Sampling
from mathforge.engine.backends import vllm_sampling_kwargs
from mathforge.engine.cache import cache_key
from mathforge.engine.limits import TokenBucket, backoff_delay, parse_retry_after
from mathforge.engine.types import Call

GREEDY = Sampling(temperature=0, max_tokens=24)
QUESTIONS = ["What is 2 + 3?", "Name a prime number larger than 10.", "What is half of 18?"]


def chat(key: str, text: str, sampling: Sampling = GREEDY) -> Request:
    return Request(key=key, messages=[{"role": "user", "content": text}], sampling=sampling)


def mock_cfg(server, **kw) -> EngineConfig:
    base = dict(
        backend="openai",
        model="mock",
        base_url=server.url,
        timeout_s=1.0,
        max_retries=3,
        backoff_base_s=0.02,
        progress=False,
        concurrency=8,
    )
    return EngineConfig(**{**base, **kw})


def cache_rows(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


# -- real engines -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_engine_results(tmp_path_factory):
    """In-process llama.cpp: chat and raw requests, n samples, a duplicate; run twice on one cache."""
    cache = tmp_path_factory.mktemp("llama") / "cache.sqlite"
    reqs = [chat(f"q{i}", q) for i, q in enumerate(QUESTIONS)]
    reqs.append(chat("dup", QUESTIONS[0]))  # same content as q0: sent once
    reqs.append(Request(key="raw", prompt="Question: What is 4 + 4?\nAnswer:", sampling=GREEDY))
    reqs.append(chat("sampled", QUESTIONS[1], Sampling(temperature=0.9, max_tokens=16, n=3, seed=7)))
    with Engine(EngineConfig(backend="llama", model="smollm2", progress=False), cache_path=cache) as engine:
        first = engine.run(reqs, desc="llama")
        stats1 = engine.stats()
        second = engine.run(reqs, desc="llama again")
        stats2 = engine.stats()
    return reqs, first, second, stats1, stats2, cache


def test_llama_in_process_answers_every_request_in_order(llama_engine_results):
    reqs, first, _, stats1, _, cache = llama_engine_results
    assert [r.key for r in first] == [r.key for r in reqs]
    for res in first:
        assert res.error is None, res
        assert all(t.strip() for t in res.texts)
        assert res.prompt_tokens > 0 and res.completion_tokens > 0
    assert "5" in first[0].texts[0]  # SmolLM2 gets 2 + 3 right greedily
    assert first[0].texts == first[3].texts  # greedy and deduplicated
    assert len(first[5].texts) == 3 and len(set(first[5].texts)) > 1  # seeds seed+i differ
    # 3 questions + raw + 3 samples; the duplicate costs nothing
    assert stats1["calls"] == 7 and cache_rows(cache) == 7
    assert stats1["failures"] == {}


def test_llama_rerun_is_served_from_cache(llama_engine_results):
    _, first, second, stats1, stats2, _ = llama_engine_results
    assert [r.texts for r in first] == [r.texts for r in second]
    assert all(r.cached for r in second)
    assert stats2["calls"] == stats1["calls"]  # zero new backend calls


@pytest.mark.parametrize("http", ["aiohttp", "sdk"])
def test_openai_backend_against_real_llama_server(llama_server, llama_engine_results, tmp_path, http):
    reqs, *_ = llama_engine_results
    cfg = EngineConfig(
        backend="openai",
        http=http,
        model="smollm2",
        base_url=llama_server,
        concurrency=2,
        timeout_s=60,
        progress=False,
        prices={"smollm2": (1.0, 2.0)},
    )
    greedy = [r for r in reqs if r.sampling.temperature == 0]
    with Engine(cfg, cache_path=tmp_path / "c.sqlite") as engine:
        results = engine.run(greedy, desc="llama server")
        stats = engine.stats()
    assert [r.key for r in results] == [r.key for r in greedy]
    for got in results:
        assert got.error is None and got.texts[0].strip() and got.finish_reasons[0] in ("stop", "length")
    assert "5" in results[0].texts[0]  # (threads and batch sizes differ from in-process: no exact match)
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    expected = (stats["prompt_tokens"] * 1.0 + stats["completion_tokens"] * 2.0) / 1e6
    assert stats["cost_usd"] == pytest.approx(expected)


# -- faults -----------------------------------------------------------------------------------------

# (directive, final error kind or None when a retry recovers, retry kinds counted)
FAULTS = [
    ("429x2", None, {"rate_limit": 2}),
    ("500", None, {"server_error": 1}),
    ("500x4", "server_error", {"server_error": 3}),  # 4 attempts, all fail
    ("slow", None, {"timeout": 1}),
    ("drop", None, {"connection": 1}),
    ("malformed", None, {"malformed": 1}),
    ("nochoices", None, {"malformed": 1}),
    ("empty", "empty", {}),
    ("400", "bad_request", {}),
    ("401", "auth", {}),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("http", ["aiohttp", "sdk"])
def test_faults_are_retried_classified_and_counted(mock_server, tmp_path, http):
    reqs = [chat(f"f{i}", f"question {i} [[fault:{d}]]") for i, (d, _, _) in enumerate(FAULTS)]
    reqs += [chat(f"ok{i}", f"plain question {i}") for i in range(20)]
    start = time.monotonic()
    with Engine(mock_cfg(mock_server, http=http), cache_path=tmp_path / "c.sqlite") as engine:
        results = engine.run(reqs)
        stats = engine.stats()
    elapsed = time.monotonic() - start
    expected_failures: dict[str, int] = {}
    expected_retries: dict[str, int] = {}
    for (directive, kind, retries), res in zip(FAULTS, results, strict=False):
        if kind is None:
            assert res.error is None and res.texts[0].startswith("Reply"), (directive, res)
        else:
            assert res.error and res.error.startswith(kind), (directive, res)
            expected_failures[kind] = expected_failures.get(kind, 0) + 1
        for k, v in retries.items():
            expected_retries[k] = expected_retries.get(k, 0) + v
    assert all(r.error is None for r in results[len(FAULTS) :])
    assert stats["failures"] == expected_failures
    assert stats["retries"] == expected_retries
    assert elapsed >= 2 * 0.3  # the two Retry-After waits were honoured
    assert elapsed < 20  # and nothing hung: the slow response was cut at the 1 s timeout
    # only successes are cached, so a rerun retries the failures and nothing else
    assert cache_rows(tmp_path / "c.sqlite") == len(reqs) - 3  # "empty" is a paid answer, cached
    with Engine(mock_cfg(mock_server, http=http), cache_path=tmp_path / "c.sqlite") as engine:
        engine.run(reqs)
        assert engine.stats()["calls"] == 3  # 500x4 (now past its faults), the 400 and the 401


@pytest.mark.timeout(30)
@pytest.mark.parametrize("http", ["aiohttp", "sdk"])
def test_timeout_without_retries_fails_fast(mock_server, http):
    cfg = mock_cfg(mock_server, timeout_s=0.5, max_retries=0, http=http)
    start = time.monotonic()
    with Engine(cfg) as engine:
        (res,) = engine.run([chat("s", "x [[fault:slowx5]]")])
        assert engine.stats()["failures"] == {"timeout": 1}
    assert res.error.startswith("timeout") and res.finish_reasons == ["error"] and res.texts == [""]
    assert time.monotonic() - start < 5


def test_concurrency_is_bounded(mock_server):
    mock_server.latency = 0.05
    with Engine(mock_cfg(mock_server, concurrency=4)) as engine:
        results = engine.run([chat(f"c{i}", f"q{i}") for i in range(24)])
    assert all(r.ok for r in results)
    assert mock_server.snapshot()["max_inflight"] == 4


def test_requests_per_minute_limit(mock_server):
    # 240 rpm = 4/s with a 1 s burst: 4 at once, then one every 0.25 s
    start = time.monotonic()
    with Engine(mock_cfg(mock_server, rpm=240)) as engine:
        engine.run([chat(f"r{i}", f"q{i}") for i in range(10)])
    assert 1.3 <= time.monotonic() - start < 8


def test_tokens_per_minute_limit(mock_server):
    # 600 tpm = 10 tokens/s; each call is estimated at ~20 tokens and really uses ~12 (booked on arrival)
    reqs = [chat(f"t{i}", f"q{i}", Sampling(max_tokens=1)) for i in range(3)]
    start = time.monotonic()
    with Engine(mock_cfg(mock_server, tpm=600)) as engine:
        assert all(r.ok for r in engine.run(reqs))
    assert 1.0 <= time.monotonic() - start < 8


def test_samples_are_separate_cache_entries(mock_server, tmp_path):
    path = tmp_path / "c.sqlite"
    with Engine(mock_cfg(mock_server), cache_path=path) as engine:
        (three,) = engine.run([chat("a", "q", Sampling(n=3, seed=1))])
        (four,) = engine.run([chat("a", "q", Sampling(n=4, seed=1))])
        assert engine.stats()["calls"] == 4  # the 4th sample only
    assert len(set(three.texts)) == 3 and four.texts[:3] == three.texts
    assert cache_rows(path) == 4


def test_native_n_sends_one_call_per_request_and_pays_the_prompt_once(mock_server, tmp_path):
    cfg = mock_cfg(mock_server, native_n=True)
    with Engine(cfg, cache_path=tmp_path / "c.sqlite") as engine:
        (four,) = engine.run([chat("a", "one two three", Sampling(n=4, seed=1))])
        assert mock_server.received == 1 and engine.stats()["calls"] == 4
        assert four.ok and len(set(four.texts)) == 4
        assert four.prompt_tokens == 3  # once, not four times
        (six,) = engine.run([chat("a", "one two three", Sampling(n=6, seed=1))])
        assert mock_server.received == 2 and six.texts[:4] == four.texts  # samples 4 and 5 in one call
    assert cache_rows(tmp_path / "c.sqlite") == 6


def test_cost_is_booked_per_model_and_cache_hits_are_savings(mock_server, tmp_path):
    cfg = mock_cfg(mock_server, prices={"mock": (3.0, 15.0)})
    with Engine(cfg, cache_path=tmp_path / "c.sqlite") as engine:
        engine.run([chat(f"k{i}", f"question number {i}") for i in range(5)])
        first = engine.stats()
        engine.run([chat(f"k{i}", f"question number {i}") for i in range(5)])
        second = engine.stats()
    paid = (first["prompt_tokens"] * 3.0 + first["completion_tokens"] * 15.0) / 1e6
    assert paid > 0 and first["cost_usd"] == pytest.approx(paid)
    assert first["per_model"]["mock"]["cost_usd"] == pytest.approx(paid)
    assert second["cost_usd"] == first["cost_usd"] and second["cost_saved_usd"] == pytest.approx(paid)


def test_raw_prompt_uses_the_completions_endpoint(mock_server):
    with Engine(mock_cfg(mock_server)) as engine:
        (res,) = engine.run([Request(key="p", prompt="### Instruction:\nAdd 1 and 1.\n\n### Response:")])
    assert res.ok and "### Response:" in res.texts[0]


# -- pieces -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
        ({"retry-after": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers) == expected


def test_backoff_is_jittered_capped_and_honours_retry_after():
    delays = [backoff_delay(4, base=1.0, cap=10.0) for _ in range(200)]
    assert all(0 <= d <= 10 for d in delays) and len(set(delays)) > 100
    assert all(backoff_delay(0, 1.0, 60.0, retry_after=5.0) >= 5.0 for _ in range(20))
    assert backoff_delay(0, 1.0, 60.0, retry_after=600.0) == 60.0


def test_token_bucket_keeps_the_long_run_rate_for_any_cost():
    async def take() -> float:
        bucket = TokenBucket(per_minute=600, burst_s=0.1)  # 10/s, holds 1
        start = time.monotonic()
        await bucket.acquire(1)  # immediate
        await bucket.acquire(3)  # waits 0.1 s for a full bucket, then owes 2
        await bucket.acquire(1)  # waits out the debt: 0.3 s
        return time.monotonic() - start

    assert 0.37 <= asyncio.run(take()) < 2.0


def test_cache_key_covers_everything_that_changes_a_response():
    base = dict(
        backend="openai",
        model="m",
        payload={"messages": [{"role": "user", "content": "x"}]},
        sampling=Sampling(temperature=0.7),
        sample=0,
    )
    key = cache_key(**base)
    variants = [
        {"backend": "llama"},
        {"model": "m2"},
        {"payload": {"messages": [{"role": "user", "content": "y"}]}},
        {"payload": {"prompt": "x"}},
        {"sampling": Sampling(temperature=0.8)},
        {"sampling": Sampling(temperature=0.7, max_tokens=100)},
        {"sampling": Sampling(temperature=0.7, stop=("\n",))},
        {"sampling": Sampling(temperature=0.7, seed=1)},
        {"sample": 1},
    ]
    keys = {cache_key(**{**base, **v}) for v in variants}
    assert key not in keys and len(keys) == len(variants)
    assert cache_key(**{**base, "sampling": Sampling(temperature=0.7, n=5)}) == key  # n is not the sample


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(key="k"), "exactly one of messages or prompt"),
        (dict(key="k", prompt="p", messages=[{"role": "user", "content": "c"}]), "exactly one"),
        (dict(key="k", messages=[{"role": "user"}]), "message 0"),
    ],
)
def test_bad_requests_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Request(**kwargs)


def test_engine_config_loads_from_overrides():
    from mathforge.config import load_config

    cfg = load_config(
        EngineConfig, None, ["backend=openai", "model=gpt-4o", "rpm=500", "prices.gpt-4o=[2.5, 10]"]
    )
    assert cfg.prices == {"gpt-4o": (2.5, 10.0)} and cfg.rpm == 500.0
    assert cfg.cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(3.5)


def test_empty_run(mock_server):
    with Engine(mock_cfg(mock_server)) as engine:
        assert engine.run([]) == []
        assert engine.stats()["requests"] == 0


def test_the_official_endpoint_without_a_key_is_refused_before_any_call(monkeypatch):
    monkeypatch.delenv("MF_ABSENT_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match=r"\$MF_ABSENT_KEY"):
        Engine(EngineConfig(backend="openai", model="gpt-4o", api_key_env="MF_ABSENT_KEY"))


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown backend"):
        EngineConfig(backend="gpt")
    with pytest.raises(ValueError, match="prices"):
        EngineConfig(prices={"m": (1.0,)})
    with pytest.raises(ValueError, match="unknown http transport 'httpx'"):
        EngineConfig(http="httpx")


def test_vllm_backend_without_vllm_says_how_to_install():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"mathforge\[gpu\]"):
            Engine(EngineConfig(backend="vllm", model="x"))
    call = Call("k", None, "p", Sampling(temperature=0.5, max_tokens=9, seed=3, stop=("###",)), 2)
    assert vllm_sampling_kwargs(call) == dict(
        n=1, temperature=0.5, top_p=1.0, max_tokens=9, seed=5, stop=["###"]
    )


class Interrupting:
    """A backend where call "stop" raises KeyboardInterrupt while other calls are in flight."""

    name = "interrupting"
    model_id = "interrupting-v1"
    batch_size = 1
    max_concurrency = None

    def __init__(self):
        self.finished = 0
        self.cancelled = 0

    async def generate(self, calls):
        text = calls[0].messages[-1]["content"]
        if text == "stop":
            await asyncio.sleep(0.05)
            raise KeyboardInterrupt
        try:
            await asyncio.sleep(0.01 if text.startswith("fast") else 5)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        return [Completion(f"done {text}", "stop", 1, 1)]

    async def aclose(self):
        pass


def test_ctrl_c_stops_every_worker_and_keeps_finished_answers(tmp_path):
    backend = Interrupting()
    reqs = [chat(f"f{i}", f"fast {i}") for i in range(3)] + [chat("s", "stop")]
    reqs += [chat(f"w{i}", f"slow {i}") for i in range(3)]
    start = time.monotonic()
    with (
        pytest.raises(KeyboardInterrupt),
        Engine(EngineConfig(progress=False, concurrency=8), tmp_path / "c.sqlite", backend=backend) as engine,
    ):
        engine.run(reqs)
    assert time.monotonic() - start < 3  # the slow calls were cancelled, not awaited
    assert backend.finished == 3 and cache_rows(tmp_path / "c.sqlite") == 3
    assert backend.cancelled == 3


def test_progress_off_a_terminal_writes_plain_status_lines():
    import io

    from rich.console import Console

    from mathforge.engine.progress import EngineProgress

    buf = io.StringIO()
    with EngineProgress("solve", 10, console=Console(file=buf)) as progress:
        progress.advance_cached(3)
        progress.advance(tokens=100, cost=0.5)
        progress.advance(tokens=0, cost=0.5, failed=True)
        progress.complete_to(10)
    assert buf.getvalue().startswith("solve: 10/10 samples,") and "$0.5000, 1 failed" in buf.getvalue()


def test_the_environment_proxy_is_honoured_and_looked_up_once(monkeypatch):
    from mathforge.engine.backends import OpenAIBackend, env_proxy

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://api.openai.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert env_proxy("https://api.openai.com/v1") == "http://proxy.example:3128"
    assert env_proxy("http://127.0.0.1:8000/v1") is None  # bypassed
    backend = OpenAIBackend(EngineConfig(backend="openai", model="m", base_url="https://llm.example/v1"))
    assert backend.endpoints.proxies == ["http://proxy.example:3128"]


# -- the shared in-flight window (asubmit) and hard caps ----------------------------------------------


async def _chains(engine: Engine, chains: int, steps: int) -> list[list[str]]:
    """`chains` request chains of `steps` each: a step is sent once the previous answer arrived."""
    async def chain(c: int) -> list[str]:
        texts = []
        for s in range(steps):
            res = await engine.asubmit(chat(f"c{c}s{s}", f"chain {c} step {s} after {texts[-1:] }"))
            texts.append(res.texts[0] if res.ok else res.error)
        return texts

    return await asyncio.gather(*(chain(c) for c in range(chains)))


def test_request_chains_share_one_window_with_no_barrier(mock_server, tmp_path):
    """8 slots, 16 chains of 3 steps at 50 ms: the window stays full (never more than 8 in flight),
    so the 48 requests take about 6 latencies, and a rerun is served from the cache alone."""
    mock_server.latency = 0.05
    with Engine(mock_cfg(mock_server, concurrency=8), cache_path=tmp_path / "c.sqlite") as engine:
        start = time.monotonic()
        first = engine.drive(_chains(engine, 16, 3))
        took = time.monotonic() - start
        assert engine.stats()["calls"] == 48 and all("Reply" in t for ts in first for t in ts)
    assert mock_server.snapshot()["max_inflight"] == 8
    assert took < 0.05 * 6 * 3  # a phase barrier per step would still fit; a serial chain would not
    with Engine(mock_cfg(mock_server, concurrency=8), cache_path=tmp_path / "c.sqlite") as engine:
        assert engine.drive(_chains(engine, 16, 3)) == first and engine.stats()["calls"] == 0


def test_cancelled_callers_withdraw_their_queued_calls(mock_server):
    mock_server.latency = 0.05

    async def go(engine: Engine) -> None:
        tasks = [asyncio.create_task(engine.asubmit(chat(f"w{i}", f"w{i}"))) for i in range(40)]
        await asyncio.sleep(0.02)
        for t in tasks[4:]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    received = mock_server.snapshot()["received"]
    with Engine(mock_cfg(mock_server, concurrency=4)) as engine:
        engine.drive(go(engine))
    assert mock_server.snapshot()["received"] - received <= 8  # the first window, not all 40


def test_budget_stops_within_one_window_and_a_raised_cap_continues(mock_server, tmp_path):
    from mathforge.engine.limits import Budget
    from mathforge.engine.types import BudgetExceeded

    path = tmp_path / "c.sqlite"
    reqs = [chat(f"b{i}", f"question {i}") for i in range(40)]

    async def all_of(engine: Engine) -> list:
        return await asyncio.gather(*(engine.asubmit(r) for r in reqs))

    capped = Engine(mock_cfg(mock_server, concurrency=4), cache_path=path, budget=Budget(max_requests=10))
    with capped as engine, pytest.raises(BudgetExceeded, match="max_requests=10"):
        engine.drive(all_of(engine))
    paid = cache_rows(path)
    assert 10 - 4 <= paid <= 10 + 4  # stops before the cap, or at most one window of in-flight calls past it
    with Engine(mock_cfg(mock_server, concurrency=4), cache_path=path, budget=Budget(max_requests=100)) as engine:
        results = engine.drive(all_of(engine))
        assert all(r.ok for r in results) and engine.stats()["calls"] == 40 - paid
    with pytest.raises(ValueError, match="max_usd"):
        Budget(max_usd=0)


def test_several_endpoints_share_the_load_and_one_killed_mid_run_is_paused(tmp_path):
    """Two local servers, one of them a separate process: calls go to the one with fewer in flight;
    the process is killed mid-run, its calls are retried on the other, and it is paused rather than
    tried again on every call. The cache key does not depend on the endpoint."""
    import signal
    import socket
    import subprocess
    import sys

    from mathforge.sim.mockserver import MockServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    other = subprocess.Popen([sys.executable, "-m", "mathforge.sim.mockserver", "--port", str(port), "--latency", "0.02"])
    here = MockServer(latency=0.02)
    urls = [here.start_in_thread(), f"http://127.0.0.1:{port}/v1"]
    time.sleep(3)
    cfg = EngineConfig(backend="openai", model="mock", base_url=urls, concurrency=8, progress=False,
                       backoff_base_s=0.01, timeout_s=20.0, max_retries=6)

    async def go(engine: Engine) -> list:
        first = await asyncio.gather(*(engine.asubmit(chat(f"e{i}", f"q{i}")) for i in range(40)))
        other.send_signal(signal.SIGKILL)
        other.wait()
        return first + list(await asyncio.gather(*(engine.asubmit(chat(f"f{i}", f"p{i}")) for i in range(80))))

    try:
        with Engine(cfg, cache_path=tmp_path / "c.sqlite") as engine:
            results = engine.drive(go(engine))
            retries = sum(engine.stats()["retries"].values())
    finally:
        other.kill()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    served_here = here.snapshot()["answered_total"]
    assert 80 + 5 <= served_here <= 120 - 5  # the other server took part of the first 40, none of the rest
    assert retries <= 8  # paused after 3 failures in a row, not retried on each of the 80 calls
    with Engine(EngineConfig(**{**cfg.__dict__, "base_url": urls[0]}), cache_path=tmp_path / "c.sqlite") as engine:
        assert all(r.ok for r in engine.run([chat(f"e{i}", f"q{i}") for i in range(40)])) and engine.stats()["calls"] == 0
    here.stop()


def test_waiting_requests_go_by_priority_then_arrival(mock_server):
    """One slot, six priority-1 requests queued before three priority-0 ones: the three are sent
    first, each group in arrival order (stage 1's requests before stage 2's fillers)."""
    mock_server.latency = 0.01
    done: list[str] = []

    async def one(engine: Engine, key: str, priority: int) -> None:
        await engine.asubmit(Request(key=key, messages=[{"role": "user", "content": key}], sampling=GREEDY,
                                     priority=priority))
        done.append(key)

    async def go(engine: Engine) -> None:
        low = [one(engine, f"low{i}", 1) for i in range(6)]
        high = [one(engine, f"high{i}", 0) for i in range(3)]
        await asyncio.gather(*low, *high)

    with Engine(mock_cfg(mock_server, concurrency=1)) as engine:
        engine.drive(go(engine))
    assert done == [f"high{i}" for i in range(3)] + [f"low{i}" for i in range(6)]


def test_imap_keeps_sending_past_a_slow_request_and_yields_in_order(mock_server, monkeypatch):
    """A reorder buffer of 16 and a slow request at place 15: while it is out, the requests after it
    keep going out (with chunks, none of the next 16 would until it returned); results in order."""
    import mathforge.engine.engine as engine_module

    monkeypatch.setattr(engine_module, "CHUNK", 16)
    mock_server.latency, mock_server.slow_s = 0.005, 0.5
    base = mock_server.snapshot()["received"]
    reqs = [chat(f"q{i}", f"q{i}" + (" [[fault:slow]]" if i == 15 else "")) for i in range(40)]
    seen = {}
    with Engine(mock_cfg(mock_server, concurrency=8, timeout_s=5.0, max_retries=0)) as engine:
        results = []
        for i, res in enumerate(engine.imap(reqs)):
            seen.setdefault(i, mock_server.snapshot()["received"] - base)
            results.append(res)
    assert [r.key for r in results] == [r.key for r in reqs] and all(r.error is None for r in results)
    assert seen[15] >= 30  # 0..30 sent before the slow one's result was handed back
