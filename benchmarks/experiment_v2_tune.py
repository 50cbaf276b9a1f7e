"""Tune the second design's pretraining: probe base-model checkpoints the way the experiment does and print
the validity checks and the bucket mix per cell, to choose where pretraining stops.

    python benchmarks/experiment_v2_tune.py MODEL_DIR [MODEL_DIR ...] [--cap-items 40]

A checkpoint dir is what `pretrain_v2(..., checkpoints=[...])` saves under `<model>/step-N`. The capability
check probes at most --cap-items of the unmastered items (the experiment probes all of them).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from stagewise.experiments import testbed_v2
from stagewise.experiments.config import V2_DEFAULT
from stagewise.experiments.runner_v2 import POOL_PROBE_SEED, TEST_PROBE_SEED, _capability_counts, _probe_counts
from stagewise.experiments.validity import format_checks, validity_checks
from stagewise.curate.statistics import bucket


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--cap-items", type=int, default=40)
    ap.add_argument("--pool-per-cell", type=int, default=V2_DEFAULT.pool_per_cell)
    ap.add_argument("--no-test", action="store_true", help="skip the test probe (headroom from the pool instead)")
    args = ap.parse_args()
    cfg = replace(V2_DEFAULT, pool_per_cell=args.pool_per_cell)
    cells = cfg.cells
    pool = testbed_v2.items_for(cells, cfg.pool_per_cell, "pool")
    test = testbed_v2.items_for(cells, cfg.test_per_cell, "test")
    cell_of = {p.id: testbed_v2.cell_of(p) for p in pool + test}
    for model in args.models:
        t0 = time.time()
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
        print(f"== {model}  ({time.time() - t0:.0f} s; pool probe {t_pool:.0f} s; capability on {len(cap)} of "
              f"{len(unm)} unmastered)")
        for line in format_checks(checks):
            print(line)
        for cell, d in by_cell.items():
            print(f"  {cell:<8} U {d['unmastered']:>2}  P {d['partial']:>2}  M {d['mastered']:>2}")
        print(json.dumps({"model": model, "checks": checks, "by_cell": by_cell}), flush=True)


if __name__ == "__main__":
    main()
