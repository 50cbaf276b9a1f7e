"""Route and export cost against pool size: synthetic probe stores of 10k, 100k and 1M items x 16 samples.

    python -m benchmarks.bench_route_scale                       # 10k, 100k, 1M (the 1M stores need ~20 GB of disk)
    python -m benchmarks.bench_route_scale --sizes 10000         # the smallest size only (a few minutes)
    python -m benchmarks.bench_route_scale --dir /big/disk       # where the stores are built (default: a temp dir)

Each store is what `stagewise probe -k 16` would leave: GSM8K-like problems (a worked reference solution
ending in "#### N", task gsm8k so the numeric verifier scores demonstrations) and 16 samples per item with
completions of about 1,000 characters, written once with `--keep-completions all` (every text) and once
with `none` (scores, statuses, extracted answers and token counts only). Per-item pass rates are spread
over [0, 1] so all three buckets are large. Stores are generated inside DuckDB (the probe would take
weeks on this machine); the samples table is exactly the probe's.

Measured per size and setting, each step in its own subprocess (wall time, peak RSS from wait4):
`stagewise.route` (the assignments of every item) and `stagewise.export` (TRL format, demonstrations
from the reference solution, each verified by the item's verifier), plus the store's size on disk.
Targets at 1M items on 2 cores: route <= 30 s, export <= 5 min, peak RSS <= 4 GB, growth no worse than
linear. The growth column is (time ratio) / (size ratio) against the previous size: <= 1 is linear or better.
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

NAME = "route_scale"
K = 16

# Pieces of GSM8K-style reasoning; each completion strings 11 of them with numbers drawn from its hash,
# so texts are realistic in length and vocabulary and not trivially compressible.
_STEPS = [
    "First, we find how many {a} items there are in total: {a} + {b} = {c}.",
    "Next, each group holds {b} of them, so we divide {c} by {b} to get the number of groups.",
    "She spends {a} dollars on the first day and {b} dollars on the second day, so {a} + {b} = {c} dollars.",
    "The remaining amount is {c} - {a} = {b}, which is what is left after the purchase.",
    "Multiplying the {a} boxes by {b} pencils per box gives {c} pencils in all.",
    "Half of {c} is needed for the recipe, and the rest is kept for later in the week.",
    "So the train travels {a} miles per hour for {b} hours, covering {c} miles before it stops.",
    "We subtract the {a} broken eggs from the {c} eggs collected, leaving {b} good eggs to sell.",
    "Each of the {b} students brings {a} cookies, so the class has {c} cookies for the party.",
    "Then the price rises by {a} percent, and we recompute the total cost with the new price of {c}.",
    "Let x be the number of apples; then x + {a} = {c}, so x = {b} apples were in the basket at first.",
    "Adding the weekly savings of {a} dollars over {b} weeks gives {c} dollars saved by the end.",
]


def build_store(path: str, n_items: int, keep: str, seed: int = 0) -> dict:
    """Write a probe store with n_items x K samples; returns its counts and size."""
    from stagewise.curate.store import ProbeStore

    steps = "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in _STEPS) + "]"
    with ProbeStore(path) as st:
        run_id = st.start_run({"model": {"name": "synthetic", "weights_sha256": None}, "backend": "hf",
                               "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 512},
                               "seed": seed, "num_samples": K, "task_override": None,
                               "system_prompt": None, "prompt_template": None, "keep_completions": keep,
                               "synthetic": f"bench_route_scale {n_items} items"})
        con = st.con
        con.execute("SET enable_progress_bar = false")
        con.execute(f"""
            INSERT INTO problems
            SELECT 'q' || i AS id,
                   'Tom has ' || (i % 97 + 3) || ' marbles and buys ' || (i % 13 + 2) || ' bags of '
                     || (i % 7 + 4) || ' marbles each. How many marbles does he have now? (item ' || i || ')',
                   CAST((i % 97 + 3) + (i % 13 + 2) * (i % 7 + 4) AS VARCHAR),
                   'He buys ' || (i % 13 + 2) || ' * ' || (i % 7 + 4) || ' = <<' || (i % 13 + 2) || '*'
                     || (i % 7 + 4) || '=' || ((i % 13 + 2) * (i % 7 + 4)) || '>>'
                     || ((i % 13 + 2) * (i % 7 + 4)) || ' marbles.' || chr(10) || 'So he has ' || (i % 97 + 3) || ' + '
                     || ((i % 13 + 2) * (i % 7 + 4)) || ' = ' || ((i % 97 + 3) + (i % 13 + 2) * (i % 7 + 4))
                     || ' marbles.' || chr(10) || '#### ' || ((i % 97 + 3) + (i % 13 + 2) * (i % 7 + 4)),
                   'synthetic', 'gsm8k', '{{}}'
            FROM range({n_items}) t(i)
        """)
        # Per item a pass rate p in [0, 1] (a third of items at 0 or 1, as with a small model); per sample
        # a hash decides correct or not. The completion ends in \\boxed{answer} when correct.
        text = "true" if keep == "all" else "false"
        con.execute(f"""
            INSERT INTO samples (run_id, problem_id, sample_idx, completion, extracted, score, status, reason,
                                 n_tokens, finish_reason)
            WITH s AS (
                SELECT i, j, hash(i * 131 + j * 7 + {seed}) AS h,
                       CASE WHEN i % 6 = 0 THEN 0.0 WHEN i % 6 = 1 THEN 1.0 ELSE ((hash(i) % 1000) / 1000.0) END AS p,
                       (i % 97 + 3) + (i % 13 + 2) * (i % 7 + 4) AS answer
                FROM range({n_items}) a(i), range({K}) b(j)
            ), v AS (
                SELECT *, ((h % 10000) / 10000.0) < p AS ok FROM s
            )
            SELECT '{run_id}', 'q' || i, j,
                   CASE WHEN {text} THEN
                     array_to_string(list_transform(range(11), lambda x: replace(replace(replace(
                         {steps}[1 + ((hash(h + x)) % {len(_STEPS)})::INT],
                         '{{a}}', CAST(hash(h + x + 1) % 90 + 2 AS VARCHAR)), '{{b}}', CAST(hash(h + x + 2) % 40 + 2 AS VARCHAR)),
                         '{{c}}', CAST(hash(h + x + 3) % 900 + 10 AS VARCHAR))), ' ')
                     || ' The final answer is \\boxed{{' || CASE WHEN ok THEN answer ELSE answer + 1 END || '}}.'
                   END,
                   CAST(CASE WHEN ok THEN answer ELSE answer + 1 END AS VARCHAR),
                   CASE WHEN ok THEN 1.0 ELSE 0.0 END,
                   CASE WHEN ok THEN 'correct' ELSE 'wrong' END,
                   NULL, 180 + (h % 200)::INT, 'stop'
            FROM v
        """)
        st._widen_view(K)
        con.execute("CHECKPOINT")
        samples, chars = con.execute("SELECT count(*), avg(length(completion)) FROM samples").fetchall()[0]
    return {"run_id": run_id, "samples": int(samples), "mean_completion_chars": chars,
            "store_bytes": os.path.getsize(path)}


def run_side(args) -> None:
    """One measured step in this subprocess: route or export of --store; prints a JSON line."""
    import time

    import stagewise as sw

    t0 = time.perf_counter()
    if args.side == "route":
        frame = sw.route(args.store)
        out = {"rows": len(frame)}
    else:
        res = sw.export(args.store, args.out, format="trl", demos=("solution",), overwrite=True)
        out = {"files": {k: v.get("rows") for k, v in res.manifest["files"].items()}}
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _own_peak_rss_mb()
    print(json.dumps(out))


def _own_peak_rss_mb() -> float | None:
    """This process's own peak RSS (VmHWM of its address space). wait4's ru_maxrss is not: Linux carries
    the parent's high-water mark across fork + exec, so every step would report at least the RSS of the
    parent that built the store (the same 338 MB for route and export at 10k)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated item counts")
    ap.add_argument("--keep", default="all,none", help="--keep-completions settings to build")
    ap.add_argument("--dir", default=None, help="where to build the stores (default: a temp dir, removed after)")
    ap.add_argument("--side", choices=["route", "export"], help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--no-results-md", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.side:
        run_side(args)
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    keeps = [k.strip() for k in args.keep.split(",") if k.strip()]
    workdir = args.dir or tempfile.mkdtemp(prefix="stagewise-route-scale-")
    os.makedirs(workdir, exist_ok=True)
    env = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "2"}
    rows, results = [], []
    try:
        for keep in keeps:
            prev = None
            for n in sizes:
                store = os.path.join(workdir, f"store-{n}-{keep}.duckdb")
                if os.path.exists(store):
                    os.unlink(store)
                info = build_store(store, n, keep)
                step = {}
                for side in ("route", "export"):
                    out_dir = os.path.join(workdir, f"export-{n}-{keep}")
                    m = harness.run_measured(f"{side} {n} {keep}", [
                        harness.python(), "-m", "benchmarks.bench_route_scale", "--side", side, "--store", store,
                        "--out", out_dir], env=env, cwd=ROOT).check()
                    inner = json.loads(m.stdout.strip().splitlines()[-1])
                    step[side] = {"wall_s": m.seconds, "inner_s": round(inner["seconds"], 2),
                                  **{k: v for k, v in inner.items() if k != "seconds"}}
                    if step[side].get("peak_rss_mb") is None:  # not Linux: wait4's figure, an upper bound
                        step[side]["peak_rss_mb"] = m.peak_rss_mb
                    shutil.rmtree(out_dir, ignore_errors=True)
                record = {"items": n, "keep_completions": keep, **info, **step}
                if prev is not None:
                    ratio = n / prev["items"]
                    record["route_growth"] = round(step["route"]["wall_s"] / prev["route"]["wall_s"] / ratio, 2)
                    record["export_growth"] = round(step["export"]["wall_s"] / prev["export"]["wall_s"] / ratio, 2)
                results.append(record)
                prev = record
                rows.append([f"{n:,} x {K}", keep, f"{info['store_bytes'] / 1e9:.2f} GB",
                             f"{info['store_bytes'] * 1000 / info['samples'] / 1e6:.3f} MB",
                             f"{step['route']['wall_s']:.1f} s", f"{step['route']['peak_rss_mb']:,.0f} MB",
                             f"{step['export']['wall_s']:.1f} s", f"{step['export']['peak_rss_mb']:,.0f} MB",
                             record.get("route_growth", "-"), record.get("export_growth", "-")])
                os.unlink(store)
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    headers = ["items x samples", "completions", "store", "per 1k samples", "route", "route RSS", "export",
               "export RSS", "route growth", "export growth"]
    harness.print_table("route + export vs pool size", headers, rows)
    path = harness.write_json(NAME, {"k": K, "results": results})
    print(f"wrote {path}")
    if not args.no_results_md:
        m = harness.machine()
        body = (f"`python -m benchmarks.bench_route_scale --sizes {args.sizes}`: synthetic GSM8K-like stores "
                f"(k = {K}, ~1,000-character completions, numeric verifier, reference-solution demonstrations), "
                f"each step in its own process on {m.get('cpus')} CPUs ({m.get('cpu', '?')}). Growth = time "
                "ratio / size ratio against the row above (<= 1: linear or better). Targets at 1M items: "
                "route <= 30 s, export <= 5 min, peak RSS <= 4 GB.\n\n"
                "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
                + "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in rows))
        harness.update_results_md("Route and export vs pool size", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
