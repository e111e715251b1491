"""Batch mode (`engine.backend: openai-batch`) against the simulator's batch API: answers land in the
cache online calls use, failed lines and expired batches are retried in later batches, kills
(also between a create and its ledger record) never create a batch twice nor ask a request twice;
and `batch export` / `batch import` round-trip through files in vLLM run_batch's format."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.engine import Engine, EngineConfig, Request, Sampling
from mathforge.engine.batch import DIE_AFTER_CREATE
from mathforge.engine.types import WaveExported
from mathforge.io import read_records
from mathforge.sim.batchapi import BatchSimConfig
from mathforge.sim.teachersim import SimConfig, TeacherSim

REPO = Path(__file__).resolve().parents[1]
FAST = {"backoff_base_s": 0.01, "batch_settle_s": 0.05, "batch_poll_s": 0.05, "batch_poll_max_s": 0.2,
        "progress": False, "model": "sim"}


def requests(n: int) -> list[Request]:
    return [Request(key=f"k{i}", messages=[{"role": "user", "content": f"Solve it. Problem: what is {i} + 1?"}],
                    sampling=Sampling(seed=i, max_tokens=64)) for i in range(n)]


def start_sim(tmp_path: Path, **batch) -> TeacherSim:
    log = (tmp_path / "sim.jsonl").open("a", buffering=1)
    sim = TeacherSim(SimConfig(median_s=0.0, sigma=0.0), log, BatchSimConfig(**batch))
    sim.url = sim.start_in_thread()
    return sim


def sim_log(tmp_path: Path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "sim.jsonl").read_text().splitlines()]


def assert_nothing_twice(rows: list[dict]) -> None:
    created = Counter(r["hash"] for r in rows if r["status"] == "batch_created")
    answered = Counter(r["fp"] for r in rows if r["status"] == 200)
    assert created and max(created.values()) == 1, "a batch was created twice"
    assert answered and max(answered.values()) == 1, "a request was answered twice"


def test_failed_lines_and_an_expired_batch_are_retried_into_the_cache_online_calls_use(tmp_path):
    sim = start_sim(tmp_path, fail_rate=0.3, expire_first=1, delay_s=0.1)
    prices = {"prices": {"sim": (1.0, 2.0)}, "base_url": sim.url}
    try:
        with Engine(EngineConfig(backend="openai-batch", batch_max_requests=8, **prices, **FAST),
                    cache_path=tmp_path / "cache.sqlite") as engine:
            batch = engine.run(requests(30))
            stats = engine.stats()
        with Engine(EngineConfig(backend="openai", **prices, **FAST), cache_path=tmp_path / "cache.sqlite") as engine:
            rerun = engine.run(requests(30))
            assert engine.stats()["cached"] == 30  # a batch-filled cache serves an online run
        with Engine(EngineConfig(backend="openai", **prices, **FAST)) as engine:
            online = engine.run(requests(30))
            online_usd = engine.stats()["cost_usd"]
    finally:
        sim.stop()
    assert all(r.ok for r in batch) and [r.texts for r in batch] == [r.texts for r in rerun] == [r.texts for r in online]
    rows = sim_log(tmp_path)
    assert Counter(r["status"] for r in rows)["batch_expired"] == 1 and stats["batch_api"]["failed_lines"] >= 5
    assert stats["batch_api"]["submitted"] == stats["batch_api"]["done"] >= 5  # 30 in files of 8, plus retries
    assert stats["cost_usd"] == pytest.approx(online_usd / 2)
    # every request answered once in batches, then once more by the online run on an empty cache
    assert Counter(Counter(r["fp"] for r in rows if r["status"] == 200).values()) == {2: 30}


def batch_records(cache: Path) -> list[dict]:
    from mathforge.ledger import Ledger

    ledger = Ledger(cache.with_name(cache.stem + ".batches.sqlite"))
    try:
        return [json.loads(v) for v in ledger.notes("batches").values()]
    finally:
        ledger.close()


def test_a_batch_the_provider_no_longer_knows_is_marked_lost_and_the_cache_decides_what_is_asked_again(
        tmp_path, capsys):
    from mathforge.ledger import Ledger

    sim = start_sim(tmp_path, lose_first=1)  # created, then never run: 404 to every poll
    cache = tmp_path / "cache.sqlite"
    cfg = EngineConfig(backend="openai-batch", base_url=sim.url, batch_max_requests=10, **FAST)
    try:
        with Engine(cfg, cache_path=cache) as engine:
            first = engine.run(requests(20))
            stats = engine.stats()["batch_api"]
        [lost] = [r["batch"] for r in sim_log(tmp_path) if r["status"] == "batch_lost"]
        assert f"batch {lost} (wave 1, 10 requests) is lost" in capsys.readouterr().err
        assert [r["id"] for r in batch_records(cache) if r["state"] == "lost"] == [lost]
        # A batch that vanished while this process was away: its record says 'submitted', but all
        # of its requests are in the cache by now; a rerun finds it gone and asks only the new ones.
        record = next(r for r in batch_records(cache) if r["state"] == "collected")
        ledger = Ledger(cache.with_name("cache.batches.sqlite"))
        ledger.note("batches", record["hash"], json.dumps({**record, "state": "submitted", "id": "batch_vanished"}))
        ledger.close()
        with Engine(cfg, cache_path=cache) as engine:
            second = engine.run(requests(25))
            resumed = engine.stats()["batch_api"]
    finally:
        sim.stop()
    assert all(r.ok for r in first + second) and stats["lost"] == 1 and stats["running"] == 0
    # the vanished batch counts as submitted (resumed) and lost: none is left running, never below zero
    assert resumed["resumed"] == 1 and resumed["lost"] == 1 and resumed["running"] == 0
    assert "batch batch_vanished (wave" in capsys.readouterr().err
    answered = Counter(r["fp"] for r in sim_log(tmp_path) if r["status"] == 200)
    assert len(answered) == 25 and max(answered.values()) == 1  # nothing asked twice
    assert {r["id"] for r in batch_records(cache) if r["state"] == "lost"} == {lost, "batch_vanished"}


def test_failed_polls_in_a_row_stop_the_run_with_one_line_naming_the_batch_and_a_rerun_resumes_it(tmp_path):
    from dataclasses import replace

    from mathforge.engine.types import BatchUnreachable

    sim = start_sim(tmp_path, poll_status=500)
    cache = tmp_path / "cache.sqlite"
    cfg = EngineConfig(backend="openai-batch", base_url=sim.url, batch_poll_errors=3, max_retries=1, **FAST)
    try:
        with Engine(cfg, cache_path=cache) as engine, pytest.raises(BatchUnreachable) as stop:
            engine.run(requests(5))
        [created] = [r["batch"] for r in sim_log(tmp_path) if r["status"] == "batch_created"]
        assert str(stop.value).startswith(f"batch {created}: polling failed 3 times in a row (last: ")
        assert "HTTP 500" in str(stop.value) and "\n" not in str(stop.value)
        assert [(r["id"], r["state"]) for r in batch_records(cache)] == [(created, "submitted")]
        sim.batch_api.cfg = replace(sim.batch_api.cfg, poll_status=0)  # the provider is back
        with Engine(cfg, cache_path=cache) as engine:
            results = engine.run(requests(5))
    finally:
        sim.stop()
    assert all(r.ok for r in results)
    rows = sim_log(tmp_path)
    assert_nothing_twice(rows)
    assert len({r["fp"] for r in rows if r["status"] == 200}) == 5


CLIENT = """
import sys
from mathforge.engine import Engine, EngineConfig
from tests.test_batch import FAST, requests
cfg = EngineConfig(backend="openai-batch", base_url=sys.argv[1], batch_max_requests=10, **FAST)
with Engine(cfg, cache_path=sys.argv[2]) as engine:
    print(sum(r.ok for r in engine.run(requests(int(sys.argv[3])))))
"""


def test_kills_while_polling_and_between_a_create_and_its_ledger_record_resume_without_repeats(tmp_path):
    sim = start_sim(tmp_path, delay_s=1.0)
    client = [sys.executable, "-c", CLIENT, sim.url, str(tmp_path / "cache.sqlite")]
    try:  # 40 requests in files of 10: killed right after its second create, before its ledger record
        died = subprocess.run([*client, "40"], cwd=REPO, env={**_env(), DIE_AFTER_CREATE: "2"}, capture_output=True)
        assert died.returncode == -9
        created = len([r for r in sim_log(tmp_path) if r["status"] == "batch_created"])
        # 60 requests: the first 40 wait for the batches above (adopted), the others go into new ones
        polling = subprocess.Popen([*client, "60"], cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True)
        while len([r for r in sim_log(tmp_path) if r["status"] == "batch_created"]) < created + 2:
            assert polling.poll() is None
            time.sleep(0.05)
        polling.kill()
        polling.wait()
        done = subprocess.run([*client, "60"], cwd=REPO, env=_env(), capture_output=True, text=True)
    finally:
        sim.stop()
    assert done.stdout.split()[-1] == "60", done.stderr[-2000:]
    rows = sim_log(tmp_path)
    assert_nothing_twice(rows)
    assert len({r["fp"] for r in rows if r["status"] == 200}) == 60


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != DIE_AFTER_CREATE}


def fake_run_batch(src: Path, dst: Path, fail: set[str]) -> None:
    """What `vllm run_batch -i src -o dst` does, in its formats: one output line per input line."""
    out = []
    for n, text in enumerate(src.read_text().splitlines()):
        line = json.loads(text)
        assert set(line) == {"custom_id", "method", "url", "body"} and line["method"] == "POST"
        assert line["url"] == "/v1/chat/completions"
        body = line["body"]
        if line["custom_id"] in fail:
            response = {"status_code": 400, "request_id": f"r{n}", "body": {"error": {"message": "too long"}}}
        else:
            reply = "echo " + body["messages"][-1]["content"]
            response = {"status_code": 200, "request_id": f"r{n}", "body": {
                "id": f"c{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}}
        out.append(json.dumps({"id": f"vllm-{n}", "custom_id": line["custom_id"], "response": response, "error": None}))
    dst.write_text("\n".join(out) + "\n")


def test_export_a_run_batch_runner_and_import_round_trip_through_the_cache(tmp_path):
    cfg = EngineConfig(backend="openai-batch", batch_export_dir=str(tmp_path / "files"), batch_max_requests=4, **FAST)
    cache = tmp_path / "run" / "cache.sqlite"
    with Engine(cfg, cache_path=cache) as engine, pytest.raises(WaveExported, match="10 requests"):
        engine.run(requests(10))
    inputs = sorted((tmp_path / "files").glob("batch-*.jsonl"))
    assert len(inputs) == 3  # 10 requests in files of at most 4
    first_key = json.loads(inputs[0].read_text().splitlines()[0])["custom_id"]
    for i, src in enumerate(inputs):
        fake_run_batch(src, tmp_path / f"out-{i}.jsonl", fail={first_key})
    result = CliRunner().invoke(app, ["batch", "import", str(tmp_path / "run"), *map(str, sorted(tmp_path.glob("out-*")))])
    assert result.exit_code == 0 and "9 answers imported" in result.output, result.output
    for f in inputs:
        f.unlink()
    with Engine(cfg, cache_path=cache) as engine, pytest.raises(WaveExported, match="1 requests"):
        engine.run(requests(10))  # only the failed line is pending
    [again] = (tmp_path / "files").glob("batch-*.jsonl")
    assert json.loads(again.read_text())["custom_id"] == first_key
    fake_run_batch(again, tmp_path / "out-9.jsonl", fail=set())
    assert CliRunner().invoke(app, ["batch", "import", str(tmp_path / "run"), str(tmp_path / "out-9.jsonl")]).exit_code == 0
    with Engine(cfg, cache_path=cache) as engine:
        results = engine.run(requests(10))
    assert [r.texts[0] for r in results] == [f"echo Solve it. Problem: what is {i} + 1?" for i in range(10)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "x"}\nnot json\n')
    result = CliRunner().invoke(app, ["batch", "import", str(tmp_path / "run"), str(bad)])
    assert result.exit_code == 1 and "bad.jsonl:2" in result.output and "Traceback" not in result.output


def test_a_small_synthesis_in_batch_mode_keeps_the_online_ids(tmp_path):
    from mathforge.synth.pipeline import run_synth
    from tests.test_teachersim import sim_config

    sim = start_sim(tmp_path, fail_rate=0.1, expire_first=2)
    extra = ("stage2.enabled=false", "stage1.initial_target=6", "stage1.coreset_budget=3", "stage1.target=6")
    batch = (*extra, "engine.backend=openai-batch", "engine.concurrency=256", "engine.batch_settle_s=0.05",
             "engine.batch_poll_s=0.05", "engine.backoff_base_s=0.01")
    try:
        run_synth(sim_config(sim.url, *extra), tmp_path / "online")
        run_synth(sim_config(sim.url, *batch), tmp_path / "batch")
    finally:
        sim.stop()
    for part in ("stage1/initial", "stage1/normal"):
        ids = [sorted(r.id for r in read_records(tmp_path / d / part)) for d in ("online", "batch")]
        assert ids[0] == ids[1], part
    assert Counter(r["status"] for r in sim_log(tmp_path))["batch_expired"] == 2


def pilot_row(units: int, kept: int, requests: int) -> dict:
    return {"units": units, "kept": kept, "requests": requests, "prompt_tokens": 100 * requests,
            "completion_tokens": 50 * requests, "dropped": {}}


def test_a_forecast_never_counts_a_method_that_kept_nothing_as_free():
    from mathforge.synth.pipeline import Stage1Config, Stage2Config, SynthConfig
    from mathforge.synth.plan import forecast, render, with_pilot

    cfg = SynthConfig(mix={"evol": 0.5, "xwin": 0.5}, max_passes=3, stage2=Stage2Config(enabled=False),
                      stage1=Stage1Config(initial_target=1000, coreset_budget=100, target=1000),
                      engine={"backend": "openai", "model": "m", "base_url": "http://x", "prices": {"m": (1.0, 2.0)}})
    fine, barren = pilot_row(20, 40, 100), pilot_row(30, 0, 120)
    pilot = {"stage1_initial": {"evol": fine, "xwin": barren}, "stage1_normal": {"evol": fine, "xwin": barren}}
    fc = forecast(cfg, pilot, latency_s=1.0, waves=12)
    initial = fc["stages"]["stage1_initial"]["methods"]
    assert initial["evol"]["requests"] == 500 * 100 // 40  # quota / rows per unit x requests per unit
    assert initial["xwin"]["requests"] == 500 * 7 * 4 and initial["xwin"]["budget_bound"]  # its whole unit budget
    assert fc["lower_bound"] is None and fc["interval"][0] < fc["requests"] < fc["interval"][1]
    assert fc["usd_batch"] == pytest.approx(fc["usd"] / 2, abs=0.01) and fc["batch_waves"] == 12
    pilot["stage1_normal"]["xwin"] = {}  # never ran: the total says it is a lower bound, and why
    fc = forecast(cfg, pilot, latency_s=1.0)
    assert "no unit of this method" in fc["lower_bound"] and fc["interval"] is None
    assert "**The total is a lower bound" in render(fc)
    # a yield that halves from the half-size pilot to the pilot widens the interval
    shrinking = {s: {"evol": pilot_row(20, 80, 100), "xwin": pilot_row(20, 80, 100)} for s in pilot}
    steady, drifting = (forecast(cfg, {s: dict(shrinking[s]) for s in pilot}, 1.0, smaller=small)
                        for small in (shrinking, {s: {m: pilot_row(10, 80, 50) for m in ("evol", "xwin")} for s in pilot}))
    assert steady["relative_error"] < drifting["relative_error"]
    # a half-size pilot whose floor of a few units per method skews the mix is no change of yield:
    # each method keeps its rows and requests per unit (xwin's cost 20 requests a row, evol's 1.25)
    costly = {s: {"evol": pilot_row(20, 80, 100), "xwin": pilot_row(20, 10, 200)} for s in pilot}
    skewed = {s: {"evol": pilot_row(10, 40, 50), "xwin": pilot_row(4, 2, 40)} for s in pilot}
    alone, beside = (forecast(cfg, costly, 1.0, smaller=small) for small in (None, skewed))
    assert beside["stages"]["stage1_normal"]["size_drift"] == 0 and beside["relative_error"] == alone["relative_error"]
    # the pilots' requests count, less those of the stages whose first units the run takes from the cache
    total = with_pilot(alone, 700, costly)["with_pilot"]
    shift = 700 - 300  # stage1_initial's 300 pilot requests are reused, stage1_normal's are not
    assert total["requests"] == alone["requests"] + shift and total["interval"] == [x + shift for x in alone["interval"]]


def test_a_cap_counts_the_requests_in_batches_not_finished_yet(tmp_path):
    from mathforge.engine.limits import Budget
    from mathforge.engine.types import BudgetExceeded

    sim = start_sim(tmp_path, delay_s=0.2)
    try:
        cfg = EngineConfig(backend="openai-batch", base_url=sim.url, **FAST)
        with (Engine(cfg, cache_path=tmp_path / "cache.sqlite", budget=Budget(max_requests=15)) as engine,
              pytest.raises(BudgetExceeded, match="max_requests")):
            engine.run(requests(40))
    finally:
        sim.stop()
    assert sum(r["requests"] for r in sim_log(tmp_path) if r["status"] == "batch_created") == 15


def test_a_batch_file_larger_than_a_request_body_limit_goes_through(tmp_path):
    sim = start_sim(tmp_path)
    long = [Request(key=f"k{i}", messages=[{"role": "user", "content": f"Problem {i}: " + "x " * 100_000}])
            for i in range(12)]  # 2.4 MB in one file: aiohttp reads at most 1 MB of a plain body
    try:
        with Engine(EngineConfig(backend="openai-batch", base_url=sim.url, **FAST)) as engine:
            assert all(r.ok for r in engine.run(long))
    finally:
        sim.stop()
    assert [r["requests"] for r in sim_log(tmp_path) if r["status"] == "batch_created"] == [12]
