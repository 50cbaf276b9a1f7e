"""Adaptive probing: the stopping rule, a replay of fixed-k samples through it, and the oracle minimum.

The rule (docs/DESIGN.md, "Adaptive probing"): an item that has shown at least one success and one failure
is certainly partial, so it stops once it has `min_samples`; an item that is uniform so far (all
correct or all wrong) continues to `k_max`. Given the same sample sequence it therefore routes exactly
as a fixed run with k = k_max does; only uniform items pay for the full k_max.

Outcomes are per sample index, in order: True (correct), False (wrong or no answer), None (the
verifier timed out or crashed: it counts as drawn but is evidence of nothing), as
`ProbeStore.outcomes(run_id)` returns them. Everything here is pure: no store, no model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stagewise.curate.errors import ConfigError
from stagewise.curate.statistics import bucket

Outcomes = Sequence[bool | None]


def check_settings(min_samples: int, k_max: int, round_size: int = 1) -> None:
    """ConfigError naming the flag when the adaptive settings cannot work together."""
    problems = []
    if k_max < 1:
        problems.append(f"--k-max must be >= 1, got {k_max}")
    if min_samples < 1:
        problems.append(f"--min-samples must be >= 1, got {min_samples}")
    elif min_samples > k_max >= 1:
        problems.append(f"--min-samples ({min_samples}) cannot exceed --k-max ({k_max})")
    if round_size < 1:
        problems.append(f"round_size must be >= 1, got {round_size}")
    if problems:
        raise ConfigError("; ".join(problems))


def next_samples(outcomes: Outcomes, *, min_samples: int = 4, k_max: int = 16, round_size: int = 1) -> int:
    """How many more samples to draw for this item now; 0 means the item is done.

    First up to `min_samples`; after that a uniform item gets `round_size` more per round (1 stops
    exactly where the oracle would; larger rounds trade a few extra samples for fewer, fuller batches).
    """
    check_settings(min_samples, k_max, round_size)
    drawn = len(outcomes)
    if drawn >= k_max:
        return 0
    if drawn < min_samples:
        return min_samples - drawn
    if True in outcomes and False in outcomes:
        return 0
    return min(round_size, k_max - drawn)


def next_round(outcomes_by_item: Mapping[str, Outcomes], item_ids=None, *, min_samples: int = 4,
               k_max: int = 16, round_size: int = 1) -> dict[str, int]:
    """{item id: samples to draw this round} for every item not yet done (items never sampled included)."""
    ids = list(item_ids) if item_ids is not None else list(outcomes_by_item)
    plan = {}
    for pid in ids:
        more = next_samples(outcomes_by_item.get(pid, ()), min_samples=min_samples, k_max=k_max,
                            round_size=round_size)
        if more:
            plan[pid] = more
    return plan


def bucket_of_outcomes(outcomes: Outcomes) -> str | None:
    """The bucket of an item's stored outcomes (unverified ones left out); None without a verified one."""
    verified = [o for o in outcomes if o is not None]
    return bucket(n=len(verified), c=sum(verified))


def oracle_minimum(fixed_outcomes: Mapping[str, Outcomes], *, min_samples: int = 4, k_max: int = 16) -> int:
    """Fewest generations that route every item as fixed k = k_max does (docs/DESIGN.md, "Adaptive probing").

    k_max for each uniform item; for each partial item, the 1-based index at which both outcomes have
    appeared, or min_samples if that is larger.
    """
    check_settings(min_samples, k_max)
    total = 0
    for outcomes in fixed_outcomes.values():
        seen: set[bool] = set()
        stop = None
        for i, o in enumerate(outcomes[:k_max], start=1):
            if o is not None:
                seen.add(o)
            if len(seen) == 2:
                stop = i
                break
        total += k_max if stop is None else max(min_samples, stop)
    return total


@dataclass
class ReplayResult:
    """What an adaptive run would have drawn, replaying the samples of a fixed-k run."""

    drawn: dict[str, int]
    buckets: dict[str, str | None]  # adaptive, from the samples it drew
    fixed_buckets: dict[str, str | None]  # from the first k_max samples
    rounds: int
    generations: int
    fixed_generations: int
    oracle_generations: int
    disagreements: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        n = len(self.buckets)
        return 1.0 if n == 0 else (n - len(self.disagreements)) / n

    @property
    def fraction_of_fixed(self) -> float:
        return self.generations / self.fixed_generations if self.fixed_generations else 0.0

    @property
    def ratio_to_oracle(self) -> float:
        return self.generations / self.oracle_generations if self.oracle_generations else 0.0

    def to_dict(self) -> dict:
        return {"items": len(self.drawn), "rounds": self.rounds, "generations": self.generations,
                "fixed_generations": self.fixed_generations, "oracle_generations": self.oracle_generations,
                "fraction_of_fixed": self.fraction_of_fixed, "ratio_to_oracle": self.ratio_to_oracle,
                "bucket_agreement": self.agreement, "disagreements": list(self.disagreements)}


def replay(fixed_outcomes: Mapping[str, Outcomes], *, min_samples: int = 4, k_max: int = 16,
           round_size: int = 1) -> ReplayResult:
    """Run the rule in rounds over a fixed run's samples (revealed in sample-index order).

    Each item needs at least k_max stored outcomes (probe the fixed run with k = k_max).
    """
    check_settings(min_samples, k_max, round_size)
    short = [pid for pid, o in fixed_outcomes.items() if len(o) < k_max]
    if short:
        raise ConfigError(f"replay needs k_max={k_max} samples per item; {len(short)} item(s) have fewer "
                          f"(first: {short[0]!r}); replay a fixed run probed with k >= k_max")
    drawn = {pid: 0 for pid in fixed_outcomes}
    rounds = 0
    while True:
        plan = next_round({pid: fixed_outcomes[pid][:n] for pid, n in drawn.items()},
                          min_samples=min_samples, k_max=k_max, round_size=round_size)
        if not plan:
            break
        rounds += 1
        for pid, more in plan.items():
            drawn[pid] += more
    buckets = {pid: bucket_of_outcomes(fixed_outcomes[pid][:n]) for pid, n in drawn.items()}
    fixed = {pid: bucket_of_outcomes(o[:k_max]) for pid, o in fixed_outcomes.items()}
    return ReplayResult(
        drawn=drawn, buckets=buckets, fixed_buckets=fixed, rounds=rounds,
        generations=sum(drawn.values()), fixed_generations=k_max * len(fixed_outcomes),
        oracle_generations=oracle_minimum(fixed_outcomes, min_samples=min_samples, k_max=k_max),
        disagreements=sorted(pid for pid in fixed if buckets[pid] != fixed[pid]))


def compare_buckets(a: Mapping[str, str | None], b: Mapping[str, str | None]) -> dict:
    """Agreement of two runs' buckets on their common items (e.g. a real adaptive vs a real fixed run).

    Returns {"items", "agree", "rate", "confusion": {(bucket_a, bucket_b): count}}.
    """
    common = sorted(set(a) & set(b))
    confusion: dict[tuple, int] = {}
    for pid in common:
        key = (a[pid], b[pid])
        confusion[key] = confusion.get(key, 0) + 1
    agree = sum(v for (x, y), v in confusion.items() if x == y)
    return {"items": len(common), "agree": agree, "rate": agree / len(common) if common else 1.0,
            "confusion": confusion}
