"""Throughput of the generation engine against a local OpenAI-compatible server with a fixed latency.

Ideal throughput is concurrency / latency (64 / 0.2 s = 320 requests/s). Measured side by side in
one run, on distinct prompts (nothing served from cache unless stated):
  - ours: `Engine` (openai backend, its default lean aiohttp transport, SQLite cache written per
    response, retries, limits bookkeeping) -- the number the issue targets (>= 0.9);
  - ours, `http: sdk`: the same engine sending through the openai client;
  - ours, rerun: the same requests again, all from the cache;
  - baseline: the openai client with its default httpx transport, an asyncio semaphore, no cache;
  - reference: the openai client on aiohttp, semaphore, no cache (what the engine is built on).

    python bench/generate_throughput.py [--requests 2000 --concurrency 64 --latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai

from mathforge.engine import Engine, EngineConfig, Request, Sampling


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "mathforge.sim.mockserver",
        "--port",
        str(port),
        "--latency",
        str(latency),
    ]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mock server did not start")


def requests(tag: str, n: int) -> list[Request]:
    sampling = Sampling(temperature=0.7, max_tokens=256)
    return [
        Request(
            key=f"{tag}{i}", messages=[{"role": "user", "content": f"{tag} problem {i}"}], sampling=sampling
        )
        for i in range(n)
    ]


def run_engine(
    url: str, reqs: list[Request], concurrency: int, cache: Path, http: str = "aiohttp"
) -> tuple[float, float, float]:
    cfg = EngineConfig(
        backend="openai", model="mock", base_url=url, concurrency=concurrency, progress=False, http=http
    )
    with Engine(cfg, cache_path=cache) as engine:
        start, cpu = time.perf_counter(), time.process_time()
        results = engine.run(reqs)
        first, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
        start = time.perf_counter()
        engine.run(reqs)
        again = time.perf_counter() - start
        assert engine.stats()["calls"] == len(reqs)
    return first, cpu, again


async def run_plain(url: str, reqs: list[Request], concurrency: int, aiohttp: bool) -> tuple[float, float]:
    http = openai.DefaultAioHttpClient() if aiohttp else None
    client = openai.AsyncOpenAI(api_key="none", base_url=url, max_retries=0, http_client=http)
    gate = asyncio.Semaphore(concurrency)

    async def one(r: Request) -> None:
        async with gate:
            await client.chat.completions.create(model="mock", messages=r.messages, max_tokens=256)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(r) for r in reqs))
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    await client.close()
    return took, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description="engine throughput vs ideal, side by side")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    ideal = args.concurrency / args.latency
    proc, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ours, ours_cpu, cached = run_engine(
                url, requests("ours", args.requests), args.concurrency, Path(tmp) / "c.sqlite"
            )
            sdk, sdk_cpu, _ = run_engine(
                url, requests("sdk", args.requests), args.concurrency, Path(tmp) / "s.sqlite", http="sdk"
            )
        httpx = asyncio.run(run_plain(url, requests("httpx", args.requests), args.concurrency, aiohttp=False))
        aio = asyncio.run(run_plain(url, requests("aio", args.requests), args.concurrency, aiohttp=True))
    finally:
        proc.terminate()
        proc.wait()
    n = args.requests
    print(
        f"{n} requests, concurrency {args.concurrency}, server latency {args.latency * 1000:.0f} ms: "
        f"ideal {ideal:.0f} req/s (best possible with the last wave's tail: "
        f"{n / (-(-n // args.concurrency) * args.latency) / ideal:.3f})"
    )
    rows = [
        ("mathforge Engine (cache on)", ours, ours_cpu),
        ("mathforge Engine, http=sdk (cache on)", sdk, sdk_cpu),
        ("baseline: openai client, default httpx", *httpx),
        ("reference: openai client on aiohttp, no cache", *aio),
    ]
    for name, took, cpu in rows:
        print(
            f"  {name:48s} {n / took:7.1f} req/s   ratio to ideal {n / took / ideal:.3f}   "
            f"client CPU {cpu / n * 1000:.2f} ms/request"
        )
    print(
        f"  {'mathforge Engine, rerun from cache':48s} {n / cached:7.1f} req/s   ({n / cached / ideal:.1f}x ideal)"
    )
    print(f"  engine vs httpx baseline: {httpx[0] / ours:.2f}x the throughput")


if __name__ == "__main__":
    main()
