"""`mathforge generate`: templates over real rows, resume, kills, failures as rows, no leaked keys."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mathforge.cli import app
from mathforge.engine import EngineConfig, Sampling
from mathforge.engine.generate import Job, estimate_generate, load_template, parse_prices, run_generate
from mathforge.io import DataError, read_rows
from mathforge.sim.mockserver import MockServer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAT = DATA / "seeds" / "agieval_sat-math.jsonl"  # 220 real rows, read in place
SAT_TEMPLATE = "{{ question }}\n{% for o in options %}{{ o }}\n{% endfor %}Answer with the letter."


def lines(path: Path) -> list[dict]:
    return [row for _, row in read_rows(path)]


def mock_job(tmp_path: Path, template_text: str, inp: Path, out: str = "out.jsonl", **kw) -> Job:
    tpl = tmp_path / "t.j2"
    tpl.write_text(template_text)
    sampling = kw.pop("sampling", Sampling(temperature=0.8, n=2, seed=11))
    return Job(input=inp, template=load_template(tpl), out=tmp_path / out, sampling=sampling, **kw)


def mock_cfg(url: str, **kw) -> EngineConfig:
    base = dict(
        backend="openai",
        model="mock",
        base_url=url,
        progress=False,
        concurrency=8,
        timeout_s=5,
        backoff_base_s=0.02,
    )
    return EngineConfig(**{**base, **kw})


# -- real engine --------------------------------------------------------------------------------------


def test_generate_with_llama_in_process_and_resume(tmp_path):
    inp = tmp_path / "gsm8k_head.jsonl"
    with open(DATA / "gsm8k" / "test.jsonl") as f:
        inp.write_text(f.readline() + f.readline())
    job = Job(
        input=inp,
        template=load_template("solve"),
        out=tmp_path / "out.jsonl",
        sampling=Sampling(temperature=0, max_tokens=16),
    )
    cfg = EngineConfig(backend="llama", model="smollm2", progress=False)
    first = run_generate(job, cfg)
    text = job.out.read_text()
    rows = lines(job.out)
    assert first["rows"] == 2 and first["calls"] == 2 and first["failed"] == 0
    assert [r["input_id"] for r in rows] == ["gsm8k_head.jsonl:1", "gsm8k_head.jsonl:2"]
    for r, (_, src) in zip(rows, read_rows(inp), strict=True):
        assert src["question"] in r["prompt"] and r["response"].strip() and r["error"] is None
        assert r["input"] == src
        assert r["lineage"]["method"] == "generate/solve" and r["lineage"]["teacher"] == "llama:smollm2"
        assert r["lineage"]["prompt_version"].startswith("solve@")
    again = run_generate(job, cfg)
    assert again["cached"] == 2 and again["calls"] == 0
    assert job.out.read_text() == text
    assert json.loads((tmp_path / "out.jsonl.stats.json").read_text())["cached"] == 2


# -- scripted server ------------------------------------------------------------------------------------


def test_generate_real_rows_n_samples_parquet_round_trip(mock_server, tmp_path):
    inp = tmp_path / "sat.parquet"
    pq.write_table(pa.Table.from_pylist([row for _, row in read_rows(SAT)][:30]), inp)
    job = mock_job(tmp_path, SAT_TEMPLATE, inp, out="out.parquet")
    stats = run_generate(job, mock_cfg(mock_server.url))
    rows = lines(job.out)
    assert stats["rows"] == len(rows) == 60 and stats["calls"] == 60
    assert [(r["input_id"], r["sample"]) for r in rows[:4]] == [
        ("sat.parquet:1", 0),
        ("sat.parquet:1", 1),
        ("sat.parquet:2", 0),
        ("sat.parquet:2", 1),
    ]
    assert rows[0]["response"] != rows[1]["response"]  # two samples, two seeds
    assert "(D)10" in rows[0]["prompt"]
    assert json.loads(rows[0]["input"])["label"] == "D"  # the input row, as JSON text in Parquet
    assert pq.read_schema(job.out).field("error").type == pa.string()  # typed even when all null
    assert len({r["id"] for r in rows}) == 60


def test_failures_are_rows_with_reasons_and_are_retried_on_resume(mock_server, tmp_path):
    inp = tmp_path / "in.jsonl"
    problems = ["fine 1", "bad [[fault:400]]", "fine 2", "flaky [[fault:500x3]]", "silent [[fault:empty]]"]
    inp.write_text("".join(json.dumps({"id": f"p{i}", "problem": p}) + "\n" for i, p in enumerate(problems)))
    job = mock_job(tmp_path, "Solve: {{ problem }}", inp, sampling=Sampling(temperature=0))
    first = run_generate(job, mock_cfg(mock_server.url, max_retries=1))
    rows = {r["input_id"]: r for r in lines(job.out)}
    assert len(rows) == 5  # nothing silently dropped
    assert rows["p1"]["error"].startswith("bad_request") and rows["p1"]["finish_reason"] == "error"
    assert rows["p3"]["error"].startswith("server_error")
    assert rows["p4"]["error"].startswith("empty") and rows["p4"]["response"] == ""
    assert first["failures"] == {"bad_request": 1, "server_error": 1, "empty": 1}
    second = run_generate(job, mock_cfg(mock_server.url, max_retries=1))
    rows = {r["input_id"]: r for r in lines(job.out)}
    assert rows["p3"]["error"] is None  # its third attempt succeeded
    assert second["calls"] == 3 and second["cached"] == 3  # the 400 twice more... and p3 once
    fresh = run_generate(job, mock_cfg(mock_server.url, max_retries=1), resume=False)
    assert fresh["cached"] == 0 and fresh["calls"] == 5


@pytest.mark.parametrize(
    "template, row, message",
    [
        ("{{ problem }}", {"question": "q"}, r"in.jsonl:1: template 't': 'problem' is undefined"),
        ("{{ problem", {"problem": "q"}, r"t.j2:1: template syntax error"),
    ],
)
def test_template_errors_name_file_and_line(tmp_path, template, row, message):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message):
        job = mock_job(tmp_path, template, inp)
        run_generate(job, mock_cfg("http://127.0.0.1:9/v1"))


def test_cli_reports_bad_input_clearly(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["generate", "-i", str(SAT), "-t", "no-such", "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 1 and "no-such" in res.output
    res = runner.invoke(
        app,
        ["generate", "-i", str(SAT), "-t", "solve", "-o", str(tmp_path / "o.jsonl"), "--price", "gpt-4o=2.5"],
    )
    assert res.exit_code == 1 and "MODEL=IN,OUT" in res.output


def test_dry_run_counts_cached_and_bounds_the_cost(mock_server, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"problem": f"p{i}"}) + "\n" for i in range(4)))
    job = mock_job(tmp_path, "Solve {{ problem }}", inp, sampling=Sampling(n=2, seed=1, max_tokens=100))
    cfg = mock_cfg(mock_server.url, prices={"mock": (1.0, 10.0)})
    run_generate(job, cfg)  # all 8 samples now cached
    inp.write_text(inp.read_text() + json.dumps({"problem": "new"}) + "\n")
    plan = estimate_generate(job, cfg)
    assert mock_server.received == 8  # the estimate sent nothing
    assert (plan["samples"], plan["cached"], plan["to_send"], plan["completion_tokens_max"]) == (
        10,
        8,
        2,
        200,
    )
    assert plan["cost_usd_max"] == pytest.approx(
        (plan["prompt_tokens_est"] * 1.0 + 200 * 10.0) / 1e6, abs=1e-4
    )
    res = CliRunner().invoke(
        app,
        [
            "generate",
            "-i",
            str(inp),
            "-t",
            str(tmp_path / "t.j2"),
            "-o",
            str(job.out),
            "--backend",
            "openai",
            "--model",
            "mock",
            "--base-url",
            mock_server.url,
            "--n",
            "2",
            "--seed",
            "1",
            "--max-tokens",
            "100",
            "--dry-run",
        ],
    )
    assert res.exit_code == 0 and "8 cached, 2 to send" in res.output and "unknown" in res.output


def test_parse_prices():
    assert parse_prices(["gpt-4o=2.5,10", "m = 0,0"]) == {"gpt-4o": (2.5, 10.0), "m": (0.0, 0.0)}


# -- kill -9 and resume ---------------------------------------------------------------------------------


def _control(url: str, body: dict | None = None) -> dict:
    root = url.removesuffix("/v1")
    if body is None:
        return json.loads(urllib.request.urlopen(f"{root}/stats", timeout=5).read())
    req = urllib.request.Request(
        f"{root}/control",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(req, timeout=5).read())


def _cache_rows(path: Path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _generate_cmd(inp: Path, tpl: Path, out: Path, url: str, *flags: str) -> list[str]:
    """`mathforge generate` against the mock server, with extra flags."""
    return [sys.executable, "-m", "mathforge.cli", "generate", "-i", str(inp), "-t", str(tpl), "-o", str(out),
            "--backend", "openai", "--model", "mock", "--base-url", url, *flags]


def _cli(url: str, tpl: Path, out: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    cmd = _generate_cmd(
        SAT,
        tpl,
        out,
        url,
        "--concurrency",
        "8",
        "--n",
        "2",
        "--seed",
        "11",
        "--temperature",
        "0.8",
        "--timeout",
        "30",
        "--no-progress",
    )
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)


def _wait(cond, what: str, proc: subprocess.Popen, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert proc.poll() is None, f"generate exited early ({proc.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_kill_9_mid_run_loses_nothing_and_pays_nothing_twice(tmp_path):
    server = MockServer(latency=0.01)
    url = server.start_in_thread()
    tpl = tmp_path / "sat.j2"
    tpl.write_text(SAT_TEMPLATE)
    out, cache, log = tmp_path / "out.jsonl", tmp_path / "out.jsonl.cache.sqlite", tmp_path / "log.txt"
    kills = 3
    for _ in range(kills):
        # Every request after the next 60 answers is held. Once all 8 slots are held the run is stuck
        # mid-flight and the server knows every answer it delivered: all of them must be committed.
        _control(url, {"hold_after": _control(url)["answered_total"] + 60})
        proc = _cli(url, tpl, out, log)
        _wait(lambda: _control(url)["holding"] == 8, "the hold", proc)
        _wait(lambda: _cache_rows(cache) == _control(url)["answered_total"], "the cache", proc, limit=20)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)  # let the server notice the closed connections
        _control(url, {"release": True})
        assert not out.exists()  # an interrupted run never leaves a half-written output
    before = _control(url)["answered_total"]
    assert before >= kills * 60
    proc = _cli(url, tpl, out, log)
    assert proc.wait(120) == 0, log.read_text()
    seen = _control(url)
    assert seen["answered_total"] == 440
    assert set(seen["answered"].values()) == {1}  # every request answered exactly once
    # the only requests sent twice are the ones a kill cut off in flight, which were never answered
    assert seen["abandoned"] == kills * 8 and seen["received"] == 440 + seen["abandoned"]
    stats = json.loads((tmp_path / "out.jsonl.stats.json").read_text())
    assert stats["cached"] == before and stats["calls"] == 440 - before
    server.stop()

    # the same job, uninterrupted, on a fresh server: identical output
    ref_server = MockServer(latency=0.0)
    ref_url = ref_server.start_in_thread()
    ref = tmp_path / "ref" / "out.jsonl"
    ref.parent.mkdir()
    assert _cli(ref_url, tpl, ref, log).wait(120) == 0, log.read_text()
    assert ref.read_text() == out.read_text()
    ref_server.stop()


# -- secrets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["aiohttp", "sdk"])
def test_api_key_never_reaches_any_file(mock_server, tmp_path, http):
    key = "sk-planted-" + "7f3a9c" * 6
    env = {**os.environ, "MF_PLANTED_KEY": key}
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "".join(json.dumps({"problem": p}) + "\n" for p in ["a", "b [[fault:400]]", "c [[fault:429]]"])
    )
    tpl = tmp_path / "t.j2"
    tpl.write_text("{{ problem }}")
    out = tmp_path / "out.jsonl"
    cmd = _generate_cmd(inp, tpl, out, mock_server.url, "--api-key-env", "MF_PLANTED_KEY", "--http", http, "--progress")
    with open(tmp_path / "console.log", "wb") as log:
        assert subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=120).returncode == 0
    assert mock_server.auth == {f"Bearer {key}"}  # the key was used...
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {out.name, "out.jsonl.cache.sqlite", "out.jsonl.stats.json", "console.log"} <= {
        p.name for p in files
    }
    for path in files:  # ...and written nowhere: output, stats, cache (and its WAL), console log
        assert key.encode() not in path.read_bytes(), path
