"""The second design's report: results.json (design, validity, arms), results.md and two plots.

results.json holds exactly `design`, `validity` and `arms`; each arm has `name`, `per_seed` (one record
per (base, seed)), `paired_diff` (its difference from sft-all-rl-all in test pass@1, paired by base and
seed, with a hierarchical bootstrap 95% interval; pass@16, per-bucket and per-cell differences nested in
it), `compute` and `diagnostics`. Each arm's paired_diff also holds `method_minus_arm`:
routed-replay-reprobe (the method of the primary comparison) minus the arm, by the same bootstrap, so the
controls (random, cell-matched random) and the ablations are compared with the method directly. Everything
else the run knows (config, sweep grid, base probes) is in context.json beside it.
"""

from __future__ import annotations

import json
import os

from stagewise.curate.atomic import write_text_atomic
from stagewise.curate.cards import _figure, _save, markdown_table
from stagewise.curate.statistics import pass_at_k
from stagewise.experiments.arms_v2 import PRIMARY, PRIMARY_ARM
from stagewise.experiments.stats import hierarchical_bootstrap, paired_item_diffs

BUCKETS = ("unmastered", "partial", "mastered")


def _item_values(runs: list[dict], k: int, ids=None) -> dict:
    """{(base, seed): {item: pass@k of the item}} from the runs' per-item correct counts."""
    out = {}
    for r in runs:
        n = r["n_samples"]
        keep = ids.get(r["base"], set()) if isinstance(ids, dict) else ids
        out[(r["base"], r["seed"])] = {i: pass_at_k(n=n, c=c, k=k) for i, c in r["per_item_c"].items()
                                       if keep is None or i in keep}
    return out


def _diff(runs, ref, k=1, ids=None) -> dict:
    return hierarchical_bootstrap(paired_item_diffs(_item_values(runs, k, ids), _item_values(ref, k, ids)))


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def arm_record(name: str, runs: list[dict], ref: list[dict], base_runs: list[dict], bucket_ids: dict,
               cell_ids: dict, kmax: int = 16, method: list[dict] | None = None) -> dict:
    """One results.json arm record. `method`: the runs of PRIMARY_ARM, for `method_minus_arm`."""
    per_seed = []
    base_by_key = {(r["base"], r["seed"]): r for r in base_runs}
    for r in runs:
        b = base_by_key.get((r["base"], r["seed"]))
        mastered = r["by_bucket"].get("mastered", {}).get("pass@1")
        base_m = b["by_bucket"].get("mastered", {}).get("pass@1") if b else None
        rec = {k: r[k] for k in ("base", "seed", "pass@1", f"pass@{kmax}", "by_bucket", "by_cell") if k in r}
        rec["forgetting"] = None if mastered is None or base_m is None else base_m - mastered
        if "after_sft" in r:
            rec["after_sft"] = r["after_sft"]
            rec["final_at_after_sft_k"] = r["final_at_after_sft_k"]
        per_seed.append(rec)
    paired = {"metric": "test pass@1, arm minus " + PRIMARY}
    paired.update(_diff(runs, ref, 1))
    paired[f"pass@{kmax}"] = _diff(runs, ref, kmax)
    paired["by_bucket"] = {b: {"pass@1": _diff(runs, ref, 1, ids), f"pass@{kmax}": _diff(runs, ref, kmax, ids)}
                           for b, ids in bucket_ids.items()}
    paired["by_cell"] = {c: _diff(runs, ref, 1, ids) for c, ids in cell_ids.items()}
    if method and name != PRIMARY_ARM:
        paired["method_minus_arm"] = {"metric": f"test pass@1, {PRIMARY_ARM} minus arm", **_diff(method, runs, 1),
                                      "by_bucket": {b: _diff(method, runs, 1, ids) for b, ids in bucket_ids.items()}}
    comp_keys = ("trained_tokens", "generated_tokens", "cpu_s", "wall_s", "eval_cpu_s")
    compute = {k: _mean([r["compute"].get(k) for r in runs]) for k in comp_keys}
    compute["steps"] = runs[0]["compute"].get("steps", {}) if runs else {}
    compute["epochs_per_item"] = runs[0]["compute"].get("epochs_per_item", {}) if runs else {}
    compute["n_rows"] = runs[0]["compute"].get("n_rows", {}) if runs else {}
    compute["learning_rates"] = runs[0]["compute"].get("learning_rates") if runs else None
    diags = [r["diagnostics"] for r in runs]
    zv = [d.get("zero_variance_frac") or [] for d in diags]
    width = max(map(len, zv), default=0)
    diagnostics = {
        "zero_variance_frac": [_mean([z[i] for z in zv if i < len(z)]) for i in range(width)],
        "heldout_sft_loss": _mean([d.get("heldout_sft_loss") for d in diags]),
        "heldout_sft_loss_before_rl": _mean([d.get("heldout_sft_loss_before_rl") for d in diags]),
        "answer_tokens_mean": _mean([d.get("answer_tokens_mean") for d in diags]),
        "format_error_rate": _mean([d.get("format_error_rate") for d in diags]),
        "truncation_rate": _mean([d.get("truncation_rate") for d in diags]),
        "forgetting": (hierarchical_bootstrap(paired_item_diffs(_item_values(base_runs, 1, bucket_ids.get("mastered")),
                                                                _item_values(runs, 1, bucket_ids.get("mastered"))))
                       if base_runs else None),
    }
    mats = [d["transitions_after_sft"] for d in diags if d.get("transitions_after_sft")]
    if mats:
        diagnostics["transitions_after_sft"] = {b: {a: sum(m[b][a] for m in mats) for a in BUCKETS} for b in BUCKETS}
    reprobe = [t for d in diags for t in d.get("reprobe_transitions") or []]
    if reprobe:
        diagnostics["reprobe_transitions"] = reprobe
    return {"name": name, "per_seed": per_seed, "paired_diff": paired, "compute": compute,
            "diagnostics": diagnostics}


def write_report_v2(out, *, design: str, validity: list[dict], arms: dict, context: dict,
                    summaries: dict | None = None) -> dict:
    """results.json, context.json, results.md and the plots; returns their paths."""
    os.makedirs(out, exist_ok=True)
    records = []
    if arms:
        ref = arms.get(PRIMARY, [])
        base_runs = arms.get("base", [])
        any_run = next(iter(r for rs in arms.values() for r in rs), None)
        bucket_ids, cell_ids = _groups(context, any_run)
        kmax = max(context.get("config", {}).get("ks") or [16])
        records = [arm_record(name, runs, ref, base_runs, bucket_ids, cell_ids, kmax, arms.get(PRIMARY_ARM))
                   for name, runs in arms.items() if runs]
    payload = {"design": design, "validity": validity, "arms": records}
    paths = {"json": write_text_atomic(os.path.join(out, "results.json"), json.dumps(payload, indent=1, default=float)),
             "context": write_text_atomic(os.path.join(out, "context.json"),
                                          json.dumps(context, indent=1, default=float))}
    if records:
        kmax = max(context.get("config", {}).get("ks") or [16])
        paths["png"] = diff_plot(records, os.path.join(out, "paired_diff.png"))
        paths["png_buckets"] = bucket_plot(records, os.path.join(out, "pass_by_bucket.png"), kmax)
    paths["markdown"] = write_text_atomic(os.path.join(out, "results.md"),
                                          render_markdown(payload, context, summaries or {}))
    return paths


def _groups(context: dict, run: dict | None) -> tuple[dict, dict]:
    """Test item ids per base-probe bucket ({bucket: {base: ids}}: the independent test probe of each base
    decides, so an item's bucket may differ between bases) and per cell ({cell: ids})."""
    bucket_ids: dict = {b: {} for b in BUCKETS}
    cell_ids: dict = {}
    for base in context.get("bases", []):
        for item, b in (base.get("test_bucket_of") or {}).items():
            bucket_ids[b].setdefault(base["index"], set()).add(item)
    for item, cell in (context.get("test_cell_of") or {}).items():
        cell_ids.setdefault(cell, set()).add(item)
    return bucket_ids, dict(sorted(cell_ids.items()))


def _ci(d: dict | None, digits: int = 3) -> str:
    if not d or d.get("mean") is None:
        return "–"
    if d.get("ci_low") is None:
        return f"{d['mean']:+.{digits}f}"
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def _f(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def render_markdown(payload: dict, context: dict, summaries: dict) -> str:
    cfg = context.get("config", {})
    lines = ["# stagewise experiment, design v2: does routing by mastery beat SFT-then-RL on everything?", "",
             f"Reproduce: `{context.get('command', 'stagewise experiment --design v2')}`", ""]
    lines += ["## Validity checks (computed before any arm ran)", "",
              markdown_table(["check", "value", "threshold", "passed"],
                             [[c["check"], f"{c['value']:.3g}", str(c["threshold"]), "yes" if c["passed"] else "**no**"]
                              for c in payload["validity"]]), ""]
    if not payload["arms"]:
        failed = not all(c["passed"] for c in payload["validity"])
        lines += ["**A validity check failed: no arm was run or reported.**" if failed else
                  "Checks only: no arm was run.", ""]
        for base in context.get("bases", []):
            lines += [f"Base model {base['index']} ({base['model']}), pool buckets per cell:", "",
                      markdown_table(["cell", "unmastered", "partial", "mastered"],
                                     [[c, str(d["unmastered"]), str(d["partial"]), str(d["mastered"])]
                                      for c, d in base.get("pool_by_cell", {}).items()]), ""]
        return "\n".join(lines)
    if not all(c["passed"] for c in payload["validity"]):
        lines += ["**A validity check failed: this table is NOT a valid test of routing (run with "
                  "allow_invalid).**", ""]
    sweep = context.get("sweep", {})
    if sweep.get("ran"):
        lines += ["## Learning rates (sft-all-rl-all on validation, base 0, seed 0)", "",
                  markdown_table(["SFT lr", "validation pass@1 after SFT"],
                                 [[f"{r['sft_learning_rate']:g}", _f(r["val_pass@1"])] for r in sweep["sft_grid"]]),
                  "",
                  markdown_table(["RL lr (after the chosen SFT)", "validation pass@1 after RL"],
                                 [[f"{r['rl_learning_rate']:g}", _f(r["val_pass@1"])] for r in sweep["rl_grid"]]),
                  "", f"Chosen: SFT {sweep['chosen']['sft']:g}, RL {sweep['chosen']['rl']:g}; every arm uses them.", ""]
    else:
        lrs = context.get("learning_rates", {})
        lines += [f"Learning rates: no sweep in this run (SFT {lrs.get('sft')}, RL {lrs.get('rl')}).", ""]
    n_runs = max(len(a["per_seed"]) for a in payload["arms"])
    kk = f"pass@{max(cfg.get('ks') or [16])}"
    if context.get("missing_runs"):
        lines += [f"**Partial run: {len(context['missing_runs'])} (base, seed, arm) runs had not finished and "
                  "are not in these tables** (" + ", ".join(context["missing_runs"]) + ").", ""]
    lines += [f"## Test accuracy and the paired difference from {PRIMARY}", "",
              (f"{n_runs} (base, seed) pair(s); {cfg.get('test_per_cell')} test items per cell, "
               f"{cfg.get('eval_samples')} samples each. Δ = arm minus {PRIMARY}, paired by base and seed, "
               "with a hierarchical bootstrap 95% interval (pairs, then items)."), ""]
    header = ["arm", "pairs", "pass@1", kk, "Δ pass@1", f"Δ {kk}", "Δ unmastered", "Δ partial", "Δ mastered",
              "forgetting vs base (mastered)"]
    rows, secondary = [], []
    for a in payload["arms"]:
        ps = a["per_seed"]
        pd = a["paired_diff"]
        row = [a["name"], str(len(ps)), _f(_mean([p.get("pass@1") for p in ps])), _f(_mean([p.get(kk) for p in ps])),
               _ci(pd), _ci(pd.get(kk)),
               *[_ci(pd["by_bucket"].get(b, {}).get("pass@1")) for b in BUCKETS],
               _ci(a["diagnostics"].get("forgetting"))]
        (rows if len(ps) == n_runs else secondary).append(row)
    lines += [markdown_table(header, rows), ""]
    if secondary:
        lines += ["### Secondary: arms on fewer (base, seed) pairs", "",
                  f"Paired with {PRIMARY} on their own pairs only, so their intervals carry less seed variance.",
                  "", markdown_table(header, secondary), ""]
    versus = [[a["name"], str(vs.get("n_groups", 0)), _ci(vs),
               *[_ci(vs["by_bucket"].get(b)) for b in BUCKETS]]
              for a in payload["arms"] if (vs := a["paired_diff"].get("method_minus_arm"))]
    if versus:
        lines += [f"## The method against each arm ({PRIMARY_ARM} minus the arm, test pass@1)", "",
                  ("Paired by base and seed on the pairs both ran, with the same hierarchical bootstrap; positive: "
                   "the method is ahead. Against random and cell-matched random this is the signature's "
                   "\"routed beats random\"."), "",
                  markdown_table(["arm", "pairs", "Δ pass@1", *[f"Δ {b}" for b in BUCKETS]], versus), ""]
    # Stage attribution: what SFT did, what RL added.
    att = []
    for a in payload["arms"]:
        ps = [p for p in a["per_seed"] if "after_sft" in p]
        if not ps:
            continue
        cells = [a["name"]]
        ka = f"pass@{ps[0]['after_sft']['samples']}"
        for b in ("unmastered", "partial"):
            s1 = _mean([p["after_sft"]["by_bucket"].get(b, {}).get("pass@1") for p in ps])
            s16 = _mean([p["after_sft"]["by_bucket"].get(b, {}).get(ka) for p in ps])
            f1 = _mean([p["final_at_after_sft_k"].get(b, {}).get("pass@1") for p in ps])
            f16 = _mean([p["final_at_after_sft_k"].get(b, {}).get(ka) for p in ps])
            cells += [f"{_f(s1)} / {_f(s16)}", f"{_f(f1)} / {_f(f16)}"]
        att.append(cells)
    if att:
        lines += [f"## Which stage moved what (pass@1 / {ka} per test bucket, after SFT and at the end)", "",
                  markdown_table(["arm", "unmastered after SFT", "unmastered final", "partial after SFT",
                                  "partial final"], att), ""]
    cells = sorted({c for a in payload["arms"] for c in a["paired_diff"].get("by_cell", {})})
    if cells:
        lines += ["## Δ pass@1 per cell (arm minus " + PRIMARY + ")", "",
                  markdown_table(["arm"] + cells,
                                 [[a["name"]] + [_f(a["paired_diff"]["by_cell"].get(c, {}).get("mean"), 2)
                                                 for c in cells] for a in payload["arms"]]), ""]
    comp = []
    for a in payload["arms"]:
        c, d = a["compute"], a["diagnostics"]
        zv = d.get("zero_variance_frac") or []
        comp.append([a["name"], json.dumps(c.get("steps") or {}), _f(c.get("trained_tokens"), 0),
                     _f(c.get("generated_tokens"), 0), _f(c.get("cpu_s"), 1),
                     json.dumps(c.get("epochs_per_item") or {}), _f(_mean(zv), 2),
                     _f(d.get("heldout_sft_loss")), _f(d.get("answer_tokens_mean"), 1),
                     _f(d.get("format_error_rate")), _f(d.get("truncation_rate"))])
    lines += ["## Compute and diagnostics (means over (base, seed))", "",
              markdown_table(["arm", "steps", "trained tokens", "generated tokens", "train CPU s", "epochs per item",
                              "zero-variance GRPO groups", "held-out SFT loss", "answer tokens", "format errors",
                              "truncated"], comp), "",
              ("Zero-variance groups: the share of GRPO groups whose completions all scored the same (no "
               "gradient), averaged over RL steps. Train CPU s is the main process's (the verifier worker's "
               "is not counted)."), ""]
    trans = [(a["name"], a["diagnostics"]["transitions_after_sft"]) for a in payload["arms"]
             if a["diagnostics"].get("transitions_after_sft")]
    if trans:
        lines += ["## Bucket transitions after SFT (test items: the base model's bucket -> the SFT model's, both over "
                  "the same number of samples per item)", ""]
        for name, m in trans:
            lines += [f"**{name}**", "", markdown_table(["before \\ after"] + list(BUCKETS),
                                                         [[b] + [str(m[b][a]) for a in BUCKETS] for b in BUCKETS]), ""]
    if summaries:
        lines += ["## Arms", "", *[f"- **{n}**: {s}" for n, s in summaries.items()], ""]
    lines += ["![paired differences](paired_diff.png)", "", "![pass@1 per bucket](pass_by_bucket.png)", ""]
    return "\n".join(lines)


def diff_plot(records: list[dict], path: str) -> str:
    """Forest plot: each arm's paired Δ pass@1 from the baseline with its 95% interval, overall and per bucket."""
    plt = _figure()
    rows = [r for r in records if r["name"] != PRIMARY]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    series = [("all", lambda r: r["paired_diff"]), *[(b, lambda r, b=b: r["paired_diff"]["by_bucket"].get(b, {}).get("pass@1"))
                                                   for b in BUCKETS]]
    for j, (label, get) in enumerate(series):
        shown = False
        for i, r in enumerate(rows):
            d = get(r) or {}
            if d.get("mean") is None:
                continue
            y = i + (j - 1.5) * 0.18
            lo, hi = d.get("ci_low"), d.get("ci_high")
            ax.errorbar(d["mean"], y, xerr=None if lo is None else [[d["mean"] - lo], [hi - d["mean"]]], fmt="o",
                        ms=3, color=f"C{j}", label=None if shown else label, capsize=2)
            shown = True
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ test pass@1 vs {PRIMARY} (hierarchical bootstrap 95% CI)")
    if ax.get_legend_handles_labels()[0]:  # a table with the baseline alone has nothing to plot
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def bucket_plot(records: list[dict], path: str, kmax: int = 16) -> str:
    """Grouped bars: test pass@1 and pass@k per base-probe bucket for each arm."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 0.9 * len(records) + 4), 4), sharey=True)
    width = 0.8 / max(1, len(records))
    for ax, k in zip(axes, ("pass@1", f"pass@{kmax}")):
        for i, rec in enumerate(records):
            ys = [_mean([p["by_bucket"].get(b, {}).get(k) for p in rec["per_seed"]]) or 0 for b in BUCKETS]
            ax.bar([j + (i - (len(records) - 1) / 2) * width for j in range(len(BUCKETS))], ys, width=width,
                   label=rec["name"])
        ax.set_xticks(range(len(BUCKETS)))
        ax.set_xticklabels(BUCKETS)
        ax.set_title(f"test {k} per base-probe bucket")
        ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=6, ncol=2, loc="upper left")
    return _save(fig, path)
