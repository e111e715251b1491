"""The `mathforge` command line. Each command is a thin shell over a module's public functions;
heavy imports (torch, transformers, llama.cpp) happen inside the commands, so `--help` is instant."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mathforge.io import AtomicWriter, DataError, ReadReport, read_rows
from mathforge.paths import DATA_DIR_HELP

app = typer.Typer(
    help="mathforge: synthesize math SFT data, clean and select it, fine-tune, evaluate, scale.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # a line naming a file stays one line


def fail(message: str, code: int = 1) -> None:
    """Exit with `error: message` on stderr, printed plainly: rich would wrap a long path at the
    terminal's width and read brackets in it as markup."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _print_plan(lines: list[str]) -> None:
    """A dry run on stdout, one step a line, never wrapped (scripts and tests read it)."""
    print("\n".join(lines), flush=True)


def recipe_config(cls: type, recipe: Path, overrides: list[str] | None):
    """A recipe YAML plus key=value overrides as config `cls`; a bad key or value exits with its message."""
    from mathforge.config import ConfigError, load_config

    try:
        return load_config(cls, recipe, overrides or [])
    except (ConfigError, OSError) as e:
        fail(str(e))


def require_records(data: Path) -> None:
    """Exit unless `data` holds a record: an empty input is a mistake upstream, said before any work."""
    from mathforge.io import read_records

    try:
        empty = next(read_records(data), None) is None
    except DataError as e:
        fail(str(e))
    if empty:
        fail(f"{data}: no records")


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
        writer = AtomicWriter(out)  # a bad --out is an error before any source is read
    except DataError as e:
        fail(str(e))
    try:
        with writer:
            for text in sources:
                spec = SourceSpec.parse(text)
                extra = {"skip_bad": "1"} if skip_bad else {}
                extra |= {"allow_test": "1"} if allow_test else {}
                spec = SourceSpec(spec.kind, spec.location, {**spec.options, **extra})
                before = writer.count
                for record in load(spec, report):
                    writer.write(record)
                    per_source[record.source] += 1
                    levels[record.level or "-"] += 1
                    subjects[record.subject or "-"] += 1
                    if not record.answer:
                        unparsed.append(record.meta.get("where", record.id))
                if writer.count == before:  # an empty folder or file is a mistake, not a source of 0 seeds
                    raise DataError(f"{text}: no records")
    except DataError as e:
        kept = out.with_name(out.name + ".partial")
        fail(f"{e}\n{writer.count} records read before the error are kept in {kept}" if writer.count else str(e))
    _print_seed_summary(out, writer.count, per_source, levels, subjects, unparsed, report)


def _print_seed_summary(out, total, per_source, levels, subjects, unparsed, report) -> None:
    Console(soft_wrap=True).print(f"{total} seed records -> {out}")
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
    native_n: bool = typer.Option(False, "--native-n", help="one call with n=k per input (openai; prompt paid once)"),
    http: str = typer.Option("aiohttp", "--http", help="openai transport: aiohttp (lean) or sdk (openai client)"),
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
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be sent and its maximum cost"),
) -> None:
    """Run a prompt template over an input file with any backend; resumable after a kill."""
    from mathforge.engine import EngineConfig, Sampling
    from mathforge.engine.generate import Job, estimate_generate, load_template, parse_prices, run_generate

    try:
        if next(read_rows(input), None) is None:  # nothing to send: a mistake upstream, not a run of 0 rows
            raise DataError(f"{input}: no rows")
        cfg = EngineConfig(
            backend=backend, model=model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
            rpm=rpm, tpm=tpm, timeout_s=timeout, max_retries=max_retries, prices=parse_prices(price),
            progress=progress, native_n=native_n, http=http,
        )
        sampling = Sampling(temperature=temperature, max_tokens=max_tokens, n=n, top_p=top_p, seed=seed,
                            stop=tuple(stop))
        job = Job(input=input, template=load_template(template), out=out, sampling=sampling, system=system,
                  raw=raw, id_field=id_field)
        if dry_run:
            plan = estimate_generate(job, cfg, cache_path=cache)
            cost = "unknown (no --price for this model)" if plan["cost_usd_max"] is None else f"${plan['cost_usd_max']}"
            console.print(
                f"{plan['samples']} samples: {plan['cached']} cached, {plan['to_send']} to send; "
                f"~{plan['prompt_tokens_est']} prompt tokens, <= {plan['completion_tokens_max']} completion "
                f"tokens; cost at most {cost}"
            )
            return
        stats = run_generate(job, cfg, cache_path=cache, resume=resume)
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    failures = ", ".join(f"{k} {v}" for k, v in sorted(stats["failures"].items())) or "none"
    console.print(
        f"{stats['rows']} rows -> {out}: {stats['cached']} samples from cache, {stats['calls']} calls, "
        f"failures: {failures}; tokens {stats['tokens']}, cost ${stats['cost_usd']:.4f}"
    )


# --- training (issue 6) ---


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="training recipe YAML (recipes/train_offline.yaml, recipes/train_paper.yaml)"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (rerun the same command to resume)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. micro_batch=8 student.model=smollm2"),
    prepare_only: bool = typer.Option(False, "--prepare-only", help="tokenise (and pack) every stage, print stats, stop"),
    as_json: bool = typer.Option(False, "--json", help="with --prepare-only: one JSON object on stdout"),
    nproc: int = typer.Option(1, "--nproc", help="training processes on this machine (torch.distributed; gloo on CPU)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every step (nested ones too) as run or reuse, and why; run nothing"),
) -> None:
    """Fine-tune a student through the recipe's SFT stages (stage 2 starts from stage 1's weights)."""
    import os

    from mathforge.train.config import TrainConfig
    from mathforge.train.launch import die_with_launcher, launch

    cfg = recipe_config(TrainConfig, recipe, overrides)  # a bad recipe fails before torch is imported
    if dry_run:
        from mathforge.rundir import plan_lines
        from mathforge.train.sft import planned

        _print_plan(plan_lines(planned(cfg, out)))
        return
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        launch(recipe, out, overrides or [], nproc, prepare_only=prepare_only, as_json=as_json)
    die_with_launcher()
    from mathforge.train.sft import prepare_stages
    from mathforge.train.sft import train as run_training

    try:
        results = prepare_stages(cfg, out) if prepare_only else run_training(cfg, out)
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if prepare_only:
        _print_prepared(results, as_json)
        return
    table = Table(title=f"SFT stages -> {out / 'model'}")
    for column in ("stage", "samples", "dropped", "steps", "train loss", "seconds"):
        table.add_column(column)
    for name, stats in results.items():
        table.add_row(name, str(stats.get("samples")), str(stats.get("dropped")), str(stats.get("steps")),
                      f"{stats.get('train_loss', float('nan')):.4f}", str(stats.get("seconds")))
    Console().print(table)


def _print_prepared(prepared: dict, as_json: bool) -> None:
    import json

    stages = {name: p.to_dict() for name, p in prepared.items()}
    if as_json:
        paths = {s["path"] for s in stages.values()}
        print(json.dumps({"samples": sum(s["samples"] for s in stages.values()),
                          "tokens": sum(s["tokens"] for s in stages.values()),
                          "path": paths.pop() if len(paths) == 1 else str(Path(next(iter(paths))).parent),
                          "cached": all(s["cached"] for s in stages.values()), "stages": stages}))
        return
    table = Table(title="tokenised training sets")
    for column in ("stage", "samples", "tokens", "rows", "dropped", "cached", "path"):
        table.add_column(column)
    for name, s in stages.items():
        table.add_row(name, str(s["samples"]), str(s["tokens"]), str(s["rows"]), str(s["dropped"]),
                      str(s["cached"]), s["path"])
    Console().print(table)


# --- evaluation and grading (issue 4) ---


@app.command()
def grade(
    file: Path = typer.Argument(..., help="rows with an id, a response and a gold answer (or a solution holding it)"),
    out: Path = typer.Option(..., "--out", "-o", help="per-row verdicts (.jsonl)"),
    kind: str = typer.Option("math", "--kind", help="answer comparison: math (LaTeX) or gsm8k (numbers)"),
    graders: str = typer.Option("strict,symbolic", "--graders", help="comma-separated: strict, symbolic, metamath"),
    id_field: str = typer.Option("id", "--id-field"),
    response_field: str = typer.Option("response", "--response-field"),
    gold_field: str = typer.Option("answer", "--gold-field", help="gold answer field (falls back to 'gold')"),
    solution_field: str = typer.Option("solution", "--solution-field", help="used when the gold field is absent"),
    timeout: float = typer.Option(5.0, "--timeout", help="seconds per symbolic verdict"),
    workers: int = typer.Option(None, "--workers", help="symbolic grading processes (default: all cores)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    group_field: str = typer.Option(None, "--group-field", help="rows sharing this field's value are one item's "
                                    "samples: adds pass@k, maj@k and avg@n with intervals to the summary"),
    k: str = typer.Option(None, "--k", help="with --group-field: comma-separated k (default 1, 2, 4, ... n)"),
) -> None:
    """Grade responses with every grader side by side: verdicts, accuracies, and the rows they disagree on."""
    from mathforge.eval.grade_file import grade_file

    try:
        names = tuple(g.strip() for g in graders.split(",") if g.strip())
        if k and not all(x.strip().isdigit() for x in k.split(",")):
            raise ValueError(f"--k must be comma-separated positive integers, got '{k}'")
        ks = tuple(int(x) for x in k.split(",")) if k else None
        summary = grade_file(file, out, kind=kind, graders=names, fields=(id_field, response_field, gold_field,
                             solution_field), timeout_s=timeout, workers=workers, progress=progress,
                             group_field=group_field, ks=ks)
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    _print_accuracy(f"{summary['n']} rows -> {out}", summary["accuracy"])
    _print_disagreements(summary["disagreements"], names)
    if group_field:
        _print_sampled(summary, names)


@app.command("eval")
def eval_(
    out: Path = typer.Option(..., "--out", "-o", help="output directory (rerun the same command to resume)"),
    backend: str = typer.Option("llama", "--backend", help="llama, hf, openai or vllm"),
    model: str = typer.Option("smollm2", "--model", help="GGUF path or 'smollm2', checkpoint dir, or served model"),
    benchmark: str = typer.Option("gsm8k", "--benchmark", "-b", help="gsm8k, math, math500, or a file/source spec"),
    kind: str = typer.Option(None, "--kind", help="answer comparison for a file benchmark: math or gsm8k"),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    limit: int = typer.Option(None, "--limit", help="evaluate a fixed random subset of this many items"),
    seed: int = typer.Option(0, "--seed", help="subset seed"),
    prompt_style: str = typer.Option("alpaca", "--prompt-style", help="alpaca (the SFT prompt), plain, or chat"),
    max_tokens: int = typer.Option(2048, "--max-tokens", help="maximum response length"),
    graders: str = typer.Option("strict,symbolic", "--graders", help="comma-separated: strict, symbolic, metamath"),
    suite: str = typer.Option("standard", "--suite", help="standard, robustness (Table 7) or bilingual (Table 6)"),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (backend openai)"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env"),
    concurrency: int = typer.Option(16, "--concurrency", "-c"),
    batch_size: int = typer.Option(8, "--batch-size", help="generation batch (hf, vllm)"),
    teacher_backend: str = typer.Option("llama", "--teacher-backend", help="writes distractors / translations"),
    teacher_model: str = typer.Option("smollm2", "--teacher-model"),
    teacher_base_url: str = typer.Option(None, "--teacher-base-url"),
    max_distractors: int = typer.Option(5, "--max-distractors"),
    check: bool = typer.Option(True, "--check/--no-check", help="teacher check that each distractor keeps the answer"),
    language: str = typer.Option("Chinese", "--language", help="bilingual suite: target language"),
    translations: Path = typer.Option(None, "--translations", help="bilingual suite: file of {id, problem} translations"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    samples: int = typer.Option(1, "--samples", help="solutions drawn per item (> 1: pass@k, maj@k, avg@n with "
                                "intervals; needs --temperature > 0)"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (the default protocol)"),
) -> None:
    """Evaluate a model: greedy, the SFT prompt, strict and symbolic graders, level and subject tables."""
    from mathforge.engine import Engine, EngineConfig
    from mathforge.eval import EvalConfig, evaluate, load_benchmark, subset
    from mathforge.eval.bilingual import evaluate_bilingual, load_translations, translate
    from mathforge.eval.robustness import evaluate_robustness
    from mathforge.io import write_json

    if suite not in ("standard", "robustness", "bilingual"):
        fail(f"unknown suite '{suite}' (standard, robustness, bilingual)")
    try:
        cfg = EvalConfig(prompt_style=prompt_style, max_tokens=max_tokens, samples=samples, temperature=temperature,
                         graders=tuple(g.strip() for g in graders.split(",") if g.strip()))
        bench, records = load_benchmark(benchmark, kind, data_dir)
        total = len(records)
        records = subset(records, limit, seed)
        student_cfg = EngineConfig(backend=backend, model=model, base_url=base_url, api_key_env=api_key_env,
                                   concurrency=concurrency, batch_size=batch_size, progress=progress)
        teacher_cfg = EngineConfig(backend=teacher_backend, model=teacher_model, base_url=teacher_base_url,
                                   api_key_env=api_key_env, concurrency=concurrency, progress=progress)
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    meta = {"model": model, "backend": backend, "benchmark_arg": benchmark, "limit": limit, "seed": seed,
            "items_in_benchmark": total}
    write_json(out / "eval_args.json", {**meta, "suite": suite, "prompt_style": prompt_style,
                                        "max_tokens": max_tokens, "graders": cfg.graders, "samples": samples,
                                        "temperature": temperature})
    with Engine(student_cfg, cache_path=out / "cache.sqlite") as student:
        if suite == "standard":
            summary = evaluate(records, bench, student, cfg, out, meta)
            _print_accuracy(f"{bench.name}: {summary['n']} items -> {out}/summary.md", summary["accuracy"])
            _print_disagreements(summary["disagreements"], cfg.graders)
            if samples > 1:
                _print_sampled(summary, cfg.graders)
            return
        needs_teacher = suite == "robustness" or translations is None
        teacher = Engine(teacher_cfg, cache_path=out / "teacher_cache.sqlite") if needs_teacher else None
        try:
            if suite == "robustness":
                evaluate_robustness(records, bench, student, teacher, cfg, out, max_distractors, check)
            else:
                translated = (load_translations(translations, records, language) if translations
                              else translate(records, teacher, language)[0])
                evaluate_bilingual(records, translated, bench, student, cfg, out, language)
        except DataError as e:
            fail(str(e))
        finally:
            if teacher is not None:
                teacher.close()
    console.print((out / f"{suite}.md").read_text())


def _print_accuracy(title: str, accuracy: dict) -> None:
    table = Table(title=title)
    for column in ("grader", "correct", "n", "accuracy %", "95% CI"):
        table.add_column(column)
    for name, a in accuracy.items():
        lo, hi = a["ci95"]
        table.add_row(name, str(a["correct"]), str(a["n"]), f"{100 * a['accuracy']:.2f}",
                      f"[{100 * lo:.1f}, {100 * hi:.1f}]")
    Console().print(table)


def _print_sampled(summary: dict, graders: tuple) -> None:
    from mathforge.eval.sampled import shown_metrics

    table = Table(title=f"{summary['items_sampled']} items, {summary['samples_per_item']} samples each "
                        "(% [95% bootstrap interval over items])")
    table.add_column("metric")
    for g in graders:
        table.add_column(g)
    for m in shown_metrics(summary):
        table.add_row(m, *(f"{100 * summary[m][g]['estimate']:.2f} [{100 * summary[m][g]['lo']:.1f}, "
                           f"{100 * summary[m][g]['hi']:.1f}]" for g in graders))
    Console().print(table)


def _print_disagreements(rows: list, graders: tuple, limit: int = 20) -> None:
    if not rows:
        console.print("graders agree on every row")
        return
    table = Table(title=f"{len(rows)} rows where the graders disagree (first {min(limit, len(rows))})")
    table.add_column("id")
    table.add_column("gold")
    for g in graders:
        table.add_column(g)
    for row in rows[:limit]:
        table.add_row(str(row["id"]), str(row["gold"])[:40],
                      *[f"{'✓' if row[g]['correct'] else '✗'} {str(row[g]['extracted'])[:40]}" for g in graders])
    Console().print(table)


# --- data quality (issue 7) ---


def _quality_summary(result: dict) -> None:
    for f in result.get("filters", []):
        reasons = ", ".join(f"{k} {v}" for k, v in f["dropped_by_reason"].items()) or "none"
        console.print(f"{f['filter']}: {f['seen']} seen, {f['kept']} kept, dropped: {reasons}; "
                      f"levels kept {f['after']['levels']}")


@app.command()
def decontam(
    data: Path = typer.Argument(..., help="record file (.jsonl or .parquet) or folder of shards"),
    against: list[str] = typer.Option([], "--against", help="evaluation set: KIND:PATH[?name=...] (repeatable; "
                                      "default: GSM8K + MATH test under $MATHFORGE_DATA, else ../shared/data)"),
    matchers: str = typer.Option("math-ngram,masked-ngram", "--matchers", help="comma-separated: ngram, math-ngram, "
                                 "masked-ngram, embedding, llm (see docs/decontamination.md)"),
    n: int = typer.Option(30, "--n", help="tokens per n-gram (the paper uses 30 words; 10 is too strict)"),
    threshold: float = typer.Option(0.85, "--threshold", help="embedding: cosine similarity that removes a row "
                                    "(to a test problem it rewords, matchers.restates)"),
    judge: str = typer.Option("llama", "--judge", help="llm: the judge's engine backend (llama: the offline SmolLM2)"),
    out: Path = typer.Option(..., "--out", "-o", help="clean records; removed rows go to <out>.removed.jsonl"),
    workers: int = typer.Option(None, "--workers", "-w", help="processes or Ray CPUs (None: one per core)"),
    engine: str = typer.Option("local", "--engine", help="local or ray (ray: every matcher but llm)"),
) -> None:
    """Remove rows matching any evaluation item; every removal names the matcher, the item and the evidence."""
    from mathforge.quality.matchers import parse_matchers
    from mathforge.quality.steps import default_against, run_decontam

    require_records(data)

    try:
        names, specs = parse_matchers(matchers), against or default_against()
        if "llm" in names and engine != "local":
            raise ValueError("the llm matcher runs on the local engine only (its judge is not shipped to workers)")
        judge_engine = _judge_engine(judge, out) if "llm" in names else None
        try:
            result = run_decontam(data, specs, out, matchers=names, n=n, threshold=threshold, workers=workers,
                                  engine=engine, judge=judge_engine)
        finally:
            if judge_engine is not None:
                judge_engine.close()
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    _quality_summary(result)
    console.print(f"-> {out} (removed rows with reasons beside it); evaluation items touched: "
                  f"{result['decontam']['test_items_hit']}")


def _judge_engine(backend: str, out: Path):
    """An engine for the `llm` matcher or the audit's teacher; its answers are cached next to the
    output, so a rerun pays nothing."""
    from mathforge.engine import Engine, EngineConfig

    return Engine(EngineConfig(backend=backend, progress=False), cache_path=out.with_name(out.name.split(".")[0]
                                                                                        + ".judge.sqlite"))


@app.command()
def dedup(
    data: Path = typer.Argument(..., help="record file (.jsonl or .parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="deduplicated records; dropped rows beside it"),
    near: bool = typer.Option(True, "--near/--exact-only", help="also drop near duplicates (MinHash LSH)"),
    threshold: float = typer.Option(0.8, "--threshold", help="Jaccard similarity that counts as a copy"),
    num_perm: int = typer.Option(128, "--num-perm", help="MinHash permutations"),
    fields: str = typer.Option("problem,solution", "--fields", help="fields compared (problem: one row per problem)"),
    engine: str = typer.Option("local", "--engine", help="local or ray"),
    workers: int = typer.Option(None, "--workers", "-w", help="processes or Ray CPUs (None: one per core)"),
) -> None:
    """Drop exact and near duplicates, keeping the first occurrence and naming it in each drop reason."""
    from mathforge.quality.steps import run_dedup

    require_records(data)

    try:
        result = run_dedup(data, out, near=near, threshold=threshold, num_perm=num_perm,
                           fields=tuple(f.strip() for f in fields.split(",")), engine=engine, workers=workers)
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    _quality_summary(result)


@app.command()
def check(
    data: Path = typer.Argument(..., help="record file (.jsonl or .parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="records passing the format and length checks"),
    max_tokens: int = typer.Option(2048, "--max-tokens", help="training max length; 0 skips the length check"),
    tokenizer: str = typer.Option("smollm2", "--tokenizer", help="student tokenizer: hub name, directory or smollm2"),
    engine: str = typer.Option("local", "--engine", help="local or ray"),
    workers: int = typer.Option(None, "--workers", "-w", help="processes or Ray CPUs (None: one per core)"),
) -> None:
    """Format check (a readable "The answer is X" line) and length check in the student's tokens."""
    from mathforge.quality.steps import run_check

    require_records(data)

    try:
        result = run_check(data, out, max_tokens=max_tokens or None, tokenizer=tokenizer, engine=engine,
                           workers=workers)
    except (DataError, ValueError, FileNotFoundError, OSError) as e:
        fail(str(e))
    _quality_summary(result)


@app.command("select")
def select_(
    data: Path = typer.Argument(..., help="record file (.jsonl or .parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="selected records"),
    strategy: str = typer.Option("random", "--strategy", help="random, verifier, hard or coreset"),
    budget: int = typer.Option(..., "--budget", help="records to select"),
    seed: int = typer.Option(0, "--seed"),
    verify: list[str] = typer.Option([], "--verify", help="run a check first: answer, consistency, model (repeatable)"),
    grader: str = typer.Option("strict", "--grader", help="answer check grader: strict or symbolic"),
    seeds: Path = typer.Option(None, "--seeds", help="seed records whose answers are known answers"),
    min_level: int = typer.Option(4, "--min-level", help="hard: MATH level counted as hard"),
    hard_by: str = typer.Option("level", "--hard-by", help="hard: level, judge or both (judge runs the LLM)"),
    backend: str = typer.Option("llama", "--backend", help="judge/verifier model backend"),
    model: str = typer.Option("smollm2", "--model", help="judge/verifier model"),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for the judge"),
    cache: Path = typer.Option(None, "--cache", help="judge request cache (default: <out>.cache.sqlite)"),
    engine: str = typer.Option("local", "--engine", help="local or ray: where random selection and coreset "
                               "embedding run"),
    workers: int = typer.Option(None, "--workers", "-w", help="processes or Ray CPUs (None: one per core)"),
) -> None:
    """Select a budget of records: random (baseline), verifier, hard problems, or core-set diversity."""
    from contextlib import nullcontext

    from mathforge.quality.select import SelectConfig
    from mathforge.quality.steps import run_select

    require_records(data)

    config = SelectConfig(strategy=strategy, budget=budget, seed=seed, min_level=min_level, hard_by=hard_by)
    needs_llm = "model" in verify or (strategy == "hard" and hard_by != "level")
    try:
        context = nullcontext(None)
        if needs_llm:
            from mathforge.engine import Engine, EngineConfig

            context = Engine(EngineConfig(backend=backend, model=model, base_url=base_url),
                             cache_path=cache or out.with_name(out.name + ".cache.sqlite"))
        with context as judge:
            result = run_select(data, out, config, checks=verify, grader=grader, judge_engine=judge, seeds=seeds,
                                engine=engine, workers=workers)
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    sel = result["selection"]
    console.print(f"{strategy}: {sel['selected']} of {sel['seen']} -> {out}; mean level "
                  f"{sel['before']['mean_level']} -> {sel['after']['mean_level']}; "
                  f"levels after {sel['after']['levels']}")


@app.command()
def export(
    data: Path = typer.Argument(..., help="record file (.jsonl or .parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset folder (Parquet shards, JSONL, README card)"),
    name: str = typer.Option("mathforge-data", "--name", help="dataset name on the card"),
    report: list[Path] = typer.Option([], "--report", help="step report JSON for the card (repeatable)"),
    tokenizer: str = typer.Option("smollm2", "--tokenizer", help="tokenizer for token statistics ('' skips)"),
    shard_rows: int = typer.Option(100_000, "--shard-rows"),
    push_to_hub: str = typer.Option(None, "--push-to-hub", help="Hub dataset repo id (token from $HF_TOKEN)"),
) -> None:
    """Write a datasets-loadable folder with a generated dataset card; optionally push it to the Hub."""
    import json

    from mathforge.io import read_records
    from mathforge.quality import export as ex

    require_records(data)

    try:
        reports = [json.loads(p.read_text(encoding="utf-8")) for p in report]
        tok = None
        if tokenizer:
            from mathforge.quality.formatcheck import load_tokenizer

            tok = load_tokenizer(tokenizer)
        summary = ex.export(read_records(data), out, name=name, shard_rows=shard_rows, reports=reports,
                            tokenizer=tok, tokenizer_name=tokenizer or None)
    except (DataError, ValueError, FileNotFoundError, json.JSONDecodeError) as e:
        fail(str(e))
    console.print(f"{summary['rows']} rows in {len(summary['shards'])} shard(s) -> {out} (card: {out / 'README.md'})")
    if push_to_hub:
        console.print(f"pushed: {ex.push_to_hub(out, push_to_hub)}")


# --- end-to-end run (issue 2) ---


@app.command()
def scale(
    recipe: Path = typer.Argument(..., help="scaling recipe YAML (see recipes/scale_offline.yaml)"),
    out: Path = typer.Option(..., "--out", "-o", help="sweep directory (rerun to resume: finished runs are skipped)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. sizes=[100,200,400]"),
    report_only: bool = typer.Option(False, "--report-only", help="train nothing: report the runs finished so far"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every step (nested ones too) as run or reuse, and why; run nothing"),
) -> None:
    """Data scaling: train on nested subsets of growing size, evaluate each, fit and plot the curve."""
    from mathforge.scale import ScaleConfig, run_scale
    from mathforge.scale import dry_run as scale_dry_run

    cfg = recipe_config(ScaleConfig, recipe, overrides)
    if dry_run:
        _print_plan(scale_dry_run(cfg, out))
        return
    try:
        run_scale(cfg, out, report_only=report_only)
    except (DataError, ValueError) as e:
        fail(f"{e}\n(finished sizes are kept in {out / 'scaling.jsonl'}; rerun to resume)")
    console.print((out / "report.md").read_text())


@app.command()
def leakage(
    train_data: str = typer.Argument(..., help="training data: a record file or any seed source spec"),
    benchmark: list[str] = typer.Option(["gsm8k", "math"], "--benchmark", "-b", help="gsm8k, math, math500 or a file"),
    n: int = typer.Option(30, "--n", help="word n-gram length (the paper: 30; 10 is too strict)"),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    out: Path = typer.Option(None, "--out", "-o", help="write the overlap statistics as JSON"),
) -> None:
    """Leakage check: how many training rows and benchmark items share an n-gram (§4.3.7)."""
    from mathforge.eval.benchmarks import load_benchmark
    from mathforge.io import write_json
    from mathforge.quality.matchers import overlap_stats
    from mathforge.sources import load

    results = []
    try:
        for name in benchmark:
            bench, items = load_benchmark(name, root=data_dir)
            results.append(overlap_stats(load(train_data), items, n=n, name=bench.name))
    except (DataError, OSError) as e:
        fail(str(e))
    table = Table(title=f"{n}-gram overlap of {train_data}")
    for col in ("benchmark", "train rows", "overlapping rows", "items hit", "of items"):
        table.add_column(col, justify="right" if col != "benchmark" else "left")
    for r in results:
        table.add_row(r["benchmark"], str(r["train_rows"]), str(r["train_rows_overlapping"]),
                      str(r["benchmark_items_hit"]), f"{100 * r['benchmark_fraction_hit']:.2f}%")
    Console().print(table)
    if out:
        write_json(out, results)


@app.command("run")
def run_(
    recipe: Path = typer.Argument(..., help="run recipe YAML (see recipes/offline.yaml)"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (rerun the same command to resume)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. eval.limit=50"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every step (nested ones too) as run or reuse, and why; run nothing"),
) -> None:
    """The whole pipeline: synthesis -> cleaning -> export -> two-stage SFT -> evaluation -> report
    (and the rehearsal, student vs baseline vs oracle, when the recipe asks for it)."""
    from mathforge.pipeline import RunConfig
    from mathforge.rehearse import run

    cfg = recipe_config(RunConfig, recipe, overrides)
    try:
        if dry_run:
            _print_plan(run(cfg, out, dry_run=True)["plan"])
            return
        run(cfg, out)
    except (DataError, ValueError) as e:
        fail(f"{e}\n(finished stages are kept in {out}; rerun the same command to resume)")
    console.print((out / "report.md").read_text())


# --- data synthesis (issue 5) ---


@app.command()
def synth(
    recipe: Path = typer.Argument(..., help="synthesis recipe YAML (recipes/synth_offline.yaml, synth_paper.yaml)"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (rerun the same command to resume)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. stage1.target=100 'mix.evol=0.5'"),
    max_usd: float = typer.Option(None, "--max-usd", help="hard cap: stop before spending more (same as budget.max_usd=)"),
    max_tokens: int = typer.Option(None, "--max-tokens", help="hard cap on prompt + completion tokens"),
    max_requests: int = typer.Option(None, "--max-requests", help="hard cap on requests sent"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every step (nested ones too) as run or reuse, and why; run nothing"),
) -> None:
    """Skywork-MathQA synthesis: MetaMath/Evol/Xwin mix, core-set seed selection, normal + hard stages."""
    from mathforge.config import ConfigError, load_config
    from mathforge.engine.types import BatchUnreachable, BudgetExceeded
    from mathforge.synth.pipeline import SynthConfig, run_synth

    caps = [f"budget.{k}={v}" for k, v in (("max_usd", max_usd), ("max_tokens", max_tokens),
                                            ("max_requests", max_requests)) if v is not None]
    try:
        cfg = load_config(SynthConfig, recipe, [*(overrides or []), *caps])
        if dry_run:
            from mathforge.rundir import plan_lines
            from mathforge.synth.pipeline import planned

            _print_plan(plan_lines(planned(cfg, out)))
            return
        result = run_synth(cfg, out)
    except BatchUnreachable as e:
        fail(f"stopped: {e}. Everything paid for is kept in {out}.")
    except BudgetExceeded as e:
        fail(f"stopped: {e}. Everything paid for is kept in {out} (request cache, finished shards); "
             "raise the cap and rerun the same command to continue.")
    except (ConfigError, DataError, ValueError, OSError) as e:
        fail(str(e))
    Console().print((out / "yield.md").read_text(encoding="utf-8"))
    console.print(f"datasets: {result['datasets']['normal']}, {result['datasets']['hard']} (yield table: {out}/yield.md)")


@app.command()
def coreset(
    records: Path = typer.Argument(..., help="records (.jsonl/.parquet) whose problems are embedded"),
    k: int = typer.Option(..., "--k", help="how many diverse records to keep"),
    out: Path = typer.Option(..., "--out", "-o", help="selected records, in pick order"),
    model: str = typer.Option(None, "--model", help="sentence-transformers model (default: embedded MiniLM)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Pick k diverse records by k-center greedy on problem embeddings; prints the coverage."""
    import json

    from mathforge.embed import embed_texts
    from mathforge.io import read_records, write_records
    from mathforge.quality.coreset import k_center_greedy

    require_records(records)

    try:
        rows = list(read_records(records))
        result = k_center_greedy(embed_texts([r.problem for r in rows], model), k, seed=seed)
    except (DataError, ValueError, OSError) as e:
        fail(str(e))
    write_records(out, [rows[i] for i in result.indices.tolist()])
    console.print(json.dumps(result.report, indent=1))


# --- the cleaning chain on any dataset (issue 11) ---


@app.command()
def clean(
    data: Path = typer.Argument(..., help="record file (.jsonl/.parquet) or a folder of part-* shards"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (rerun the same command to resume)"),
    overrides: list[str] = typer.Argument(None, help="fields of a recipe's clean: section, e.g. decontam_n=13 "
                                          "answer_check.mode=drop select.budget=1000 executor=ray"),
    seeds: Path = typer.Option(None, "--seeds", help="seed records whose answers are known answers"),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    prompt_style: str = typer.Option("alpaca", "--prompt-style", help="SFT prompt the length check measures"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (rows_in, rows_out, output, steps)"),
) -> None:
    """Decontaminate, dedup (exact + near), check format, length and answers, and select: the cleaning
    chain of `mathforge run`, on data made anywhere; sharded, resumable, local or on Ray."""
    import json

    from mathforge.config import ConfigError, build, parse_overrides
    from mathforge.paths import data_dir as resolve_data_dir
    from mathforge.quality.clean import CleanConfig
    from mathforge.quality.clean import clean as run_clean

    require_records(data)

    try:
        cfg = build(CleanConfig, parse_overrides(overrides or []), "the command line", prefix="clean.")
        report = run_clean(data, out, cfg, data_dir=resolve_data_dir(data_dir), seeds=seeds, style=prompt_style)
    except (ConfigError, DataError, ValueError, OSError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps({k: report[k] for k in ("rows_in", "rows_out", "output", "steps")}))
        return
    for step in report["steps"]:
        reasons = ", ".join(f"{k} {v}" for k, v in step["dropped"].items()) or "none"
        console.print(f"{step['name']}: {step['seen']} seen, {step['kept']} kept, dropped: {reasons}")
    check = report["answer_check"]
    console.print(f"answer check ({check['mode']}): {check.get('agree', 0)} agree, {check.get('disagree', 0)} "
                  f"disagree, {check.get('unknown', 0)} unknown -> {report['output']}")


@app.command()
def arms(
    recipe: Path = typer.Argument(..., help="comparison recipe YAML (see recipes/two_stage_mini.yaml)"),
    out: Path = typer.Option(..., "--out", "-o", help="comparison directory (rerun to resume: finished runs are skipped)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. train_seeds=[1,2]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every step (nested ones too) as run or reuse, and why; run nothing"),
) -> None:
    """Compare training arms (e.g. two-stage vs one-stage SFT) on the same items: per-level accuracy
    with intervals and the paired difference."""
    from mathforge.arms import ArmsConfig, run_arms
    from mathforge.arms import dry_run as arms_dry_run

    cfg = recipe_config(ArmsConfig, recipe, overrides)
    if dry_run:
        _print_plan(arms_dry_run(cfg, out))
        return
    try:
        run_arms(cfg, out)
    except (DataError, ValueError) as e:
        fail(f"{e} (finished runs are kept under {out / 'runs'}; rerun to resume)")
    console.print((out / "report.md").read_text())


@app.command()
def ablate(
    recipe: Path = typer.Argument(..., help="ablation recipe YAML (see recipes/ablations/)"),
    out: Path = typer.Option(..., "--out", "-o", help="ablation directory (rerun to resume; an added arm runs alone)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. train_seeds=[1] run.train.max_steps=5"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print arms x replicates x steps as run or reuse with an "
                                 "estimated time; run nothing"),
) -> None:
    """Run a paper ablation: a base run recipe, arms overriding any of its fields, replicates (data
    seeds x training seeds) and a null arm; steps shared across arms by their keys; per-level
    accuracy, paired differences and a seed-aware verdict in report.md / report.html."""
    from mathforge.ablate import AblateConfig, run_ablation
    from mathforge.ablate import dry_run as ablation_dry_run
    from mathforge.config import ConfigError

    cfg = recipe_config(AblateConfig, recipe, overrides)
    try:
        if dry_run:
            _print_plan(ablation_dry_run(cfg, out))
            return
        run_ablation(cfg, out)
    except (DataError, ConfigError, ValueError, OSError) as e:
        fail(f"{e} (finished replicates are kept under {out / 'runs'}; rerun to resume)")
    console.print((out / "report.md").read_text())


@app.command("teacher-sim")
def teacher_sim(
    port: int = typer.Option(8008, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
    median: float = typer.Option(0.5, "--median", help="median latency in seconds (lognormal)"),
    sigma: float = typer.Option(0.6, "--sigma", help="lognormal sigma of the latency"),
    levels: str = typer.Option(None, "--levels", help="P(right answer) for levels 1-5 (default .9,.7,.5,.3,.1; "
                               "--world mini: .97,.93,.85,.70,.50)"),
    world: str = typer.Option("generic", "--world", help="generic (any prompt, answers a hash) or mini: the teacher "
                              "of the miniature world (sim/miniteacher.py), the truth in --log"),
    verdict_right: float = typer.Option(0.9, "--verdict-right", help="mini: P(a check or judge verdict is right)"),
    ill_posed: float = typer.Option(0.05, "--ill-posed", help="mini: share of written problems that are ill-posed"),
    leak: float = typer.Option(0.01, "--leak", help="mini: share of written problems copied from the test sets"),
    rate_429: float = typer.Option(0.0, "--rate-429", help="share of attempts answered 429 with Retry-After"),
    rate_500: float = typer.Option(0.0, "--rate-500"),
    rate_timeout: float = typer.Option(0.0, "--rate-timeout", help="share of attempts that hang past the client's timeout"),
    rate_drop: float = typer.Option(0.0, "--rate-drop", help="share of attempts whose connection is dropped"),
    retry_after: float = typer.Option(1.0, "--retry-after"),
    seed: int = typer.Option(0, "--seed", help="another seed gives other (still deterministic) answers"),
    log: Path = typer.Option(None, "--log", help="one JSON line per answered attempt (arrival, seconds, status)"),
    batch_delay: float = typer.Option(0.0, "--batch-delay", help="seconds before a batch completes at the earliest"),
    batch_fail_rate: float = typer.Option(0.0, "--batch-fail-rate", help="share of batch lines sent to the error file"),
    batch_expire_rate: float = typer.Option(0.0, "--batch-expire-rate", help="share of batches that expire half done"),
    batch_expire_first: int = typer.Option(0, "--batch-expire-first", help="the first N batches expire half done"),
    batch_lose_first: int = typer.Option(0, "--batch-lose-first", help="the first N batches are lost: never run, 404 after"),
    batch_poll_status: int = typer.Option(0, "--batch-poll-status", help="every retrieve of a batch answers this HTTP status"),
    echo_rate: float = typer.Option(0.0, "--echo-rate", help="share of new-problem replies that repeat the problem given"),
    format_fail: list[str] = typer.Option([], "--format-fail", help="WORDS=RATE: that share of replies to prompts "
                                          "with these template words are out of format (repeatable)"),
) -> None:
    """A simulated OpenAI-compatible teacher for rehearsals: our prompt kinds answered in format,
    deterministically, right per level, with a latency distribution and faults (see sim/teachersim.py).
    Point a recipe at it: engine.backend=openai engine.base_url=http://127.0.0.1:PORT/v1 engine.sim_hints=true
    (or engine.backend=openai-batch: it serves /v1/files and /v1/batches too)."""
    from mathforge.sim.batchapi import BatchSimConfig
    from mathforge.sim.miniteacher import LEVELS, MiniConfig, model_name
    from mathforge.sim.simprofiles import Profile, parse_format_fail
    from mathforge.sim.teachersim import SimConfig, serve

    try:
        if world not in ("generic", "mini"):
            raise ValueError(f"--world must be generic or mini, got {world!r}")
        default = LEVELS if world == "mini" else SimConfig.levels
        probs = tuple(float(x) for x in levels.split(",")) if levels else default
        if len(probs) != 5 or not all(0 <= p <= 1 for p in probs):
            raise ValueError(f"--levels needs 5 probabilities in [0, 1], got {levels!r}")
        mini = MiniConfig(levels=probs, verdict_right=verdict_right, ill_posed=ill_posed, leak=leak)
        cfg = SimConfig(median_s=median, sigma=sigma, levels=probs, rate_429=rate_429, rate_500=rate_500,
                        rate_timeout=rate_timeout, rate_drop=rate_drop, retry_after_s=retry_after, seed=seed,
                        world=world, mini=mini)
        batch = BatchSimConfig(delay_s=batch_delay, fail_rate=batch_fail_rate, expire_rate=batch_expire_rate,
                               expire_first=batch_expire_first, lose_first=batch_lose_first,
                               poll_status=batch_poll_status, seed=seed)
        profile = Profile(echo_rate, parse_format_fail(format_fail)) if echo_rate or format_fail else None
    except ValueError as e:
        fail(str(e))
    named = f", model {model_name(cfg.mini, seed)}" if world == "mini" else ""
    console.print(f"teacher-sim on http://{host}:{port}/v1 (mean latency {cfg.mean_s:.3f} s{named})")
    serve(cfg, host, port, str(log) if log else None, batch, profile)


batch_app = typer.Typer(help="Batch files for an offline runner (vLLM's run_batch): export a run's pending "
                         "requests, import the runner's answers into the run's request cache.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")


@batch_app.command("export")
def batch_export(
    recipe: Path = typer.Argument(..., help="synthesis recipe YAML"),
    out: Path = typer.Option(..., "--out", "-o", help="the run directory (its request cache says what is pending)"),
    to: Path = typer.Option(..., "--to", help="folder for the batch input files"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, as for `mathforge synth`"),
) -> None:
    """Write the run's next wave of pending (uncached) requests as batch input files (OpenAI / vLLM
    run_batch JSONL), then stop. On a GPU box with no server, answer each file with

        vllm run_batch -i batch-HASH.jsonl -o out-HASH.jsonl --model MODEL

    then `mathforge batch import RUN out-*.jsonl`, and export again: synthesis's request chains
    (Evol steps, Xwin revisions, stage 1 before its core-set) advance one wave per round, until an
    export finds nothing pending and the run is complete."""
    from mathforge.config import ConfigError, load_config
    from mathforge.engine.types import WaveExported
    from mathforge.synth.pipeline import SynthConfig, run_synth

    try:
        cfg = load_config(SynthConfig, recipe, [*(overrides or []), "engine.backend=openai-batch",
                                                f"engine.batch_export_dir={to}"])
        run_synth(cfg, out)
    except WaveExported as e:
        console.print(f"{e}. Answer each with `vllm run_batch -i FILE -o OUT --model {cfg.engine.get('model')}`, "
                      f"then `mathforge batch import {out} OUT...` and export again.")
        return
    except (ConfigError, DataError, ValueError, OSError) as e:
        fail(str(e))
    console.print(f"nothing pending: the run in {out} is complete (datasets and yield.md written).")


@batch_app.command("import")
def batch_import(
    out: Path = typer.Argument(..., help="the run directory whose request cache takes the answers"),
    files: list[Path] = typer.Argument(..., help="batch output files (vLLM run_batch -o, or a provider's)"),
) -> None:
    """Put the answers of batch output files into the run's request cache (by custom_id, the
    request's cache key); failed lines stay pending and are exported again."""
    from mathforge.engine.batch import import_outputs
    from mathforge.engine.cache import RequestCache

    cache = RequestCache(out / "cache.sqlite")
    try:
        counts = import_outputs(cache, files, model="batch-import")
    except (ValueError, OSError) as e:
        fail(str(e))
    finally:
        cache.close()
    console.print(f"{counts['answered']} answers imported into {out / 'cache.sqlite'}, {counts['failed']} failed lines")


@app.command()
def plan(
    recipe: Path = typer.Argument(..., help="synthesis recipe YAML"),
    out: Path = typer.Option(None, "--out", "-o", help="run directory: the pilot's responses go into its request "
                             "cache, so `mathforge synth RECIPE --out DIR` reuses them (default: a temporary dir)"),
    pilot: float = typer.Option(0.01, "--pilot", help="the pilot's share of each stage"),
    max_pilot: float = typer.Option(0.08, "--max-pilot", help="the pilot grows up to this share while some "
                                    "method has kept too little to be estimated"),
    turnaround: float = typer.Option(4.0, "--batch-turnaround", help="hours a batch takes, for batch mode's wall time"),
    as_json: bool = typer.Option(False, "--json", help="print the forecast as one JSON object"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, as for `mathforge synth`"),
) -> None:
    """Forecast a synthesis recipe before paying: requests, tokens, dollars and hours per stage and method,
    from a pilot of about 1% of each stage against the recipe's teacher (or `mathforge teacher-sim`)."""
    import json
    import tempfile

    from mathforge.config import ConfigError, load_config
    from mathforge.engine.types import BudgetExceeded
    from mathforge.synth.pipeline import SynthConfig
    from mathforge.synth.plan import plan as run_plan
    from mathforge.synth.plan import render

    if not 0 < pilot <= 1:
        fail(f"--pilot must be in (0, 1], got {pilot}")
    try:
        cfg = load_config(SynthConfig, recipe, overrides or [])
        with tempfile.TemporaryDirectory(prefix="mathforge-plan-") as tmp:
            forecast = run_plan(cfg, out or Path(tmp), pilot, max(pilot, max_pilot), turnaround * 3600)
    except BudgetExceeded as e:
        fail(f"the pilot itself was stopped: {e}")
    except (ConfigError, DataError, ValueError, OSError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(forecast))
    else:
        Console().print(render(forecast))



@app.command("decontam-audit")
def decontam_audit(
    train: str = typer.Option(..., "--train", help="clean training rows to plant leaks into: a source spec "
                              "(e.g. math:../shared/data/math/math_train.jsonl)"),
    against: list[str] = typer.Option([], "--against", help="evaluation set: KIND:PATH[?name=...] (repeatable; "
                                      "default: GSM8K + MATH test under $MATHFORGE_DATA, else ../shared/data)"),
    matchers: list[str] = typer.Option(["ngram", "math-ngram", "math-ngram,masked-ngram",
                                        "math-ngram,masked-ngram,embedding"], "--matchers",
                                       help="one matcher set per option (comma-separated names); one table row each"),
    thresholds: str = typer.Option("0.8,0.85,0.9,0.95", "--thresholds", help="embedding thresholds to sweep"),
    clean: int = typer.Option(2000, "--clean", help="unplanted training rows"),
    leaks: int = typer.Option(500, "--leaks", help="planted rows per leak kind"),
    seed: int = typer.Option(0, "--seed"),
    teacher: str = typer.Option(None, "--teacher", help="engine backend that writes the paraphrases "
                                "(default: deterministic edits)"),
    out: Path = typer.Option(None, "--out", "-o", help="write the table as JSON"),
) -> None:
    """Plant leaks of each kind into clean rows and print each matcher set's recall per kind beside
    the removal rate of the unplanted rows (number-swapped siblings of a test problem apart)."""
    from mathforge.io import write_json
    from mathforge.quality.audit import audit, teacher_rewrite
    from mathforge.quality.matchers import parse_matchers
    from mathforge.quality.steps import default_against, evaluation_sets
    from mathforge.sources import load

    engine = _judge_engine(teacher, out or Path("decontam-audit.json")) if teacher else None
    try:
        sets = evaluation_sets(against or default_against())
        result = audit(list(load(train)), sets, [parse_matchers(m) for m in matchers],
                       [float(t) for t in thresholds.split(",")], clean=clean, per_kind=leaks, seed=seed,
                       rewrite=teacher_rewrite(engine) if engine else None)
    except (DataError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    finally:
        if engine is not None:
            engine.close()
    table = Table(title=f"decontamination audit: {clean} unplanted rows ({result['unplanted_siblings']} "
                        f"number-swapped siblings of a test problem) + {leaks} leaks per kind, recall and removal in %")
    settings = ("matchers", "threshold", "word_change")
    columns = [k for k in result["table"][0] if k not in settings]
    for col in (*settings, *columns):
        table.add_column(col.replace("_", " "), justify="left" if col == "matchers" else "right")
    for row in result["table"]:
        table.add_row(*("" if row[k] is None else str(row[k]) for k in settings), *(f"{row[c]:.1f}" for c in columns))
    Console().print(table)
    if out:
        write_json(out, result)


@app.command("compare")
def compare_(
    run_a: Path = typer.Argument(..., help="run A: an eval folder, its summary.json, or a JSONL of per-item verdicts"),
    run_b: Path = typer.Argument(..., help="run B, on the same items"),
    graders: str = typer.Option(None, "--graders", help="comma-separated (default: every grader both runs have)"),
    alpha: float = typer.Option(0.05, "--alpha", help="significance level of the verdict"),
    out: Path = typer.Option(None, "--out", "-o", help="write the comparison as JSON (and .md beside it)"),
) -> None:
    """Is B better than A beyond noise? The paired difference with a bootstrap interval, the exact
    McNemar test and the smallest detectable difference, overall and per level and subject."""
    from mathforge.eval.compare import compare, render
    from mathforge.io import write_json, write_text

    if not 0 < alpha < 1:
        fail(f"--alpha must be in (0, 1), got {alpha}")
    try:
        names = tuple(g.strip() for g in graders.split(",") if g.strip()) if graders else None
        result = compare(run_a, run_b, names, alpha)
    except (DataError, ValueError, OSError) as e:
        fail(str(e))
    markdown = render(result)
    if out:
        write_json(out, result)
        write_text(out.with_suffix(".md"), markdown)
    print(markdown)


if __name__ == "__main__":  # last, so `python -m mathforge.cli` knows every command
    app()
