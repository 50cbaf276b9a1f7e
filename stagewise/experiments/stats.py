"""Paired differences between arms with a hierarchical bootstrap.

A difference is taken per test item within one (base model, training seed) pair: the arm's pass@1 on the
item minus the baseline's on the same item, base and seed. The 95% interval resamples the (base, seed)
pairs with replacement, then the test items within each drawn pair, so it carries the variance between
bases and seeds as well as between items.
"""

from __future__ import annotations

import random


def paired_item_diffs(arm: dict, baseline: dict) -> dict:
    """{(base, seed): [arm - baseline per item]} over items present in both. `arm`/`baseline`:
    {(base, seed): {item id: value}}."""
    out = {}
    for key, values in arm.items():
        ref = baseline.get(key)
        if ref is None:
            continue
        ids = sorted(set(values) & set(ref))
        if ids:
            out[key] = [values[i] - ref[i] for i in ids]
    return out


def hierarchical_bootstrap(groups: dict, *, reps: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """{"mean", "ci_low", "ci_high", "n_groups", "n_items"} of the mean difference. `groups`:
    {(base, seed): [per-item differences]}. The point estimate is the mean over groups of the group means;
    each replicate draws groups with replacement, then items within each drawn group with replacement."""
    keys = sorted(groups)
    lists = [groups[k] for k in keys if groups[k]]
    if not lists:
        return {"mean": None, "ci_low": None, "ci_high": None, "n_groups": 0, "n_items": 0}

    def mean(xs):
        return sum(xs) / len(xs)

    point = mean([mean(xs) for xs in lists])
    rng = random.Random(seed)
    reps_out = []
    for _ in range(reps):
        drawn = [lists[rng.randrange(len(lists))] for _ in lists]
        reps_out.append(mean([mean([xs[rng.randrange(len(xs))] for _ in xs]) for xs in drawn]))
    reps_out.sort()
    lo = reps_out[int((alpha / 2) * reps)]
    hi = reps_out[min(reps - 1, int((1 - alpha / 2) * reps))]
    return {"mean": point, "ci_low": lo, "ci_high": hi, "n_groups": len(lists),
            "n_items": sum(map(len, lists))}
