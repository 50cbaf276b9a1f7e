"""The held-out gain of a run, for machines: after minus before as a paired difference over items, and
the verifier status split that says which part of the gain is format and which part is answers.

Both functions are pure: they read the per-item results of two evaluations (train/stage_eval.py
`ItemResult`s, or plain dicts with the same keys) and return JSON-able dicts.
"""

from __future__ import annotations

import random

from stagewise.curate.verifiers.base import STATUSES

# Where a status lands in the split: `no_answer` is the format part (the verifier found no final
# answer), `wrong` and `correct` the answer part; timeouts and verifier errors are neither.
SPLIT = ("correct", "wrong", "no_answer", "other")


def _field(item, name):
    return item[name] if isinstance(item, dict) else getattr(item, name)


def _per_item(items, set_name: str | None) -> dict[str, tuple[int, int]]:
    """{item id: (n verified samples, c correct)} of the items in `set_name` (all items when None)."""
    out = {}
    for it in items:
        if set_name is None or _field(it, "set") == set_name:
            out[str(_field(it, "id"))] = (int(_field(it, "n")), int(_field(it, "c")))
    return out


def paired_gain(before_items, after_items, seed: int = 0, *, set_name: str | None = "heldout",
                level: float = 0.95, resamples: int = 10_000) -> dict:
    """Held-out pass@1 after minus before, paired over items, with a seeded percentile bootstrap interval.

    For every item verified at both checkpoints (n > 0 in both), d_i = c_after/n_after - c_before/n_before.
    `mean` is the mean of the d_i; `ci_low`/`ci_high` are the (1-level)/2 and (1+level)/2 percentiles of
    the mean over `resamples` bootstrap draws of *items* with replacement (random.Random(seed), so the
    same inputs and seed always give the same interval). Resampling whole items keeps each item's before
    and after together: the pairing removes the between-item spread (easy items stay easy) that an
    interval built from two independent means would count as noise. Items without a verified sample at
    either checkpoint are left out and counted in `excluded`. With fewer than two items there is no
    interval (ci_low = ci_high = None)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    before, after = _per_item(before_items, set_name), _per_item(after_items, set_name)
    ids = sorted(i for i in before if i in after and before[i][0] > 0 and after[i][0] > 0)
    diffs = [after[i][1] / after[i][0] - before[i][1] / before[i][0] for i in ids]
    out = {"mean": None, "ci_low": None, "ci_high": None, "n_items": len(diffs),
           "excluded": len(set(before) | set(after)) - len(diffs), "level": level, "seed": seed,
           "resamples": resamples, "method": "paired bootstrap over items of the per-item pass@1 difference"}
    if not diffs:
        return out
    m = len(diffs)
    out["mean"] = sum(diffs) / m
    if m < 2:
        return out
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=m)) / m for _ in range(resamples))
    alpha = (1 - level) / 2
    out["ci_low"] = means[int(alpha * (resamples - 1))]
    out["ci_high"] = means[int(round((1 - alpha) * (resamples - 1)))]
    return out


def status_split(items, *, set_name: str | None = "heldout") -> dict:
    """Samples per verifier status over the items of `set_name`, folded into correct / wrong / no_answer /
    other (timeout, error), with `samples` (their total) and `fractions` (each over `samples`).
    Compared before and after training, a drop of `no_answer` is the format part of a gain (the model
    learned to write a final answer) and a move from `wrong` to `correct` the answer part."""
    counts = dict.fromkeys(SPLIT, 0)
    for it in items:
        if set_name is not None and _field(it, "set") != set_name:
            continue
        for status, count in (_field(it, "statuses") or {}).items():
            key = status if status in SPLIT and status != "other" else "other"
            if status not in STATUSES:
                raise ValueError(f"unknown verifier status {status!r} (expected one of {', '.join(STATUSES)})")
            counts[key] += int(count)
    total = sum(counts.values())
    return {**counts, "samples": total,
            "fractions": {k: (v / total if total else None) for k, v in counts.items()}}


def gain_report(before_items, after_items, seed: int = 0, *, set_name: str | None = "heldout") -> dict:
    """The gain and the status split before and after, as one JSON-able dict (summary.json's `heldout`
    part): {"gain": paired_gain(...), "statuses": {"before": ..., "after": ...}}."""
    return {"gain": paired_gain(before_items, after_items, seed, set_name=set_name),
            "statuses": {"before": status_split(before_items, set_name=set_name),
                         "after": status_split(after_items, set_name=set_name)}}
