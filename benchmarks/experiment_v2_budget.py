"""Project the wall time of the full v2 design on 2 idle cores from a `--quick` run's measured CPU seconds.

    python benchmarks/experiment_v2_budget.py runs/exp-v2-quick [--config FILE] [--total-steps 32 --seeds 2 ...]

The full design projected is the default's, or a config file's over it (`--config`, as `stagewise experiment
--config`), with any flag given on top. The quick run must have the same per-step shapes (`sft_batch_size`,
`rl_prompts`, `num_generations`, `max_new_tokens`, the model): a step's CPU is measured, never scaled.

CPU seconds, not wall time, are read from the quick run, so the projection holds on a machine that was busy
while the quick run ran. Per arm, from its quick record (one base, one seed):
- training: fixed cost (the arm's training CPU minus its optimizer steps' CPU: model loading, trainer set-up,
  re-probes) + mean CPU per optimizer step of each stage x the full design's steps of that stage;
- evaluation: the quick run's evaluation CPU scaled by the samples drawn (final eval, and the after-SFT eval of
  two-stage arms; generation is batched, so its cost grows with the number of sequences);
- the learning-rate sweep: one SFT training per SFT rate and one RL training per RL rate (costed like
  sft-all-rl-all's stages) plus a validation probe each.
Wall time = total CPU / jobs (the runs are independent; a tail of one job's last run is added).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from stagewise.curate.errors import ConfigError

from stagewise.experiments.arms_v2 import ARMS_V2, PRIMARY, stage_steps
from stagewise.experiments.config import V2_DEFAULT, configure

# What a step's CPU depends on: the quick run and the projected design must agree on these.
STEP_SHAPE = ("sft_batch_size", "rl_prompts", "num_generations", "max_new_tokens")


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def _record(run_dir: Path) -> dict | None:
    """An arm run's record: its completion marker's result (arm.done.json), or result.json of older runs."""
    marker = run_dir / "arm.done.json"
    if marker.exists():
        return json.loads(marker.read_text()).get("result")
    old = run_dir / "result.json"
    return json.loads(old.read_text()) if old.exists() else None


def project(quick_dir: Path, cfg) -> dict:
    qctx = json.loads((quick_dir / "context.json").read_text())
    qcfg = qctx["config"]
    differ = [f"{k} {qcfg.get(k)} (quick) vs {getattr(cfg, k)}"
              for k in STEP_SHAPE if qcfg.get(k) != getattr(cfg, k)]
    q_model = {k: (qcfg.get("pretrain") or {}).get(k) for k in ("hidden_size", "num_layers")}
    f_model = {k: getattr(cfg.pretrain, k) for k in q_model}
    if q_model != f_model:
        differ.append(f"model {q_model} (quick) vs {f_model}")
    if differ:
        raise SystemExit(f"{quick_dir}: the quick run's step shapes differ from the projected design's: "
                         f"{'; '.join(differ)}. Fix: run the quick design with the same config "
                         "(`stagewise experiment --quick --config FILE`) and pass that FILE here.")
    n_val = len(cfg.cells) * cfg.val_per_cell
    n_test = qctx["sizes"]["test"]
    per_arm = {}
    for arm_dir in sorted((quick_dir / "arms").iterdir()):
        rec = _record(arm_dir / "b0-s0")
        if rec is None:
            continue
        arm = ARMS_V2[rec["arm"]]
        comp = rec["compute"]
        step_cpu = comp.get("step_cpu_s") or {}
        fixed = max(0.0, (comp.get("cpu_s") or 0.0) - sum(sum(v) for v in step_cpu.values()))
        full_steps = stage_steps(arm, cfg)
        stages = list(arm.stages)
        train = fixed
        for stage, n in zip(stages, full_steps):
            n_total = n * arm.rounds  # stage_steps gives the loop's steps per round
            train += _mean(step_cpu.get(stage, [])) * n_total
        q_samples = qcfg["eval_samples"] + (qcfg["after_sft_samples"] if "after_sft" in rec else 0)
        f_samples = cfg.eval_samples + (cfg.after_sft_samples if "after_sft" in rec else 0)
        evaluation = (comp.get("eval_cpu_s") or 0.0) * f_samples / q_samples
        runs = cfg.n_arm_bases * ((cfg.joint_seeds or cfg.seeds) if arm.joint_mode else cfg.seeds)
        per_arm[arm.name] = {"runs": runs, "train_cpu_s": round(train, 1), "eval_cpu_s": round(evaluation, 1),
                             "total_cpu_s": round(runs * (train + evaluation), 1),
                             "quick_cpu_s": round((comp.get("cpu_s") or 0) + (comp.get("eval_cpu_s") or 0), 1)}
    sweep = 0.0
    if cfg.sweep and PRIMARY in per_arm:
        qrec = _record(quick_dir / "arms" / PRIMARY / "b0-s0")
        sc = qrec["compute"].get("step_cpu_s") or {}
        eval_per_sample = (qrec["compute"].get("eval_cpu_s") or 0.0) / (
            n_test * (qcfg["eval_samples"] + qcfg["after_sft_samples"]))
        val_eval = eval_per_sample * n_val * cfg.val_samples
        fixed = max(0.0, (qrec["compute"].get("cpu_s") or 0) - sum(sum(v) for v in sc.values())) / 2
        sweep = (len(cfg.sft_lr_grid) * (fixed + _mean(sc.get("sft", [])) * cfg.sft_steps + val_eval)
                 + len(cfg.rl_lr_grid) * (fixed + _mean(sc.get("rl", [])) * cfg.rl_steps + val_eval))
    total = sum(a["total_cpu_s"] for a in per_arm.values())
    longest = max((a["train_cpu_s"] + a["eval_cpu_s"] for a in per_arm.values()), default=0.0)
    wall = (total + sweep) / cfg.jobs + longest / 2  # the last job's tail runs alone
    return {"per_arm": per_arm, "sweep_cpu_s": round(sweep, 1), "arms_cpu_s": round(total, 1),
            "projected_wall_min_on_idle_cores": round(wall / 60, 1), "jobs": cfg.jobs,
            "config": {k: getattr(cfg, k) for k in ("total_steps", "sft_fraction", "rl_prompts", "seeds",
                                                    "joint_seeds", "bases", "eval_samples", "after_sft_samples",
                                                    "test_per_cell", "sft_lr_grid", "rl_lr_grid")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("quick_dir")
    ap.add_argument("--config", default=None, help="a design config file (YAML), as `stagewise experiment --config`")
    for name in ("total_steps", "seeds", "joint_seeds", "eval_samples", "after_sft_samples", "jobs"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    ap.add_argument("--sft-fraction", type=float, default=None)
    args = ap.parse_args()
    overrides = {k: v for k, v in vars(args).items() if k not in ("quick_dir", "config") and v is not None}
    try:
        cfg = replace(configure(V2_DEFAULT, args.config), **overrides).validate()
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    out = project(Path(args.quick_dir), cfg)
    for name, a in out["per_arm"].items():
        print(f"{name:<24} runs {a['runs']:>2}  train {a['train_cpu_s']:>7.1f} s  eval {a['eval_cpu_s']:>6.1f} s  "
              f"(quick {a['quick_cpu_s']:.1f} s)  total {a['total_cpu_s'] / 60:6.1f} CPU-min")
    print(f"sweep {out['sweep_cpu_s'] / 60:.1f} CPU-min; arms {out['arms_cpu_s'] / 60:.1f} CPU-min; projected wall "
          f"{out['projected_wall_min_on_idle_cores']} min with {out['jobs']} jobs on idle cores")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
