"""The second design, top to bottom: pretrain the base models (cached) -> probe each on the pool, the test
set and, for the unmastered items, at k = 128 (cached beside the model) -> validity checks (printed; a
failure stops the run before any arm) -> export -> learning-rate sweep on validation -> every arm on
every (base, seed) -> evaluate on test -> report.

Each (base, seed, arm) writes its completion marker `arm.done.json` (curate/steps.py) when it finishes,
so the same command resumes; one finished with other settings runs again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.adaptive import bucket_of_outcomes
from stagewise.curate.atomic import write_text_atomic
from stagewise.curate.errors import ConfigError
from stagewise.curate.probe import probe
from stagewise.curate.statistics import bucket, pass_at_k
from stagewise.curate.steps import Step
from stagewise.curate.store import ProbeStore

# runner.py (design v1) starts this design and this one reuses its export_once: each imports the
# other as a module.
from stagewise.experiments import runner as design_v1
from stagewise.experiments import testbed_v2
from stagewise.experiments.arms_v2 import (
    PRIMARY,
    PRIMARY_ARM,
    ArmRunV2,
    _rl_kwargs,
    _sft_kwargs,
    arm_export_key,
    resolve_arms_v2,
    run_arm_v2,
)
from stagewise.experiments.config import ExperimentV2Config, configure, preset_v2
from stagewise.experiments.pretrain import pretrain_v2
from stagewise.experiments.results_v2 import write_report_v2
from stagewise.experiments.validity import (
    all_passed,
    bucket_shares,
    format_checks,
    unmastered_cells,
    validity_checks,
)
from stagewise.train import train_rl, train_sft
from stagewise.train.data import load_sft_rows, open_export

POOL_PROBE_SEED = 0
TEST_PROBE_SEED = 1       # an independent probe: test buckets are not chosen on the evaluation's samples
CAPABILITY_SEED = 2
VAL_SEED = 3
EVAL_SEED_BASE = 1000     # the evaluation seed of (base b, seed s) is EVAL_SEED_BASE + 100 b + s, for every arm
POOL_STORE, TEST_STORE = "pool.duckdb", "test.duckdb"   # a base's probe samples, side by side in its probe dir


@dataclass
class BaseModel:
    index: int
    model_dir: str
    pretrain: dict
    pool_store: str
    pool: dict                 # {id: (n, c)} at k
    test: dict                 # {id: (n, c)} at k, independent probe
    capability: dict           # {id: (n, c)} extra samples of the pool's unmastered items
    checks: list = field(default_factory=list)

    @property
    def test_store(self) -> str:
        """The test probe's samples, beside the pool's (for its buckets at fewer samples)."""
        return str(Path(self.pool_store).with_name(TEST_STORE))


@dataclass
class ExperimentV2Result:
    out: str
    results: dict
    paths: dict
    context: dict = field(default_factory=dict)


def experiment_v2(out, *, quick: bool = False, arms=None, seeds: int | None = None,
                  config: ExperimentV2Config | str | None = None, progress: bool = False, log=None,
                  command: str | None = None, allow_invalid: bool = False, checks_only: bool = False,
                  report_only: bool = False, **overrides) -> ExperimentV2Result:
    """Run the second design into `out` (results.json, results.md, plots). `checks_only`: pretrain and
    probe the base models, write the validity checks and stop. `allow_invalid` runs the arms although a
    validity check failed; the report then says at its top that the table is not a valid test. `report_only`:
    train nothing more; report the (base, seed, arm) runs that finished, and list the missing ones in the
    report (an interrupted run's partial table). With `jobs` > 1 the arm runs go to spawned processes:
    call this from under `if __name__ == "__main__":`."""
    if seeds is not None:
        overrides["seeds"] = seeds
    cfg = configure(preset_v2(quick=quick), config, overrides)
    chosen = [] if checks_only else resolve_arms_v2(arms)  # the checks need no arm (nor its method features)
    say = log or (lambda msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()

    cells = cfg.cells
    pool = testbed_v2.items_for(cells, cfg.pool_per_cell, "pool")
    val = testbed_v2.items_for(cells, cfg.val_per_cell, "val")
    test = testbed_v2.items_for(cells, cfg.test_per_cell, "test")
    cell_of = {p.id: testbed_v2.cell_of(p) for p in pool + val + test}
    say(f"testbed v2: {len(cells)} cells ({', '.join(cells)}); pool {len(pool)}, validation {len(val)}, "
        f"test {len(test)} items")

    bases, pretrain_s = [], 0.0
    for b in range(cfg.bases):
        pre_cfg = cfg.base_pretrain(b)
        say(f"base {b}: pretraining seed {pre_cfg.seed}, {pre_cfg.steps} steps + {pre_cfg.polish_steps} polishing steps "
            "(cached by config hash)")
        pre = pretrain_v2(pre_cfg, prompt_template=cfg.prompt_template)
        if not pre.cached:
            pretrain_s += pre.stats.get("seconds", 0)
        say(f"base {b}: probing pool and test at k={cfg.probe_samples}, unmastered at k={cfg.capability_samples}"
            " (cached beside the model)")
        base = _base_probes(b, pre, pool, test, cfg, progress)
        base.checks = validity_checks(base.pool, cell_of, base.capability, base.test, prefix=f"base {b}",
                                      k=cfg.probe_samples, k_capability=cfg.capability_samples)
        for line in format_checks(base.checks):
            say(line)
        bases.append(base)
    checks = [c for b in bases for c in b.checks]
    say("validity checks: " + ("all passed" if all_passed(checks) else
                               f"{sum(not c['passed'] for c in checks)} of {len(checks)} FAILED"))
    context = {"design": cfg.design, "config": cfg.to_dict(), "cells": cells,
               "sizes": {"pool": len(pool), "val": len(val), "test": len(test)},
               "bases": [_base_context(b, cell_of) for b in bases], "pretrain_s_this_run": round(pretrain_s, 1),
               "test_cell_of": {p.id: cell_of[p.id] for p in test}, "command": command or _command(quick, arms, cfg)}

    if checks_only:
        context["wall_s"] = round(time.perf_counter() - t_start, 1)
        paths = write_report_v2(out, design=cfg.design, validity=checks, arms=[], context=context)
        return ExperimentV2Result(str(out), json.loads(Path(paths["json"]).read_text()), paths, context)
    if not all_passed(checks) and allow_invalid:
        say("validity checks FAILED; running the arms anyway (allow_invalid): the report says at its top that "
            "the table is not a valid test of routing")
    elif not all_passed(checks):
        paths = write_report_v2(out, design=cfg.design, validity=checks, arms=[], context=context)
        failed = [c["check"] for c in checks if not c["passed"]]
        raise ConfigError(f"validity checks failed ({'; '.join(failed)}): the testbed cannot show whether "
                          f"routing helps, so no arm is run or reported (checks in {paths['json']}); tune the "
                          "pretraining (base_seeds, base_stops, level_decay, polish_*) until they pass, or pass "
                          "--allow-invalid to run the arms on this testbed anyway (reported as not valid)")

    arm_bases = bases[:cfg.n_arm_bases]
    exports = {b.index: _exports(b, out / "bases" / f"b{b.index}" / "exports", chosen, cfg) for b in arm_bases}
    heldout_rows = {b.index: _heldout_sft_rows(b, test, out / "bases" / f"b{b.index}", cfg) for b in arm_bases}

    lrs, sweep = _choose_rates(cfg, bases[0], exports[0], val, out / "sweep", progress, say)
    context["learning_rates"] = lrs
    context["sweep"] = sweep

    test_bucket = {b.index: _buckets(b.test) for b in arm_bases}
    pool_info = {b.index: {"bucket_of": _buckets(b.pool), "cell_of": cell_of} for b in arm_bases}
    by_index = {b.index: b for b in arm_bases}
    units = []
    for arm, b, seed in plan_runs(chosen, [b.index for b in arm_bases], cfg):
        run_dir = out / "arms" / arm.name / f"b{b}-s{seed}"
        units.append((arm, by_index[b], seed, run_dir, exports[b], pool_info[b], test, test_bucket[b], cell_of,
                      heldout_rows[b], cfg, lrs, progress))
    per_run: dict[str, list[dict]] = {a.name: [] for a in chosen}
    kmax = f"pass@{max(cfg.ks)}"

    def report(unit, rec):
        say(f"arm {unit[0].name}, base {unit[1].index}, seed {unit[2]}: pass@1 {rec['pass@1']:.3f}  "
            f"{kmax} {rec[kmax]:.3f}  " + "  ".join(
                f"{b} {rec['by_bucket'].get(b, {}).get('pass@1', float('nan')):.3f}"
                for b in ("unmastered", "partial", "mastered")))

    if report_only:
        missing = [u for u in units if not _unit_step(*u).done()]
        units = [u for u in units if u not in missing]
        context["missing_runs"] = [f"{u[0].name} b{u[1].index}-s{u[2]}" for u in missing]
        say(f"report only: {len(units)} finished arm runs reported, {len(missing)} missing")
    recs = _run_units(units, cfg.jobs, report, say)
    for unit, rec in zip(units, recs):
        per_run[unit[0].name].append(rec)
    per_run = {a.name: per_run[a.name] for a in chosen}

    context["wall_s"] = round(time.perf_counter() - t_start, 1)
    context["cpu_s_main_process"] = round(time.process_time() - c_start, 1)
    paths = write_report_v2(out, design=cfg.design, validity=checks, arms=per_run, context=context,
                            summaries={a.name: a.summary for a in chosen})
    results = json.loads(Path(paths["json"]).read_text())
    return ExperimentV2Result(str(out), results, paths, context)


def plan_runs(chosen, bases: list[int], cfg) -> list[tuple]:
    """The (arm, base, seed) runs in the order they are trained: arm by arm, the primary comparison's two
    arms (and base) first, so a run stopped early holds whole arms over every (base, seed). The joint arms
    run `joint_seeds` seeds when set."""
    first = ("base", PRIMARY, PRIMARY_ARM)
    order = sorted(chosen, key=lambda a: first.index(a.name) if a.name in first else len(first))
    runs = []
    for arm in order:
        n_seeds = cfg.joint_seeds if arm.joint_mode and cfg.joint_seeds else cfg.seeds
        runs += [(arm, b, s) for b in bases for s in range(n_seeds)]
    return runs


def _run_units(units: list[tuple], jobs: int, report, say) -> list[dict]:
    """Run every (base, seed, arm) unit, `jobs` at a time in spawned processes (one torch thread each);
    finished units are read back from their completion markers. Results come back in the units' order."""
    steps = [_unit_step(*u) for u in units]
    todo = [i for i, step in enumerate(steps) if not step.done()]
    say(f"{len(units)} arm runs, {len(units) - len(todo)} already done" + (f", {jobs} in parallel" if jobs > 1 else ""))
    for i in todo:
        if steps[i].exists():
            say(f"  {units[i][3]} was run with {steps[i].describe_differences()}: running it again")
    recs: list = [None] * len(units)
    for i, u in enumerate(units):
        if i not in todo:
            recs[i] = _run_one(*u)
            report(u, recs[i])
    if jobs <= 1 or len(todo) <= 1:
        for i in todo:
            recs[i] = _run_one(*units[i])
            report(units[i], recs[i])
        return recs
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = {pool.submit(_run_one, *units[i]): i for i in todo}
        for fut in as_completed(futures):
            i = futures[fut]
            recs[i] = fut.result()
            report(units[i], recs[i])
    return recs


def _worker_init() -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------- probes


def _sampling(cfg) -> dict:
    """How every probe, capability check and evaluation of the design samples (one place for all three)."""
    return {"backend": "hf", "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
            "batch_size": cfg.probe_batch_size, "prompt_template": cfg.prompt_template}


def _probe_counts(problems, model: str, store: Path, *, k: int, seed: int, cfg, progress: bool) -> dict:
    store.parent.mkdir(parents=True, exist_ok=True)
    res = probe(problems, model=model, store=str(store), num_samples=k, seed=seed, progress=progress,
                **_sampling(cfg))
    with ProbeStore(str(store), read_only=True) as st:
        counts = st.sample_counts(res.run_id)
    return {p.id: counts.get(p.id, (0, 0)) for p in problems}


def _capability_counts(unmastered, model: str, store: Path, cfg) -> dict:
    """The k = 128 check for items already at 0/16: up to 112 more samples each, drawn adaptively in rounds
    of 16 and stopped at an item's first correct sample (the check only asks for >= 1 correct, so this
    decides it exactly as drawing all 112 would). Returns {id: (samples incl. the first 16, correct)}."""
    store.parent.mkdir(parents=True, exist_ok=True)
    extra = cfg.capability_samples - cfg.probe_samples
    res = probe(unmastered, model=model, store=str(store), adaptive=True,
                min_samples=min(cfg.probe_samples, extra), k_max=extra, round_size=cfg.probe_samples,
                seed=CAPABILITY_SEED, progress=False, **_sampling(cfg))
    with ProbeStore(str(store), read_only=True) as st:
        counts = st.sample_counts(res.run_id)
    return {p.id: (counts.get(p.id, (0, 0))[0] + cfg.probe_samples, counts.get(p.id, (0, 0))[1]) for p in unmastered}


def _items_key(problems, **settings) -> str:
    key = json.dumps({"ids": sorted(p.id for p in problems), **settings}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _base_probes(index: int, pre, pool, test, cfg, progress: bool) -> BaseModel:
    """The base model's three probes, cached beside the model (keyed by the items and the settings), so
    the quick run and the full run read the very same buckets and checks."""
    settings = {"k": cfg.probe_samples, "k_cap": cfg.capability_samples, "max_new_tokens": cfg.max_new_tokens,
                "template": cfg.prompt_template}
    for name in ("temperature", "top_p"):  # added later: left out at 1.0 so cached probes keep their key
        if getattr(cfg, name) != 1.0:
            settings[name] = getattr(cfg, name)
    root = Path(pre.model_dir) / "probes" / _items_key(pool + test, **settings)
    done = root / "counts.json"
    if done.exists():
        data = json.loads(done.read_text())
        unpack = lambda d: {k: tuple(v) for k, v in d.items()}
        return BaseModel(index, pre.model_dir, pre.config, str(root / POOL_STORE), unpack(data["pool"]),
                         unpack(data["test"]), unpack(data["capability"]))
    pool_counts = _probe_counts(pool, pre.model_dir, root / POOL_STORE, k=cfg.probe_samples,
                                seed=POOL_PROBE_SEED, cfg=cfg, progress=progress)
    test_counts = _probe_counts(test, pre.model_dir, root / TEST_STORE, k=cfg.probe_samples,
                                seed=TEST_PROBE_SEED, cfg=cfg, progress=progress)
    unmastered = [p for p in pool if pool_counts[p.id][0] and pool_counts[p.id][1] == 0]
    cap = _capability_counts(unmastered, pre.model_dir, root / "capability.duckdb", cfg) if unmastered else {}
    write_text_atomic(done, json.dumps({"pool": pool_counts, "test": test_counts, "capability": cap}))
    return BaseModel(index, pre.model_dir, pre.config, str(root / POOL_STORE), pool_counts, test_counts, cap)


def _buckets(counts: dict) -> dict:
    return {i: bucket(n=n, c=c) for i, (n, c) in counts.items() if n}


def _base_context(base: BaseModel, cell_of: dict) -> dict:
    by_cell: dict = {}
    for pid, b in _buckets(base.pool).items():
        by_cell.setdefault(cell_of[pid], {"unmastered": 0, "partial": 0, "mastered": 0})[b] += 1
    test_by_cell: dict = {}
    for pid, b in _buckets(base.test).items():
        test_by_cell.setdefault(cell_of[pid], {"unmastered": 0, "partial": 0, "mastered": 0})[b] += 1
    pstats = json.loads((Path(base.model_dir) / "stagewise_pretrain.json").read_text())
    return {"index": base.index, "model": Path(base.model_dir).name, "pretrain": base.pretrain,
            "pretrain_stats": pstats.get("stats", {}),
            "pool_shares": bucket_shares(base.pool), "test_shares": bucket_shares(base.test),
            "pool_by_cell": dict(sorted(by_cell.items())), "test_by_cell": dict(sorted(test_by_cell.items())),
            "unmastered_cells": unmastered_cells(base.pool, cell_of), "checks": base.checks,
            "test_bucket_of": _buckets(base.test)}


# ------------------------------------------------------------------------------------------- exports


def _exports(base: BaseModel, root: Path, chosen, cfg) -> dict:
    """One export per (policy, replay, random seed) the chosen arms read, plus `all` for the sweep."""
    wanted = {("all", False, None)}
    for arm in chosen:
        if arm.stages:
            for s in range(cfg.seeds):
                wanted.add(arm_export_key(arm, s))
    out = {}
    for key in sorted(wanted, key=str):
        policy, replay, seed = key
        name = f"{policy}{'-replay' if replay else ''}{'' if seed is None else f'-seed{seed}'}"
        opts = {"policy": policy, "seed": seed or 0}
        if replay:
            opts["sft_replay"] = cfg.sft_replay
        out[key] = design_v1.export_once(base.pool_store, root / name, **opts)
    return out


def _heldout_sft_rows(base: BaseModel, test, root: Path, cfg) -> list[dict]:
    """The test items' worked solutions as SFT rows (the held-out SFT loss), through the exporter."""
    return load_sft_rows(open_export(design_v1.export_once(base.test_store, root / "exports" / "test-sft",
                                                           policy="sft-only")))


# ---------------------------------------------------------------------------------------- the sweep


def _choose_rates(cfg, base: BaseModel, exports: dict, val, root: Path, progress: bool, say):
    """The sft-all-rl-all baseline's learning rates, chosen on validation pass@1: the SFT rate first (the
    SFT stage alone), then the RL rate from the best SFT model. Every arm then uses them."""
    default = {"sft": cfg.sft_learning_rate, "rl": cfg.rl_learning_rate}
    if not cfg.sweep:
        say(f"learning rates: sweep off, using sft {default['sft']:g}, rl {default['rl']:g}")
        return default, {"ran": False, "reason": "sweep off (quick preset): the default rates", **default}
    step = Step(root, "sweep", {"base_model": base.model_dir, "config": _run_settings(cfg)})
    if step.done():  # another config runs the sweep again (its finished grid points resume from their markers)
        data = step.result()
        return data["chosen"], data
    export_dir = exports[("all", False, None)]
    points = root / step.hash[:12]  # this sweep's grid points: an interrupted sweep resumes them
    grid_sft = _map(_sweep_point, [("sft", lr, export_dir, base.model_dir, val, points / f"sft-{lr:g}", cfg)
                                   for lr in cfg.sft_lr_grid], cfg.jobs)
    for r in grid_sft:
        say(f"  sweep: SFT lr {r['sft_learning_rate']:g} -> validation pass@1 {r['val_pass@1']:.3f}")
    best_sft = max(grid_sft, key=lambda r: r["val_pass@1"])
    after = f"after-sft-{best_sft['sft_learning_rate']:g}"
    grid_rl = _map(_sweep_point, [("rl", lr, export_dir, best_sft["model"], val, points / f"rl-{lr:g}-{after}", cfg)
                                  for lr in cfg.rl_lr_grid], cfg.jobs)
    for r in grid_rl:
        say(f"  sweep: RL lr {r['rl_learning_rate']:g} (after SFT lr {best_sft['sft_learning_rate']:g}) -> "
            f"validation pass@1 {r['val_pass@1']:.3f}")
    best_rl = max(grid_rl, key=lambda r: r["val_pass@1"])
    chosen = {"sft": best_sft["sft_learning_rate"], "rl": best_rl["rl_learning_rate"]}
    data = {"ran": True, "arm": PRIMARY, "base": base.index, "seed": 0, "metric": "validation pass@1",
            "val_samples": cfg.val_samples,
            "sft_grid": [{k: v for k, v in r.items() if k != "model"} for r in grid_sft],
            "rl_grid": [{k: v for k, v in r.items() if k != "model"} for r in grid_rl],
            "chosen": chosen}
    step.mark(data)
    say(f"learning rates chosen on validation: sft {chosen['sft']:g}, rl {chosen['rl']:g}")
    return chosen, data


def _sweep_point(stage: str, lr: float, export_dir, model: str, val, d: Path, cfg) -> dict:
    """One point of the grid: train the stage at `lr` from `model`, then validation pass@1."""
    if stage == "sft":
        res = train_sft(export_dir, model, d / "train", progress=False, resume=True,
                        **_sft_kwargs(cfg, {"sft": lr}, cfg.sft_steps, 0))
    else:
        res = train_rl(export_dir, model, d / "train", progress=False, resume=True,
                       **_rl_kwargs(cfg, {"rl": lr}, cfg.rl_steps, 0))
    acc = _val_pass1(res.model_dir, val, d / "val.duckdb", cfg)
    return {f"{stage}_learning_rate": lr, "val_pass@1": acc, "model": res.model_dir}


def _map(fn, arg_tuples: list[tuple], jobs: int) -> list:
    """fn(*args) for each tuple, `jobs` at a time in spawned processes (in order)."""
    if jobs <= 1 or len(arg_tuples) <= 1:
        return [fn(*a) for a in arg_tuples]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(arg_tuples)), mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as pool:
        return list(pool.map(fn, *zip(*arg_tuples)))


def mean_pass1(counts: dict) -> float:
    """pass@1 over items from {id: (n, c)} probe counts (items never sampled left out)."""
    vals = [c / n for n, c in counts.values() if n]
    return sum(vals) / len(vals) if vals else 0.0


def _val_pass1(model_dir: str, val, store: Path, cfg) -> float:
    counts = _probe_counts(val, model_dir, store, k=cfg.val_samples, seed=VAL_SEED, cfg=cfg, progress=False)
    return mean_pass1(counts)


# ---------------------------------------------------------------------------------------- one arm run


def _unit_step(arm, base: BaseModel, seed: int, run_dir: Path, exports, pool_info, test, test_bucket, cell_of,
               heldout_rows, cfg, lrs, progress) -> Step:
    """One arm run's completion marker, keyed by what its result depends on: more seeds, bases or jobs
    keep the finished runs."""
    return Step(run_dir, "arm", {"arm": arm.name, "base": base.index, "base_model": base.model_dir, "seed": seed,
                                 "config": _run_settings(cfg), "learning_rates": lrs})


def _run_settings(cfg) -> dict:
    """The config a finished sweep or arm run depends on: more seeds, bases or jobs keep it (each base is
    named by its model, whose cache name hashes its pretraining)."""
    return {k: v for k, v in cfg.to_dict().items()
            if k not in ("seeds", "joint_seeds", "bases", "arm_bases", "jobs", "base_seeds", "base_stops")}


def _run_one(arm, base: BaseModel, seed: int, run_dir: Path, exports: dict, pool_info: dict, test, test_bucket,
             cell_of, heldout_rows, cfg, lrs, progress) -> dict:
    step = _unit_step(arm, base, seed, run_dir, exports, pool_info, test, test_bucket, cell_of, heldout_rows,
                      cfg, lrs, progress)
    if step.done():
        return step.result()
    shutil.rmtree(run_dir, ignore_errors=True)  # a half-finished arm restarts from the base model
    run_dir.mkdir(parents=True)
    run: ArmRunV2 = run_arm_v2(arm, base=base.index, seed=seed, base_model=base.model_dir, exports=exports,
                               pool_info=pool_info, cfg=cfg, lrs=lrs, out=run_dir / "train", progress=progress)
    eval_seed = EVAL_SEED_BASE + 100 * base.index + seed
    t0, c0 = time.perf_counter(), time.process_time()
    final = evaluate_test(run.model_dir, test, run_dir / "eval.duckdb", seed=eval_seed, cfg=cfg)
    rec = {"base": base.index, "seed": seed, "arm": arm.name,
           **summarise(final, test_bucket, cell_of, cfg.ks)}
    rec["per_item_c"] = {i: v[1] for i, v in final["counts"].items()}
    rec["n_samples"] = cfg.eval_samples
    diag = {"zero_variance_frac": run.zero_variance,
            "answer_tokens_mean": final["answer_tokens_mean"], "format_error_rate": final["format_error_rate"],
            "truncation_rate": final["truncation_rate"]}
    if run.sft_model and run.sft_model != run.model_dir:
        after_sft = evaluate_test(run.sft_model, test, run_dir / "eval_after_sft.duckdb", seed=eval_seed, cfg=cfg,
                                  samples=cfg.after_sft_samples)
        k_after = cfg.after_sft_samples
        s = summarise(after_sft, test_bucket, cell_of, (1, k_after))
        rec["after_sft"] = {"samples": k_after, "pass@1": s["pass@1"], f"pass@{k_after}": s[f"pass@{k_after}"],
                            "by_bucket": s["by_bucket"]}
        # The final model at the same k, so the stage attribution compares like with like.
        rec["final_at_after_sft_k"] = summarise(final, test_bucket, cell_of, (1, k_after))["by_bucket"]
        diag["transitions_after_sft"] = transitions(_test_buckets_at(base, k_after, test_bucket),
                                                    after_sft["counts"])
    elif run.sft_model:
        diag["transitions_after_sft"] = transitions(_test_buckets_at(base, cfg.eval_samples, test_bucket),
                                                    final["counts"])
    if run.transitions:
        diag["reprobe_transitions"] = run.transitions
    diag.update(_sft_losses(run, arm, heldout_rows))
    rec["diagnostics"] = diag
    rec["compute"] = {**run.compute, "eval_wall_s": round(time.perf_counter() - t0, 1),
                      "eval_cpu_s": round(time.process_time() - c0, 1), "n_rows": run.n_rows,
                      "learning_rates": lrs}
    step.mark(rec)
    return rec


def evaluate_test(model_dir: str, test, store: Path, *, seed: int, cfg, samples: int | None = None) -> dict:
    """Sample every test item `eval_samples` times; per-item counts and the per-sample diagnostics
    (answer length in tokens, share with no extractable answer, share cut off at max_new_tokens)."""
    res = probe(test, model=model_dir, store=str(store), num_samples=samples or cfg.eval_samples, seed=seed,
                progress=False, **_sampling(cfg))
    with ProbeStore(str(store), read_only=True) as st:
        counts = st.sample_counts(res.run_id)
        samples = st.samples(res.run_id).select(["status", "n_tokens", "finish_reason"]).to_dicts()
    n = len(samples) or 1
    return {"counts": {p.id: counts.get(p.id, (0, 0)) for p in test},
            "answer_tokens_mean": sum(s["n_tokens"] or 0 for s in samples) / n,
            "format_error_rate": sum(s["status"] == "no_answer" for s in samples) / n,
            "truncation_rate": sum(s["finish_reason"] == "length" for s in samples) / n}


def summarise(ev: dict, bucket_of: dict, cell_of: dict, ks) -> dict:
    """pass@1 and pass@k overall, per test bucket and per cell, from per-item counts."""
    def stats(ids):
        rows = [ev["counts"][i] for i in ids if ev["counts"][i][0]]
        if not rows:
            return {}
        out = {"n_items": len(rows)}
        for k in ks:
            vals = [pass_at_k(n=n, c=c, k=k) for n, c in rows if n >= k]
            out[f"pass@{k}"] = sum(vals) / len(vals) if vals else None
        return out

    ids = list(ev["counts"])
    rec = stats(ids)
    rec["by_bucket"] = {b: stats([i for i in ids if bucket_of.get(i) == b])
                        for b in ("unmastered", "partial", "mastered")}
    cells = sorted({cell_of[i] for i in ids})
    rec["by_cell"] = {c: stats([i for i in ids if cell_of[i] == c]) for c in cells}
    return rec


def buckets_at(store: str, k: int) -> dict:
    """{id: bucket} over the first `k` samples of every item of a probe store's latest run: the buckets of
    a probe at k, read from one that drew more."""
    with ProbeStore(store, read_only=True) as st:
        outcomes = st.outcomes(st.latest_run_id())
    return {pid: bucket_of_outcomes(seq[:k]) for pid, seq in outcomes.items()}


def _test_buckets_at(base: BaseModel, k: int, test_bucket: dict) -> dict:
    """The base model's test buckets at `k` samples per item (the first k of its probe), so a transition
    matrix compares the base with a model evaluated at k on equal terms: at fewer samples an item lands in
    the unmastered or mastered bucket more often by chance."""
    if k >= max((n for n, _ in base.test.values()), default=0):
        return test_bucket
    return buckets_at(base.test_store, k)


def transitions(before: dict, after_counts: dict) -> dict:
    """{before bucket: {after bucket: count}} over the test items (after = the model's bucket at k)."""
    out = {b: {a: 0 for a in ("unmastered", "partial", "mastered")} for b in ("unmastered", "partial", "mastered")}
    for i, (n, c) in after_counts.items():
        if n and before.get(i):
            out[before[i]][bucket(n=n, c=c)] += 1
    return out


def _sft_losses(run: ArmRunV2, arm, rows) -> dict:
    """Held-out SFT loss (the test items' worked solutions) of the final model and of the model entering RL."""
    from stagewise.train.heldout_loss import sft_loss, sft_token_batches

    def loss_of(model_dir: str) -> float:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        net = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return sft_loss(net, sft_token_batches(rows, tok))

    out = {"heldout_sft_loss": loss_of(run.model_dir)}
    if run.sft_model and run.sft_model != run.model_dir:
        out["heldout_sft_loss_before_rl"] = loss_of(run.sft_model)
    return out


def _command(quick: bool, arms, cfg) -> str:
    parts = ["stagewise experiment --design v2 --out DIR"]
    if quick:
        parts.append("--quick")
    if arms:
        parts.append("--arms " + (arms if isinstance(arms, str) else ",".join(arms)))
    return " ".join(parts)
