"""The experiment, top to bottom: pretrain (cached) -> probe the base model -> route and export ->
train every arm at every seed -> evaluate on held-out items -> report.

Everything after pretraining goes through the toolkit (curate.probe, stages.routing, stages.export,
train.sft / train.rl, curate.evaluate, train.heldout_loss.sft_loss); this module only decides what to
call with which inputs and collects the numbers. Each (arm, seed) writes its completion marker
`arm.done.json` (curate/steps.py) when it finishes, so an interrupted run, re-run with the same command,
continues where it stopped; an arm finished with other settings runs again.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.errors import ConfigError
from stagewise.curate.evaluate import evaluate
from stagewise.curate.probe import probe
from stagewise.curate.steps import OtherOptionsError, Step
from stagewise.curate.store import ProbeStore

# runner_v2 reuses export_once from here: each imports the other as a module.
from stagewise.experiments import runner_v2, testbed
from stagewise.experiments.arms import ArmRun, resolve_arms, run_arm
from stagewise.experiments.config import ExperimentConfig, configure, preset
from stagewise.experiments.pretrain import PretrainResult, pretrain
from stagewise.experiments.results import BUCKETS, arm_record, write_report
from stagewise.stages.export import export
from stagewise.stages.routing import route
from stagewise.train.data import load_sft_rows, open_export

POOL_PROBE_SEED = 0
HELDOUT_PROBE_SEED = 1  # an independent probe: held-out buckets are not chosen on the evaluation's samples
EVAL_SEED_BASE = 1000  # the evaluation seed of training seed s is EVAL_SEED_BASE + s, shared by every arm


@dataclass
class ExperimentResult:
    out: str
    records: list
    paths: dict
    context: dict = field(default_factory=dict)


DESIGNS = ("v2", "v1")
_UNSET_MEANS_DEFAULT = ("total_steps", "jobs", "checks_only", "allow_invalid", "seeds", "arms")


def experiment(out, *, design: str = "v2", **kwargs):
    """Run the stage-specific experiment into `out`. `design="v2"` (the default): three tasks x 2-4 digits,
    three base models, validity checks, a learning-rate sweep and the arms of the second design
    (runner_v2.experiment_v2); `design="v1"`: the first design, the addition ladder (experiment_v1)."""
    # Options left unset (None, or False for a flag) take the design's default.
    kwargs = {k: v for k, v in kwargs.items() if not (k in _UNSET_MEANS_DEFAULT and (v is None or v is False))}
    if design == "v1":
        only_v2 = [k for k in ("jobs", "checks_only", "allow_invalid") if k in kwargs]
        if only_v2:
            raise ConfigError(f"--{only_v2[0].replace('_', '-')} is an option of --design v2")
        return experiment_v1(out, **kwargs)
    if design == "v2":
        if kwargs.pop("test", False):
            raise ConfigError("test=True is the first design's preset; for design v2 pass config=...")
        return runner_v2.experiment_v2(out, **kwargs)
    raise ConfigError(f"unknown experiment design {design!r}; choose from {', '.join(DESIGNS)}")


def experiment_v1(out, *, quick: bool = False, arms=None, seeds: int | None = None,
                  config: ExperimentConfig | str | None = None, test: bool = False, progress: bool = True,
                  log=None, command: str | None = None, **overrides) -> ExperimentResult:
    """The first design into `out` (results.md, results.json, accuracy_by_bucket.png).

    `quick`: one seed, 4 steps, all nine arms (about a minute of CPU); `arms`: names or "a,b,c";
    `seeds`: how many training seeds; `overrides`: any ExperimentConfig field (total_steps=...).
    The base model is always evaluated (forgetting is measured against it)."""
    if seeds is not None:
        overrides["seeds"] = seeds
    cfg = configure(preset(quick=quick, test=test), config, overrides)
    chosen = resolve_arms(arms)
    if chosen[0].name != "base":
        chosen = [a for a in resolve_arms(["base"])] + [a for a in chosen if a.name != "base"]
    say = log or (lambda msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    if cfg.base_model:
        pre = PretrainResult(cfg.base_model, True, {"given": cfg.base_model},
                             {"n_parameters": _n_parameters(cfg.base_model)})
    else:
        say("pretraining the tiny model (cached by config hash)")
        pre = pretrain(cfg.pretrain, prompt_template=cfg.prompt_template)
    base_model = pre.model_dir

    pool = testbed.ladder(list(cfg.levels), cfg.pool_per_level, "probe", seed=0)
    heldout = testbed.ladder(list(cfg.levels), cfg.heldout_per_level, "heldout", seed=0)

    say(f"probing the base model: {len(pool)} pool items and {len(heldout)} held-out items, k={cfg.probe_samples}")
    pool_store = _probe(pool, base_model, out / "probe" / "pool.duckdb", POOL_PROBE_SEED, cfg, progress)
    held_store = _probe(heldout, base_model, out / "probe" / "heldout.duckdb", HELDOUT_PROBE_SEED, cfg, progress)

    pool_assign = route(pool_store, policy="stage")
    held_assign = route(held_store, policy="stage")
    bucket_of = dict(zip(pool_assign["id"].to_list(), pool_assign["bucket"].to_list()))
    level_of = {p.id: testbed.level_of(p) for p in pool + heldout}
    base_probe = {"pool": _counts(pool_assign), "heldout": _counts(held_assign),
                  "pool_by_level": _by_level(pool_assign, level_of),
                  "heldout_by_level": _by_level(held_assign, level_of)}
    say(f"base buckets: pool {base_probe['pool']}, held-out {base_probe['heldout']}")

    exports = _exports(pool_store, held_store, out / "exports", chosen, cfg)
    heldout_sft_rows = _heldout_sft_rows(exports["heldout-sft"])

    per_arm: dict[str, list[dict]] = {a.name: [] for a in chosen}
    for seed in range(cfg.seeds):
        base_metrics = None
        for arm in chosen:
            run_dir = out / "arms" / arm.name / f"seed{seed}"
            say(f"arm {arm.name}, seed {seed}")
            metrics = _run_one(arm, seed, run_dir, base_model, exports, bucket_of, heldout, held_assign,
                               heldout_sft_rows, cfg, progress)
            if arm.name == "base":
                base_metrics = metrics
            if base_metrics is not None and metrics.get("acc_mastered") is not None \
                    and base_metrics.get("acc_mastered") is not None:
                metrics["forgetting"] = base_metrics["acc_mastered"] - metrics["acc_mastered"]
            per_arm[arm.name].append(metrics)
            say(f"  pass@1 {metrics.get('pass@1', float('nan')):.3f}  "
                + "  ".join(f"{b} {metrics.get('acc_' + b, float('nan')):.3f}" for b in BUCKETS))

    records = [arm_record(a.name, a.summary, per_arm[a.name]) for a in chosen]
    context = {
        "command": command or _command(quick, test, arms, cfg),
        "config": cfg.to_dict(),
        "model": {"dir": base_model, "pretrain": pre.config, **pre.stats},
        "base_probe": base_probe,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "notes": _notes(base_probe, cfg),
    }
    paths = write_report(out, records=records, context=context)
    return ExperimentResult(str(out), records, paths, context)


# --------------------------------------------------------------------------------------------- steps


def _probe(problems, model: str, store: Path, seed: int, cfg: ExperimentConfig, progress: bool) -> str:
    store.parent.mkdir(parents=True, exist_ok=True)
    probe(problems, model=model, store=str(store), backend="hf", num_samples=cfg.probe_samples,
          temperature=1.0, top_p=1.0, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.probe_batch_size,
          seed=seed, prompt_template=cfg.prompt_template, progress=progress)
    return str(store)


def _exports(pool_store: str, held_store: str, root: Path, chosen, cfg: ExperimentConfig) -> dict:
    """One export per policy the chosen arms read (random: one per seed), plus the held-out SFT rows."""
    wanted = {}
    for arm in chosen:
        if arm.policy == "random":
            for s in range(cfg.seeds):
                wanted[("random", s)] = {"policy": "random", "seed": s}
        elif arm.policy is not None:
            wanted[arm.policy] = {"policy": arm.policy}
    out = {}
    for key, opts in wanted.items():
        name = key if isinstance(key, str) else f"{key[0]}-seed{key[1]}"
        out[key] = export_once(pool_store, root / name, **opts)
    # Every held-out item with its worked solution, exported the way SFT rows are: the held-out SFT loss.
    out["heldout-sft"] = export_once(held_store, root / "heldout-sft", policy="sft-only")
    return out


def export_once(store: str, target: Path, **options) -> Path:
    """A trl export of `store` in `target`: reused when it was made with the same options and probe run,
    replaced when with others (the experiment owns the directory and its settings changed). Validation
    is off: the experiment holds its own items out, and every exported row trains or measures."""
    try:
        export(store, target, format="trl", card=False, validation=False, **options)
    except OtherOptionsError:
        export(store, target, format="trl", card=False, overwrite=True, validation=False, **options)
    return target


def _heldout_sft_rows(export_dir: Path) -> list[dict]:
    return load_sft_rows(open_export(export_dir))


def _run_one(arm, seed: int, run_dir: Path, base_model: str, exports: dict, bucket_of: dict, heldout,
             held_assign, heldout_sft_rows, cfg: ExperimentConfig, progress: bool) -> dict:
    settings = {k: v for k, v in cfg.to_dict().items() if k != "seeds"}  # more seeds keep the finished ones
    step = Step(run_dir, "arm", {"arm": arm.name, "seed": seed, "base_model": base_model, "config": settings})
    if step.done():
        return step.result()
    shutil.rmtree(run_dir, ignore_errors=True)  # a half-finished arm restarts from the base model
    run_dir.mkdir(parents=True)
    run: ArmRun = run_arm(arm, seed=seed, base_model=base_model, exports=exports, bucket_of=bucket_of, cfg=cfg,
                          out=run_dir, progress=progress)
    t0 = time.perf_counter()
    metrics = {"seed": seed, **_evaluate(run.model_dir, heldout, held_assign, seed, cfg, run_dir / "eval.duckdb")}
    metrics.update(_sft_losses(run, arm, heldout_sft_rows))
    metrics.update({"train_wall_s": round(run.wall_s, 1), "eval_wall_s": round(time.perf_counter() - t0, 1),
                    "generated_tokens": run.generated_tokens, "steps": run.steps, "n_rows": run.n_rows})
    step.mark(metrics)
    return metrics


def _evaluate(model_dir: str, heldout, held_assign, seed: int, cfg: ExperimentConfig, store: Path) -> dict:
    """Held-out pass@1 / pass@k overall, per base-probe bucket (curate.evaluate) and per level (read back
    from the evaluation's store)."""
    res = evaluate(model_dir, heldout, buckets=held_assign.select(["id", "bucket"]),
                   num_samples=cfg.eval_samples, ks=tuple(cfg.ks), backend="hf", temperature=1.0, top_p=1.0,
                   max_new_tokens=cfg.max_new_tokens, prompt_template=cfg.prompt_template,
                   seed=EVAL_SEED_BASE + seed, batch_size=cfg.probe_batch_size, progress=False, store=str(store))
    metrics = metrics_from_eval(res.table, cfg.ks)
    with ProbeStore(str(store), read_only=True) as st:
        counts = st.sample_counts(res.run_id)
    by_level: dict[int, list[float]] = {}
    for p in heldout:
        n, c = counts.get(p.id, (0, 0))
        if n:
            by_level.setdefault(testbed.level_of(p), []).append(c / n)
    for lvl, vals in sorted(by_level.items()):
        metrics[f"acc_level{lvl}"] = sum(vals) / len(vals)
    return metrics


def metrics_from_eval(table, ks) -> dict:
    """Pick the overall row and the bucket rows out of curate.evaluate's table."""
    rows = table.to_dicts()
    out = {}
    for r in rows:
        group = str(r.get("group", ""))
        if group in ("all", "overall", "total"):
            for k in ks:
                out[f"pass@{k}"] = r.get(f"pass@{k}")
            out["n_items"] = r.get("n_items")
        for b in BUCKETS:
            if group == b or group.endswith(":" + b) or group == f"bucket={b}":
                out[f"acc_{b}"] = r.get("pass@1")
                out[f"n_{b}"] = r.get("n_items")
    return out


def _sft_losses(run: ArmRun, arm, rows) -> dict:
    """Held-out SFT loss of the model entering RL and of the final model (train.heldout_loss.sft_loss)."""
    from stagewise.train.heldout_loss import sft_loss, sft_token_batches

    def loss_of(model_dir: str) -> float:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        net = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return sft_loss(net, sft_token_batches(rows, tok))

    final = loss_of(run.model_dir)
    out = {"sft_loss_final": final}
    kinds = [s.kind for s in arm.stages]
    # RL runs in the "rl" stage, or throughout a single-stage "joint" run (it starts from the base model).
    rl_stage = next((i for i, k in enumerate(kinds) if k in ("rl", "joint")), None)
    if rl_stage is not None:
        out["sft_loss_before_rl"] = loss_of(run.stage_models[rl_stage])
        out["sft_loss_after_rl"] = final
    return out


# ------------------------------------------------------------------------------------------ reporting


def _n_parameters(model_dir: str) -> int:
    from safetensors import safe_open

    total = 0
    for f in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a dict
                n = 1
                for d in fh.get_slice(key).get_shape():
                    n *= int(d)
                total += n
    return total


def _counts(assign) -> dict:
    counts = {b: 0 for b in BUCKETS}
    for b in assign["bucket"].to_list():
        counts[b] = counts.get(b, 0) + 1
    return counts


def _by_level(assign, level_of: dict) -> dict:
    table: dict = {}
    for pid, b in zip(assign["id"].to_list(), assign["bucket"].to_list()):
        lvl = str(level_of.get(pid, "?"))
        table.setdefault(lvl, {bb: 0 for bb in BUCKETS})[b] = table.setdefault(lvl, {}).get(b, 0) + 1
    return dict(sorted(table.items()))


def _notes(base_probe: dict, cfg: ExperimentConfig) -> list[str]:
    notes = []
    for split in ("pool", "heldout"):
        empty = [b for b, n in base_probe[split].items() if n == 0]
        if empty:
            notes.append(f"the base probe found no {', '.join(empty)} items in the {split}: "
                         "those columns cannot be compared")
    if cfg.seeds < 3:
        notes.append(f"{cfg.seeds} seed(s): too few for intervals that separate arms; the default is 3")
    return notes


def _command(quick: bool, test: bool, arms, cfg: ExperimentConfig) -> str:
    parts = ["stagewise experiment --design v1 --out DIR"]
    if quick:
        parts.append("--quick")
    if arms:
        parts.append("--arms " + (arms if isinstance(arms, str) else ",".join(arms)))
    parts.append(f"--seeds {cfg.seeds}")
    return " ".join(parts)
