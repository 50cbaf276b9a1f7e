"""The stagewise command line: a thin layer over the Python API (`stagewise/__init__.py`).

Each command parses its options, makes one API call and hands the result to `stagewise/render.py`,
which prints it (rich tables, or one JSON document with --json). Library errors (StagewiseError)
become one clear message with exit code 1 and no traceback. Every command has a one-line summary and
an `Example:` block (tests/test_cli_docs.py checks this). Choice lists come from the constants the
library validates against, so the two cannot drift.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

from stagewise import cli_options as opt
from stagewise import render
from stagewise.curate.backends import parse_backend_args
from stagewise.curate.config import overrides, parse_sets
from stagewise.curate.decontaminate import decontaminate as find_contamination
from stagewise.curate.errors import StagewiseError, storage_error
from stagewise.curate.evaluate import evaluate
from stagewise.curate.probe import probe
from stagewise.curate.profile import profile
from stagewise.curate.store import merge
from stagewise.end_to_end import run
from stagewise.experiments.runner import experiment
from stagewise.runconfig import DEFAULT_CONFIG
from stagewise.stages.browse import samples, show
from stagewise.stages.export import export
from stagewise.stages.routing import route_with_summary
from stagewise.train import train_joint, train_rl, train_sft
from stagewise.train.config import route_sets
from stagewise.train.two_stage import train as train_pipeline


class _Group(click.Group):
    """Turns library errors into a clean click error (exit 1, no traceback)."""

    def parse_args(self, ctx, args):
        # The command as typed, for results that record how to reproduce them (experiment).
        ctx.meta.setdefault("stagewise.argv", list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StagewiseError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            # A full disk or an unwritable folder the library did not wrap with the path it was writing.
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


# ------------------------------------------------------------------------------------------ curate

def _columns(prompt_col, answer_col, solution_col, id_col, skip_bad, rejects) -> dict:
    """The source options given (probe and eval pass them on as `source_options`)."""
    given = {"prompt_col": prompt_col, "answer_col": answer_col, "solution_col": solution_col, "id_col": id_col,
             "skip_bad": skip_bad or None, "rejects": rejects}
    return {k: v for k, v in given.items() if v}


@cli.command("profile")
@click.argument("data", nargs=-1, required=True)
@opt.profile
def profile_cmd(data, decontaminate, progress, as_json, **options):
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
    with render.rows_read("Profiling", progress and not as_json) as rows_read:
        result = profile(*data, decontaminate=list(decontaminate) or None, progress=rows_read, **options)
    render.profile(result, as_json)


@cli.command("decontaminate")
@click.argument("data", nargs=-1, required=True)
@opt.decontaminate
def decontaminate_cmd(data, against, show, progress, as_json, **options):
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
    with render.rows_read("Decontaminating", progress and not as_json) as rows_read:
        result = find_contamination(*data, against=list(against), progress=rows_read, **options)
    render.contamination(result, show, as_json)


@cli.command("probe")
@click.argument("data", nargs=-1, required=True)
@opt.probe
def probe_cmd(data, prompt_col, answer_col, solution_col, id_col, skip_bad, rejects, backend_arg, as_json,
              ray_address, decontaminate, progress, **options):
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
    result = probe(list(data), backend_args=parse_backend_args(backend_arg), progress=progress and not as_json,
                   source_options=_columns(prompt_col, answer_col, solution_col, id_col, skip_bad, rejects),
                   ray=True if ray_address == "auto" else ray_address,
                   decontaminate=list(decontaminate) or None, **options)
    render.probe(result, as_json)


@cli.command("eval")
@click.argument("data", nargs=-1, required=True)
@opt.eval
def eval_cmd(data, prompt_col, answer_col, solution_col, id_col, skip_bad, rejects, model, backend_arg, as_json,
             progress, **options):
    """Evaluate a model: pass@1 and unbiased pass@k with 95% intervals per source, task and bucket.

    \b
    Example:
        stagewise eval gsm8k:test --limit 64 -k 8 --model out/rl/final
        stagewise eval gsm8k:test --model smollm2-135m --buckets export/assignments.parquet -k 4 --ks 1,4
    """
    result = evaluate(model, list(data), backend_args=parse_backend_args(backend_arg),
                      progress=progress and not as_json,
                      source_options=_columns(prompt_col, answer_col, solution_col, id_col, skip_bad, rejects),
                      **options)
    render.evaluation(result, model, options["num_samples"], as_json)


@cli.command("merge")
@click.argument("stores", nargs=-1, required=True, type=click.Path(dir_okay=False))
@opt.merge
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
    render.merge(merge(list(stores), out, overwrite=overwrite), as_json)


# ------------------------------------------------------------------------------------------ stages


@cli.command("route")
@opt.route
def route_cmd(store, as_json, **options):
    """Assign every probed item a bucket, a stage (SFT / RL / replay / drop) and a reason.

    \b
    Example:
        stagewise route --store run.duckdb
        stagewise route --store run.duckdb --policy band --low 0.1 --high 0.9
        stagewise route --store run.duckdb --keep-mastered 16 --require-samples 8 --out assignments.parquet
        stagewise route --store run.duckdb --truncated exclude
        stagewise route --store run.duckdb --runs 25f875b7f3d1b4df,9c0e1a2b3d4f5a6b --by-model --order p_hat-asc
    """
    render.route(route_with_summary(store, **options), as_json)


@cli.command("export")
@opt.export
def export_cmd(store, out, fmt, demos, base_url, teacher_backend_arg, decontaminate, progress, as_json, **options):
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
    teacher_args = {**parse_backend_args(teacher_backend_arg), **({"base_url": base_url} if base_url else {})}
    result = export(store, out, format=fmt, demos=tuple(d.strip() for d in demos.split(",") if d.strip()),
                    teacher_options={"backend_options": teacher_args} if teacher_args else None,
                    decontaminate=list(decontaminate) or None, progress=progress and not as_json, **options)
    render.export(result, as_json)


@cli.command("show")
@click.argument("item_id")
@opt.show
def show_cmd(item_id, store, run_id, as_json):
    """Show one item and what the model wrote: prompt, gold answer, bucket, p̂ with CI, every sample.

    ITEM_ID may be the first characters of the id (as printed by `route` or `samples`).

    \b
    Example:
        stagewise show 0738c911 --store run.duckdb
        stagewise show 0738c911c1619837 --store run.duckdb --json
    """
    render.item(show(store, item_id, run_id=run_id), as_json)


@cli.command("samples")
@opt.samples
def samples_cmd(store, run_id, as_json, as_jsonl, **filters):
    """List stored samples by filter: what the model wrote, the extracted answer and the verdict.

    \b
    Example:
        stagewise samples --store run.duckdb --bucket unmastered --status no_answer --limit 10
        stagewise samples --store run.duckdb --status wrong --jsonl > wrong.jsonl
    """
    if as_json and as_jsonl:
        raise click.UsageError("pass --json or --jsonl, not both")
    render.samples(samples(store, run_id=run_id, **filters), run_id, as_json, as_jsonl)


# ------------------------------------------------------------------------------------------ train

def _need(data, out) -> None:
    missing = [flag for flag, value in (("--data", data), ("--out", out)) if not value]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)}; see `stagewise train --help`")


def _train_stage(recipe, data, model, out, config, resume, dry_run, sets, as_json, progress, no_verify, **flags):
    """`train sft|rl|joint`: one recipe on an export; `--set` values with the command's own flags over them."""
    _need(data, out)
    with render.quiet_stdout(as_json):
        return recipe(data, model, out, resume=resume, config=config, dry_run=dry_run,
                      progress=progress and not as_json, verify=not no_verify, **overrides(sets, **flags))


def relative_path_arg(arg: str) -> str:
    """An absolute path in a recorded command line, relative to the working directory instead (`--out=/a/b`
    too): results meant to be committed hold no absolute path of the machine that made them."""
    opt, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not os.path.isabs(value):
        return arg
    return f"{opt}{eq}{os.path.relpath(value)}"


@cli.group("train", cls=_Group, invoke_without_command=True)
@opt.train
@click.pass_context
def train_group(ctx, data, model, out, sets, no_verify, as_json, progress, eval_data, no_eval, joint, dry_run,
                **options):
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
    _need(data, out)
    per_stage = route_sets(parse_sets(sets))
    if no_eval:
        per_stage["eval"]["enabled"] = False
    with render.quiet_stdout(as_json):
        result = train_pipeline(data, model, out, eval_data=list(eval_data) or None, sft=per_stage["sft"],
                                rl=per_stage["rl"], eval=per_stage["eval"], joint=joint,
                                joint_options=per_stage["joint"] if joint else None, dry_run=dry_run,
                                progress=progress and not as_json, verify=not no_verify, **options)
    render.train_pipeline(result, out, dry_run, as_json)


@train_group.command("sft")
@opt.train_sft
def train_sft_cmd(**options):
    """Supervised fine-tuning on the export's SFT split (TRL SFTTrainer).

    \b
    Example:
        stagewise train sft --data export/ --model smollm2-135m --out runs/sft
        stagewise train sft --data export/sft.parquet --out runs/sft --loss iw-sft --max-steps 50
        stagewise train sft --data export/ --out runs/sft --set gradient_accumulation_steps=4 --resume
    """
    render.train_stage(_train_stage(train_sft, **options), options["as_json"])


@train_group.command("rl")
@opt.train_rl
def train_rl_cmd(**options):
    """GRPO-family RL on the export's RL split, rewarded by the stagewise verifier (TRL GRPOTrainer).

    \b
    Example:
        stagewise train rl --data export/ --model runs/sft/model --out runs/rl
        stagewise train rl --data export/rl.parquet --out runs/rl --loss-type dr_grpo --num-generations 8
        stagewise train rl --data export/ --out runs/rl --set temperature=0.8 --dry-run
    """
    render.train_stage(_train_stage(train_rl, **options), options["as_json"])


@train_group.command("joint")
@opt.train_joint
def train_joint_cmd(**options):
    """Single-stage cooperative SFT+RL on both splits at once (weighted, relift or bridge).

    \b
    Example:
        stagewise train joint --data export/ --model smollm2-135m --out runs/j --mode weighted --sft-weight 0.5
        stagewise train joint --data export/ --out runs/j --mode relift --buffer-size 128
        stagewise train joint --data export/ --out runs/j --mode bridge --set gain_weight=0.5 --dry-run
    """
    render.train_stage(_train_stage(train_joint, **options), options["as_json"], details=True)


# ------------------------------------------------------------------------------------------ run, experiment

@cli.command("run")
@opt.run
def run_cmd(config_path, out, scale, fresh, backend_arg, sets, decontaminate, print_config, progress, as_json,
            **flags):
    """Run the whole pipeline: profile, probe, route, export, train, evaluate, report.

    \b
    Example:
        stagewise run                                  # embedded default, ~10 min on 2 CPU cores
        stagewise run --out runs/demo --set probe.num_samples=8
        stagewise run --scale large --backend vllm     # a real-scale run on a GPU
        stagewise run --scale large --backend vllm --backend-arg tensor_parallel_size=4
    """
    if print_config:
        click.echo(DEFAULT_CONFIG.read_text(), nl=False)
        return
    with render.quiet_stdout(as_json):
        result = run(config_path, out=out, scale=scale, fresh=fresh, progress=progress and not as_json,
                     echo=lambda line: click.echo(line, err=as_json),
                     overrides=overrides(sets, probe={"backend_args": parse_backend_args(backend_arg)} if backend_arg
                                         else None,
                                         data={"decontaminate": list(decontaminate)} if decontaminate else None,
                                         **flags))
    render.run(result, as_json)


@cli.command("experiment")
@opt.experiment
@click.pass_context
def experiment_cmd(ctx, design, out, quick, arms, config_path, sets, checks_only, allow_invalid, **flags):
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
    for flag, given in (("--jobs", flags["jobs"] is not None), ("--checks-only", checks_only),
                        ("--allow-invalid", allow_invalid)):
        if given and design != "v2":
            raise click.UsageError(f"{flag} is an option of --design v2")
    command = shlex.join(["stagewise", *map(relative_path_arg, ctx.meta["stagewise.argv"])])
    result = experiment(out, design=design, quick=quick, arms=arms, config=config_path, checks_only=checks_only,
                        allow_invalid=allow_invalid, log=click.echo, command=command, **overrides(sets, **flags))
    render.experiment(result, design, checks_only)


if __name__ == "__main__":  # pragma: no cover
    main()
