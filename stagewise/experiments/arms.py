"""The arms of the experiment: which export, which rows to which stage, which loss.

Every arm trains through the toolkit: its data is a `stages.export` directory of the base probe
(policy `stage`, `all` or `random`), and its stages are `train.sft.train_sft` and `train.rl.train_rl`
(or `train.joint.train_joint` for the cooperative modes). The only thing an arm decides
here is *which exported rows* go to which stage: the anti-routed control needs demonstrations for
partial items, so it takes the `all` export's rows and keeps those of one bucket.

Equal compute: every arm runs `total_steps` optimizer steps at `batch_size` sequences per step;
two-stage arms give `sft_fraction` of the steps to SFT and the rest to RL.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.errors import ConfigError
from stagewise.train import train_joint, train_rl, train_sft
from stagewise.train.data import load_rl_rows, load_sft_rows, open_export


@dataclass(frozen=True)
class Stage:
    kind: str                  # "sft" | "rl" | "joint"
    split: str = ""            # export split to read ("sft" or "rl"); "" for joint (reads the whole export)
    bucket: str | None = None  # keep only rows of this base-probe bucket (anti-routed)
    loss: str = "nll"          # SFT loss, or the joint mode


@dataclass(frozen=True)
class Arm:
    name: str
    policy: str | None         # the export policy whose rows the arm trains on; None = no training
    stages: tuple = ()
    summary: str = ""

    @property
    def two_stage(self) -> bool:
        return len(self.stages) == 2


def _routed(name: str, loss: str, summary: str) -> Arm:
    return Arm(name, "stage", (Stage("sft", "sft", loss=loss), Stage("rl", "rl")), summary)


ARMS: dict[str, Arm] = {a.name: a for a in (
    Arm("base", None, (), "the pretrained model, untouched"),
    Arm("sft-all", "all", (Stage("sft", "sft"),), "SFT on every item's worked solution, all steps"),
    Arm("rl-all", "all", (Stage("rl", "rl"),), "GRPO on every item, all steps"),
    Arm("sft-all-rl-all", "all", (Stage("sft", "sft"), Stage("rl", "rl")),
        "the usual pipeline: SFT on everything, then RL on everything"),
    _routed("routed", "nll", "stagewise: SFT on unmastered (c = 0), then RL on partial (0 < c < k)"),
    Arm("anti-routed", "all", (Stage("sft", "sft", bucket="partial"), Stage("rl", "rl", bucket="unmastered")),
        "the reverse: SFT on partial, then RL on unmastered"),
    Arm("random", "random", (Stage("sft", "sft"), Stage("rl", "rl")),
        "routed pool sizes, items assigned at random (the control)"),
    _routed("routed-dft", "dft", "routed, with DFT as the SFT loss"),
    _routed("routed-iw-sft", "iw-sft", "routed, with importance-weighted SFT"),
    # Single-stage cooperative SFT+RL on the routed export, all steps in one stage.
    Arm("joint-weighted", "stage", (Stage("joint", loss="weighted"),), "RL loss + lambda x SFT loss each step"),
    Arm("joint-relift", "stage", (Stage("joint", loss="relift"),), "RL with all-wrong prompts moved to SFT"),
    Arm("joint-bridge", "stage", (Stage("joint", loss="bridge"),), "BRIDGE cooperative bilevel SFT+RL (its RL-only shadow's rollouts are not in the token count)"),
)}
DEFAULT_ARMS = ("base", "sft-all", "rl-all", "sft-all-rl-all", "routed", "anti-routed", "random",
                "routed-dft", "routed-iw-sft")
JOINT_ARMS = ("joint-weighted", "joint-relift", "joint-bridge")


def joint_available() -> bool:
    try:
        from stagewise.train.joint import train_joint  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_arms(names) -> list[Arm]:
    """Arm objects for a list or comma-separated string of names; default: the nine arms of the first
    design (the joint-* arms are opt-in: bridge alone samples twice the rollouts of an RL step)."""
    if names is None:
        names = list(DEFAULT_ARMS)
    elif isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    if any(n in JOINT_ARMS for n in names) and not joint_available():
        raise ConfigError("the joint-* arms need stagewise.train.joint, which is not installed in "
                          "this checkout; drop them from --arms")
    if len(set(names)) != len(names):
        raise ConfigError(f"--arms lists an arm twice: {names}")
    return [ARMS[n] for n in names]


def stage_steps(arm: Arm, cfg) -> list[int]:
    """The equal-compute split of `cfg.total_steps` over the arm's stages."""
    if not arm.stages:
        return []
    if arm.two_stage:
        return [cfg.sft_steps, cfg.rl_steps]
    return [cfg.total_steps]


# ------------------------------------------------------------------------------------------- running


@dataclass
class ArmRun:
    """One arm at one seed: the final model directory and the cost of getting there."""

    arm: str
    seed: int
    model_dir: str
    stage_models: list = field(default_factory=list)  # model after each stage (before-RL = after stage 1)
    steps: list = field(default_factory=list)
    n_rows: list = field(default_factory=list)
    wall_s: float = 0.0
    generated_tokens: int = 0
    train_metrics: list = field(default_factory=list)


def stage_rows(export_dir: Path, stage: Stage, bucket_of: dict) -> list[dict] | None:
    """The exported rows of one stage (None = the whole split, as exported)."""
    if stage.bucket is None:
        return None

    export = open_export(export_dir)
    rows = load_sft_rows(export) if stage.split == "sft" else load_rl_rows(export)
    return [r for r in rows if bucket_of.get(str(r["id"])) == stage.bucket]


def run_arm(arm: Arm, *, seed: int, base_model: str, exports: dict, bucket_of: dict, cfg, out: Path,
            progress: bool = False) -> ArmRun:
    """Train one arm from the base model (stages in order); returns the final model and its cost."""
    steps = stage_steps(arm, cfg)
    run = ArmRun(arm.name, seed, base_model, [base_model], steps)
    model = base_model
    t0 = time.perf_counter()
    for i, (stage, n_steps) in enumerate(zip(arm.stages, steps)):
        export_dir = exports[(arm.policy, seed)] if arm.policy == "random" else exports[arm.policy]
        stage_out = out / f"{i + 1}-{stage.kind}"
        rows = stage_rows(export_dir, stage, bucket_of)
        if rows is not None and not rows:
            raise ConfigError(f"arm {arm.name}: no exported {stage.split} rows in bucket {stage.bucket}; "
                              "the base probe found none (enlarge pool_per_level)")
        result = _train_stage(stage, export_dir, model, stage_out, rows, n_steps, seed, cfg, progress)
        run.n_rows.append(len(rows) if rows is not None else result.config.get("n_train"))
        run.train_metrics.append(result.metrics)
        run.generated_tokens += generated_tokens(stage_out / "metrics.jsonl", cfg.batch_size)
        model = result.model_dir
        run.stage_models.append(model)
    run.model_dir = model
    run.wall_s = time.perf_counter() - t0
    return run


def _train_stage(stage: Stage, export_dir: Path, model: str, out: Path, rows, n_steps: int, seed: int, cfg,
                 progress: bool):
    if stage.kind == "sft":
        return train_sft(export_dir, model, out, loss=stage.loss, max_steps=n_steps,
                         learning_rate=cfg.sft_learning_rate, batch_size=cfg.batch_size, seed=seed,
                         rows=rows, progress=progress, save_steps=10_000)
    if stage.kind == "rl":
        return train_rl(export_dir, model, out, loss_type=cfg.rl_loss_type, num_generations=cfg.num_generations,
                        max_steps=n_steps, learning_rate=cfg.rl_learning_rate,
                        batch_size=cfg.batch_size // cfg.num_generations, seed=seed, rows=rows,
                        progress=progress, max_new_tokens=cfg.max_new_tokens, save_steps=10_000,
                        sft_eval_steps=0, verifier_workers=1)

    # Same step count and RL batch as the other arms; the SFT term's batch is the SFT stage's batch, and
    # the relift buffer is one SFT batch so that it fills within a short run.
    return train_joint(export_dir, model, out, mode=stage.loss, max_steps=n_steps, seed=seed,
                       batch_size=cfg.batch_size // cfg.num_generations, num_generations=cfg.num_generations,
                       learning_rate=cfg.rl_learning_rate, progress=progress, max_new_tokens=cfg.max_new_tokens,
                       sft_batch_size=cfg.batch_size, buffer_size=cfg.batch_size, save_steps=10_000,
                       sft_eval_steps=0, verifier_workers=1)


def generated_tokens(metrics_path: Path, completions_per_step: int) -> int:
    """Completion tokens an RL stage sampled, from TRL's per-step logs (0 for SFT stages)."""
    if not metrics_path.exists():
        return 0
    total = 0.0
    for line in metrics_path.read_text().splitlines():
        rec = json.loads(line)
        # logging_steps is 1: each record is one step's mean completion length.
        if "completions/mean_length" in rec:
            total += rec["completions/mean_length"] * completions_per_step
    return round(total)
