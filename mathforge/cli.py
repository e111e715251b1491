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


if __name__ == "__main__":
    app()
