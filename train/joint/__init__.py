"""Cooperative single-stage SFT+RL: `weighted`, `relift` and `bridge`, each a small subclass of TRL's
GRPOTrainer (generation, advantages, the GRPO-family loss, accelerate, checkpoints all stay TRL's).

    train_joint("export/", "smollm2-135m", "runs/j", mode="relift", buffer_size=128)

One module per mode, each with its update rule as small pure functions beside its trainer:
weighted.py (`sft_weight_at`, `weighted_loss`), relift.py (`admit`, `full_updates`) and bridge.py
(`base_objective`, `adapter_objective`, `adapter_gradient`); sft_term.py holds the SFT side they share.
Each module's docstring states its rule and our reading of the paper.

Sources: "Beyond Two-Stage Training: Cooperative SFT and RL for LLM Reasoning" (BRIDGE, arXiv 2509.06948);
"On the Non-decoupling of SFT and RL in Post-training" (arXiv 2601.07389: either order undoes part of
the other, so both the held-out SFT loss and the reward are tracked throughout); ReLIFT (arXiv 2506.07527).
"""

from __future__ import annotations

from contextlib import ExitStack

from stagewise.curate.errors import InputError
from stagewise.train import config as C
from stagewise.train.common import TrainResult, open_recipe, start_run
from stagewise.train.data import load_rl_rows, load_sft_rows
from stagewise.train.joint import bridge, relift, weighted
from stagewise.train.joint.bridge import BridgeTrainer
from stagewise.train.joint.relift import ReliftTrainer
from stagewise.train.joint.sft_term import SFTBatcher, collate, sft_objective, sft_scale, target_tokens
from stagewise.train.joint.weighted import WeightedJointTrainer
from stagewise.train.rewards import VerifierReward
from stagewise.train.rl import check_rl_model, resolve_sampling

MODES = C.JOINT_MODES  # one list, in train/config.py (the command line offers the same)
_MODE_MODULES = {"weighted": weighted, "relift": relift, "bridge": bridge}

__all__ = ["MODES", "BridgeTrainer", "ReliftTrainer", "SFTBatcher", "WeightedJointTrainer", "collate",
           "resolve_sft_learning_rate", "sft_objective", "sft_scale", "target_tokens", "train_joint"]


def train_joint(data, model, out, *, mode: str | None = None, max_steps: int | None = None,
                learning_rate: float | None = None, batch_size: int | None = None, seed: int | None = None,
                resume: bool = False, config=None, dry_run: bool = False, progress: bool = True,
                sft_eval_rows: list[dict] | None = None, sft_rows: list[dict] | None = None,
                rl_rows: list[dict] | None = None, verify: bool = True, **overrides) -> TrainResult:
    """Single-stage cooperative SFT+RL on an export (SFT split = demonstrations, RL split = prompts).

    mode: weighted | relift | bridge (None: the config's, default weighted); see the mode's module for
    its update rule and source.
    Options: stagewise/configs/train_joint.yaml (the RL options plus the joint ones). `sft_rows`/`rl_rows`
    replace the export's splits (the pipeline passes the SFT split minus its held-out part)."""
    cfg, export = open_recipe("joint", config, data, verify=verify, mode=mode, max_steps=max_steps,
                              learning_rate=learning_rate, batch_size=batch_size, seed=seed, **overrides)
    cfg = resolve_sampling(resolve_sft_learning_rate(cfg), export.sampling)
    if cfg["mode"] == "bridge":
        bridge.check_config(cfg)
    if rl_rows is None:
        rl_rows = load_rl_rows(export)
    if sft_rows is None:
        sft_rows = load_sft_rows(export) if export.has("sft") and _nonempty(export, "sft") else []
    if not sft_rows and cfg["mode"] in ("weighted", "bridge"):
        raise InputError(f"mode {cfg['mode']} needs SFT demonstrations and the SFT split is empty or missing",
                         path=str(export.root), fix="use --mode relift, or export with an SFT split")
    run = start_run(f"joint-{cfg['mode']}", data, model, out, cfg, export, {"n_rl": len(rl_rows),
                    "n_sft": len(sft_rows)}, resume=resume, dry_run=dry_run, progress=progress, verify=verify,
                    sft_eval_rows=sft_eval_rows)
    if run.finished:
        return run.finished
    check_rl_model(cfg, run.model_path)
    rule = _MODE_MODULES[cfg["mode"]]
    with ExitStack() as resources:
        reward = VerifierReward(workers=cfg["verifier_workers"], timeout_s=cfg["verifier_timeout_s"])
        resources.callback(reward.close)
        trainer = rule.build_trainer(run, cfg, rl_rows, sft_rows, reward, export, resources)
        return run.train(trainer, extra=lambda: {"verifier_status": dict(reward.status_counts),
                                                 **rule.result_extra(trainer, run.out)})


def resolve_sft_learning_rate(cfg: dict) -> dict:
    """Make the SFT term's step size explicit and record it (a comparison with two-stage SFT must know it).

    `sft_learning_rate` unset means the SFT stage's own default (train_sft.yaml's learning_rate), so
    joint and two-stage SFT take SFT steps of the same size. relift takes its SFT updates at exactly that
    rate. weighted and bridge add the SFT term to the RL loss in one optimizer step at the RL rate; their
    SFT term is multiplied by sft_learning_rate / learning_rate (on top of λ or α), which under plain SGD
    is exactly an SFT step at sft_learning_rate (under AdamW it sets the SFT share of the shared,
    normalised step). Recorded: sft_learning_rate, sft_scale, and the SFT term's effective rate."""
    cfg = dict(cfg)
    if cfg.get("sft_learning_rate") is None:
        cfg["sft_learning_rate"] = float(C.default_config("sft")["learning_rate"])
        cfg["sft_learning_rate_source"] = "train_sft.yaml learning_rate (the SFT stage's default)"
    else:
        cfg["sft_learning_rate_source"] = "config"
    cfg["sft_scale"] = sft_scale(cfg)
    weight = float(cfg["sft_weight"]) if cfg["mode"] in ("weighted", "bridge") else 1.0
    cfg["sft_effective_learning_rate"] = (float(cfg["sft_learning_rate"]) if cfg["mode"] == "relift"
                                          else weight * cfg["sft_scale"] * float(cfg["learning_rate"]))
    return cfg


def _nonempty(export, split) -> bool:
    import pyarrow.parquet as pq

    path = export.path(split)
    return path.exists() and pq.ParquetFile(path).metadata.num_rows > 0  # an empty split has no file
