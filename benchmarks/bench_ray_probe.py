"""Ray-sharded probing against one process on the same pool: the tiny model, 2 workers on 2 cores.

    python -m benchmarks.bench_ray_probe                     # 96 items x k=8, 64 new tokens
    python -m benchmarks.bench_ray_probe --items 16 -k 4     # the smallest run (about two minutes)

Both sides are the real CLI in their own process, timed from start to exit (peak RSS of the driver):
  one process   `stagewise probe POOL --backend-arg threads=2 --store one.duckdb` (both cores in one backend)
  Ray           `stagewise probe POOL --ray --ray-shards 2 --store ray.duckdb` (a local Ray instance started
                by the command; each shard an actor with one CPU and one thread)
The table gives the wall-time ratio (one process / Ray: > 1 means Ray was faster), Ray's start-up (instance
plus actors loading the model) in total and per shard, and whether the two stores hold the same samples
(keys, statuses and texts; every sample has its own seed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks import harness  # noqa: E402

NAME = "ray_probe"


def _samples(path):
    import duckdb

    con = duckdb.connect(path, read_only=True)
    try:
        return {(p, i): (t, s) for p, i, t, s in con.execute(
            "SELECT problem_id, sample_idx, completion, status FROM samples").fetchall()}
    finally:
        con.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=96)
    ap.add_argument("-k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--no-results-md", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    from stagewise.curate.models import build_tiny_model

    work = tempfile.mkdtemp(prefix="stagewise-ray-bench-")
    try:
        model = build_tiny_model(os.path.join(work, "tiny"), seed=0)
        pool = os.path.join(work, "pool.jsonl")
        with open(pool, "w") as f:
            for i in range(args.items):
                f.write(json.dumps({"question": f"What is {i} + {i % 7}? Answer with a number.",
                                    "answer": str(i + i % 7)}) + "\n")
        exe = os.path.join(os.path.dirname(harness.python()), "stagewise")
        common = [exe, "probe", pool, "--task", "gsm8k", "--model", model, "-k", str(args.k),
                  "--max-new-tokens", str(args.max_new_tokens), "--json", "--no-progress"]
        env = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
               "RAY_ADDRESS": ""}
        one = harness.run_measured("one process", common + ["--store", os.path.join(work, "one.duckdb"),
                                                            "--backend-arg", "threads=2"], env=env).check()
        ray = harness.run_measured("ray 2 shards", common + ["--store", os.path.join(work, "ray.duckdb"),
                                                             "--ray", "--ray-shards", "2"], env=env).check()
        s_one = json.loads(one.stdout)["summary"]
        s_ray = json.loads(ray.stdout)["summary"]
        a, b = _samples(os.path.join(work, "one.duckdb")), _samples(os.path.join(work, "ray.duckdb"))
        same_keys = sorted(a) == sorted(b)
        differ = sum(a[k] != b.get(k) for k in a)
        info = s_ray["ray"]
        load = [s["load_seconds"] for s in info["per_shard"]]
        result = {
            "items": args.items, "k": args.k, "max_new_tokens": args.max_new_tokens,
            "one_process": {"wall_s": one.seconds, "peak_rss_mb": one.peak_rss_mb, "tokens": s_one["tokens"],
                            "tokens_per_s": s_one.get("tokens_per_s")},
            "ray": {"wall_s": ray.seconds, "driver_peak_rss_mb": ray.peak_rss_mb, "tokens": s_ray["tokens"],
                    "startup_s": info["startup_seconds"], "shards": info["shards"], "per_shard": info["per_shard"]},
            "ratio_one_over_ray": round(one.seconds / ray.seconds, 3),
            "startup_per_shard_s": round(info["startup_seconds"] / info["shards"], 2),
            "same_keys": same_keys, "samples_differing": differ, "samples": len(a),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    harness.print_table(f"probe: one process vs Ray, {args.items} items x k={args.k}, {args.max_new_tokens} new tokens",
                        ["side", "wall", "peak RSS", "tokens", "notes"], [
        ["one process (2 threads)", f"{one.seconds:.1f} s", f"{one.peak_rss_mb:,.0f} MB", s_one["tokens"], ""],
        ["Ray, 2 shards x 1 CPU", f"{ray.seconds:.1f} s", f"{ray.peak_rss_mb:,.0f} MB (driver)", s_ray["tokens"],
         f"start-up {info['startup_seconds']:.1f} s ({result['startup_per_shard_s']:.1f} s per shard; "
         f"model load {', '.join(f'{x:.1f}' for x in load)} s)"],
    ])
    print(f"one process / Ray wall time: {result['ratio_one_over_ray']:.2f}x; same sample keys: {same_keys}; "
          f"{differ} of {len(a)} samples differ")
    path = harness.write_json(NAME, result)
    print(f"wrote {path}")
    if not args.no_results_md:
        m = harness.machine()
        body = (f"`python -m benchmarks.bench_ray_probe --items {args.items} -k {args.k} --max-new-tokens "
                f"{args.max_new_tokens}` on {m.get('cpus')} CPUs ({m.get('cpu', '?')}), tiny model.\n\n"
                "| side | wall | peak RSS | tokens |\n|---|---|---|---|\n"
                f"| one process, 2 threads | {one.seconds:.1f} s | {one.peak_rss_mb:,.0f} MB | {s_one['tokens']:,} |\n"
                f"| Ray, 2 shards x 1 CPU (local instance) | {ray.seconds:.1f} s | {ray.peak_rss_mb:,.0f} MB (driver) | "
                f"{s_ray['tokens']:,} |\n\n"
                f"Ratio one process / Ray: **{result['ratio_one_over_ray']:.2f}x**. Ray start-up (instance + actors "
                f"loading the model): {info['startup_seconds']:.1f} s, {result['startup_per_shard_s']:.1f} s per shard. "
                f"Same sample keys: {same_keys}; {differ} of {len(a)} samples differ.")
        harness.update_results_md("Ray-sharded probing vs one process", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
