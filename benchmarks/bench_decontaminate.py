"""Benchmark: `stagewise decontaminate` (streaming, vectorised) vs the naive n-gram-set loop.

    python -m benchmarks.bench_decontaminate                      # 1M pool rows (the target)
    python -m benchmarks.bench_decontaminate --rows 20000 --no-results-md   # a quick look

The pool is generated GSM8K-like JSONL (shipped training rows with fresh numbers, so rows differ),
with planted contamination: every 1,000th row is a GSM8K test question, every 2,000th row quotes
10 words of a MATH-500-sized set's problem inside a new sentence. The benchmark sets are the shipped
GSM8K test split (1,319 items) and 500 generated MATH-like problems.

The baseline is what open-r1's decontamination script does, in plain Python: a set of the benchmark
n-gram strings, then for every pool row json.loads, normalise, split, join each n-gram and look it up.
Both run in their own subprocess on the same files, and must report the same contaminated count
(and find every planted row). Target (issue): <= 2 min at 1M rows on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness

NAME = "decontaminate"
TARGET_SECONDS = 120.0
NGRAM = 8

_WORDS = ["prime", "integer", "polynomial", "triangle", "circle", "radius", "sequence", "modulo", "divisor", "remainder", "fraction", "matrix", "vector", "angle", "perimeter", "probability", "parabola", "ellipse", "hyperbola", "logarithm", "exponent", "series", "limit", "derivative", "integral", "factorial", "permutation", "combination", "digit", "base"]
_ASKS = ("Find the value of", "Compute", "Determine", "Evaluate", "What is", "Simplify", "How many",
         "Express as a common fraction", "Solve for x in", "Give the smallest positive")


def generate_math(path: str, n: int = 500, seed: int = 1) -> str:
    """A MATH-500-sized set: n distinct problems mixing words, numbers and LaTeX."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14)))
            a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(2, 9)
            problem = (f"{rng.choice(_ASKS)} $\\frac{{{a}}}{{{b}}} + x^{c}$ given the {words} of problem {i}, "
                       f"where each {rng.choice(_WORDS)} is at most {a * b}.")
            f.write(json.dumps({"problem": problem, "answer": str(a + b + c)}) + "\n")
    return path


def generate_pool(path: str, n_rows: int, math_path: str, seed: int = 0) -> dict:
    """GSM8K-like JSONL with planted copies; returns how many rows were planted."""
    import stagewise

    data = os.path.join(os.path.dirname(stagewise.__file__), "data", "gsm8k")
    with open(os.path.join(data, "train_head500.jsonl"), encoding="utf-8") as f:
        train = [json.loads(line) for line in f]
    with open(os.path.join(data, "test.jsonl"), encoding="utf-8") as f:
        test = [json.loads(line) for line in f]
    with open(math_path, encoding="utf-8") as f:
        math = [json.loads(line) for line in f]
    rng = random.Random(seed)
    planted = {"gsm8k_copies": 0, "math_quotes": 0}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(n_rows):
            if i % 1000 == 999:
                row = dict(test[(i // 1000) % len(test)])
                planted["gsm8k_copies"] += 1
            elif i % 2000 == 1499:
                words = math[(i // 2000) % len(math)]["problem"].split()
                quote = " ".join(words[:10])
                row = {"question": f"Here is a warm-up. {quote} Then add {i} to the result.",
                       "answer": f"#### {i}"}
                planted["math_quotes"] += 1
            else:
                base = train[i % len(train)]
                # every number replaced: rows differ from each other and from the shipped rows
                question = re.sub(r"\d+", lambda m: str(rng.randint(2, 9999)), base["question"])
                row = {"question": question, "answer": f"{base['answer'].rpartition('####')[0]}#### {i}"}
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return planted


def naive(pool: str, against: list[str], n: int = NGRAM) -> dict:
    """open-r1's method in plain Python: benchmark n-gram strings in a set, every pool row checked."""
    from stagewise.curate.schema import normalise_text
    from stagewise.curate.sources import load_problems

    grams = set()
    for spec in against:
        for p in load_problems(spec, dedupe=False):
            words = normalise_text(p.prompt).split()
            grams.update(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
            if len(words) < n:
                grams.add(" ".join(words))
    rows = contaminated = 0
    with open(pool, encoding="utf-8") as f:
        for line in f:
            words = normalise_text(json.loads(line)["question"]).split()
            rows += 1
            if len(words) < n:
                contaminated += " ".join(words) in grams
            elif any(" ".join(words[i:i + n]) in grams for i in range(len(words) - n + 1)):
                contaminated += 1
    return {"rows": rows, "contaminated": contaminated}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="pool rows (default 1,000,000)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-results-md", action="store_true")
    ap.add_argument("--naive", nargs="+", metavar="PATH", help=argparse.SUPPRESS)  # the baseline subprocess
    args = ap.parse_args(argv)
    if args.naive:
        print(json.dumps(naive(args.naive[0], args.naive[1:])))
        return 0

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-decontaminate-")
    os.makedirs(workdir, exist_ok=True)
    math_path = generate_math(os.path.join(workdir, "math500_like.jsonl"))
    pool = os.path.join(workdir, f"pool_{args.rows}.jsonl")
    planted = generate_pool(pool, args.rows, math_path)
    against = ["gsm8k:test", math_path]
    stagewise_bin = os.path.join(os.path.dirname(sys.executable), "stagewise")
    load_before = os.getloadavg()[0]
    flags = [part for a in against for part in ("--against", a)]
    ours = harness.run_measured("stagewise", [stagewise_bin, "decontaminate", pool, *flags, "--json", "--no-progress",
                                              "--show", "0"]).check()
    base = harness.run_measured("naive", [sys.executable, "-m", "benchmarks.bench_decontaminate", "--naive", pool,
                                          *against], cwd=os.path.dirname(harness.HERE)).check()
    load = (load_before, os.getloadavg()[0])
    a, b = json.loads(ours.stdout), json.loads(base.stdout)
    found_planted = a["contaminated"] >= planted["gsm8k_copies"] + planted["math_quotes"]
    speedup = base.seconds / ours.seconds
    verdict = {
        f"<= {TARGET_SECONDS:.0f} s at {args.rows:,} rows": ours.seconds <= TARGET_SECONDS,
        "same contaminated count as the naive loop": a["contaminated"] == b["contaminated"],
        "every planted row found": found_planted,
    }
    headers = ["rows", "contaminated (stagewise / naive)", "planted", "stagewise s", "naive s", "speedup",
               "stagewise peak RSS MB", "naive peak RSS MB"]
    row = [f"{args.rows:,}", f"{a['contaminated']:,} / {b['contaminated']:,}",
           f"{planted['gsm8k_copies'] + planted['math_quotes']:,}", f"{ours.seconds:.1f}", f"{base.seconds:.1f}",
           f"{speedup:.2f}x", f"{ours.peak_rss_mb:.0f}", f"{base.peak_rss_mb:.0f}"]
    harness.print_table("decontaminate: stagewise (streaming, polars + numpy) vs naive n-gram sets", headers, [row])
    harness.print_table("targets", ["target", "met"], [[k, "yes" if v else "NO"] for k, v in verdict.items()])
    ours.stdout = ours.stdout[:2000]
    out = harness.write_json(NAME, {"rows": args.rows, "planted": planted, "stagewise": ours, "naive": base,
                                    "speedup": round(speedup, 2), "targets": verdict, "load_average_1m": load})
    print(f"wrote {out}")
    if not args.no_results_md:
        md = [("`python -m benchmarks.bench_decontaminate` — `stagewise decontaminate POOL --against gsm8k:test "
               "--against MATH500_LIKE --json` against the naive loop (open-r1's method: a Python set of "
               "benchmark 8-gram strings, every pool row normalised, split and looked up), each in its own "
               "subprocess, on generated GSM8K-like JSONL with planted copies."), "",
              "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
              "| " + " | ".join(row) + " |", ""]
        md += [f"- {k}: {'met' if v else 'NOT met'}" for k, v in verdict.items()]
        md += ["", (f"1-minute load average {load[0]:.1f} before, {load[1]:.1f} after, on {os.cpu_count()} "
                    "CPUs.")]
        harness.update_results_md(NAME, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
