"""Can the second design's RL stage sharpen at all? From a finished run's sweep (base 0, the SFT model at the
chosen SFT rate), train the sft-all-rl-all baseline's RL stage in other shapes (prompts per step, steps, rate,
and a KL weight to the SFT model) and score each model on the validation split (16 samples per item) and on
the pool it trains on (8 samples per item). The run's own RL stage is 4 prompts x 8 completions for 12 steps,
without KL.

    python benchmarks/experiment_v2_rl_sharpen.py runs/v2-larger-full --out runs/rl-sharpen \\
        --variant 4:12:1e-5 --variant 16:24:3e-5 --variant 16:24:1e-4

One JSON line per variant (and one for the SFT model itself, `sft-only`): validation and pool pass@1 (and
validation pass@1 on the items with and without a slip site, a column where a pretraining slip can drop the
carry: `PretrainV2Config.slip_rate`, `slip_columns`), the share of slip sites in the model's own samples
after which it dropped the carry (`slip_rate`), the mean share of GRPO groups with zero reward variance, and
the seconds it took. Every model and probe store is kept under --out, so a rerun scores what is missing only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stagewise.curate.store import ProbeStore
from stagewise.train.rl import train_rl

from stagewise.experiments import testbed_v2
from stagewise.experiments.arms_v2 import _rl_kwargs
from stagewise.experiments.config import configure, preset_v2
from stagewise.experiments.runner_v2 import VAL_SEED, _probe_counts, mean_pass1

POOL_SCORE_SEED = 7   # not a seed of the run's own probes


def parse_variant(text: str) -> tuple[int, int, float, float]:
    try:
        prompts, steps, lr, *beta = text.split(":")
        if len(beta) > 1:
            raise ValueError(text)
        return int(prompts), int(steps), float(lr), float(beta[0]) if beta else 0.0
    except ValueError:
        raise SystemExit(f"--variant {text!r}: expected PROMPTS:STEPS:LR[:BETA], e.g. 16:24:3e-5 or "
                         "16:24:1e-4:0.04") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a finished `stagewise experiment --design v2` output directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", action="append", default=[],
                    help="PROMPTS:STEPS:LR[:BETA] of one RL stage (BETA: the KL weight, default 0 as in the design)")
    args = ap.parse_args()
    variants = [("sft-only", None)] + [(v, parse_variant(v)) for v in args.variant]
    run, out = Path(args.run), Path(args.out)
    context = json.loads((run / "context.json").read_text())
    cfg = configure(preset_v2(), None, context["config"])
    sft_lr = context["learning_rates"]["sft"]
    found = sorted(run.glob(f"sweep/*/sft-{sft_lr:g}/train/model"))
    if len(found) != 1:
        raise SystemExit(f"{run}: {len(found)} sweep models at the chosen SFT rate {sft_lr:g} (sweep/*/sft-"
                         f"{sft_lr:g}/train/model), one expected; run the experiment with its sweep on into a "
                         "directory of its own")
    sft_model, export = str(found[0]), run / "bases" / "b0" / "exports" / "all"
    val = testbed_v2.items_for(cfg.cells, cfg.val_per_cell, "val")
    pool = testbed_v2.items_for(cfg.cells, cfg.pool_per_cell, "pool")
    columns, items = cfg.pretrain.slip_columns, {p.id: testbed_v2.item_of(p) for p in val + pool}
    # the items a pretraining slip could reach (slip_min_level), and the validation items with a slip site
    slippable = {pid for pid, it in items.items() if cfg.pretrain.slips_in_level(it.level)}
    has_site = {p.id: p.id in slippable and testbed_v2.slip_sites(items[p.id].task, items[p.id].operands, columns) > 0
                for p in val}
    for tag, variant in variants:
        t0, model, zero = time.time(), sft_model, None
        name = tag.replace(":", "-")
        if variant:
            prompts, steps, lr, beta = variant
            kw = {**_rl_kwargs(cfg, {"rl": lr}, steps, 0), "batch_size": prompts, "beta": beta}
            model = train_rl(str(export), sft_model, out / name, progress=False, resume=True, **kw).model_dir
            rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()
                    if '"frac_reward_zero_std"' in line]
            zero = round(sum(r["frac_reward_zero_std"] for r in rows) / len(rows), 3) if rows else None
        v = _probe_counts(val, model, out / f"{name}-val.duckdb", k=16, seed=VAL_SEED, cfg=cfg, progress=False)
        p = _probe_counts(pool, model, out / f"{name}-pool.duckdb", k=8, seed=POOL_SCORE_SEED, cfg=cfg,
                          progress=False)
        sites = slipped = 0  # the slip rate the model shows at slip sites, in all its scored samples
        for store in (out / f"{name}-val.duckdb", out / f"{name}-pool.duckdb"):
            with ProbeStore(str(store), read_only=True) as st:
                for row in st.samples().iter_rows(named=True):
                    if row["problem_id"] in slippable:
                        n, k = testbed_v2.slips_in(items[row["problem_id"]].task, row["completion"] or "", columns)
                        sites, slipped = sites + n, slipped + k
        split = {"slip_site": {}, "no_slip_site": {}}  # validation items with / without a column a slip can hit
        for pid, counts in v.items():
            split["slip_site" if has_site[pid] else "no_slip_site"][pid] = counts
        print(json.dumps({"variant": tag, "val_pass@1": round(mean_pass1(v), 4),
                          **{f"val_pass@1_{k}": round(mean_pass1(c), 4) for k, c in split.items() if c},
                          "pool_pass@1": round(mean_pass1(p), 4),
                          "slip_rate": round(slipped / sites, 4) if sites else None, "slip_sites": sites,
                          "zero_variance_frac": zero,
                          "s": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
