"""The `mathforge` command line. Each command is a thin shell over a module's public functions;
heavy imports (torch, transformers, llama.cpp) happen inside the commands, so `--help` is instant."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mathforge.io import AtomicWriter, DataError, ReadReport

app = typer.Typer(
    help="mathforge: synthesize math SFT data, clean and select it, fine-tune, evaluate, scale.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def seeds(
    sources: list[str] = typer.Argument(..., help="KIND:PATH[?opt=v] or a path (kind guessed): math, gsm8k, "
                                        "olympiadbench, agieval, scibench, jeebench, jsonl, hf, rg"),
    out: Path = typer.Option(..., "--out", "-o", help="output records (.jsonl or .parquet)"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="skip malformed rows (listed) instead of failing"),
    allow_test: bool = typer.Option(False, "--allow-test", help="accept test splits as seeds (contamination!)"),
) -> None:
    """Load seed problems from any sources into one record file, with counts and parse failures."""
    from mathforge.sources import SourceSpec, load

    report = ReadReport()
    per_source: Counter = Counter()
    levels: Counter = Counter()
    subjects: Counter = Counter()
    unparsed: list[str] = []
    try:
        with AtomicWriter(out) as writer:
            for text in sources:
                spec = SourceSpec.parse(text)
                extra = {"skip_bad": "1"} if skip_bad else {}
                extra |= {"allow_test": "1"} if allow_test else {}
                spec = SourceSpec(spec.kind, spec.location, {**spec.options, **extra})
                for record in load(spec, report):
                    writer.write(record)
                    per_source[record.source] += 1
                    levels[record.level or "-"] += 1
                    subjects[record.subject or "-"] += 1
                    if not record.answer:
                        unparsed.append(record.meta.get("where", record.id))
    except DataError as e:
        kept = out.with_name(out.name + ".partial")
        fail(f"{e}\n{writer.count} records read before the error are kept in {kept}" if writer.count else str(e))
    _print_seed_summary(out, writer.count, per_source, levels, subjects, unparsed, report)


def _print_seed_summary(out, total, per_source, levels, subjects, unparsed, report) -> None:
    Console().print(f"{total} seed records -> {out}")
    table = Table()
    table.add_column("group")
    table.add_column("value")
    table.add_column("records", justify="right")
    for name, counter in (("source", per_source), ("level", levels), ("subject", subjects)):
        for key, n in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))):
            table.add_row(name, str(key), str(n))
    Console().print(table)
    console.print(f"answers not parsed: {len(unparsed)}")
    for where in unparsed[:50]:
        console.print(f"  no answer: {where}")
    if len(unparsed) > 50:
        console.print(f"  ... and {len(unparsed) - 50} more")
    for bad in report.bad:
        console.print(f"  skipped bad row: {bad}")


@app.command()
def version() -> None:
    """Print the mathforge version."""
    from importlib.metadata import version as v

    print(v("mathforge"))


# --- generation engine (issue 3) ---


@app.command()
def generate(
    input: Path = typer.Option(..., "--input", "-i", help="input rows (.jsonl, .json or .parquet)"),
    template: str = typer.Option(..., "--template", "-t", help="Jinja2 template file, or a shipped name (solve)"),
    out: Path = typer.Option(..., "--out", "-o", help="output rows (.jsonl or .parquet), one per input x sample"),
    backend: str = typer.Option("llama", "--backend", help="openai, llama, hf or vllm"),
    model: str = typer.Option("smollm2", "--model", help="model name, GGUF path or checkpoint directory"),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (backend openai)"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="environment variable with the key"),
    concurrency: int = typer.Option(16, "--concurrency", "-c", help="requests in flight"),
    n: int = typer.Option(1, "--n", help="samples per input"),
    temperature: float = typer.Option(0.7, "--temperature", help="0 = greedy"),
    max_tokens: int = typer.Option(512, "--max-tokens"),
    top_p: float = typer.Option(1.0, "--top-p"),
    seed: int = typer.Option(None, "--seed", help="sample i uses seed + i"),
    stop: list[str] = typer.Option([], "--stop", help="stop sequence (repeatable)"),
    system: str = typer.Option(None, "--system", help="system message for chat requests"),
    raw: bool = typer.Option(False, "--raw", help="send the rendered text as a raw completion prompt"),
    rpm: float = typer.Option(None, "--rpm", help="requests-per-minute limit"),
    tpm: float = typer.Option(None, "--tpm", help="tokens-per-minute limit"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds per request"),
    max_retries: int = typer.Option(6, "--max-retries"),
    price: list[str] = typer.Option([], "--price", help="MODEL=IN,OUT USD per million tokens (repeatable)"),
    cache: Path = typer.Option(None, "--cache", help="request cache (default: <out>.cache.sqlite)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="reuse cached responses (default)"),
    id_field: str = typer.Option("id", "--id-field", help="input field naming each row (else file:line)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run a prompt template over an input file with any backend; resumable after a kill."""
    from mathforge.engine import EngineConfig, Sampling
    from mathforge.engine.generate import Job, load_template, parse_prices, run_generate

    try:
        cfg = EngineConfig(
            backend=backend, model=model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
            rpm=rpm, tpm=tpm, timeout_s=timeout, max_retries=max_retries, prices=parse_prices(price),
            progress=progress,
        )
        sampling = Sampling(temperature=temperature, max_tokens=max_tokens, n=n, top_p=top_p, seed=seed,
                            stop=tuple(stop))
        job = Job(input=input, template=load_template(template), out=out, sampling=sampling, system=system,
                  raw=raw, id_field=id_field)
        stats = run_generate(job, cfg, cache_path=cache, resume=resume)
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    failures = ", ".join(f"{k} {v}" for k, v in sorted(stats["failures"].items())) or "none"
    console.print(
        f"{stats['rows']} rows -> {out}: {stats['cached']} samples from cache, {stats['calls']} calls, "
        f"failures: {failures}; tokens {stats['tokens']}, cost ${stats['cost_usd']:.4f}"
    )


if __name__ == "__main__":
    app()
