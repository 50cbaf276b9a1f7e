"""Benchmark: `stagewise profile` vs a vectorised pandas implementation of the same statistics.

    python -m benchmarks.bench_profile              # 100k and 1M generated GSM8K-like rows
    python -m benchmarks.bench_profile --rows 20000 --rows 200000 --no-results-md   # a quick look

Both run as subprocesses on the same generated JSONL, so each peak RSS is the process's own. The
baseline is the straightforward pandas version a curator would write (read_json(lines=True) and `.str`
methods, no row-wise apply). Targets: >= 3x faster at 1M rows, peak RSS <= 2 GB, and peak
RSS growing by <= 200 MB from 100k to 1M rows. Both tools' statistics are compared for agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness

NAME = "profile"
TARGET_SPEEDUP, TARGET_RSS_MB, TARGET_GROWTH_MB = 3.0, 2048, 200


def generate(path: str, n_rows: int, seed: int = 0) -> str:
    """GSM8K-like JSONL: shipped GSM8K rows with varied numbers, plus some duplicates and bad answers."""
    import stagewise

    data = os.path.join(os.path.dirname(stagewise.__file__), "data", "gsm8k")
    base = []
    for name in ("test.jsonl", "train_head500.jsonl"):
        with open(os.path.join(data, name), encoding="utf-8") as f:
            base += [json.loads(line) for line in f]
    rng = random.Random(seed)
    prev = ""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(n_rows):
            row = base[i % len(base)]
            question = f"{row['question']} (variant {i})"
            if i % 50 == 49:  # exact duplicate of the previous prompt
                question = prev
            elif i % 97 == 96:  # duplicate of the previous prompt after normalising case and spacing
                question = "  " + prev.upper().replace(" ", "   ")
            prev = question
            solution = row["answer"].rpartition("####")[0]
            value = rng.randint(1, 5_000_000)
            answer = f"{value:,}" if i % 3 == 0 else str(value)
            if i % 200 == 7:
                answer_text = solution.strip()  # no #### marker: a parse failure
            elif i % 150 == 3:
                answer_text = f"{solution}#### {value / 8:.3f}"
            else:
                answer_text = f"{solution}#### {answer}"
            f.write(json.dumps({"question": question, "answer": answer_text}) + "\n")
    os.replace(tmp, path)
    return path


def pandas_profile(path: str) -> dict:
    """The same statistics with pandas vectorised string methods (the baseline)."""
    import numpy as np
    import pandas as pd
    from stagewise.curate.presets import (
        CALC_ANNOTATION,
        DECIMAL_PATTERN,
        FRACTION_PATTERN,
        INTEGER_PATTERN,
        LATEX_PATTERN,
    )

    df = pd.read_json(path, lines=True, dtype=False)
    q = df["question"].astype("string")
    raw = df["answer"].astype("string")
    has = raw.str.contains("####", regex=False).fillna(False).astype(bool)
    parts = raw.str.rpartition("####")
    answer = parts[2].str.strip().str.replace(",", "", regex=False).where(has)
    solution = parts[0].str.replace(CALC_ANNOTATION, "", regex=True).str.strip().where(has)
    parse_fail = raw.notna() & (~has | (answer.fillna("") == ""))
    a = answer.str.strip()
    empty = a.isna() | (a == "")
    a = a.fillna("")
    conds = [empty.to_numpy(), a.str.contains(INTEGER_PATTERN, regex=True).to_numpy(bool),
             a.str.contains(DECIMAL_PATTERN, regex=True).to_numpy(bool),
             a.str.contains(FRACTION_PATTERN, regex=True).to_numpy(bool),
             a.str.contains(LATEX_PATTERN, regex=True).to_numpy(bool)]
    types = pd.Series(np.select(conds, ["empty", "integer", "decimal", "fraction", "latex"], default="text"))
    norm = q.str.normalize("NFKC").str.lower().str.replace(r"\s+", " ", regex=True).str.strip()
    p_len, s_len = q.str.len(), solution.str.len()

    def describe(s):
        s = s.dropna()
        return {"count": len(s), "min": int(s.min()),
                **{f"p{int(p * 100)}": int(s.quantile(p, interpolation="nearest")) for p in (0.5, 0.9, 0.99)},
                "max": int(s.max()), "mean": round(float(s.mean()), 1)}

    counts = types.value_counts()
    return {
        "rows": len(df),
        "duplicates": {"exact": int(q.duplicated().sum()), "normalised": int(norm.duplicated().sum())},
        "missing": {"prompt": int((q.isna() | (q.fillna("").str.strip() == "")).sum()),
                    "answer": int(empty.sum()),
                    "solution": int((solution.isna() | (solution.fillna("").str.strip() == "")).sum())},
        "answer_types": {t: int(counts.get(t, 0)) for t in ("integer", "decimal", "fraction", "latex", "text",
                                                            "empty")},
        "parse_failures": {"gsm8k": int(parse_fail.sum())},
        "lengths": {"prompt_chars": describe(p_len), "solution_chars": describe(s_len)},
        "samples": df.head(3).to_dict("records"),
    }


COMPARED = ("rows", "duplicates", "missing", "answer_types", "parse_failures", "lengths")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append", help="row counts (default: 100000 and 1000000)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-results-md", action="store_true")
    ap.add_argument("--pandas", metavar="PATH", help=argparse.SUPPRESS)  # the baseline subprocess
    args = ap.parse_args(argv)
    if args.pandas:
        print(json.dumps(pandas_profile(args.pandas), default=str))
        return 0

    sizes = args.rows or [100_000, 1_000_000]
    stagewise_bin = os.path.join(os.path.dirname(sys.executable), "stagewise")
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-profile-")
    os.makedirs(workdir, exist_ok=True)
    results, table = [], []
    load_before = os.getloadavg()[0]
    for n in sizes:
        path = os.path.join(workdir, f"gsm8k_like_{n}.jsonl")
        if not os.path.exists(path):
            generate(path, n)
        size_mb = os.path.getsize(path) / 2**20
        ours = harness.best_of(args.repeats, f"stagewise {n}",
                               [stagewise_bin, "profile", f"gsm8k:{path}", "--json"])
        base = harness.best_of(args.repeats, f"pandas {n}",
                               [sys.executable, "-m", "benchmarks.bench_profile", "--pandas", path],
                               cwd=os.path.dirname(harness.HERE))
        a, b = json.loads(ours.stdout), json.loads(base.stdout)
        agree = {k: a[k] == b[k] for k in COMPARED}
        speedup = base.seconds / ours.seconds
        results.append({"rows": n, "file_mb": round(size_mb, 1), "stagewise": ours, "pandas": base,
                        "speedup": round(speedup, 2), "agree": agree})
        table.append([f"{n:,}", f"{size_mb:.0f}", f"{ours.seconds:.2f}", f"{base.seconds:.2f}", f"{speedup:.2f}x",
                      f"{ours.peak_rss_mb:.0f}", f"{base.peak_rss_mb:.0f}",
                      "yes" if all(agree.values()) else "NO: " + ",".join(k for k, v in agree.items() if not v)])
        for m in (ours, base):
            m.stdout = m.stdout[:2000]
    load = (load_before, os.getloadavg()[0])
    growth = results[-1]["stagewise"].peak_rss_mb - results[0]["stagewise"].peak_rss_mb
    base_growth = results[-1]["pandas"].peak_rss_mb - results[0]["pandas"].peak_rss_mb
    last = results[-1]
    verdict = {
        f"speedup >= {TARGET_SPEEDUP}x at {sizes[-1]:,} rows": last["speedup"] >= TARGET_SPEEDUP,
        f"peak RSS <= {TARGET_RSS_MB} MB": last["stagewise"].peak_rss_mb <= TARGET_RSS_MB,
        f"RSS growth {sizes[0]:,} -> {sizes[-1]:,} <= {TARGET_GROWTH_MB} MB": growth <= TARGET_GROWTH_MB,
        "same statistics as pandas": all(all(r["agree"].values()) for r in results),
    }
    headers = ["rows", "file MB", "stagewise s", "pandas s", "speedup", "stagewise peak RSS MB",
               "pandas peak RSS MB", "same stats"]
    harness.print_table("profile: stagewise (polars streaming) vs pandas", headers, table)
    harness.print_table("targets", ["target", "met"], [[k, "yes" if v else "NO"] for k, v in verdict.items()]
                        + [[f"RSS growth: stagewise {growth:+.0f} MB, pandas {base_growth:+.0f} MB", ""]])
    out = harness.write_json(NAME, {"sizes": sizes, "results": results, "rss_growth_mb": growth,
                                    "pandas_rss_growth_mb": base_growth, "targets": verdict,
                                    "load_average_1m": load})
    print(f"wrote {out}")
    if not args.no_results_md:
        intro = (f"`python -m benchmarks.bench_profile` — `stagewise profile gsm8k:FILE --json` (bounded JSONL "
                 "blocks parsed by polars, vectorised polars expressions) against a vectorised pandas "
                 "implementation of the same statistics (`read_json(lines=True)` + `.str` methods), each in its "
                 f"own subprocess, on generated GSM8K-like JSONL; best of {args.repeats} run(s).")
        md = [intro, "",
              "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        md += ["| " + " | ".join(str(c) for c in row) + " |" for row in table]
        md += ["", (f"Peak RSS growth {sizes[0]:,} → {sizes[-1]:,} rows: stagewise {growth:+.0f} MB, "
                    f"pandas {base_growth:+.0f} MB."), ""]
        md += [f"- {k}: {'met' if v else 'NOT met'}" for k, v in verdict.items()]
        md += ["", (f"The machine was shared with other jobs (1-minute load average {load[0]:.1f} before, "
                    f"{load[1]:.1f} after, on {os.cpu_count()} CPUs), so absolute seconds are noisy; both sides "
                    "ran under the same conditions.")]
        harness.update_results_md(NAME, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
