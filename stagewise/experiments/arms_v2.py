"""The second design's arms: which items each stage trains on, with which method features, at equal
optimizer steps.

Every arm trains through the toolkit from one base model: its rows come from a `stages.export` of the
base probe of the pool (policy `all`, `stage` or `random`, with `sft_replay` for the replay arms), and its
stages are `train.sft.train_sft`, `train.rl.train_rl`, `train.joint.train_joint`, or the two-stage
trainer `train.two_stage.train` when the arm uses the full re-probe or the loop (`reprobe=True`,
`rounds=N`). Both stages warm up and decay (cosine) at the learning rates the sweep chose.
"""

from __future__ import annotations

import inspect
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.errors import ConfigError
from stagewise.stages.export import export
from stagewise.train import config as C
from stagewise.train import train_joint, train_rl, train_sft
from stagewise.train.data import load_rl_rows, load_sft_rows, open_export
from stagewise.train.two_stage import train

BUCKETS = ("unmastered", "partial", "mastered")


@dataclass(frozen=True)
class ArmV2:
    name: str
    stages: tuple = ()          # ("sft", "rl"), ("sft",), ("rl",), ("joint",) or () for the base model
    export: str | None = None   # "all" | "stage" | "random": the export policy the rows come from
    sft_rows: str = "split"     # "split" (the export's SFT split) | "partial" | "cell-matched"
    rl_rows: str = "split"      # "split" (the export's RL split) | "unmastered" | "cell-matched"
    replay: bool = False        # SFT replay of mastered demonstrations (export sft_replay)
    reprobe: bool = False       # full re-probe and re-route between SFT and RL
    rounds: int = 1             # SFT -> re-probe -> RL rounds (the loop), within the same total steps
    joint_mode: str | None = None
    summary: str = ""

    @property
    def two_stage(self) -> bool:
        return self.stages == ("sft", "rl")

    @property
    def pipeline(self) -> bool:
        """Runs through the two-stage trainer (it owns the re-probe and the rounds)."""
        return self.reprobe or self.rounds > 1


ARMS_V2: dict[str, ArmV2] = {a.name: a for a in (
    ArmV2("base", summary="the pretrained model, untouched"),
    ArmV2("sft-all-rl-all", ("sft", "rl"), "all",
          summary="the usual pipeline: SFT on every pool item, then RL on every pool item (the baseline)"),
    ArmV2("routed", ("sft", "rl"), "stage",
          summary="SFT on unmastered (0/k), then RL on partial, routes from the base probe (stale)"),
    ArmV2("routed-replay", ("sft", "rl"), "stage", replay=True,
          summary="routed, with mastered demonstrations replayed in the SFT set"),
    ArmV2("routed-replay-reprobe", ("sft", "rl"), "stage", replay=True, reprobe=True,
          summary="routed with replay, and a full re-probe that re-routes every item before RL"),
    ArmV2("loop", ("sft", "rl"), "stage", replay=True, reprobe=True, rounds=2,
          summary="two rounds of SFT -> re-probe -> RL (RL's all-wrong prompts feed the next SFT), same total steps"),
    ArmV2("random", ("sft", "rl"), "random", replay=True, reprobe=True,
          summary="routed-replay-reprobe's split sizes, replay and re-probe, items assigned at random"),
    ArmV2("cell-matched-random", ("sft", "rl"), "all", "cell-matched", "cell-matched", replay=True,
          summary="the unmastered (SFT) and partial (RL) buckets' task/level mix, items drawn at random "
                  "within each cell, with replay; no re-probe (the re-probe re-routes by an export policy)"),
    ArmV2("anti-routed", ("sft", "rl"), "all", "partial", "unmastered",
          summary="routing reversed: SFT on partial, then RL on unmastered"),
    ArmV2("sft-unmastered-only", ("sft",), "stage", summary="routed SFT alone, every step"),
    ArmV2("rl-partial-only", ("rl",), "stage", summary="routed RL alone, every step"),
    ArmV2("joint-weighted", ("joint",), "stage", joint_mode="weighted",
          summary="one stage: RL loss + lambda x SFT loss each step, SFT term at the SFT rate"),
    ArmV2("joint-relift", ("joint",), "stage", joint_mode="relift",
          summary="one stage: RL, all-wrong prompts moved to an SFT buffer trained at the SFT rate"),
    ArmV2("joint-bridge", ("joint",), "stage", joint_mode="bridge",
          summary="one stage: BRIDGE cooperative SFT+RL, SFT term at the SFT rate"),
)}
PRIMARY = "sft-all-rl-all"           # the baseline every arm is compared with
PRIMARY_ARM = "routed-replay-reprobe"  # the arm of the one primary comparison


# ------------------------------------------------------------------------------ method features needed


def available_features() -> dict[str, bool]:
    """Which method features this checkout has: SFT replay in export, the full re-probe and the loop in
    the two-stage trainer, an explicit SFT rate in the joint trainer."""
    export_params = inspect.signature(export).parameters
    train_params = inspect.signature(train).parameters
    joint_keys = set(C.default_config("joint"))
    return {"sft_replay": "sft_replay" in export_params,
            "reprobe": "reprobe" in train_params and "rounds" in train_params,
            "rounds": "rounds" in train_params,
            "joint_sft_learning_rate": "sft_learning_rate" in joint_keys}


def features_needed(arm: ArmV2) -> list[str]:
    need = []
    if arm.replay and arm.export != "all":  # cell-matched draws its replay rows from the `all` export itself
        need.append("sft_replay")
    if arm.reprobe:
        need.append("reprobe")
    if arm.rounds > 1:
        need.append("rounds")
    if arm.joint_mode:
        need.append("joint_sft_learning_rate")
    return need


def resolve_arms_v2(names=None) -> list[ArmV2]:
    """Arm objects for names (list or "a,b"); default: all of them, base first. Refuses arms whose method
    feature this checkout lacks, naming the feature (never runs a stand-in)."""
    if names is None:
        names = list(ARMS_V2)
    elif isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS_V2]
    if unknown:
        raise ConfigError(f"unknown arm(s) {', '.join(unknown)}; the v2 arms are {', '.join(ARMS_V2)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--arms lists an arm twice: {names}")
    have = available_features()
    missing = {n: [f for f in features_needed(ARMS_V2[n]) if not have[f]] for n in names}
    missing = {n: f for n, f in missing.items() if f}
    if missing:
        listing = "; ".join(f"{n} needs {', '.join(f)}" for n, f in missing.items())
        raise ConfigError(f"this checkout lacks method features some arms need ({listing}); drop those arms "
                          "with --arms, or update to a stagewise with SFT replay, the full re-probe, the loop "
                          "and the joint trainer's sft_learning_rate")
    if PRIMARY in names and "base" not in names:
        names = ["base"] + names
    ordered = ["base"] + [n for n in names if n != "base"] if "base" in names else names
    return [ARMS_V2[n] for n in ordered]


def stage_steps(arm: ArmV2, cfg) -> list[int]:
    """The equal-compute split of `cfg.total_steps` over the arm's stages (per round for the loop)."""
    if not arm.stages:
        return []
    if arm.two_stage:
        return [cfg.sft_steps // arm.rounds, cfg.rl_steps // arm.rounds]
    return [cfg.total_steps]


# ------------------------------------------------------------------------------------------ row choice


def cell_matched(ids_by_cell: dict[str, list[str]], target: dict[str, int], rng: random.Random,
                 exclude=frozenset()) -> list[str]:
    """`target[cell]` ids drawn at random from each cell's ids (minus `exclude`): the bucket's task/level
    mix without the per-item probe."""
    out = []
    for cell, n in sorted(target.items()):
        choices = sorted(i for i in ids_by_cell.get(cell, []) if i not in exclude)
        out += rng.sample(choices, min(n, len(choices)))
    return out


def replay_ids(mastered: list[str], n_core: int, fraction: float, rng: random.Random) -> list[str]:
    """Mastered ids to replay so that they make up `fraction` of the SFT set of `n_core` other rows
    (as many as exist when too few)."""
    if fraction <= 0 or not mastered:
        return []
    want = round(n_core * fraction / (1 - fraction))
    return rng.sample(sorted(mastered), min(want, len(mastered)))


# --------------------------------------------------------------------------------------------- running


@dataclass
class ArmRunV2:
    """One arm on one base at one seed: the final model, the model entering RL, and the costs."""

    arm: str
    base: int
    seed: int
    model_dir: str
    sft_model: str | None = None   # the model after the (first) SFT stage
    steps: list = field(default_factory=list)
    n_rows: dict = field(default_factory=dict)
    compute: dict = field(default_factory=dict)
    zero_variance: list = field(default_factory=list)   # per RL step: fraction of zero-variance groups
    transitions: list = field(default_factory=list)     # from the two-stage trainer's re-probe, if any
    train_metrics: list = field(default_factory=list)


def run_arm_v2(arm: ArmV2, *, base: int, seed: int, base_model: str, exports: dict, pool_info: dict, cfg,
               lrs: dict, out: Path, progress: bool = False) -> ArmRunV2:
    """Train one arm from the base model; returns the final model and its costs."""
    import time as _time

    run = ArmRunV2(arm.name, base, seed, base_model, steps=stage_steps(arm, cfg))
    if not arm.stages:
        return run
    c0, t0 = _time.process_time(), _time.perf_counter()
    export_dir = exports[arm_export_key(arm, seed)]
    if arm.pipeline:
        _run_pipeline(arm, run, export_dir, base_model, seed, cfg, lrs, out, progress)
    elif arm.joint_mode:
        _run_joint(arm, run, export_dir, base_model, seed, cfg, lrs, out, progress)
    else:
        _run_stages(arm, run, export_dir, exports, base_model, seed, cfg, lrs, pool_info, out, progress)
    run.compute["cpu_s"] = round(_time.process_time() - c0, 1)
    run.compute["wall_s"] = round(_time.perf_counter() - t0, 1)
    return run


def arm_export_key(arm: ArmV2, seed: int) -> tuple:
    """Which export an arm reads: (policy, replay, seed for random)."""
    replay = arm.replay and arm.export != "all"  # cell-matched builds its replay from the `all` export
    return (arm.export, replay, seed if arm.export == "random" else None)


def _sft_kwargs(cfg, lrs, steps, seed):
    return dict(max_steps=steps, learning_rate=lrs["sft"], batch_size=cfg.sft_batch_size, seed=seed,
                lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup(steps), save_steps=10_000)


def _rl_kwargs(cfg, lrs, steps, seed):
    return dict(loss_type="grpo", num_generations=cfg.num_generations, max_steps=steps,
                learning_rate=lrs["rl"], batch_size=cfg.rl_prompts, seed=seed,
                lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup(steps),
                max_new_tokens=cfg.max_new_tokens, save_steps=10_000, sft_eval_steps=0, verifier_workers=1)


def _rows_for(arm: ArmV2, stage: str, export_dir: Path, exports: dict, pool_info: dict, cfg, seed: int):
    """The rows one stage trains on, or None for the export's split as written."""
    choice = arm.sft_rows if stage == "sft" else arm.rl_rows
    if choice == "split":
        return None
    export = open_export(export_dir)
    rows = load_sft_rows(export) if stage == "sft" else load_rl_rows(export)
    bucket_of = pool_info["bucket_of"]
    if choice in BUCKETS:
        return [r for r in rows if bucket_of.get(str(r["id"])) == choice]
    # cell-matched: the bucket this stage would get under routing, its cell counts, drawn at random
    rng = random.Random(f"cell-matched:{seed}:{stage}")
    bucket = "unmastered" if stage == "sft" else "partial"
    target: dict[str, int] = {}
    for pid, b in bucket_of.items():
        if b == bucket:
            target[pool_info["cell_of"][pid]] = target.get(pool_info["cell_of"][pid], 0) + 1
    by_id = {str(r["id"]): r for r in rows}
    ids_by_cell: dict[str, list[str]] = {}
    for pid in by_id:
        ids_by_cell.setdefault(pool_info["cell_of"][pid], []).append(pid)
    mastered = [i for i in by_id if bucket_of.get(i) == "mastered"]
    core = cell_matched(ids_by_cell, target, rng, exclude=frozenset(mastered) if stage == "sft" and arm.replay
                        else frozenset())
    chosen = [by_id[i] for i in core]
    if stage == "sft" and arm.replay:
        chosen += [by_id[i] for i in replay_ids([i for i in mastered if i not in core], len(core),
                                                cfg.sft_replay, rng)]
    return chosen


def _run_stages(arm, run, export_dir, exports, base_model, seed, cfg, lrs, pool_info, out, progress):
    model = base_model
    for i, (stage, n_steps) in enumerate(zip(arm.stages, run.steps)):
        rows = _rows_for(arm, stage, export_dir, exports, pool_info, cfg, seed)
        if rows is not None and not rows:
            raise ConfigError(f"arm {arm.name}: no {stage} rows for this base model's probe; "
                              "enlarge pool_per_cell")
        stage_out = out / f"{i + 1}-{stage}"
        if stage == "sft":
            res = train_sft(export_dir, model, stage_out, rows=rows, progress=progress, **_sft_kwargs(cfg, lrs, n_steps, seed))
            run.sft_model = res.model_dir
        else:
            res = train_rl(export_dir, model, stage_out, rows=rows, progress=progress, **_rl_kwargs(cfg, lrs, n_steps, seed))
        run.n_rows[stage] = res.config.get("n_train")
        run.train_metrics.append(res.metrics)
        _account(run, stage, stage_out / "metrics.jsonl", n_steps, res.config.get("n_train"), cfg)
        _step_cpu(run, stage, res)
        model = res.model_dir
    run.model_dir = model


def _run_joint(arm, run, export_dir, base_model, seed, cfg, lrs, out, progress):
    n_steps = run.steps[0]
    stage_out = out / "1-joint"
    res = train_joint(export_dir, base_model, stage_out, mode=arm.joint_mode, max_steps=n_steps, seed=seed,
                      batch_size=cfg.rl_prompts, num_generations=cfg.num_generations,
                      learning_rate=lrs["rl"], sft_learning_rate=lrs["sft"], progress=progress,
                      max_new_tokens=cfg.max_new_tokens, sft_batch_size=cfg.sft_batch_size,
                      sft_weight=cfg.joint_sft_weight, buffer_size=cfg.sft_batch_size,
                      lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup(n_steps),
                      save_steps=10_000, sft_eval_steps=0, verifier_workers=1)
    run.n_rows = {"rl": res.config.get("n_rl"), "sft": res.config.get("n_sft")}
    run.train_metrics.append(res.metrics)
    _account(run, "joint", stage_out / "metrics.jsonl", n_steps, res.config.get("n_rl"), cfg)
    _step_cpu(run, "joint", res)
    run.model_dir = res.model_dir


def _run_pipeline(arm, run, export_dir, base_model, seed, cfg, lrs, out, progress):
    """Re-probe and loop arms: the toolkit's two-stage trainer runs the rounds and the re-probe."""
    sft_steps, rl_steps = run.steps
    sft = _sft_kwargs(cfg, lrs, sft_steps, seed)
    rl = _rl_kwargs(cfg, lrs, rl_steps, seed)
    for d in (sft, rl):
        d.pop("seed")
    rl.pop("verifier_workers")
    res = train(export_dir, base_model, out / "pipeline", reprobe=arm.reprobe, rounds=arm.rounds, seed=seed,
                sft=sft, rl={**rl, "verifier_workers": 1}, progress=progress,
                eval={"enabled": False, "sft_holdout": 0.0})  # every SFT row trains, as in the other arms
    pdir = out / "pipeline"
    for stage_dir in sorted(pdir.glob("**/metrics.jsonl")):
        stage = "sft" if "sft" in stage_dir.parent.name else "rl"
        _account(run, stage, stage_dir, None, None, cfg)
    loop = getattr(res, "loop", None)  # the rounds' record: every round's SFT and RL runs, the transitions
    sft_runs = list(loop.sft) if loop is not None and loop.sft else [res.sft] if res.sft else []
    rl_runs = list(loop.rl) if loop is not None and loop.rl else [res.rl] if res.rl else []
    run.sft_model = sft_runs[0].model_dir if sft_runs else None  # the model after the first SFT stage
    for stage, runs in (("sft", sft_runs), ("rl", rl_runs)):
        for r in runs:
            _step_cpu(run, stage, r)
    run.n_rows = {"sft": sum(r.config.get("n_train") or 0 for r in sft_runs),
                  "rl": sum(r.config.get("n_train") or 0 for r in rl_runs)}
    steps = run.compute.get("steps", {})
    for stage, per_step in (("sft", cfg.sft_batch_size), ("rl", cfg.rl_prompts)):
        if run.n_rows.get(stage) and steps.get(stage):
            # Rows summed over rounds: an item trained in both rounds counts once per round.
            run.compute.setdefault("epochs_per_item", {})[stage] = round(steps[stage] * per_step / run.n_rows[stage], 3)
    if loop is not None and loop.transitions:
        run.transitions = list(loop.transitions)
    elif (pdir / "transitions.parquet").exists():
        import polars as pl

        run.transitions = pl.read_parquet(pdir / "transitions.parquet").to_dicts()
    run.model_dir = res.model_dir


def _step_cpu(run: ArmRunV2, stage: str, res) -> None:
    """The trainer's CPU seconds per optimizer step (steadier than wall time on a shared machine): what the
    budget of a longer run is projected from."""
    times = (getattr(res, "extra", None) or {}).get("step_cpu_s") or []
    run.compute.setdefault("step_cpu_s", {}).setdefault(stage, []).extend(round(t, 3) for t in times)


def _account(run: ArmRunV2, stage: str, metrics_path: Path, n_steps, n_rows, cfg) -> None:
    """Add one stage's costs to the run: trained tokens, generated tokens, epochs per item, zero-variance
    GRPO groups per step (TRL's per-step logs)."""
    comp = run.compute
    if not metrics_path.exists():
        return
    recs = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    steps = [r for r in recs if "loss" in r and "train_runtime" not in r]
    tokens = max((r.get("num_tokens", 0) for r in recs), default=0)
    comp["trained_tokens"] = comp.get("trained_tokens", 0) + int(tokens)
    gen = sum(r["completions/mean_length"] * cfg.rl_batch for r in recs if "completions/mean_length" in r)
    comp["generated_tokens"] = comp.get("generated_tokens", 0) + round(gen)
    run.zero_variance += [r["frac_reward_zero_std"] for r in recs if "frac_reward_zero_std" in r]
    n = n_steps if n_steps is not None else len(steps)
    comp.setdefault("steps", {})[stage] = comp.get("steps", {}).get(stage, 0) + n
    if n_rows:
        per_step = cfg.sft_batch_size if stage == "sft" else cfg.rl_prompts
        comp.setdefault("epochs_per_item", {})[stage] = round(n * per_step / n_rows, 3)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
