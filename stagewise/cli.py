"""The stagewise command line: a thin layer over the Python API in `stagewise/__init__.py`.

Each command parses its options, makes one API call, and prints. Library errors (StagewiseError)
become one clear message with exit code 1 and no traceback. Every command has a one-line summary
and an `Example:` block (tests/test_cli_docs.py checks this).

Commands are grouped in sections, one per stage, so each stage's owner edits only its section.
"""

from __future__ import annotations

import sys

import click

from stagewise.curate.config import overrides, parse_sets
from stagewise.curate.errors import StagewiseError


class _Group(click.Group):
    """Turns library errors into a clean click error (exit 1, no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StagewiseError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            # A full disk or an unwritable folder the library did not wrap with the path it was writing.
            from stagewise.curate.errors import storage_error

            err = storage_error(exc, exc.filename or "a file")
            if err is None:
                raise
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted. Re-run the same command to resume where it stopped.", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stagewise")
def cli():
    """stagewise: probe a model's mastery per problem, route items to SFT or RL, export, train.

    \b
    Example:
        stagewise profile gsm8k:test            # the shipped GSM8K test split
        stagewise run                      # the whole pipeline on the embedded default
    """


def main(argv=None):
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="stagewise")


# ---------------------------------------------------------------------------------------------------
# curate: profile (issue 2)
# ---------------------------------------------------------------------------------------------------

def source_options(f):
    """The column and bad-input flags every command that reads problems shares."""
    options = [
        click.option("--prompt-col", help="Column holding the question (default: auto-detect)."),
        click.option("--answer-col", help="Column holding the gold final answer (default: auto-detect)."),
        click.option("--solution-col", help="Column holding a worked solution (default: auto-detect)."),
        click.option("--id-col", help="Column holding a stable id (default: hash of prompt + answer)."),
        click.option("--task", help="Verifier for every row: gsm8k, math, exact, rg:NAME or module:function."),
        click.option("--skip-bad", is_flag=True, help="Count and skip unusable rows instead of stopping."),
        click.option("--rejects", type=click.Path(dir_okay=False),
                     help="With --skip-bad: write the skipped rows here (JSON Lines)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _decontaminate_options(f):
    """`--decontaminate SPEC` (repeatable) and `--ngram`, shared by profile, probe, export and run."""
    options = [
        click.option("--decontaminate", "decontaminate", multiple=True, metavar="SPEC",
                     help="A benchmark set the pool must not overlap (repeatable), e.g. gsm8k:test: items "
                          "sharing an n-gram with it are reported (profile) or left out (probe, export, run)."),
        click.option("--ngram", type=int, default=8, show_default=True,
                     help="Words in a shared run that counts as overlap (open-r1 uses 8)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command("profile")
@click.argument("data", nargs=-1, required=True)
@source_options
@click.option("--tokenizer", help="Also count tokens: a model directory, smollm2-135m, or a hub id.")
@click.option("--card", type=click.Path(dir_okay=False),
              help="Write a Markdown data card here (and a length histogram PNG beside it).")
@click.option("--samples", default=3, show_default=True, help="Sample rows to show.")
@_decontaminate_options
@click.option("--progress/--no-progress", default=True, help="Show rows read so far (on stderr).")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def profile_cmd(data, prompt_col, answer_col, solution_col, id_col, task, skip_bad, rejects, tokenizer, card,
                samples, decontaminate, ngram, progress, as_json):
    """Profile a dataset before spending GPU hours on it.

    Rows, sources and tasks, duplicate prompts, missing answers and solutions, prompt and solution
    lengths (characters; tokens with --tokenizer), answer types, answer parse failures per preset,
    and sample rows. Large JSONL/Parquet files are streamed, so memory stays flat.

    DATA is one or more sources: a .jsonl/.json/.parquet/.csv file, a directory of them, a datasets
    save_to_disk directory (DIR@SPLIT picks a split), hf:NAME[:CONFIG][@SPLIT], or
    rg:NAME?size=N&seed=S&KNOB=VALUE (reasoning-gym). A preset prefix parses a known format:
    gsm8k:PATH (answer after ####), math:PATH (last \\boxed{}), reasoning-gym:PATH.
    gsm8k:test and gsm8k:train name the GSM8K files shipped with stagewise.

    \b
    Example:
        stagewise profile gsm8k:test
        stagewise profile data/train.jsonl --answer-col target --card cards/train.md
        stagewise profile gsm8k:test --tokenizer smollm2-135m
        stagewise profile broken.jsonl --skip-bad --rejects rejects.jsonl --json
        stagewise profile data/pool.jsonl --decontaminate gsm8k:test
    """

    from rich.console import Console

    import stagewise as sw

    err = Console(stderr=True)
    show_progress = progress and not as_json
    with err.status("Profiling…", spinner="dots") if show_progress else _nullcontext() as status:
        result = sw.profile(*data, prompt_col=prompt_col, answer_col=answer_col, solution_col=solution_col,
                            id_col=id_col, task=task, skip_bad=skip_bad, rejects=rejects, tokenizer=tokenizer,
                            samples=samples, card=card, decontaminate=list(decontaminate) or None, ngram=ngram,
                            progress=(lambda n: status.update(f"Profiling… {n:,} rows")) if show_progress else None)
    if as_json:
        p = result.to_dict()
        warnings = [f"skipped {p['bad_rows']:,} bad rows"] if p["bad_rows"] else []
        _echo_warnings(warnings)
        _echo_json({**p, "warnings": warnings})
        return
    _print_profile(result.to_dict(), Console())


def _print_profile(p: dict, console) -> None:
    from collections import Counter

    from rich.table import Table

    summary = Table(title=f"Profile: {p['rows']:,} rows", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("sources", ", ".join(f"{k} ({v:,})" for k, v in p["sources"].items()))
    summary.add_row("tasks", ", ".join(f"{k} ({v:,})" for k, v in p["tasks"].items()))
    summary.add_row("duplicate prompts", f"{p['duplicates']['exact']:,} exact, "
                                         f"{p['duplicates']['normalised']:,} after normalising")
    summary.add_row("missing", f"{p['missing']['prompt']:,} prompts, {p['missing']['answer']:,} answers, "
                               f"{p['missing']['solution']:,} solutions")
    summary.add_row("answer types", ", ".join(f"{k} {v:,}" for k, v in p["answer_types"].items() if v))
    summary.add_row("parse failures", ", ".join(f"{k} {v:,}" for k, v in p["parse_failures"].items()))
    summary.add_row("bad rows skipped", f"{p['bad_rows']:,}" + (f" (written to {p['rejects']})" if p["rejects"] else ""))
    c = p.get("contamination")
    if c:
        by_set = Counter()
        for e in c["sources"].values():
            by_set.update(e["by_set"])
        summary.add_row("contaminated", f"{c['contaminated']:,} share {c['ngram']} consecutive words with: "
                        + ", ".join(f"{k} {v:,}" for k, v in by_set.items()))
    console.print(summary)

    cols = Table(title="Columns chosen", title_justify="left")
    for name in ("source", "preset", "prompt", "answer", "solution", "id", "task"):
        cols.add_column(name)
    for c in p["columns"]:
        cols.add_row(*(str(c.get(k) or "-") for k in ("source", "preset", "prompt", "answer", "solution", "id",
                                                      "task")))
    console.print(cols)

    lengths = Table(title="Lengths", title_justify="left")
    for name in ("field", "count", "min", "p50", "p90", "p99", "max", "mean"):
        lengths.add_column(name, justify="left" if name == "field" else "right")
    for name, d in p["lengths"].items():
        if isinstance(d, dict):
            lengths.add_row(name, *(str(d.get(k, "-")) for k in ("count", "min", "p50", "p90", "p99", "max", "mean")))
    console.print(lengths)

    if p["samples"]:
        samples = Table(title="Sample rows", title_justify="left")
        samples.add_column("id", no_wrap=True, min_width=16)
        samples.add_column("prompt", overflow="ellipsis", no_wrap=True, max_width=60)
        samples.add_column("answer", no_wrap=True, min_width=6, max_width=20, overflow="ellipsis")
        for r in p["samples"]:
            samples.add_row(r["id"], (r["prompt"] or "").replace("\n", " "), str(r["answer"]))
        console.print(samples)
    if p.get("card"):
        console.print(f"Card: {p['card']} (plots: {', '.join(p['plots'])})", soft_wrap=True)
    if p["bad_rows"]:
        where = f"; written to {p['rejects']}" if p["rejects"] else "; pass --rejects PATH to keep them"
        noun = "row" if p["bad_rows"] == 1 else "rows"
        console.print(f"Skipped {p['bad_rows']:,} bad {noun}{where}.", soft_wrap=True)


def _echo_json(payload: dict) -> None:
    """The only thing a --json command prints on stdout."""
    import json

    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def _echo_warnings(warnings) -> None:
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


def _quiet_stdout(as_json: bool):
    """With --json, whatever a library prints (trainer logs, notes) goes to stderr: stdout is the JSON's."""
    import contextlib

    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


@cli.command("decontaminate")
@click.argument("data", nargs=-1, required=True)
@source_options
@click.option("--against", "against", multiple=True, required=True, metavar="SPEC",
              help="A benchmark set to check against (repeatable): gsm8k:test, math:PATH, a file, hf:NAME...")
@click.option("--ngram", type=int, default=8, show_default=True,
              help="Words in a shared run that counts as overlap (open-r1 uses 8).")
@click.option("--max-share", type=float, default=0.5, show_default=True,
              help="An n-gram in more than this share of a set's items is its template, not its content.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write every match (pool item, set, benchmark item, shared n-gram) to this parquet file.")
@click.option("--show", type=int, default=5, show_default=True, help="Matches to print as examples.")
@click.option("--progress/--no-progress", default=True, help="Show rows read so far (on stderr).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (stdout holds only the JSON).")
def decontaminate_cmd(data, prompt_col, answer_col, solution_col, id_col, task, skip_bad, rejects, against, ngram,
                      max_share, out, show, progress, as_json):
    """Find pool items that share an n-gram with a benchmark you will evaluate on.

    Prompts are compared after the normalisation the duplicate check uses (NFKC, lower case,
    collapsed whitespace), split into words; an item shares an n-gram when ngram consecutive words
    of it appear in a benchmark item. Counts per pool source and benchmark set; --out keeps every
    match with the shared n-gram and the benchmark item (e.g. gsm8k/test#123). The pool is streamed.

    \b
    Example:
        stagewise decontaminate data/pool.jsonl --against gsm8k:test
        stagewise decontaminate data/pool.parquet --against gsm8k:test --against math:data/math500.jsonl --out m.parquet
        stagewise decontaminate gsm8k:test --against gsm8k:test --json      # every item matches itself
    """
    from rich.console import Console

    import stagewise as sw

    err = Console(stderr=True)
    show_progress = progress and not as_json
    with err.status("Decontaminating…", spinner="dots") if show_progress else _nullcontext() as status:
        res = sw.decontaminate(*data, against=list(against), ngram=ngram, max_share=max_share, out=out,
                               prompt_col=prompt_col, answer_col=answer_col, solution_col=solution_col,
                               id_col=id_col, task=task, skip_bad=skip_bad, rejects=rejects,
                               progress=(lambda n: status.update(f"Decontaminating… {n:,} rows"))
                               if show_progress else None)
    _echo_warnings(res.warnings)
    if as_json:
        _echo_json(res.to_dict(max_matches=show))
        return
    _print_contamination(res.to_dict(max_matches=show), Console())


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def _print_contamination(d: dict, console) -> None:
    from rich.table import Table

    sets = [s["set"] for s in d["sets"]]
    table = Table(title=f"{d['contaminated']:,} of {d['rows']:,} pool items share {d['ngram']} consecutive words "
                        "with a benchmark item", title_justify="left")
    table.add_column("pool source")
    table.add_column("rows", justify="right")
    table.add_column("contaminated", justify="right")
    for name in sets:
        table.add_column(f"vs {name}", justify="right")
    for source, e in d["sources"].items():
        table.add_row(source, f"{e['rows']:,}", f"{e['contaminated']:,}", *[f"{e['by_set'].get(n, 0):,}" for n in sets])
    console.print(table)
    for s in d["sets"]:
        if s["template_ngrams"]:
            console.print(f"  {s['set']}: {s['template_ngrams']} template n-grams (in most of its items) ignored",
                          soft_wrap=True)
    for m in d["matches"]:
        console.print(f"  e.g. {m['source']} row {m['row']} ({m['id']}) ~ {m['benchmark_item']}: "
                      f"\"{m['ngram']}\"" + (f" (+{m['shared_ngrams'] - 1} more)" if m["shared_ngrams"] > 1 else ""),
                      soft_wrap=True, markup=False)
    if d.get("out"):
        console.print(f"wrote {d['out']} ({d['matches_total']:,} matches)", soft_wrap=True)


# ---------------------------------------------------------------------------------------------------
# curate: probe, eval, merge (issue 3)
# ---------------------------------------------------------------------------------------------------


def _sampling_options(f):
    """Model, backend, sampling and prompt flags shared by `probe` and `eval`."""
    options = [
        click.option("--model", default="smollm2-135m", show_default=True,
                     help="smollm2-135m (embedded), a local transformers directory, a hub id, or the served "
                          "model name for --backend openai."),
        click.option("--backend", default="hf", show_default=True, type=click.Choice(["hf", "vllm", "openai"]),
                     help="hf: transformers (CPU/GPU); vllm: GPU engine (stagewise[vllm]); openai: any "
                          "OpenAI-compatible server at --base-url."),
        click.option("--base-url", default=None,
                     help="Server URL for --backend openai, e.g. http://127.0.0.1:8000/v1 (default: $OPENAI_BASE_URL)."),
        click.option("--backend-arg", "backend_arg", multiple=True, metavar="KEY=VALUE",
                     help="Backend setting, repeatable: vllm.LLM arguments (tensor_parallel_size=4, "
                          "gpu_memory_utilization=0.85, max_model_len=4096), hf from_pretrained ones "
                          "(dtype=bfloat16, device_map=auto), openai client/request ones (concurrency=64, "
                          "extra_body.chat_template_kwargs.enable_thinking=false). Unknown keys are an error."),
        click.option("--temperature", type=float, default=1.0, show_default=True,
                     help="Sampling temperature; probe with what RL will use."),
        click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling threshold."),
        click.option("--max-new-tokens", type=int, default=512, show_default=True, help="Longest answer sampled."),
        click.option("--batch-size", type=int, default=32, show_default=True,
                     help="hf: sequences decoded together; also samples committed per store transaction."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Run seed; each (item, sample index) gets its own seed from it."),
        click.option("--limit", type=int, default=None, help="Use only the first N problems."),
        click.option("--system-prompt", default=None,
                     help="System prompt (default: none for gsm8k/math, reasoning-gym's for rg:*; '' for none)."),
        click.option("--prompt-template", default=None,
                     help="How the question is put, with {prompt} where it goes (default: ask for "
                          "\\boxed{} for gsm8k/math, the question as is for rg:*)."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _print_probe_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    b = s["buckets"]
    table = Table(title=f"probe run {s['run_id']} ({s['store']})", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", f"{s['model']} via {s['backend']}")
    mode = f"adaptive, k_max {s['k']}" if s["adaptive"] else f"k = {s['k']}"
    table.add_row("items", f"{s['items']:,} ({mode}" + (f", shard {s['shard']}" if s.get("shard") else "") + ")")
    table.add_row("buckets", f"unmastered {b['unmastered']:,}   partial {b['partial']:,}   mastered {b['mastered']:,}"
                  + (f"   no verified sample {b['unverified']:,}" if b.get("unverified") else ""))
    table.add_row("mean pass@1", _fmt(s["mean_pass_at_1"]))
    gens = f"{s['samples']:,} samples ({s['samples_new']:,} new, {s['samples_resumed']:,} resumed)"
    if s["adaptive"] and s.get("fixed_generations"):
        gens += f"; {s['samples'] / s['fixed_generations']:.0%} of fixed k={s['k']}"
    table.add_row("generations", gens)
    rate = f"{s['tokens_per_s']:.1f} tok/s" if s.get("tokens_per_s") else "-"
    table.add_row("tokens", f"{s['tokens']:,} stored, {s['tokens_new']:,} generated now ({rate}, "
                  f"{s['seconds']:.0f} s)")
    fin = s.get("finish_reasons", {})
    table.add_row("finish", ", ".join(f"{k} {v:,}" for k, v in sorted(fin.items())) or "-")
    trunc = s.get("truncation_by_bucket") or {}
    if any(t["truncated"] for t in trunc.values()):
        table.add_row("truncated", "   ".join(f"{b} {t['rate']:.0%}" for b, t in trunc.items())
                      + "  (cut at --max-new-tokens)")
    vf = s["verifier_failures"]
    table.add_row("verifier", f"no answer {vf['no_answer']:,}, timeout {vf['timeout']:,}, error {vf['error']:,}")
    for reason, n in s.get("failure_reasons", {}).items():
        table.add_row("", f"{n:,} x {reason}")
    if s.get("store_bytes") is not None:
        per = s.get("store_bytes_per_1k_samples")
        # Below ~10k samples the file is mostly DuckDB's fixed allocation, so a per-1k figure would mislead.
        scale = (f", {per / 1e6:,.2f} MB per 1k samples" if per and s.get("samples", 0) >= 10_000
                 else ", too few samples for a per-1k size" if per else "")
        table.add_row("store", f"{s['store_bytes'] / 1e6:,.1f} MB{scale} "
                      f"(completions kept: {s.get('keep_completions', 'all')})")
    if s.get("ray"):
        r = s["ray"]
        table.add_row("ray", f"{r['shards']} shards on {len(r['nodes'])} node(s) at {r['address']}, "
                      f"started in {r['startup_seconds']:.0f} s")
    if s.get("ignored_duplicates"):
        table.add_row("duplicates", f"{s['ignored_duplicates']:,} samples already stored, not counted twice")
    if s.get("contamination"):
        c = s["contamination"]
        table.add_row("left out", f"{c['contaminated']:,} items sharing {c['ngram']} consecutive words with "
                                  f"{', '.join(x['set'] for x in c['sets'])}")
    console.print(table)
    if b["unmastered"]:
        console.print(f"note: 0/{s['k']} correct does not mean never solvable (at p = 0.1, "
                      f"P(0/{s['k']}) = {0.9 ** s['k']:.2f}).")


@cli.command("probe")
@click.argument("data", nargs=-1, required=True)
@source_options
@click.option("--store", required=True, type=click.Path(dir_okay=False),
              help="DuckDB file for the samples; re-running the same command resumes it.")
@_sampling_options
@click.option("--num-samples", "-k", type=int, default=8, show_default=True, help="Samples per item (fixed mode).")
@click.option("--adaptive", is_flag=True,
              help="Sample in rounds: stop an item once it has a success and a failure (and --min-samples).")
@click.option("--k-max", type=int, default=16, show_default=True, help="--adaptive: most samples per item.")
@click.option("--min-samples", type=int, default=4, show_default=True, help="--adaptive: fewest samples per item.")
@click.option("--shard", default=None, help="i/N: probe only the i-th (0-based) of N disjoint shards.")
@click.option("--keep-completions", type=click.Choice(["all", "failed", "none"]), default="all", show_default=True,
              help="Whose text the store keeps: every sample, wrong ones only (for inspection), or none. "
                   "Scores, statuses, extracted answers and token counts are always kept; --demos samples "
                   "needs all.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]",
              help="Shard the probe over a Ray cluster (stagewise[ray]): bare --ray starts a local instance or "
                   "joins $RAY_ADDRESS; --ray HOST:PORT joins that cluster. Rows come back to this process.")
@click.option("--ray-shards", type=int, default=None,
              help="--ray: shards, each one backend [default: the cluster's CPUs, or GPUs for vllm].")
@_decontaminate_options
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def probe_cmd(data, prompt_col, answer_col, solution_col, id_col, task, skip_bad, rejects, store, model, backend,
              base_url, backend_arg, temperature, top_p, max_new_tokens, batch_size, seed, limit, system_prompt,
              prompt_template, as_json, num_samples, adaptive, k_max, min_samples, shard, keep_completions,
              ray_address, ray_shards, decontaminate, ngram, progress):
    """Sample a model k times per problem, verify every answer, and store per-item mastery.

    \b
    Example:
        stagewise probe gsm8k:test --limit 32 -k 4 --store run.duckdb
        stagewise probe "rg:chain_sum?size=50&seed=1" --adaptive --k-max 16 --store rg.duckdb
        stagewise probe data.jsonl --backend openai --base-url http://127.0.0.1:8000/v1 --model M --store s.duckdb
        stagewise probe data.jsonl --backend vllm --backend-arg tensor_parallel_size=4 --model M --store s.duckdb
        stagewise probe data.jsonl --ray HEAD_IP:6379 --backend vllm --model M --store s.duckdb
        stagewise probe data.jsonl --decontaminate gsm8k:test --store run.duckdb   # overlapping items left out
    """

    import stagewise as sw
    from stagewise.curate.backends import parse_backend_args

    sources = {"prompt_col": prompt_col, "answer_col": answer_col, "solution_col": solution_col, "id_col": id_col,
               "skip_bad": skip_bad or None, "rejects": rejects}
    sources = {k: v for k, v in sources.items() if v}
    res = sw.probe(list(data), model=model, store=store, backend=backend, num_samples=num_samples, adaptive=adaptive,
                   k_max=k_max, min_samples=min_samples, temperature=temperature, top_p=top_p,
                   max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, limit=limit, task=task,
                   system_prompt=system_prompt, prompt_template=prompt_template, shard=shard, base_url=base_url,
                   backend_args=parse_backend_args(backend_arg), progress=progress and not as_json,
                   source_options=sources, keep_completions=keep_completions,
                   ray=None if ray_address is None else (True if ray_address == "auto" else ray_address),
                   ray_shards=ray_shards, decontaminate=list(decontaminate) or None, ngram=ngram)
    if as_json:
        vf = res.summary.get("verifier_failures") or {}
        warnings = [f"{vf[k]:,} samples ended in verifier {k} (stored, not counted in n)"
                    for k in ("timeout", "error") if vf.get(k)]
        _echo_warnings(warnings)
        _echo_json({**res.to_dict(), "warnings": warnings})
    else:
        _print_probe_summary(res.summary)


@cli.command("eval")
@click.argument("data", nargs=-1, required=True)
@source_options
@_sampling_options
@click.option("--num-samples", "-k", type=int, default=8, show_default=True, help="Samples per item.")
@click.option("--ks", default="1,4,8", show_default=True, help="pass@k reported for these k (each <= -k).")
@click.option("--buckets", type=click.Path(dir_okay=False), default=None,
              help="assignments.parquet (columns id, bucket) from `stagewise export`: also report per bucket.")
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="Keep the samples in this DuckDB file (resumable); default: in memory.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def eval_cmd(data, prompt_col, answer_col, solution_col, id_col, task, skip_bad, rejects, model, backend, base_url,
             backend_arg, temperature, top_p, max_new_tokens, batch_size, seed, limit, system_prompt, prompt_template, as_json,
             num_samples, ks, buckets, store, progress):
    """Evaluate a model: pass@1 and unbiased pass@k with 95% intervals per source, task and bucket.

    \b
    Example:
        stagewise eval gsm8k:test --limit 64 -k 8 --model out/rl/final
        stagewise eval gsm8k:test --model smollm2-135m --buckets export/assignments.parquet -k 4 --ks 1,4
    """

    import stagewise as sw
    from stagewise.curate.backends import parse_backend_args

    try:
        ks_t = tuple(int(x) for x in str(ks).split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{ks!r} is not a comma-separated list of integers, e.g. 1,4,8",
                                 param_hint="--ks") from None
    sources = {"prompt_col": prompt_col, "answer_col": answer_col, "solution_col": solution_col, "id_col": id_col,
               "skip_bad": skip_bad or None, "rejects": rejects}
    sources = {k: v for k, v in sources.items() if v}
    res = sw.evaluate(model, list(data), buckets=buckets, num_samples=num_samples, ks=ks_t, backend=backend,
                      temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                      system_prompt=system_prompt, prompt_template=prompt_template, seed=seed, store=store,
                      batch_size=batch_size, limit=limit, task=task, base_url=base_url,
                      backend_args=parse_backend_args(backend_arg), progress=progress and not as_json,
                      source_options=sources)
    if as_json:
        _echo_warnings(res.notes)
        _echo_json({**res.to_dict(), "warnings": list(res.notes)})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"eval of {model}: {res.summary['items']:,} items x {num_samples} samples "
                        f"(95% intervals over items)", title_justify="left")
    table.add_column("group", no_wrap=True)
    table.add_column("items", justify="right")
    for k in res.ks:
        table.add_column(f"pass@{k} [95% CI]", justify="right", no_wrap=True)
    for row in res.table.to_dicts():
        cells = [row["group"], f"{row['n_items']:,}"]
        for k in res.ks:
            key, lo, hi = ("pass@1", "ci_low", "ci_high") if k == 1 else (f"pass@{k}", f"pass@{k}_ci_low",
                                                                         f"pass@{k}_ci_high")
            cells.append("-" if row.get(key) is None else f"{row[key]:.3f} [{row[lo]:.3f}, {row[hi]:.3f}]")
        table.add_row(*cells)
    console = Console()
    console.print(table)
    for note in res.notes:
        console.print(f"note: {note}")


@cli.command("merge")
@click.argument("stores", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The merged store to write (a new file; written atomically).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {out, inputs, runs, problems, samples, duplicate_samples, duplicate_problems, warnings}.")
def merge_cmd(stores, out, overwrite, as_json):
    """Merge probe stores (e.g. the shards of one run) into one store.

    Each sharded probe (`--shard i/N`) writes its own store, since a store has one writer. Merging
    refuses stores that disagree (same run with different settings, same sample with different results)
    and counts samples present in several inputs once.

    \b
    Example:
        stagewise probe gsm8k:test --shard 0/2 --store s0.duckdb
        stagewise probe gsm8k:test --shard 1/2 --store s1.duckdb
        stagewise merge s0.duckdb s1.duckdb --out run.duckdb
    """
    import stagewise as sw

    result = sw.merge(list(stores), out, overwrite=overwrite)
    r = result.report
    if as_json:
        _echo_json({"out": result.out, **r, "warnings": []})
        return
    for item in r["inputs"]:
        click.echo(f"  {item['path']}: {item['runs']} run(s), {item['problems']} problems, "
                   f"{item['samples']} samples")
    click.echo(f"Merged {len(r['inputs'])} stores into {result.out}: {r['runs']} run(s), {r['problems']} problems, "
               f"{r['samples']} samples ({r['duplicate_samples']} duplicate samples and "
               f"{r['duplicate_problems']} duplicate problems counted once).")


# ---------------------------------------------------------------------------------------------------
# stages: route, export (issue 4)
# ---------------------------------------------------------------------------------------------------


def _route_options(f):
    """Options shared by `route` and `export` (the routing policy and its knobs)."""
    options = [
        click.option("--store", "store", required=True, type=click.Path(dir_okay=False),
                     help="The probe store (DuckDB file) written by `stagewise probe`."),
        click.option("--run-id", default=None, help="Which probe run, when the store holds several."),
        click.option("--policy", default="stage", show_default=True,
                     type=click.Choice(["stage", "band", "all", "sft-only", "rl-only", "random", "relift"]),
                     help="stage: 0/n→SFT, partial→RL, n/n→drop; band: p̂ in (low, high)→RL; "
                          "all: every item →RL (+SFT where a demo verifies); random: stage's pool sizes "
                          "at random; relift: ReLIFT's buckets."),
        click.option("--low", type=float, default=None, help="band: lower p̂ bound (exclusive), default 0."),
        click.option("--high", type=float, default=None,
                     help="band: upper p̂ bound (exclusive), default 1."),
        click.option("--keep-mastered", type=int, default=0, show_default=True,
                     help="Keep up to N mastered items as a replay split (never RL)."),
        click.option("--require-samples", type=int, default=None,
                     help="Items with fewer verified samples are unrouted, not guessed."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed for random routing and the replay draw."),
        click.option("--truncated", type=click.Choice(["wrong", "exclude"]), default="wrong", show_default=True,
                     help="A sample cut off at --max-new-tokens: wrong (as RL's reward scores it) or "
                          "exclude (it leaves n, like DAPO's overlong filtering; items left with too few "
                          "samples are unrouted)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _print_route_summary(summary, assignments) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    stages = [s for s in ["sft", "rl", "both", "replay", "replay-sft", "drop", "unrouted"]
              if s not in ("replay-sft",) or summary.stage_totals.get(s)]
    table = Table(title=f"{len(assignments)} items: buckets × stages")
    table.add_column("bucket")
    for s in stages:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for bucket, row in summary.counts.items():
        if sum(row.values()):
            table.add_row(bucket, *[str(row[s]) for s in stages], str(sum(row.values())))
    table.add_row("total", *[str(summary.stage_totals[s]) for s in stages], str(len(assignments)),
                  style="bold")
    console.print(table)
    for stage in stages:  # one example reason per stage, so the rule is visible in words
        rows = assignments.filter(assignments["stage"] == stage)
        if len(rows):
            console.print(f"  e.g. {stage:<8} {rows['id'][0]}: {rows['reason'][0]}")
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _pooling_options(f):
    """Several runs per item and the order of the rows, shared by `route` and `export`."""
    options = [
        click.option("--runs", default=None, metavar="ID,ID,...",
                     help="Pool the samples of these runs (same model and sampling, different seeds) "
                          "instead of one --run-id."),
        click.option("--by-model", is_flag=True,
                     help="Add p_hat:<model> and n:<model> columns for every model in the store."),
        click.option("--order", type=click.Choice(["p_hat-asc", "p_hat-desc", "source"]), default=None,
                     help="Row order (a curriculum for readers that go in order); default: by id."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command("route")
@_route_options
@_pooling_options
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Also write the assignments to this parquet file.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {run_id, policy, summary, assignments, out, warnings} as JSON.")
def route_cmd(store, run_id, policy, low, high, keep_mastered, require_samples, seed, truncated, runs, by_model,
              order, out, as_json):
    """Assign every probed item a bucket, a stage (SFT / RL / replay / drop) and a reason.

    \b
    Example:
        stagewise route --store run.duckdb
        stagewise route --store run.duckdb --policy band --low 0.1 --high 0.9
        stagewise route --store run.duckdb --keep-mastered 16 --require-samples 8 --out assignments.parquet
        stagewise route --store run.duckdb --truncated exclude
        stagewise route --store run.duckdb --runs 25f875b7f3d1b4df,9c0e1a2b3d4f5a6b --by-model --order p_hat-asc
    """
    import stagewise as sw
    from stagewise.stages.routing import probe_max_new_tokens, route_summary

    assignments = sw.route(store, run_id=run_id, runs=runs, policy=policy, low=low, high=high,
                           keep_mastered=keep_mastered, require_samples=require_samples, seed=seed,
                           truncated=truncated, by_model=by_model, order=order, out=out)
    max_new_tokens = probe_max_new_tokens(store, run_id) if not runs else None
    summary = route_summary(assignments, policy, keep_mastered=keep_mastered, max_new_tokens=max_new_tokens)
    if as_json:
        _echo_warnings(summary.warnings)
        rid = assignments["run_id"][0] if len(assignments) and "run_id" in assignments.columns else run_id
        _echo_json({"run_id": rid, "policy": policy, "summary": summary.to_dict(),
                    "assignments": assignments.to_dicts(), "out": out, "warnings": summary.warnings})
        return
    _print_route_summary(summary, assignments)
    if out:
        click.echo(f"wrote {out} ({len(assignments)} rows)")


@cli.command("export")
@_route_options
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Export directory (created atomically; never replaced without --overwrite).")
@click.option("--format", "fmt", type=click.Choice(["trl", "verl", "openrlhf"]), default="trl",
              show_default=True, help="Row layout of the trainer that will read the files.")
@click.option("--demos", default="solution", show_default=True,
              help="SFT demonstration sources in order of preference, comma-separated: solution (the "
                   "reference solution), samples (verified-correct probe samples, RFT-style), teacher, "
                   "rationalize (the probed model given the answer as a hint, STaR), critique (own wrong "
                   "attempt + verdict + verified solution).")
@click.option("--teacher", default=None, help="A teacher model sampled for demonstrations (adds 'teacher').")
@click.option("--teacher-backend", default="hf", show_default=True,
              help="Backend for --teacher: hf, vllm, openai.")
@click.option("--teacher-budget", type=int, default=8, show_default=True,
              help="Teacher samples per item before giving up (the item is then reported unrouted).")
@click.option("--base-url", default=None, help="Server URL for --teacher-backend openai.")
@click.option("--teacher-backend-arg", "teacher_backend_arg", multiple=True, metavar="KEY=VALUE",
              help="Setting for the teacher's backend, repeatable (as `probe --backend-arg`).")
@click.option("--sft-style", type=click.Choice(["prompt-completion", "messages"]),
              default="prompt-completion", show_default=True,
              help="trl only: conversational prompt/completion or messages.")
@click.option("--sft-replay", type=float, default=0.0, show_default=True,
              help="Share F of sft.parquet given to verified demonstrations of items the model already "
                   "solves (rows marked stage = replay-sft), against forgetting; e.g. 0.3.")
@click.option("--sft-replay-from", default="mastered", show_default=True,
              help="Buckets SFT replay draws from: mastered or mastered,partial.")
@click.option("--rationalize-model", default=None,
              help="The model --demos rationalize samples (default: the probed model's name).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing export directory (one made with the same options is reused without it; "
                   "one made with other options is refused).")
@_pooling_options
@click.option("--with-samples", is_flag=True,
              help="Also write samples.parquet: every sample of the run (id, sample_idx, completion, extracted, "
                   "score, status), whatever the item's stage.")
@_decontaminate_options
@click.option("--progress/--no-progress", default=True, help="Show the teacher's progress.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {out, format, counts, files, summary, demos, warnings} as JSON.")
def export_cmd(store, run_id, policy, low, high, keep_mastered, require_samples, seed, truncated, out, fmt,
               demos, teacher, teacher_backend, teacher_budget, base_url, teacher_backend_arg, sft_replay,
               sft_replay_from, rationalize_model, sft_style, overwrite, runs, by_model, order, with_samples,
               decontaminate, ngram, progress, as_json):
    """Write SFT / RL / replay splits for TRL, verl or OpenRLHF, with manifest.json and a dataset card.

    \b
    Example:
        stagewise export --store run.duckdb --out export/ --format trl
        stagewise export --store run.duckdb --out verl/ --format verl --policy band --low 0.1 --high 0.9
        stagewise export --store run.duckdb --out export/ --demos solution,samples --teacher MODEL_DIR
        stagewise export --store run.duckdb --out export/ --sft-replay 0.3 --demos rationalize,solution
        stagewise export --store run.duckdb --out export/ --decontaminate gsm8k:test --with-samples
        stagewise export --store run.duckdb --out export/ --runs ID1,ID2 --order p_hat-asc --by-model
    """
    import stagewise as sw
    from stagewise.curate.backends import parse_backend_args

    names = tuple(d.strip() for d in demos.split(",") if d.strip())
    teacher_args = parse_backend_args(teacher_backend_arg)
    if teacher_args and teacher_backend != "vllm":  # checked now: the teacher may only load late, or never
        from stagewise.curate.backends import check_backend_args

        check_backend_args(teacher_backend, teacher_args)
    if base_url:
        teacher_args["base_url"] = base_url
    result = sw.export(store, out, format=fmt, run_id=run_id, policy=policy, low=low, high=high,
                       keep_mastered=keep_mastered, require_samples=require_samples, seed=seed, demos=names,
                       teacher=teacher, teacher_backend=teacher_backend, teacher_budget=teacher_budget,
                       teacher_options={"backend_options": teacher_args} if teacher_args else None,
                       sft_style=sft_style, overwrite=overwrite, progress=progress and not as_json,
                       truncated=truncated, sft_replay=sft_replay, sft_replay_from=sft_replay_from,
                       rationalize_model=rationalize_model, runs=runs, by_model=by_model, order=order,
                       with_samples=with_samples, decontaminate=list(decontaminate) or None, ngram=ngram)
    if as_json:
        m = result.manifest
        _echo_warnings(result.summary.warnings)
        _echo_json({"out": str(result.out), "format": m.get("format"), "counts": m.get("counts"),
                    "files": m.get("files"), "summary": result.summary.to_dict(), "demos": result.demos,
                    "reused": result.reused, "warnings": list(result.summary.warnings)})
        return
    _print_route_summary(result.summary, result.assignments)
    if result.manifest["counts"].get("contaminated"):
        click.echo(f"left out {result.manifest['counts']['contaminated']} items overlapping "
                   f"{', '.join(decontaminate)} (in unrouted.parquet with the reason)")
    for name, rep in result.demos.items():
        click.echo(f"demonstrations from {name}: {rep.get('verified', 0)} verified of "
                   f"{rep.get('tried', 0)} tried")
    replay = result.manifest["demonstrations"].get("sft_replay") or {}
    if replay.get("taken"):
        click.echo(f"sft replay: {replay['taken']} rows ({replay['achieved']:.0%} of sft.parquet, "
                   f"asked {replay['fraction']:g}) marked stage = replay-sft")
    files = result.manifest["files"]
    if result.reused:
        click.echo(f"{result.out}/ was exported earlier with the same options: reused it "
                   "(pass --overwrite to export again)")
    click.echo(f"{'reused' if result.reused else 'wrote'} {result.out}/ ({result.manifest['format']}): " + ", ".join(
        f"{name} {info['rows']}" for name, info in files.items() if info.get("rows") is not None))
    click.echo(f"  card: {result.out}/README.md   manifest: {result.out}/manifest.json")


@cli.command("show")
@click.argument("item_id")
@click.option("--store", "store", required=True, type=click.Path(dir_okay=False),
              help="The probe store (DuckDB file) written by `stagewise probe`.")
@click.option("--run-id", default=None, help="Which probe run, when the store holds several.")
@click.option("--json", "as_json", is_flag=True, help='Print {"item": {...}, "samples": [...]} as JSON.')
def show_cmd(item_id, store, run_id, as_json):
    """Show one item and what the model wrote: prompt, gold answer, bucket, p̂ with CI, every sample.

    ITEM_ID may be the first characters of the id (as printed by `route` or `samples`).

    \b
    Example:
        stagewise show 0738c911 --store run.duckdb
        stagewise show 0738c911c1619837 --store run.duckdb --json
    """
    import stagewise as sw

    res = sw.show(store, item_id, run_id=run_id)
    if as_json:
        _echo_json({**res, "warnings": []})
        return
    from rich.console import Console

    console = Console(soft_wrap=True)
    it = res["item"]
    ci = "-" if it["p_hat"] is None else f"{it['p_hat']:.3f} [{it['ci_low']:.3f}, {it['ci_high']:.3f}]"
    console.print(f"item {it['id']}  ({it['source']}, task {it['task']}, run {it['run_id']}, model {it['model']})",
                  markup=False)
    console.print(f"bucket {it['bucket'] or '-'}: {it['reason']}   p̂ {ci} (95% Wilson)", markup=False)
    console.print("prompt:", style="bold")
    console.print(it["prompt"], markup=False)
    console.print(f"gold answer: {it['answer']}", markup=False)
    for smp in res["samples"]:
        console.rule(f"sample {smp['sample_idx']}: {smp['status']}, extracted {smp['extracted']!r}, "
                     f"finish {smp['finish_reason']}, {smp['n_tokens']} tokens", align="left", characters="─")
        if smp.get("reason"):
            console.print(f"verifier: {smp['reason']}", markup=False)
        console.print(smp["completion"] or "", markup=False)


@cli.command("samples")
@click.option("--store", "store", required=True, type=click.Path(dir_okay=False),
              help="The probe store (DuckDB file) written by `stagewise probe`.")
@click.option("--run-id", default=None, help="Which probe run, when the store holds several.")
@click.option("--bucket", type=click.Choice(["unmastered", "partial", "mastered"]), default=None,
              help="Only samples of items in this bucket.")
@click.option("--status", type=click.Choice(["correct", "wrong", "no_answer", "timeout", "error"]), default=None,
              help="Only samples the verifier marked so.")
@click.option("--item", "item_id", default=None, help="Only samples of this item (id or prefix).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N samples.")
@click.option("--json", "as_json", is_flag=True, help='Print {"run_id", "count", "samples": [...]} as JSON.')
@click.option("--jsonl", "as_jsonl", is_flag=True, help="Print one JSON object per sample and line.")
def samples_cmd(store, run_id, bucket, status, item_id, limit, as_json, as_jsonl):
    """List stored samples by filter: what the model wrote, the extracted answer and the verdict.

    \b
    Example:
        stagewise samples --store run.duckdb --bucket unmastered --status no_answer --limit 10
        stagewise samples --store run.duckdb --status wrong --jsonl > wrong.jsonl
    """
    import json

    import stagewise as sw

    if as_json and as_jsonl:
        raise click.UsageError("pass --json or --jsonl, not both")
    frame = sw.samples(store, run_id=run_id, bucket=bucket, status=status, item_id=item_id, limit=limit)
    rows = frame.to_dicts()
    if as_jsonl:
        for r in rows:
            click.echo(json.dumps(r, ensure_ascii=False, default=str))
        return
    if as_json:
        rid = rows[0]["run_id"] if rows else run_id
        _echo_json({"run_id": rid, "count": len(rows), "samples": rows, "warnings": []})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} samples", title_justify="left")
    for name in ("item", "#", "bucket", "status", "extracted", "gold", "finish", "completion"):
        table.add_column(name, no_wrap=name != "completion", overflow="ellipsis",
                         max_width=60 if name == "completion" else 20)
    for r in rows:
        text = (r["completion"] or "").replace("\n", " ")
        table.add_row(r["problem_id"], str(r["sample_idx"]), r["bucket"] or "-", r["status"],
                      str(r["extracted"]), str(r["answer"]), str(r["finish_reason"]),
                      text[:200] + ("…" if len(text) > 200 else ""))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


# ---------------------------------------------------------------------------------------------------
# train: train sft / rl / joint (issues 5, 8)
# ---------------------------------------------------------------------------------------------------


def _train_common(f):
    """Options every training command shares (keys of stagewise/configs/train_*.yaml)."""
    opts = [
        click.option("--data", type=click.Path(), help="Export directory (stagewise export) or one parquet split."),
        click.option("--model", default="smollm2-135m", show_default=True,
                     help="Starting model: smollm2-135m, a transformers directory or a hub id."),
        click.option("--out", type=click.Path(file_okay=False), help="Run directory (checkpoints, model, metrics)."),
        click.option("--config", "config", type=click.Path(dir_okay=False),
                     help="YAML config (stagewise/configs/train_*.yaml documents every key); flags override it."),
        click.option("--max-steps", type=int, default=None, help="Optimizer steps."),
        click.option("--learning-rate", type=float, default=None, help="Peak learning rate."),
        click.option("--batch-size", type=int, default=None,
                     help="Per device: rows for SFT, prompts for RL (x num_generations completions)."),
        click.option("--seed", type=int, default=None, help="Random seed (data order, sampling, init)."),
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT."),
        click.option("--dry-run", is_flag=True,
                     help="Build the trainers and print the resolved config; no training."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Any other config key, e.g. --set lora=true --set gradient_accumulation_steps=4, or "
                          "any field of TRL's SFTConfig/GRPOConfig: --set trl.num_iterations=2."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the result as JSON on stdout; trainer logs go to stderr."),
        click.option("--progress/--no-progress", default=True, help="Show the trainers' progress bars."),
        click.option("--no-verify", is_flag=True,
                     help="Train on splits that differ from the export's manifest (sha256, rows); recorded."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _need(**values):
    missing = [f"--{k.replace('_', '-')}" for k, v in values.items() if not v]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)}; see `stagewise train --help`")


def _print_stage(res, as_json: bool = False) -> None:
    import yaml

    from stagewise.train.common import is_main_process

    if not is_main_process():  # under accelerate launch every rank returns; one of them reports
        return
    if as_json:
        _echo_json({**res.to_dict(), "warnings": []})
        return
    if res.dry_run:
        click.echo(yaml.safe_dump(res.config, sort_keys=False).rstrip())
        click.echo(f"dry run: {res.stage} trainer built; resolved config in {res.out}/config.yaml; nothing trained")
        return
    m = res.metrics
    parts = [f"{res.stage}: {res.global_step} steps"]
    if m.get("train_loss") is not None:
        parts.append(f"train loss {m['train_loss']:.4f}")
    if m.get("reward") is not None:
        parts.append(f"last reward {m['reward']:.3f}")
    if res.step_time_s:
        parts.append(f"{res.step_time_s:.2f} s/step")
    if res.resumed_from:
        parts.append(f"resumed from {res.resumed_from}")
    click.echo(", ".join(parts))
    click.echo(f"  model: {res.model_dir}   metrics: {res.out}/metrics.jsonl   config: {res.out}/config.yaml")


@cli.group("train", cls=_Group, invoke_without_command=True)
@_train_common
@click.option("--reprobe", is_flag=True,
              help="After SFT, re-probe every SFT and RL item with the SFT model and re-route it with the "
                   "export's own policy: items out of the RL band leave RL, newly partial ones join it.")
@click.option("--reprobe-sample", type=int, default=None,
              help="Re-probe a random N items instead of all (reports the estimated bucket shares).")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Repeat SFT -> re-probe -> RL; RL's all-wrong prompts join the next round's SFT set. "
                   "--max-steps applies per stage per round.")
@click.option("--eval-data", multiple=True, help="Held-out problems evaluated before/after each stage (spec).")
@click.option("--no-eval", is_flag=True, help="Skip the before/after evaluation.")
@click.option("--joint", type=click.Choice(["weighted", "relift", "bridge"]), default=None,
              help="Replace SFT-then-RL by one cooperative stage (see `stagewise train joint`), same evaluation.")
@click.pass_context
def train_group(ctx, data, model, out, config, max_steps, learning_rate, batch_size, seed, resume, dry_run, sets,
                no_verify, as_json, progress, reprobe, reprobe_sample, rounds, eval_data, no_eval, joint):
    """Train on an export: SFT on the SFT split, then RL on the RL split, evaluated before and after.

    Without a subcommand both stages run in order; `train sft`, `train rl` and `train joint` run one.
    On a GPU the same command runs under `accelerate launch -m stagewise.cli train ...`.

    \b
    Example:
        stagewise train --data export/ --model smollm2-135m --out runs/t
        stagewise train --data export/ --out runs/t --reprobe --eval-data "rg:chain_sum?size=20&seed=9"
        stagewise train --data export/ --model M --out runs/loop --rounds 2 --reprobe --max-steps 20
        stagewise train --data export/ --out runs/t --dry-run
        stagewise train --data export/ --out runs/j --joint relift --set joint.buffer_size=64
        accelerate launch -m stagewise.cli train --data export/ --model M --out runs/t --set lora=true
    """
    if ctx.invoked_subcommand is not None:
        return
    _need(data=data, out=out)
    import stagewise as sw
    from stagewise.train.config import route_sets

    per_stage = route_sets(parse_sets(sets))
    if no_eval:
        per_stage["eval"]["enabled"] = False
    with _quiet_stdout(as_json):
        res = sw.train_pipeline(data, model, out, reprobe=reprobe, reprobe_sample=reprobe_sample, rounds=rounds,
                                eval_data=list(eval_data) or None,
                                config=config, sft=per_stage["sft"], rl=per_stage["rl"], eval=per_stage["eval"],
                                joint=joint, joint_options=per_stage["joint"] if joint else None,
                                max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                                resume=resume, dry_run=dry_run, progress=progress and not as_json, verify=not no_verify)
    if as_json:
        warnings = [f"{stage}: skipped ({why})" for stage, why in res.skipped.items()]
        _echo_warnings(warnings)
        _echo_json({**res.to_dict(), "dry_run": dry_run, "warnings": warnings})
        return
    for stage_res in (res.sft, res.rl, res.joint):
        if stage_res is not None:
            _print_stage(stage_res)
    for stage, why in res.skipped.items():
        click.echo(f"{stage}: skipped ({why})")
    for rep_ in (res.loop.reprobes if res.loop is not None else []):
        info = rep_.to_dict()
        click.echo(f"re-probe round {rep_.round}: {rep_.probed} of {rep_.items} items, "
                   f"{len(info['left_rl'])} left RL, {len(info['joined_rl'])} joined RL")
    if res.loop is not None and (res.loop.transitions or res.loop.rounds):
        click.echo(f"transitions: {out}/transitions.parquet   rounds: {out}/rounds.parquet")
    if res.evals:
        _print_eval_table(res.evals)
    if not dry_run:
        click.echo(f"report: {out}/report.md   final model: {res.model_dir}")


def _print_eval_table(evals) -> None:
    from rich.console import Console
    from rich.table import Table

    from stagewise.train.stage_eval import display_table

    rows = display_table(evals)
    if not rows:
        return
    table = Table(title="pass@1 [95% CI] before / after each stage", title_justify="left")
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("set", "group") else "right", no_wrap=True)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=120)
    console.print(table)


@train_group.command("sft")
@_train_common
@click.option("--loss", type=click.Choice(["nll", "dft", "iw-sft"]), default=None,
              help="nll (default, completion-only), dft (TRL), iw-sft (importance-weighted, ours).")
def train_sft_cmd(data, model, out, config, max_steps, learning_rate, batch_size, seed, resume, dry_run, sets,
                  no_verify, as_json, progress, loss):
    """Supervised fine-tuning on the export's SFT split (TRL SFTTrainer).

    \b
    Example:
        stagewise train sft --data export/ --model smollm2-135m --out runs/sft
        stagewise train sft --data export/sft.parquet --out runs/sft --loss iw-sft --max-steps 50
        stagewise train sft --data export/ --out runs/sft --set gradient_accumulation_steps=4 --resume
    """
    _need(data=data, out=out)
    import stagewise as sw

    with _quiet_stdout(as_json):
        res = sw.train_sft(data, model, out, resume=resume, config=config, dry_run=dry_run,
                           progress=progress and not as_json, verify=not no_verify,
                           **overrides(sets, loss=loss, max_steps=max_steps, learning_rate=learning_rate,
                                       batch_size=batch_size, seed=seed))
    _print_stage(res, as_json)


@train_group.command("rl")
@_train_common
@click.option("--loss-type", type=click.Choice(["grpo", "dr_grpo", "dapo"]), default=None,
              help="GRPO-family loss (TRL's).")
@click.option("--num-generations", type=int, default=None, help="Completions per prompt (the GRPO group).")
@click.option("--beta", type=float, default=None,
              help="KL coefficient (default 0: no reference model); > 0 reloads the reference from --model.")
def train_rl_cmd(data, model, out, config, max_steps, learning_rate, batch_size, seed, resume, dry_run, sets,
                 no_verify, as_json, progress, loss_type, num_generations, beta):
    """GRPO-family RL on the export's RL split, rewarded by the stagewise verifier (TRL GRPOTrainer).

    \b
    Example:
        stagewise train rl --data export/ --model runs/sft/model --out runs/rl
        stagewise train rl --data export/rl.parquet --out runs/rl --loss-type dr_grpo --num-generations 8
        stagewise train rl --data export/ --out runs/rl --set temperature=0.8 --dry-run
    """
    _need(data=data, out=out)
    import stagewise as sw

    with _quiet_stdout(as_json):
        res = sw.train_rl(data, model, out, resume=resume, config=config, dry_run=dry_run,
                          progress=progress and not as_json, verify=not no_verify,
                          **overrides(sets, loss_type=loss_type, num_generations=num_generations, beta=beta,
                                      max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                                      seed=seed))
    _print_stage(res, as_json)


@train_group.command("joint")
@_train_common
@click.option("--mode", type=click.Choice(["weighted", "relift", "bridge"]), default=None,
              help="weighted: GRPO + lambda x SFT loss; relift: all-wrong groups feed an SFT buffer; bridge: "
                   "bilevel with an RL-only shadow and a LoRA adapter (train/joint.py).")
@click.option("--loss-type", type=click.Choice(["grpo", "dr_grpo", "dapo"]), default=None,
              help="GRPO-family loss (TRL's).")
@click.option("--num-generations", type=int, default=None, help="Completions per prompt (the GRPO group).")
@click.option("--sft-weight", type=float, default=None, help="lambda (weighted) / alpha (bridge) on the SFT loss.")
@click.option("--buffer-size", type=int, default=None, help="relift: items per SFT update (ReLIFT used 128).")
def train_joint_cmd(data, model, out, config, max_steps, learning_rate, batch_size, seed, resume, dry_run, sets,
                    no_verify, as_json, progress, mode, loss_type, num_generations, sft_weight, buffer_size):
    """Single-stage cooperative SFT+RL on both splits at once (weighted, relift or bridge).

    \b
    Example:
        stagewise train joint --data export/ --model smollm2-135m --out runs/j --mode weighted --sft-weight 0.5
        stagewise train joint --data export/ --out runs/j --mode relift --buffer-size 128
        stagewise train joint --data export/ --out runs/j --mode bridge --set gain_weight=0.5 --dry-run
    """
    _need(data=data, out=out)
    import stagewise as sw

    with _quiet_stdout(as_json):
        res = sw.train_joint(data, model, out, resume=resume, config=config, dry_run=dry_run,
                             progress=progress and not as_json, verify=not no_verify,
                             **overrides(sets, mode=mode, max_steps=max_steps, learning_rate=learning_rate,
                                         batch_size=batch_size, seed=seed, loss_type=loss_type,
                                         num_generations=num_generations, sft_weight=sft_weight,
                                         buffer_size=buffer_size))
    _print_stage(res, as_json)
    if as_json:
        return
    from stagewise.train.common import is_main_process

    relift = res.extra.get("relift") if is_main_process() else None
    if relift:
        click.echo(f"  relift: {relift['moved']} items moved to the SFT buffer, {relift['sft_updates']} SFT "
                   f"updates, {relift['no_demo']} all-wrong items without a verified demonstration")
    if res.extra.get("shadow_model") and is_main_process():
        click.echo(f"  bridge: RL-only shadow model at {res.extra['shadow_model']}")


# ---------------------------------------------------------------------------------------------------
# run, experiment (issues 6, 7)
# ---------------------------------------------------------------------------------------------------


@cli.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="A YAML file with sections data, probe, route, export, sft, rl, eval.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory [default: runs/<timestamp>]; re-running with the same --out resumes.")
@click.option("--scale", type=click.Choice(["small", "medium", "large"]), default=None,
              help="Preset budgets: small ~10 min on 2 CPU cores (the default, measured), medium ~1.5 h (estimated), large = a GPU job.")
@click.option("--model", default=None, help="Model: smollm2-135m (embedded default), a local directory or a hub id.")
@click.option("--backend", type=click.Choice(["hf", "vllm", "openai"]), default=None,
              help="Generation backend for probing and evaluation.")
@click.option("--base-url", default=None, help="Server URL for --backend openai.")
@click.option("--backend-arg", "backend_arg", multiple=True, metavar="KEY=VALUE",
              help="Probe backend setting, repeatable (as `probe --backend-arg`; probe.backend_args in the config).")
@click.option("--seed", type=int, default=None, help="Seed for sampling, routing and training.")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config key, e.g. --set probe.num_samples=8 (repeatable).")
@click.option("--decontaminate", "decontaminate", multiple=True, metavar="SPEC",
              help="A benchmark set the pool must not overlap (repeatable; data.decontaminate); the run's "
                   "eval_sources are always checked.")
@click.option("--fresh", is_flag=True, help="Delete the run directory's earlier results and start over.")
@click.option("--print-config", is_flag=True, help="Print the default config (with comments) and exit.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars (probe, evaluation).")
@click.option("--json", "as_json", is_flag=True,
              help="Print {out, report, summary, seconds, notes, warnings} as JSON; stage lines go to stderr.")
def run_cmd(config_path, out, scale, model, backend, base_url, backend_arg, seed, sets, decontaminate, fresh,
            print_config, progress, as_json):
    """Run the whole pipeline: profile, probe, route, export, train, evaluate, report.

    \b
    Example:
        stagewise run                                  # embedded default, ~10 min on 2 CPU cores
        stagewise run --out runs/demo --set probe.num_samples=8
        stagewise run --scale large --backend vllm     # a real-scale run on a GPU
        stagewise run --scale large --backend vllm --backend-arg tensor_parallel_size=4
    """
    import stagewise as sw
    from stagewise.curate.backends import parse_backend_args
    from stagewise.runconfig import DEFAULT_CONFIG

    if print_config:
        click.echo(DEFAULT_CONFIG.read_text(), nl=False)
        return
    flags = overrides(sets, model=model, backend=backend, base_url=base_url, seed=seed,
                      probe={"backend_args": parse_backend_args(backend_arg)} if backend_arg else None,
                      data={"decontaminate": list(decontaminate)} if decontaminate else None)
    with _quiet_stdout(as_json):
        result = sw.run(config_path, out=out, scale=scale, overrides=flags, fresh=fresh,
                        echo=lambda line: click.echo(line, err=as_json), progress=progress and not as_json)
    if as_json:
        _echo_warnings(result.notes)
        _echo_json({**result.to_dict(), "warnings": list(result.notes)})
        return
    click.echo("")
    click.echo(f"Report: {result.report}  (and report.html beside it)")
    for key, value in result.summary.items():
        click.echo(f"  {key}: {value if not isinstance(value, float) else f'{value:.3f}'}")


@cli.command("experiment")
@click.option("--design", type=click.Choice(["v2", "v1"]), default="v2", show_default=True,
              help="v2: three tasks x four levels, three base models, validity checks, a learning-rate sweep; "
                   "v1: the first design (the addition ladder), as committed in data_cards/experiment.")
@click.option("--out", type=click.Path(file_okay=False), default="runs/experiment", show_default=True,
              help="Experiment directory (results.md, results.json, plots); re-running the same --out resumes.")
@click.option("--quick", is_flag=True,
              help="One seed, few steps, every arm (v2: on base 0, with the full design's cached bases, pool and "
                   "validity checks; about five minutes on 2 CPU cores).")
@click.option("--arms", default=None, metavar="A,B,...",
              help="Arms to run (base is always included). v2: base, sft-all-rl-all, routed, routed-replay, "
                   "routed-replay-reprobe, loop, random, cell-matched-random, anti-routed, sft-unmastered-only, "
                   "rl-partial-only, joint-weighted, joint-relift, joint-bridge. v1: base, sft-all, rl-all, "
                   "sft-all-rl-all, routed, anti-routed, random, routed-dft, routed-iw-sft, joint-*.")
@click.option("--seeds", type=int, default=None, help="Training seeds per base model [v2: 2; v1: 3; --quick: 1].")
@click.option("--total-steps", type=int, default=None,
              help="Optimizer steps per arm (the equal-compute budget) [default: 32; --quick: 4].")
@click.option("--jobs", type=int, default=None,
              help="v2: arm runs trained in parallel processes [default: 2, one per core].")
@click.option("--checks-only", is_flag=True,
              help="v2: pretrain and probe the base models, print and write the validity checks, run no arm.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="A YAML file of experiment config fields laid over the preset (stagewise/experiments/config.py).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one config field, e.g. --set probe_samples=8 --set pretrain.steps=300 (repeatable).")
def experiment_cmd(design, out, quick, arms, seeds, total_steps, jobs, checks_only, config_path, sets):
    """Test the stage-specific claim on tiny models: routed SFT/RL against SFT-then-RL on everything.

    Pretrains character-level models (cached), probes them, checks that the testbed can show the
    effect, routes, exports and trains every arm with the toolkit, and writes a table of paired
    differences with bootstrap intervals.

    \b
    Example:
        stagewise experiment --quick --out runs/exp-quick     # every arm once, about five minutes
        stagewise experiment --out runs/exp                   # design v2: 3 bases x 2 seeds
        stagewise experiment --design v1 --out runs/exp-v1    # the first design
    """
    import stagewise as sw

    fields = overrides(sets, seeds=seeds, total_steps=total_steps)
    if jobs is not None:
        if design != "v2":
            raise click.UsageError("--jobs is an option of --design v2")
        fields["jobs"] = jobs
    if checks_only:
        if design != "v2":
            raise click.UsageError("--checks-only is an option of --design v2")
        fields["checks_only"] = True
    argv = " ".join(["stagewise experiment", f"--design {design}", f"--out {out}"] + (["--quick"] if quick else [])
                    + ([f"--arms {arms}"] if arms else []) + ([f"--seeds {seeds}"] if seeds else [])
                    + ([f"--total-steps {total_steps}"] if total_steps else [])
                    + (["--checks-only"] if checks_only else [])
                    + ([f"--config {config_path}"] if config_path else []) + [f"--set {s}" for s in sets])
    result = sw.experiment(out, design=design, quick=quick, arms=arms, config=config_path, log=click.echo,
                           command=argv, **fields)
    click.echo("")
    if design == "v2" and checks_only:
        click.echo(f"Checks: {result.paths['json']}")
        return
    if design == "v2":
        click.echo(f"{'arm':<24} {'pass@1':>8} {'pass@16':>8} {'Δ pass@1 vs sft-all-rl-all [95% CI]':>40}")
        for arm in result.results["arms"]:
            ps = arm["per_seed"]
            p1 = sum(p["pass@1"] for p in ps) / len(ps)
            p16 = sum(p.get("pass@16", 0) for p in ps) / len(ps)
            d = arm["paired_diff"]
            ci = ("" if d.get("mean") is None else f"{d['mean']:+.3f}" + (
                "" if d.get("ci_low") is None else f" [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"))
            click.echo(f"{arm['name']:<24} {p1:8.3f} {p16:8.3f} {ci:>40}")
        click.echo(f"\nTable: {result.paths['markdown']}  (results.json, context.json and plots beside it)")
        return
    click.echo(f"{'arm':<16} {'pass@1':>8} {'unmast.':>8} {'partial':>8} {'mastered':>8} {'train s':>8}")
    for rec in result.records:
        m = rec["mean"]

        def f(key):
            v = m.get(key)
            return f"{v:8.3f}" if v is not None else f"{'-':>8}"

        click.echo(f"{rec['name']:<16} {f('pass@1')} {f('acc_unmastered')} {f('acc_partial')} "
                   f"{f('acc_mastered')} {m.get('train_wall_s') or 0:8.0f}")
    click.echo(f"\nTable: {result.paths['markdown']}  (results.json and accuracy_by_bucket.png beside it)")


if __name__ == "__main__":  # pragma: no cover
    main()
