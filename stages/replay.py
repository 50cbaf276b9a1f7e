"""SFT replay: verified demonstrations of items the model already solves, mixed into sft.parquet.

SFT on the unmastered items alone moves the model away from what it knows (in the committed experiment
it lost 0.68 pass@1 on the mastered bucket). Replaying a fraction F of already-solved items in the same
SFT split anchors that behaviour. The rules here are pure functions; `export` applies them.

- Sizing: F is the share of replay rows in the written sft.parquet, so beside S routed SFT rows the
  export wants R = round(F · S / (1 − F)) replay rows (R / (S + R) ≈ F).
- Candidates: items of the buckets in `replay_from` (default: mastered) that are in no SFT row already,
  not in the `--keep-mastered` forgetting split (that split measures forgetting, so it must stay unseen
  by training), not held out, and not unrouted.
- When fewer candidates have a verified demonstration than R, all of them are written and a warning
  gives the numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stagewise.curate.errors import ConfigError
from stagewise.stages.demonstrations import find_demonstrations

REPLAY_STAGE = "replay-sft"
REPLAY_BUCKETS = ("mastered", "partial")
# Stages an item may hold and still be replayed: dropped (mastered under `stage`) or in RL (partial).
REPLAYABLE_STAGES = ("drop", "rl")


def parse_replay_from(value) -> tuple[str, ...]:
    """("mastered",) from "mastered", ("mastered", "partial") from "mastered,partial" or a list."""
    if value is None:
        return ("mastered",)
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    names = [n for n in names if n]
    bad = [n for n in names if n not in REPLAY_BUCKETS]
    if bad or not names:
        raise ConfigError(f"--sft-replay-from {','.join(names) or '(empty)'}: choose from "
                          f"{', '.join(REPLAY_BUCKETS)} (comma-separated), e.g. mastered,partial")
    return tuple(dict.fromkeys(names))


def check_fraction(fraction) -> float:
    """F as a float in [0, 1); ConfigError otherwise (F = 1 would leave no room for the SFT items)."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"--sft-replay {fraction!r} is not a number; pass a fraction such as 0.3") from None
    if not 0.0 <= f < 1.0:
        raise ConfigError(f"--sft-replay {f:g} is outside [0, 1): it is the share of replay rows in "
                          "sft.parquet; pass e.g. 0.3 (0 turns replay off)")
    return f


def replay_rows_wanted(n_sft: int, fraction: float) -> int:
    """How many replay rows make them the fraction F of sft.parquet beside n_sft routed SFT rows."""
    if fraction <= 0 or n_sft <= 0:
        return 0
    return round(fraction * n_sft / (1.0 - fraction))


@dataclass(frozen=True)
class ReplaySizing:
    """The replay decision in numbers: what F asked for, what could be replayed, what was taken."""

    fraction: float
    n_sft: int
    wanted: int
    available: int
    replay_from: tuple = ("mastered",)

    @property
    def taken(self) -> int:
        return min(self.wanted, self.available)

    @property
    def achieved(self) -> float:
        total = self.n_sft + self.taken
        return self.taken / total if total else 0.0

    @property
    def warning(self) -> str | None:
        if self.taken >= self.wanted:
            return None
        return (f"--sft-replay {self.fraction:g} asked for {self.wanted} replay rows beside {self.n_sft} SFT "
                f"rows, but only {self.available} {'item' if self.available == 1 else 'items'} "
                f"({'/'.join(self.replay_from)}, not held out, not in the --keep-mastered split, with a "
                f"verified demonstration) could be replayed: wrote {self.taken}, {self.achieved:.0%} of "
                "sft.parquet; probe more problems the model solves, or add partial with "
                "--sft-replay-from mastered,partial")

    def to_dict(self) -> dict:
        return {"fraction": self.fraction, "from": list(self.replay_from), "n_sft": self.n_sft,
                "wanted": self.wanted, "available": self.available, "taken": self.taken,
                "achieved": round(self.achieved, 4)}


def size_replay(n_sft: int, fraction: float, available: int, replay_from=("mastered",)) -> ReplaySizing:
    return ReplaySizing(float(fraction), int(n_sft), replay_rows_wanted(n_sft, fraction), int(available),
                        tuple(replay_from))


def replay_candidates(assignments: list[dict], replay_from=("mastered",), heldout=()) -> list[str]:
    """Ids that may be replayed, in assignment order: bucket in `replay_from`, stage drop or rl (never
    sft/both, never the forgetting split `replay`, never unrouted), id not held out."""
    held = {str(i) for i in heldout}
    return [str(a["id"]) for a in assignments
            if a.get("bucket") in replay_from and a.get("stage") in REPLAYABLE_STAGES
            and str(a["id"]) not in held]


def replay_order(candidates: list[str], seed: int = 0) -> list[str]:
    """The candidates in a seeded random order: the export takes demonstrations from the front until it
    has enough, so the drawn set repeats across runs with the same seed."""
    order = sorted(candidates)
    random.Random(seed).shuffle(order)
    return order


def replay_reason(assignment: dict, fraction: float) -> str:
    """The reason a replay row carries: the item's tally and why it is in SFT."""
    tally = f"{assignment.get('c')}/{assignment.get('n')} correct" if assignment.get("n") is not None else ""
    head = f"{tally}: " if tally else ""
    return (f"{head}{assignment.get('bucket')} item replayed in SFT (--sft-replay {fraction:g}) so SFT keeps "
            "what the model already solves")


REPLAY_SOURCES = ("samples", "solution")  # the model's own verified sample first: the least shift


def replay_source_names(samples) -> tuple[str, ...]:
    """The model's own verified samples first, then the reference solution; the reference alone when the
    store holds no sample text (not read, or probed with --keep-completions failed/none)."""
    if samples is None:
        return ("solution",)
    import polars as pl

    textless = samples.filter((pl.col("status") == "correct") & pl.col("completion").is_null())
    return ("solution",) if len(textless) else REPLAY_SOURCES


def draw_replay(assignments: list[dict], problems: dict, sources, *, fraction: float, n_sft: int,
                replay_from=("mastered",), heldout=(), seed: int = 0):
    """Pick the replay items and their verified demonstrations.

    Candidates are tried in a seeded random order, in chunks of what is still missing, so no more
    demonstrations are verified than needed. Returns ({id: Demonstration}, ReplaySizing, report) where
    report counts tried / verified per source."""
    order = [i for i in replay_order(replay_candidates(assignments, replay_from, heldout), seed) if i in problems]
    wanted = replay_rows_wanted(n_sft, fraction)
    chosen: dict = {}
    report: dict = {}
    i = 0
    while len(chosen) < wanted and i < len(order):
        chunk = order[i:i + wanted - len(chosen)]
        i += len(chunk)
        found = find_demonstrations([problems[c] for c in chunk], sources)
        for pid, demo in found.demos.items():  # marked in every format, also those without a stage column
            demo.provenance = {**demo.provenance, "sft_replay": True}
            chosen[pid] = demo
        for name, rep in found.report.items():
            row = report.setdefault(name, {"tried": 0, "verified": 0})
            row["tried"] += rep.get("tried", 0)
            row["verified"] += rep.get("verified", 0)
    # Untried candidates count as available: they were not needed.
    sizing = size_replay(n_sft, fraction, len(chosen) + (len(order) - i), replay_from)
    return chosen, sizing, report
