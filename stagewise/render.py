"""How the command line shows results: rich tables and lines on the terminal, or one JSON document.

Every command of `stagewise/cli.py` ends in one function of this module, given the result object the
Python API returned. With --json, stdout holds only that document; warnings go to stderr as well as
into its `warnings` key.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections import Counter

import click
import yaml

from stagewise.train.result import is_main_process
from stagewise.train.stage_eval import display_table

# ------------------------------------------------------------------------------------------ plumbing


def _rich():
    """rich's Console and Table. rich is imported when something is printed, not for `stagewise --help`,
    where it would be a large share of the start-up time."""
    from rich.console import Console
    from rich.table import Table

    return Console, Table


def echo_json(payload: dict) -> None:
    """The only thing a --json command prints on stdout."""
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def echo_warnings(warnings) -> None:
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


def json_with_warnings(payload: dict, warnings) -> None:
    echo_warnings(warnings)
    echo_json({**payload, "warnings": list(warnings)})


def quiet_stdout(as_json: bool):
    """With --json, whatever a library prints (trainer logs, notes) goes to stderr: stdout is the JSON's."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


@contextlib.contextmanager
def rows_read(label: str, enabled: bool):
    """A spinner on stderr counting the rows read; yields the progress callback (None when disabled)."""
    if not enabled:
        yield None
        return
    Console, _ = _rich()
    with Console(stderr=True).status(f"{label}…", spinner="dots") as status:
        yield lambda n: status.update(f"{label}… {n:,} rows")


def _wide_console(width: int):
    """Piped or captured output gets a fixed width, so a table is not squeezed into 80 columns."""
    Console, _ = _rich()
    console = Console()
    return console if console.is_terminal else Console(width=width)


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


# ------------------------------------------------------------------------------------------ curate


def profile(result, as_json: bool) -> None:
    Console, Table = _rich()
    p = result.to_dict()
    if as_json:
        return json_with_warnings(p, result.warnings)
    console = Console()
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
    names = ("source", "preset", "prompt", "answer", "solution", "id", "task")
    for name in names:
        cols.add_column(name)
    for c in p["columns"]:
        cols.add_row(*(str(c.get(k) or "-") for k in names))
    console.print(cols)

    lengths = Table(title="Lengths", title_justify="left")
    stats = ("count", "min", "p50", "p90", "p99", "max", "mean")
    for name in ("field", *stats):
        lengths.add_column(name, justify="left" if name == "field" else "right")
    for name, d in p["lengths"].items():
        if isinstance(d, dict):
            lengths.add_row(name, *(str(d.get(k, "-")) for k in stats))
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


def contamination(result, show: int, as_json: bool) -> None:
    Console, Table = _rich()
    d = result.to_dict(max_matches=show)
    echo_warnings(result.warnings)
    if as_json:
        return echo_json(d)
    console = Console()
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


def probe(result, as_json: bool) -> None:
    Console, Table = _rich()
    if as_json:
        return json_with_warnings(result.to_dict(), result.warnings)
    s = result.summary
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


def evaluation(result, model: str, num_samples: int, as_json: bool) -> None:
    Console, Table = _rich()
    if as_json:
        return json_with_warnings(result.to_dict(), result.notes)
    table = Table(title=f"eval of {model}: {result.summary['items']:,} items x {num_samples} samples "
                        f"(95% intervals over items)", title_justify="left")
    table.add_column("group", no_wrap=True)
    table.add_column("items", justify="right")
    for k in result.ks:
        table.add_column(f"pass@{k} [95% CI]", justify="right", no_wrap=True)
    for row in result.table.to_dicts():
        cells = [row["group"], f"{row['n_items']:,}"]
        for k in result.ks:
            key, lo, hi = ("pass@1", "ci_low", "ci_high") if k == 1 else (f"pass@{k}", f"pass@{k}_ci_low",
                                                                         f"pass@{k}_ci_high")
            cells.append("-" if row.get(key) is None else f"{row[key]:.3f} [{row[lo]:.3f}, {row[hi]:.3f}]")
        table.add_row(*cells)
    console = Console()
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}")


def merge(result, as_json: bool) -> None:
    r = result.report
    if as_json:
        return json_with_warnings({"out": result.out, **r}, [])
    for item in r["inputs"]:
        click.echo(f"  {item['path']}: {item['runs']} run(s), {item['problems']} problems, "
                   f"{item['samples']} samples")
    click.echo(f"Merged {len(r['inputs'])} stores into {result.out}: {r['runs']} run(s), {r['problems']} problems, "
               f"{r['samples']} samples ({r['duplicate_samples']} duplicate samples and "
               f"{r['duplicate_problems']} duplicate problems counted once).")


# ------------------------------------------------------------------------------------------ stages


def _route_table(summary, assignments) -> None:
    Console, Table = _rich()
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


def route(result, as_json: bool) -> None:
    if as_json:
        return json_with_warnings(result.to_dict(), result.summary.warnings)
    _route_table(result.summary, result.assignments)
    if result.out:
        click.echo(f"wrote {result.out} ({len(result.assignments)} rows)")


def export(result, as_json: bool) -> None:
    if as_json:
        return json_with_warnings(result.to_dict(), result.summary.warnings)
    _route_table(result.summary, result.assignments)
    m = result.manifest
    if m["counts"].get("contaminated"):
        click.echo(f"left out {m['counts']['contaminated']} items overlapping "
                   f"{', '.join(result.decontaminated)} (in unrouted.parquet with the reason)")
    for name, rep in result.demos.items():
        click.echo(f"demonstrations from {name}: {rep.get('verified', 0)} verified of "
                   f"{rep.get('tried', 0)} tried")
    replay = m["demonstrations"].get("sft_replay") or {}
    if replay.get("taken"):
        click.echo(f"sft replay: {replay['taken']} rows ({replay['achieved']:.0%} of sft.parquet, "
                   f"asked {replay['fraction']:g}) marked stage = replay-sft")
    files = m["files"]
    if result.reused:
        click.echo(f"{result.out}/ was exported earlier with the same options: reused it "
                   "(pass --overwrite to export again)")
    click.echo(f"{'reused' if result.reused else 'wrote'} {result.out}/ ({m['format']}): " + ", ".join(
        f"{name} {info['rows']}" for name, info in files.items() if info.get("rows") is not None))
    click.echo(f"  card: {result.out}/README.md   manifest: {result.out}/manifest.json")


def item(res: dict, as_json: bool) -> None:
    Console, _ = _rich()
    if as_json:
        return json_with_warnings(res, [])
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


def samples(frame, run_id, as_json: bool, as_jsonl: bool) -> None:
    _, Table = _rich()
    rows = frame.to_dicts()
    if as_jsonl:
        for r in rows:
            click.echo(json.dumps(r, ensure_ascii=False, default=str))
        return
    if as_json:
        rid = rows[0]["run_id"] if rows else run_id
        return json_with_warnings({"run_id": rid, "count": len(rows), "samples": rows}, [])
    table = Table(title=f"{len(rows)} samples", title_justify="left")
    for name in ("item", "#", "bucket", "status", "extracted", "gold", "finish", "completion"):
        table.add_column(name, no_wrap=name != "completion", overflow="ellipsis",
                         max_width=60 if name == "completion" else 20)
    for r in rows:
        text = (r["completion"] or "").replace("\n", " ")
        table.add_row(r["problem_id"], str(r["sample_idx"]), r["bucket"] or "-", r["status"],
                      str(r["extracted"]), str(r["answer"]), str(r["finish_reason"]),
                      text[:200] + ("…" if len(text) > 200 else ""))
    _wide_console(160).print(table)


# ------------------------------------------------------------------------------------------ train


def train_stage(res, as_json: bool = False, details: bool = False) -> None:
    """One stage's result; under `accelerate launch` every rank returns one, and rank 0 alone reports.
    `details`: also what a joint mode did (`train joint`)."""
    if not is_main_process():
        return
    if as_json:
        return json_with_warnings(res.to_dict(), [])
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
    relift = res.extra.get("relift") if details else None
    if relift:
        click.echo(f"  relift: {relift['moved']} items moved to the SFT buffer, {relift['sft_updates']} SFT "
                   f"updates, {relift['no_demo']} all-wrong items without a verified demonstration")
    if details and res.extra.get("shadow_model"):
        click.echo(f"  bridge: RL-only shadow model at {res.extra['shadow_model']}")


def train_pipeline(res, out, dry_run: bool, as_json: bool) -> None:
    _, Table = _rich()
    skipped = [f"{stage}: skipped ({why})" for stage, why in res.skipped.items()]
    if as_json:
        return json_with_warnings({**res.to_dict(), "dry_run": dry_run}, skipped)
    for stage_res in (res.sft, res.rl, res.joint):
        if stage_res is not None:
            train_stage(stage_res)
    for line in skipped:
        click.echo(line)
    for rep in (res.loop.reprobes if res.loop is not None else []):
        info = rep.to_dict()
        click.echo(f"re-probe round {rep.round}: {rep.probed} of {rep.items} items, "
                   f"{len(info['left_rl'])} left RL, {len(info['joined_rl'])} joined RL")
    if res.loop is not None and (res.loop.transitions or res.loop.rounds):
        click.echo(f"transitions: {out}/transitions.parquet   rounds: {out}/rounds.parquet")
    rows = display_table(res.evals) if res.evals else []
    if rows:
        table = Table(title="pass@1 [95% CI] before / after each stage", title_justify="left")
        for col in rows[0]:
            table.add_column(col, justify="left" if col in ("set", "group") else "right", no_wrap=True)
        for r in rows:
            table.add_row(*(str(v) for v in r.values()))
        _wide_console(120).print(table)
    if not dry_run:
        click.echo(f"report: {out}/report.md   final model: {res.model_dir}")


# ------------------------------------------------------------------------------------------ run, experiment


def run(result, as_json: bool) -> None:
    if as_json:
        return json_with_warnings(result.to_dict(), result.notes)
    click.echo("")
    click.echo(f"Report: {result.report}  (and report.html beside it)")
    for key, value in result.summary.items():
        click.echo(f"  {key}: {value if not isinstance(value, float) else f'{value:.3f}'}")


def experiment(result, design: str, checks_only: bool) -> None:
    click.echo("")
    if design == "v2" and checks_only:
        click.echo(f"Checks: {result.paths['json']}")
        return
    if design == "v2":
        # The largest k the run evaluated (16 in the full design, 8 in --quick).
        kmax = max((int(key[5:]) for arm in result.results["arms"] for p in arm["per_seed"] for key in p
                    if key.startswith("pass@")), default=1)
        click.echo(f"{'arm':<24} {'pass@1':>8} {f'pass@{kmax}':>8} {'Δ pass@1 vs sft-all-rl-all [95% CI]':>40}")
        for arm in result.results["arms"]:
            ps = arm["per_seed"]
            p1 = sum(p["pass@1"] for p in ps) / len(ps)
            pk = sum(p[f"pass@{kmax}"] for p in ps) / len(ps)
            d = arm["paired_diff"]
            ci = ("" if d.get("mean") is None else f"{d['mean']:+.3f}" + (
                "" if d.get("ci_low") is None else f" [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"))
            click.echo(f"{arm['name']:<24} {p1:8.3f} {pk:8.3f} {ci:>40}")
        click.echo(f"\nTable: {result.paths['markdown']}  (results.json, context.json and plots beside it)")
        return
    click.echo(f"{'arm':<16} {'pass@1':>8} {'unmast.':>8} {'partial':>8} {'mastered':>8} {'train s':>8}")
    for rec in result.records:
        m = rec["mean"]
        cells = " ".join(f"{m[key]:8.3f}" if m.get(key) is not None else f"{'-':>8}"
                         for key in ("pass@1", "acc_unmastered", "acc_partial", "acc_mastered"))
        click.echo(f"{rec['name']:<16} {cells} {m.get('train_wall_s') or 0:8.0f}")
    click.echo(f"\nTable: {result.paths['markdown']}  (results.json and accuracy_by_bucket.png beside it)")
