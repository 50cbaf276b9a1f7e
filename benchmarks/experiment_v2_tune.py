"""Tune the second design's pretraining: probe base models (or the checkpoints of one pretraining run) the
way the experiment does and print the validity checks and the bucket mix per cell, to choose where
pretraining stops.

    # one pretraining run (seed 0) that also keeps its models at steps 500 and 600, then probe all three
    python benchmarks/experiment_v2_tune.py --pretrain --level-decay 0.5 --steps 700 --checkpoints 500,600
    # probe model dirs as they are
    python benchmarks/experiment_v2_tune.py MODEL_DIR [MODEL_DIR ...]

A checkpoint is the cache entry of the same config with `steps=N` (see `pretrain_v2(checkpoints=...)`), so
the chosen one is the experiment's base model as it is. The capability check probes at most --cap-items of
the unmastered items (the experiment probes all of them) and scales the share to the whole set.

Every option not given is the design default's (the slip testbed since the card's twenty-first round), or
the `--config FILE` testbed's: the card's screening commands of earlier rounds started from the carry-scarce
testbed, so they reproduce with `--config data_cards/experiment-v2/carry-scarce.yaml`.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from stagewise.curate.errors import ConfigError
from stagewise.curate.statistics import bucket
from stagewise.experiments import testbed_v2
from stagewise.experiments.config import V2_DEFAULT, configure
from stagewise.experiments.pretrain import PINNED_NUMERICS
from stagewise.experiments.pretrain import pretrain_v2
from stagewise.experiments.runner_v2 import POOL_PROBE_SEED, TEST_PROBE_SEED, _capability_counts, _probe_counts
from stagewise.experiments.validity import format_checks, validity_checks


def pretrain_candidates(args, design) -> list[str]:
    cfg = replace(design.pretrain, seed=args.seed, levels=args.levels, **{k: v for k, v in (
        ("task_weights", args.task_weights),
        ("level_decay", args.level_decay), ("steps", args.steps), ("horizon", args.horizon or args.steps),
        ("final_lr_fraction", args.final_lr_fraction), ("polish_steps", args.polish_steps),
        ("polish_learning_rate", args.polish_lr),
        ("polish_level_decay", args.polish_level_decay), ("carry_decay", args.carry_decay),
        ("carry_level_decay", args.carry_level_decay), ("hidden_size", args.hidden_size),
        ("num_layers", args.num_layers), ("slip_rate", args.slip_rate),
        ("slip_columns", args.slip_columns), ("slip_min_level", args.slip_min_level), ("numerics", args.numerics))
        if v is not None})
    steps = sorted({int(s) for s in args.checkpoints.split(",") if s.strip()}) if args.checkpoints else []
    t0 = time.time()
    last = [0.0]

    def progress(step, total, loss):
        if time.time() - last[0] > 60 or step == total:
            last[0] = time.time()
            print(f"  pretrain step {step}/{total} loss {loss:.4f} ({time.time() - t0:.0f} s)", flush=True)

    polish = sorted({int(s) for s in (args.polish_checkpoints or "").split(",") if s.strip()})
    res = pretrain_v2(cfg, prompt_template=V2_DEFAULT.prompt_template, checkpoints=steps, progress=progress,
                      polish_checkpoints=polish)
    print(f"pretrained {res.model_dir} (cached: {res.cached}; {res.stats.get('seconds')} s)", flush=True)
    # The full run first, then the earlier stopping points, latest first.
    return [res.model_dir] + [pretrain_v2(replace(cfg, steps=s), prompt_template=V2_DEFAULT.prompt_template).model_dir
                              for s in reversed(steps) if s < cfg.steps] \
        + [pretrain_v2(replace(cfg, polish_steps=s), prompt_template=V2_DEFAULT.prompt_template).model_dir
           for s in polish if s < (cfg.polish_steps or 0)]


def full_checks(model: str, pool, test, cell_of, cfg) -> None:
    from stagewise.experiments.pretrain import PretrainResult
    from stagewise.experiments.runner_v2 import _base_probes

    t0 = time.time()
    meta = json.loads((Path(model) / "stagewise_pretrain.json").read_text())
    pre = PretrainResult(model, True, meta["config"], meta["stats"])
    base = _base_probes(meta["config"]["seed"], pre, pool, test, cfg, False)
    checks = validity_checks(base.pool, cell_of, base.capability, base.test, k=cfg.probe_samples,
                             k_capability=cfg.capability_samples)
    by_cell = {}
    for pid, (n, c) in base.pool.items():
        by_cell.setdefault(cell_of[pid], {"unmastered": 0, "partial": 0, "mastered": 0})[bucket(n=n, c=c)] += 1
    c = meta["config"]
    print(f"== {Path(model).name}  level_decay {c['level_decay']}  steps {c['steps']}/{c['horizon']}  "
          f"seed {c['seed']}  polish {c.get('polish_steps', 0)}  (full probes, {time.time() - t0:.0f} s)")
    for line in format_checks(checks):
        print(line)
    for cell, d in sorted(by_cell.items()):
        print(f"  {cell:<8} U {d['unmastered']:>2}  P {d['partial']:>2}  M {d['mastered']:>2}")
    print(json.dumps({"model": Path(model).name, "pretrain": c, "pretrain_stats": meta.get("stats"), "full": True,
                      "checks": checks, "by_cell": by_cell}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--pretrain", action="store_true", help="pretrain (cached) with the options below first")
    ap.add_argument("--config", default=None,
                    help="a testbed YAML file (as `stagewise experiment --config`) whose fields the options start "
                         "from [default: the design default]")
    ap.add_argument("--level-decay", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--horizon", type=int, default=None, help="cosine horizon [default: --steps]")
    ap.add_argument("--final-lr-fraction", type=float, default=None, help="where the cosine ends [default: the testbed's]")
    ap.add_argument("--polish-steps", type=int, default=None, help="steps of the polishing phase [default: the testbed's]")
    ap.add_argument("--polish-lr", type=float, default=None, help="its constant rate [default: the testbed's]")
    ap.add_argument("--polish-level-decay", type=float, default=None, help="its mix's fall-off [default: the testbed's]")
    ap.add_argument("--polish-checkpoints", default="", help="earlier polishing steps to keep and probe, e.g. 200,400")
    ap.add_argument("--carry-decay", type=float, default=None,
                    help="keep a carrying column of a pretraining item with this probability [default: the testbed's]")
    ap.add_argument("--carry-level-decay", type=float, default=None,
                    help="... times this per level above the lowest [default: the testbed's]")
    ap.add_argument("--hidden-size", type=int, default=None, help="of the tiny model [default: the testbed's]")
    ap.add_argument("--num-layers", type=int, default=None, help="of the tiny model [default: the testbed's]")
    ap.add_argument("--slip-rate", type=float, default=None,
                    help="drop a slip site's carry with this probability in pretraining [default: the testbed's]")
    ap.add_argument("--slip-columns", choices=testbed_v2.SLIP_COLUMNS, default=None,
                    help="which columns the slip can hit [default: the testbed's]")
    ap.add_argument("--slip-min-level", type=int, default=None,
                    help="slip only in items of at least this many digits (0: every item) [default: the testbed's]")
    ap.add_argument("--numerics", choices=("native", *PINNED_NUMERICS), default=None,
                    help="pretrain with pinned kernels (avx2: the same weights on any AVX2 CPU) [default: the "
                         "testbed's]")
    ap.add_argument("--checkpoints", default="", help="earlier steps to keep and probe, e.g. 500,600")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", type=lambda s: tuple(int(x) for x in s.split(",")), default=None,
                    help="digits per operand of the cells, e.g. 2,3,4 [default: the testbed's]")
    ap.add_argument("--task-weights", default=None, help="e.g. add=1,sub=1,add3=0.5 [default: the testbed's]",
                    type=lambda s: tuple((k, float(v)) for k, v in (kv.split("=") for kv in s.split(","))))
    ap.add_argument("--temperature", type=float, default=None, help="of every probe [default: the testbed's]")
    ap.add_argument("--top-p", type=float, default=None, help="of every probe [default: the testbed's]")
    ap.add_argument("--test-per-cell", type=int, default=None, help="[default: the testbed's]")
    ap.add_argument("--pretrain-only", action="store_true", help="pretrain (and keep the checkpoints), probe nothing")
    ap.add_argument("--cap-items", type=int, default=40)
    ap.add_argument("--pool-per-cell", type=int, default=None, help="[default: the testbed's]")
    ap.add_argument("--no-test", action="store_true", help="skip the test probe (headroom from the pool instead)")
    ap.add_argument("--full", action="store_true",
                    help="the experiment's own base probes (every unmastered item at k=128), cached beside the model "
                         "where `stagewise experiment` reads them")
    args = ap.parse_args()
    try:
        design = configure(V2_DEFAULT, args.config)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    for name in ("levels", "temperature", "top_p", "test_per_cell", "pool_per_cell"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(design, name))
    models = list(args.models) + (pretrain_candidates(args, design) if args.pretrain else [])
    if args.pretrain_only:
        return
    cfg = replace(design, pool_per_cell=args.pool_per_cell, levels=args.levels,
                  test_per_cell=args.test_per_cell, temperature=args.temperature, top_p=args.top_p)
    cells = cfg.cells
    pool = testbed_v2.items_for(cells, cfg.pool_per_cell, "pool")
    test = testbed_v2.items_for(cells, cfg.test_per_cell, "test")
    cell_of = {p.id: testbed_v2.cell_of(p) for p in pool + test}
    for model in models:
        t0 = time.time()
        if args.full:
            full_checks(model, pool, test, cell_of, cfg)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            pc = _probe_counts(pool, model, Path(tmp) / "pool.duckdb", k=cfg.probe_samples, seed=POOL_PROBE_SEED,
                               cfg=cfg, progress=False)
            t_pool = time.time() - t0
            tc = pc if args.no_test else _probe_counts(test, model, Path(tmp) / "test.duckdb", k=cfg.probe_samples,
                                                        seed=TEST_PROBE_SEED, cfg=cfg, progress=False)
            unm = [p for p in pool if pc[p.id][1] == 0]
            sample = random.Random(0).sample(unm, min(args.cap_items, len(unm)))
            cap = _capability_counts(sample, model, Path(tmp) / "cap.duckdb", cfg) if sample else {}
        # Scale the sampled capability result to the whole unmastered set for the check's value.
        reach = sum(1 for v in cap.values() if v[1] > 0) / len(cap) if cap else 0.0
        cap_all = {p.id: (cfg.capability_samples, 1 if i < round(reach * len(unm)) else 0) for i, p in enumerate(unm)}
        checks = validity_checks(pc, cell_of, cap_all, tc)
        by_cell = {}
        for pid, (n, c) in pc.items():
            by_cell.setdefault(cell_of[pid], {"unmastered": 0, "partial": 0, "mastered": 0})[bucket(n=n, c=c)] += 1
        meta_path = Path(model) / "stagewise_pretrain.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        pc_cfg = meta.get("config", {})
        print(f"== {Path(model).name}  level_decay {pc_cfg.get('level_decay')}  steps {pc_cfg.get('steps')}/"
              f"{pc_cfg.get('horizon')}  polish {pc_cfg.get('polish_steps', 0)}  carry {pc_cfg.get('carry_decay', 1.0)}"
              f" x {pc_cfg.get('carry_level_decay', 1.0)}/level  seed {pc_cfg.get('seed')}  "
              f"({time.time() - t0:.0f} s; pool probe "
              f"{t_pool:.0f} s; capability on {len(cap)} of {len(unm)} unmastered)")
        for line in format_checks(checks):
            print(line)
        for cell, d in by_cell.items():
            print(f"  {cell:<8} U {d['unmastered']:>2}  P {d['partial']:>2}  M {d['mastered']:>2}")
        print(json.dumps({"model": Path(model).name, "pretrain": pc_cfg, "pretrain_stats": meta.get("stats"),
                          "checks": checks, "by_cell": by_cell}), flush=True)


if __name__ == "__main__":
    main()
