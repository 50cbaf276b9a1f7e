"""The experiment's report: results.json (one record per arm), results.md (the table) and a PNG of
accuracy per bucket per arm. Means over seeds with 95% t intervals (few seeds: a t interval is honest
about how little three numbers say; with one seed there is no interval and the table says so).
"""

from __future__ import annotations

import json
import math
import os

from stagewise.curate.cards import _figure, _save, markdown_table, write_text_atomic

BUCKETS = ("unmastered", "partial", "mastered")
# Metric name -> (column header, higher is better?)
METRICS = {
    "pass@1": ("held-out pass@1", True),
    "pass@4": ("pass@4", True),
    "pass@16": ("pass@16", True),
    "acc_unmastered": ("unmastered", True),
    "acc_partial": ("partial", True),
    "acc_mastered": ("mastered", True),
    "forgetting": ("forgetting (mastered drop)", False),
    "sft_loss_before_rl": ("SFT loss before RL", False),
    "sft_loss_after_rl": ("SFT loss after RL", False),
    "sft_loss_final": ("held-out SFT loss (final)", False),
    "train_wall_s": ("train wall s", None),
    "generated_tokens": ("RL tokens generated", None),
}

# Two-sided 97.5% quantiles of Student's t (df 1..30); beyond 30 the normal's 1.96 is close enough.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t_interval(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): the 95% t interval of the mean; low/high None with fewer than two values."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None, None
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    df = len(vals) - 1
    half = (_T975[df - 1] if df <= len(_T975) else 1.96) * math.sqrt(var / len(vals))
    return mean, mean - half, mean + half


def level_keys(per_seed: list[dict]) -> list[str]:
    return sorted({k for s in per_seed for k in s if k.startswith("acc_level")}, key=lambda k: int(k[9:]))


def arm_record(name: str, summary: str, per_seed: list[dict]) -> dict:
    """One results.json record: the name, the per-seed metrics, their means and 95% t intervals."""
    keys = [k for k in METRICS if any(k in s for s in per_seed)] + level_keys(per_seed)
    mean, ci = {}, {}
    for k in keys:
        m, lo, hi = t_interval([s.get(k) for s in per_seed])
        mean[k] = m
        ci[k] = None if lo is None else [lo, hi]
    return {"name": name, "summary": summary, "n_seeds": len(per_seed), "per_seed": per_seed,
            "mean": mean, "ci95": ci}


def _fmt(rec: dict, key: str, digits: int = 3) -> str:
    m = rec["mean"].get(key)
    if m is None:
        return "–"
    if key in ("train_wall_s", "generated_tokens"):
        return f"{m:,.0f}"
    ci = rec["ci95"].get(key)
    if not ci:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {(ci[1] - ci[0]) / 2:.{digits}f}"


def write_report(out, *, records: list[dict], context: dict) -> dict:
    """Write results.json, results.md and accuracy_by_bucket.png into `out`; return the paths."""
    os.makedirs(out, exist_ok=True)
    payload = {**context, "arms": records}
    json_path = write_text_atomic(os.path.join(out, "results.json"), json.dumps(payload, indent=2, default=float))
    png_path = bucket_plot(records, os.path.join(out, "accuracy_by_bucket.png"))
    md_path = write_text_atomic(os.path.join(out, "results.md"), render_markdown(records, context))
    return {"json": json_path, "markdown": md_path, "png": png_path}


def render_markdown(records: list[dict], context: dict) -> str:
    cfg = context.get("config", {})
    n_seeds = max((r["n_seeds"] for r in records), default=0)
    ci_note = ("mean ± half-width of the 95% t interval over seeds" if n_seeds > 1
               else "one seed: no interval (run with more seeds for one)")
    main_cols = ["pass@1", "pass@4", "pass@16", "acc_unmastered", "acc_partial", "acc_mastered", "forgetting"]
    cost_cols = ["sft_loss_before_rl", "sft_loss_after_rl", "sft_loss_final", "train_wall_s", "generated_tokens"]
    main = markdown_table(["arm"] + [METRICS[c][0] for c in main_cols],
                          [[r["name"]] + [_fmt(r, c) for c in main_cols] for r in records])
    cost = markdown_table(["arm"] + [METRICS[c][0] for c in cost_cols],
                          [[r["name"]] + [_fmt(r, c) for c in cost_cols] for r in records])
    levels = sorted({k for r in records for k in r["mean"] if k.startswith("acc_level")}, key=lambda k: int(k[9:]))
    by_level = markdown_table(["arm"] + [f"{k[9:]} digits" for k in levels],
                              [[r["name"]] + [_fmt(r, k) for k in levels] for r in records])
    arms = "\n".join(f"- **{r['name']}**: {r['summary']}" for r in records)
    probe = context.get("base_probe", {})
    bucket_lines = []
    for split in ("pool", "heldout"):
        counts = probe.get(split, {})
        if counts:
            bucket_lines.append(f"- {split}: " + ", ".join(f"{b} {counts.get(b, 0)}" for b in BUCKETS)
                                + (f" (by level: {probe.get(split + '_by_level')})" if probe.get(split + "_by_level")
                                   else ""))
    lines = [
        "# stagewise experiment: does routing by mastery beat SFT-then-RL on everything?",
        "",
        f"Reproduce: `{context.get('command', 'stagewise experiment')}`",
        "",
        (f"Testbed: multi-digit addition with worked column solutions, levels (digits) {cfg.get('levels')}; "
        f"a {context.get('model', {}).get('n_parameters', '?'):,}-parameter character-level Llama pretrained "
        f"from scratch on the easy levels. Equal compute: {cfg.get('total_steps')} optimizer steps of "
        f"{cfg.get('batch_size')} sequences per arm (two-stage arms: {cfg.get('sft_fraction')} SFT / rest RL, "
        f"GRPO groups of {cfg.get('num_generations')}). Seeds: {n_seeds}. Held-out pass@1 is the mean of "
        f"{cfg.get('eval_samples')} samples at temperature 1.0; pass@k is the unbiased estimator."),
        "",
        ("Buckets come from a base-model probe with k = "
        f"{cfg.get('probe_samples')} (held-out items: an independent probe, so the base row is not 0/1 by "
        "construction):"),
        *bucket_lines,
        "",
        f"## Accuracy ({ci_note})",
        "",
        main,
        "",
        ("Accuracy per bucket is held-out pass@1 within the bucket. Forgetting = base pass@1 on the mastered "
        "bucket minus the arm's (same seed); positive means the arm forgot."),
        "",
        "## Held-out pass@1 per level (digits per operand)",
        "",
        by_level,
        "",
        "## Loss and cost",
        "",
        cost,
        "",
        ("Held-out SFT loss: mean NLL per demonstration token of the held-out worked solutions "
        "(train.heldout_loss.sft_loss). Before RL = the model entering the RL stage; after RL = the final model."),
        "",
        "![accuracy per bucket per arm](accuracy_by_bucket.png)",
        "",
        "## Arms",
        "",
        arms,
        "",
    ]
    if context.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in context["notes"]], ""]
    return "\n".join(lines)


def bucket_plot(records: list[dict], path: str) -> str:
    """Grouped bars: held-out pass@1 per bucket (x) for each arm, with 95% t error bars."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(records) + 3), 4))
    width = 0.8 / max(1, len(records))
    for i, rec in enumerate(records):
        xs, ys, errs = [], [], []
        for j, b in enumerate(BUCKETS):
            key = f"acc_{b}"
            m = rec["mean"].get(key)
            if m is None:
                continue
            ci = rec["ci95"].get(key)
            xs.append(j + (i - (len(records) - 1) / 2) * width)
            ys.append(m)
            errs.append(0 if not ci else (ci[1] - ci[0]) / 2)
        ax.bar(xs, ys, width=width, yerr=errs, capsize=2, label=rec["name"])
    ax.set_xticks(range(len(BUCKETS)))
    ax.set_xticklabels([f"{b}\n(base probe)" for b in BUCKETS])
    ax.set_ylabel("held-out pass@1")
    ax.set_ylim(0, 1.05)
    ax.set_title("accuracy per bucket per arm (95% t intervals over seeds)")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    return _save(fig, path)
