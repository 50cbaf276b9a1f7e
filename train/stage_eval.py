"""Stage-aware evaluation around curate.evaluate: before SFT, after SFT, after RL.

For each checkpoint it reports pass@1 / pass@k with Wilson intervals on the held-out problems (when
given), and accuracy per bucket on the export's own items (unmastered = the SFT items, partial = the
RL items, mastered = the replay items, which are never trained on, so a drop there is forgetting).
During RL a callback tracks the held-out SFT loss (train/heldout_loss.py; SFT and RL do not decouple:
RL tends to raise the SFT loss while it raises the reward); `plot_curves` draws both against the step.
Imports nothing heavy, so reports and the command line read evaluations without loading torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stagewise.curate.evaluate import evaluate
from stagewise.train.data import Export

BUCKETS = ("unmastered", "partial", "mastered")


# --------------------------------------------------------------------------- before / after evaluation


@dataclass(frozen=True)
class EvalRow:
    """One number of a stage-aware evaluation: pass@k of `group` in `set` at `checkpoint`, with its 95%
    interval. `set` is "heldout" or "export items"; `group` is "all", a bucket, "source=..." or "task=..."."""

    checkpoint: str
    set: str
    group: str
    k: int
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_items: int


@dataclass(frozen=True)
class ItemResult:
    """One item's samples at one checkpoint: n verified, c correct, and the verifier's status counts."""

    checkpoint: str
    set: str
    id: str
    n: int
    c: int
    statuses: dict


@dataclass
class StageEval:
    """One checkpoint's evaluation: typed rows, plus per-item counts (for paired comparisons)."""

    checkpoint: str
    rows: list[EvalRow] = field(default_factory=list)
    items: list[ItemResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "rows": [asdict(r) for r in self.rows],
                "items": [asdict(i) for i in self.items]}

    @classmethod
    def from_dict(cls, d: dict) -> StageEval:
        return cls(d["checkpoint"], [EvalRow(**r) for r in d["rows"]], [ItemResult(**i) for i in d.get("items", [])])


def value_of(evals, *, checkpoint: str, set: str, group: str, k: int = 1) -> EvalRow | None:
    """The row of one (checkpoint, set, group, k), or None."""
    for ev in evals:
        for r in ev.rows:
            if (r.checkpoint, r.set, r.group, r.k) == (checkpoint, set, group, k):
                return r
    return None


def export_problems(export: Export, *, max_per_bucket: int | None = None, seed: int = 0) -> tuple[list, dict]:
    """The export's items as curate Problems, with {id: bucket}, read from the export directory alone:
    each Problem carries its row's exact prompt messages, so a mixed pool is asked item by item what the
    probe asked. The bucket comes from assignments.parquet, else the row's own `bucket` column, else the
    split (SFT = unmastered, RL = partial, replay = mastered)."""
    import random

    apath = export.root / "assignments.parquet"
    assigned = {}
    if export.single_file is None and apath.exists():
        import pyarrow.parquet as pq

        assigned = {str(r["id"]): r.get("bucket") for r in pq.read_table(apath, columns=["id", "bucket"]).to_pylist()}
    by_bucket: dict[str, list] = {b: [] for b in BUCKETS}
    for split, default_bucket in (("sft", "unmastered"), ("rl", "partial"), ("replay", "mastered")):
        if not export.has(split):
            continue
        for row, problem in zip(export.rows(split), export.problems(split)):
            bucket = assigned.get(problem.id) or row.get("bucket") or default_bucket
            if bucket in by_bucket and problem.answer:
                by_bucket[bucket].append(problem)
    rng = random.Random(seed)
    chosen, bucket_of = [], {}
    for bucket, problems in by_bucket.items():
        if max_per_bucket is not None and len(problems) > max_per_bucket:
            problems = rng.sample(problems, max_per_bucket)
        chosen.extend(problems)
        bucket_of.update({p.id: bucket for p in problems})
    return chosen, bucket_of


def evaluate_checkpoint(model: str, label: str, *, export: Export, heldout=None, num_samples: int = 4,
                        ks=(1, 4), max_new_tokens: int | None = None, max_per_bucket: int | None = 32,
                        seed: int = 0, backend: str = "hf") -> StageEval:
    """Evaluate one checkpoint on the held-out problems (if any) and on the export's items per bucket."""
    probe = export.probe
    sampling = export.sampling
    common = dict(num_samples=num_samples, ks=tuple(k for k in ks if k <= num_samples) or (1,), backend=backend,
                  temperature=sampling.get("temperature", 1.0), top_p=sampling.get("top_p", 1.0),
                  max_new_tokens=max_new_tokens or sampling.get("max_new_tokens", 256), seed=seed)
    result = StageEval(label)
    if heldout:
        res = evaluate(model, heldout, system_prompt=probe.get("system_prompt"),
                       prompt_template=probe.get("prompt_template"), **common)
        result.rows += _rows(res, label, "heldout")
        result.items += [ItemResult(label, "heldout", **i) for i in res.per_item]
    problems, bucket_of = export_problems(export, max_per_bucket=max_per_bucket, seed=seed)
    if problems:
        import polars as pl

        buckets = pl.DataFrame({"id": list(bucket_of), "bucket": list(bucket_of.values())})
        res = evaluate(model, problems, buckets=buckets, **common)  # each problem carries its messages
        result.rows += _rows(res, label, "export items")
        result.items += [ItemResult(label, "export items", **i) for i in res.per_item]
    return result


def _rows(res, label: str, set_name: str) -> list[EvalRow]:
    out = []
    for r in res.table.to_dicts():
        group = str(r["group"])
        if group.startswith("bucket="):  # curate.evaluate names bucket groups "bucket=<name>"
            group = group.split("=", 1)[1]
        for k in res.ks:
            lo, hi = ("ci_low", "ci_high") if k == 1 else (f"pass@{k}_ci_low", f"pass@{k}_ci_high")
            out.append(EvalRow(label, set_name, group, int(k), r.get(f"pass@{k}"), r.get(lo), r.get(hi),
                               int(r["n_items"])))
    return out


def forgetting(evals: list[StageEval]) -> dict:
    """pass@1 on the mastered bucket at each checkpoint, and its drop from the first (before SFT)."""
    series = {}
    for ev in evals:
        row = value_of([ev], checkpoint=ev.checkpoint, set="export items", group="mastered")
        if row is not None:
            series[ev.checkpoint] = row.value
    if not series:
        return {}
    first = next(iter(series.values()))
    return {"mastered_pass@1": series,
            "drop": {k: (None if v is None or first is None else first - v) for k, v in series.items()}}


def pass_at_1_by_checkpoint(evals: list[StageEval]) -> list[dict]:
    """For rendering: one record per (set, group) with {checkpoint: EvalRow} of pass@1, in order."""
    keyed: dict[tuple, dict] = {}
    for ev in evals:
        for r in ev.rows:
            if r.k == 1:
                rec = keyed.setdefault((r.set, r.group), {"set": r.set, "group": r.group, "n_items": r.n_items,
                                                          "by_checkpoint": {}})
                rec["by_checkpoint"][r.checkpoint] = r
    return list(keyed.values())


def display_table(evals: list[StageEval]) -> list[dict]:
    """pass@1 [95% CI] per checkpoint, one record per (set, group), as strings for a table. Display only:
    nothing reads these strings back; code reads the EvalRows."""
    out = []
    for rec in pass_at_1_by_checkpoint(evals):
        row = {"set": rec["set"], "group": rec["group"], "items": rec["n_items"]}
        for ev in evals:
            r = rec["by_checkpoint"].get(ev.checkpoint)
            row[ev.checkpoint] = format_value(r)
        out.append(row)
    return out


def show_value(value, missing: str = "-") -> str:
    """A number as reports print it: floats to 3 decimals, `missing` for None, anything else as text."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_value(row: EvalRow | None) -> str:
    if row is None or row.value is None:
        return "-"
    ci = f" [{row.ci_low:.2f}, {row.ci_high:.2f}]" if row.ci_low is not None and row.ci_high is not None else ""
    return f"{row.value:.3f}{ci}"


# --------------------------------------------------------------------------- curves


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_curves(metrics: list[dict], path: str | Path, *, title: str = "training curves") -> str | None:
    """Training loss (SFT), reward and held-out SFT loss (RL) against the step, on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {
        "SFT loss": [(m["step"], m["loss"] if m.get("stage") == "sft" else m["sft/loss"]) for m in metrics
                     if (m.get("stage") == "sft" and "loss" in m) or "sft/loss" in m],
        "RL reward": [(m["step"], m["reward"]) for m in metrics if m.get("stage") != "sft" and "reward" in m],
        "held-out SFT loss (during RL)": [(m["step"], m["heldout_sft_loss"]) for m in metrics
                                          if "heldout_sft_loss" in m],
    }
    series = {k: v for k, v in series.items() if v and all(math.isfinite(y) for _, y in v)}
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for ax, (name, pts) in zip(axes[0], series.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return str(out)
