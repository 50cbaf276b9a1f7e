"""The options of every stagewise command, one decorator per command (`stagewise/cli.py` uses them).

Choice lists come from the constants the library validates against, so the two cannot drift. Options
several commands share are defined once (`_source_options`, `_sampling_options`, `_route_options`, ...).
"""

from __future__ import annotations

import click

from stagewise.curate.backends import BACKENDS
from stagewise.curate.decontaminate import DEFAULT_MAX_SHARE, DEFAULT_NGRAM
from stagewise.curate.probe import KEEP_COMPLETIONS
from stagewise.curate.store import STATUSES
from stagewise.experiments.runner import DESIGNS
from stagewise.runconfig import SCALES
from stagewise.stages.formats import FORMATS, SFT_STYLES
from stagewise.stages.routing import BUCKETS, ORDERS, POLICIES, TRUNCATED
from stagewise.train.config import JOINT_MODES, LOSS_TYPES, SFT_LOSSES


def _options(*options):
    """Several click options as one decorator, listed in --help in the order given."""
    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


def _choice(values, **kwargs):
    return click.Choice([str(v) for v in values], **kwargs)


_JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
_STORE = click.option("--store", "store", required=True, type=click.Path(dir_okay=False),
                      help="The probe store (DuckDB file) written by `stagewise probe`.")
_RUN_ID = click.option("--run-id", default=None, help="Which probe run, when the store holds several.")


def _progress(what: str):
    return click.option("--progress/--no-progress", default=True, help=what)



_source_options = _options(
    click.option("--prompt-col", help="Column holding the question (default: auto-detect)."),
    click.option("--answer-col", help="Column holding the gold final answer (default: auto-detect)."),
    click.option("--solution-col", help="Column holding a worked solution (default: auto-detect)."),
    click.option("--id-col", help="Column holding a stable id (default: hash of prompt + answer)."),
    click.option("--task", help="Verifier for every row: gsm8k, math, exact, rg:NAME or module:function."),
    click.option("--skip-bad", is_flag=True, help="Count and skip unusable rows instead of stopping."),
    click.option("--rejects", type=click.Path(dir_okay=False),
                 help="With --skip-bad: write the skipped rows here (JSON Lines)."),
)
_NGRAM = click.option("--ngram", type=int, default=DEFAULT_NGRAM, show_default=True,
                      help="Words in a shared run that counts as overlap (open-r1 uses 8).")
_decontaminate_options = _options(
    click.option("--decontaminate", "decontaminate", multiple=True, metavar="SPEC",
                 help="A benchmark set the pool must not overlap (repeatable), e.g. gsm8k:test: items "
                      "sharing an n-gram with it are reported (profile) or left out (probe, export, run)."),
    _NGRAM,
)


_sampling_options = _options(
    click.option("--model", default="smollm2-135m", show_default=True,
                 help="smollm2-135m (embedded), a local transformers directory, a hub id, or the served "
                      "model name for --backend openai."),
    click.option("--backend", default="hf", show_default=True, type=_choice(BACKENDS),
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
    _JSON,
)


def _ks(ctx, param, value):
    """--ks 1,4,8 -> (1, 4, 8)."""
    try:
        return tuple(int(x) for x in str(value).split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers, e.g. 1,4,8",
                                 param_hint="--ks") from None



_route_options = _options(
    _STORE,
    _RUN_ID,
    click.option("--policy", default="stage", show_default=True, type=_choice(POLICIES),
                 help="stage: 0/n→SFT, partial→RL, n/n→drop; band: p̂ in (low, high)→RL; "
                      "all: every item →RL (+SFT where a demo verifies); random: stage's pool sizes "
                      "at random; relift: ReLIFT's buckets."),
    click.option("--low", type=float, default=None, help="band: lower p̂ bound (exclusive), default 0."),
    click.option("--high", type=float, default=None, help="band: upper p̂ bound (exclusive), default 1."),
    click.option("--keep-mastered", type=int, default=0, show_default=True,
                 help="Keep up to N mastered items as a replay split (never RL)."),
    click.option("--require-samples", type=int, default=None,
                 help="Items with fewer verified samples are unrouted, not guessed."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed for random routing and the replay draw."),
    click.option("--truncated", type=_choice(TRUNCATED), default="wrong", show_default=True,
                 help="A sample cut off at --max-new-tokens: wrong (as RL's reward scores it) or "
                      "exclude (it leaves n, like DAPO's overlong filtering; items left with too few "
                      "samples are unrouted)."),
)
_pooling_options = _options(
    click.option("--runs", default=None, metavar="ID,ID,...",
                 help="Pool the samples of these runs (same model and sampling, different seeds) "
                      "instead of one --run-id."),
    click.option("--by-model", is_flag=True,
                 help="Add p_hat:<model> and n:<model> columns for every model in the store."),
    click.option("--order", type=_choice(ORDERS), default=None,
                 help="Row order (a curriculum for readers that go in order); default: by id."),
)

_train_common = _options(
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
    click.option("--dry-run", is_flag=True, help="Build the trainers and print the resolved config; no training."),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                 help="Any other config key, e.g. --set lora=true --set gradient_accumulation_steps=4, or "
                      "any field of TRL's SFTConfig/GRPOConfig: --set trl.num_iterations=2."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout; trainer logs go to stderr."),
    _progress("Show the trainers' progress bars."),
    click.option("--no-verify", is_flag=True,
                 help="Train on splits that differ from the export's manifest (sha256, rows); recorded."),
)
_LOSS_TYPE = click.option("--loss-type", type=_choice(LOSS_TYPES), default=None,
                          help="GRPO-family loss (TRL's).")
_NUM_GENERATIONS = click.option("--num-generations", type=int, default=None,
                                help="Completions per prompt (the GRPO group).")

# ------------------------------------------------------------------------------------------ commands

profile = _options(
    _source_options,
    click.option("--tokenizer", help="Also count tokens: a model directory, smollm2-135m, or a hub id."),
    click.option("--card", type=click.Path(dir_okay=False),
                 help="Write a Markdown data card here (and a length histogram PNG beside it)."),
    click.option("--samples", default=3, show_default=True, help="Sample rows to show."),
    _decontaminate_options,
    _progress("Show rows read so far (on stderr)."),
    click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON."),
)

decontaminate = _options(
    _source_options,
    click.option("--against", "against", multiple=True, required=True, metavar="SPEC",
                 help="A benchmark set to check against (repeatable): gsm8k:test, math:PATH, a file, hf:NAME..."),
    _NGRAM,
    click.option("--max-share", type=float, default=DEFAULT_MAX_SHARE, show_default=True,
                 help="An n-gram in more than this share of a set's items is its template, not its content."),
    click.option("--out", type=click.Path(dir_okay=False), default=None,
                 help="Write every match (pool item, set, benchmark item, shared n-gram) to this parquet file."),
    click.option("--show", type=int, default=5, show_default=True, help="Matches to print as examples."),
    _progress("Show rows read so far (on stderr)."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (stdout holds only the JSON)."),
)

probe = _options(
    _source_options,
    click.option("--store", required=True, type=click.Path(dir_okay=False),
                 help="DuckDB file for the samples; re-running the same command resumes it."),
    _sampling_options,
    click.option("--num-samples", "-k", type=int, default=8, show_default=True, help="Samples per item (fixed mode)."),
    click.option("--adaptive", is_flag=True,
                 help="Sample in rounds: stop an item once it has a success and a failure (and --min-samples)."),
    click.option("--k-max", type=int, default=16, show_default=True, help="--adaptive: most samples per item."),
    click.option("--min-samples", type=int, default=4, show_default=True, help="--adaptive: fewest samples per item."),
    click.option("--shard", default=None, help="i/N: probe only the i-th (0-based) of N disjoint shards."),
    click.option("--keep-completions", type=_choice(KEEP_COMPLETIONS), default="all", show_default=True,
                 help="Whose text the store keeps: every sample, wrong ones only (for inspection), or none. "
                      "Scores, statuses, extracted answers and token counts are always kept; --demos samples "
                      "needs all."),
    click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]",
                 help="Shard the probe over a Ray cluster (stagewise[ray]): bare --ray starts a local instance or "
                      "joins $RAY_ADDRESS; --ray HOST:PORT joins that cluster. Rows come back to this process."),
    click.option("--ray-shards", type=int, default=None,
                 help="--ray: shards, each one backend [default: the cluster's CPUs, or GPUs for vllm]."),
    _decontaminate_options,
    _progress("Show a progress bar."),
)

eval = _options(
    _source_options,
    _sampling_options,
    click.option("--num-samples", "-k", type=int, default=8, show_default=True, help="Samples per item."),
    click.option("--ks", default="1,4,8", show_default=True, callback=_ks,
                 help="pass@k reported for these k (each <= -k)."),
    click.option("--buckets", type=click.Path(dir_okay=False), default=None,
                 help="assignments.parquet (columns id, bucket) from `stagewise export`: also report per bucket."),
    click.option("--store", type=click.Path(dir_okay=False), default=None,
                 help="Keep the samples in this DuckDB file (resumable); default: in memory."),
    _progress("Show a progress bar."),
)

merge = _options(
    click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
                 help="The merged store to write (a new file; written atomically)."),
    click.option("--overwrite", is_flag=True, help="Replace --out if it exists."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print {out, inputs, runs, problems, samples, duplicate_samples, duplicate_problems, warnings}."),
)

route = _options(
    _route_options,
    _pooling_options,
    click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
                 help="Also write the assignments to this parquet file."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print {run_id, policy, summary, assignments, out, warnings} as JSON."),
)

export = _options(
    _route_options,
    click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                 help="Export directory (created atomically; never replaced without --overwrite)."),
    click.option("--format", "fmt", type=_choice(FORMATS), default="trl",
                 show_default=True, help="Row layout of the trainer that will read the files."),
    click.option("--demos", default="solution", show_default=True,
                 help="SFT demonstration sources in order of preference, comma-separated: solution (the "
                      "reference solution), samples (verified-correct probe samples, RFT-style), teacher, "
                      "rationalize (the probed model given the answer as a hint, STaR), critique (own wrong "
                      "attempt + verdict + verified solution)."),
    click.option("--teacher", default=None, help="A teacher model sampled for demonstrations (adds 'teacher')."),
    click.option("--teacher-backend", default="hf", show_default=True,
                 help="Backend for --teacher: hf, vllm, openai."),
    click.option("--teacher-budget", type=int, default=8, show_default=True,
                 help="Teacher samples per item before giving up (the item is then reported unrouted)."),
    click.option("--base-url", default=None, help="Server URL for --teacher-backend openai."),
    click.option("--teacher-backend-arg", "teacher_backend_arg", multiple=True, metavar="KEY=VALUE",
                 help="Setting for the teacher's backend, repeatable (as `probe --backend-arg`)."),
    click.option("--sft-style", type=_choice(SFT_STYLES), default="prompt-completion", show_default=True,
                 help="trl only: conversational prompt/completion or messages."),
    click.option("--sft-replay", type=float, default=0.0, show_default=True,
                 help="Share F of sft.parquet given to verified demonstrations of items the model already "
                      "solves (rows marked stage = replay-sft), against forgetting; e.g. 0.3."),
    click.option("--sft-replay-from", default="mastered", show_default=True,
                 help="Buckets SFT replay draws from: mastered or mastered,partial."),
    click.option("--rationalize-model", default=None,
                 help="The model --demos rationalize samples (default: the probed model's name)."),
    click.option("--overwrite", is_flag=True,
                 help="Replace an existing export directory (one made with the same options is reused without it; "
                      "one made with other options is refused)."),
    _pooling_options,
    click.option("--with-samples", is_flag=True,
                 help="Also write samples.parquet: every sample of the run (id, sample_idx, completion, extracted, "
                      "score, status), whatever the item's stage."),
    _decontaminate_options,
    _progress("Show the teacher's progress."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print {out, format, counts, files, summary, demos, warnings} as JSON."),
)

show = _options(
    _STORE,
    _RUN_ID,
    click.option("--json", "as_json", is_flag=True, help='Print {"item": {...}, "samples": [...]} as JSON.'),
)

samples = _options(
    _STORE,
    _RUN_ID,
    click.option("--bucket", type=_choice(BUCKETS), default=None, help="Only samples of items in this bucket."),
    click.option("--status", type=_choice(STATUSES), default=None, help="Only samples the verifier marked so."),
    click.option("--item", "item_id", default=None, help="Only samples of this item (id or prefix)."),
    click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N samples."),
    click.option("--json", "as_json", is_flag=True, help='Print {"run_id", "count", "samples": [...]} as JSON.'),
    click.option("--jsonl", "as_jsonl", is_flag=True, help="Print one JSON object per sample and line."),
)

train = _options(
    _train_common,
    click.option("--reprobe", is_flag=True,
                 help="After SFT, re-probe every SFT and RL item with the SFT model and re-route it with the "
                      "export's own policy: items out of the RL band leave RL, newly partial ones join it."),
    click.option("--reprobe-sample", type=int, default=None,
                 help="Re-probe a random N items instead of all (reports the estimated bucket shares)."),
    click.option("--rounds", type=int, default=1, show_default=True,
                 help="Repeat SFT -> re-probe -> RL; RL's all-wrong prompts join the next round's SFT set. "
                      "--max-steps applies per stage per round."),
    click.option("--eval-data", multiple=True, help="Held-out problems evaluated before/after each stage (spec)."),
    click.option("--no-eval", is_flag=True, help="Skip the before/after evaluation."),
    click.option("--joint", type=_choice(JOINT_MODES), default=None,
                 help="Replace SFT-then-RL by one cooperative stage (see `stagewise train joint`), same evaluation."),
)

train_sft = _options(
    _train_common,
    click.option("--loss", type=_choice(SFT_LOSSES), default=None,
                 help="nll (default, completion-only), dft (TRL), iw-sft (importance-weighted, ours)."),
)

train_rl = _options(
    _train_common,
    _LOSS_TYPE,
    _NUM_GENERATIONS,
    click.option("--beta", type=float, default=None,
                 help="KL coefficient (default 0: no reference model); > 0 reloads the reference from --model."),
)

train_joint = _options(
    _train_common,
    click.option("--mode", type=_choice(JOINT_MODES), default=None,
                 help="weighted: GRPO + lambda x SFT loss; relift: all-wrong groups feed an SFT buffer; bridge: "
                      "bilevel with an RL-only shadow and a LoRA adapter (train/joint/bridge.py)."),
    _LOSS_TYPE,
    _NUM_GENERATIONS,
    click.option("--sft-weight", type=float, default=None, help="lambda (weighted) / alpha (bridge) on the SFT loss."),
    click.option("--buffer-size", type=int, default=None, help="relift: items per SFT update (ReLIFT used 128)."),
)

run = _options(
    click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                 help="A YAML file with sections data, probe, route, export, sft, rl, eval."),
    click.option("--out", type=click.Path(file_okay=False), default=None,
                 help="Run directory [default: runs/<timestamp>]; re-running with the same --out resumes."),
    click.option("--scale", type=_choice(SCALES), default=None,
                 help="Preset budgets: small ~10 min on 2 CPU cores (the default, measured), medium ~1.5 h (estimated), large = a GPU job."),
    click.option("--model", default=None, help="Model: smollm2-135m (embedded default), a local directory or a hub id."),
    click.option("--backend", type=_choice(BACKENDS), default=None, help="Generation backend for probing and evaluation."),
    click.option("--base-url", default=None, help="Server URL for --backend openai."),
    click.option("--backend-arg", "backend_arg", multiple=True, metavar="KEY=VALUE",
                 help="Probe backend setting, repeatable (as `probe --backend-arg`; probe.backend_args in the config)."),
    click.option("--seed", type=int, default=None, help="Seed for sampling, routing and training."),
    click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
                 help="Override one config key, e.g. --set probe.num_samples=8 (repeatable)."),
    click.option("--decontaminate", "decontaminate", multiple=True, metavar="SPEC",
                 help="A benchmark set the pool must not overlap (repeatable; data.decontaminate); the run's "
                      "eval_sources are always checked."),
    click.option("--fresh", is_flag=True, help="Delete the run directory's earlier results and start over."),
    click.option("--print-config", is_flag=True, help="Print the default config (with comments) and exit."),
    _progress("Show progress bars (probe, evaluation)."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print {out, report, summary, seconds, notes, warnings} as JSON; stage lines go to stderr."),
)

experiment = _options(
    click.option("--design", type=_choice(DESIGNS), default="v2", show_default=True,
                 help="v2: three tasks x 2-4 digits on the slip testbed (data_cards/experiment-v2), three base models, validity checks, a learning-rate sweep; "
                      "v1: the first design (the addition ladder), as committed in data_cards/experiment."),
    click.option("--out", type=click.Path(file_okay=False), default="runs/experiment", show_default=True,
                 help="Experiment directory (results.md, results.json, plots); re-running the same --out resumes."),
    click.option("--quick", is_flag=True,
                 help="One seed, few steps, every arm (v2: on base 0, with the full design's cached bases, pool and "
                      "validity checks; about five minutes on 2 CPU cores)."),
    click.option("--arms", default=None, metavar="A,B,...",
                 help="Arms to run (base is always included). v2: base, sft-all-rl-all, routed, routed-replay, "
                      "routed-replay-reprobe, loop, random, cell-matched-random, anti-routed, sft-unmastered-only, "
                      "rl-partial-only, joint-weighted, joint-relift, joint-bridge. v1: base, sft-all, rl-all, "
                      "sft-all-rl-all, routed, anti-routed, random, routed-dft, routed-iw-sft, joint-*."),
    click.option("--seeds", type=int, default=None, help="Training seeds per base model [v2: 2; v1: 3; --quick: 1]."),
    click.option("--total-steps", type=int, default=None,
                 help="Optimizer steps per arm (the equal-compute budget) [v2: 24; v1: 32; --quick: 4]."),
    click.option("--jobs", type=int, default=None,
                 help="v2: arm runs trained in parallel processes [default: 2, one per core]."),
    click.option("--checks-only", is_flag=True,
                 help="v2: pretrain and probe the base models, print and write the validity checks, run no arm."),
    click.option("--allow-invalid", is_flag=True,
                 help="v2: run and report the arms although a validity check failed; the report then says at its "
                      "top, in bold, that the table is not a valid test of routing."),
    click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                 help="A YAML file of experiment config fields laid over the preset (stagewise/experiments/config.py)."),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                 help="Override one config field, e.g. --set probe_samples=8 --set pretrain.steps=300 (repeatable)."),
)
