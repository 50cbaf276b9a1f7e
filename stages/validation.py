"""Validation files: a seeded slice of a training split's items, held out of its training file and written
beside it in the same row layout (sft_val.parquet beside sft.parquet, rl_val.parquet beside rl.parquet),
so a trainer validates on rows it never trains on (verl's `data.val_files`, OpenRLHF's `--eval.dataset`,
`load_dataset(DIR, "sft", split="validation")`, the bundled trainer's held-out SFT loss).

Only items routed to that split alone are drawn: an item in both SFT and RL (policy `all`), an SFT replay
row and an item in the forgetting split are trained on somewhere, so they never validate. The slice is
drawn before the SFT replay rows, which therefore make up their asked share of the final sft.parquet.

Size: one item in twenty, at most MAX_ROWS; none when that is fewer than MIN_ROWS (a split under 40
items), because a loss over a single row says little while the row is worth more in training. The
manifest then lists the file under `omitted` with the reason, as it does an empty split.
"""

from __future__ import annotations

import random

from stagewise.stages.contract import VALIDATION_SPLITS

SHARE = 20  # one item in SHARE is held out
MIN_ROWS = 2
MAX_ROWS = 256


def validation_size(items: int) -> int:
    """How many of `items` eligible items a validation file takes (0: none)."""
    k = min(MAX_ROWS, items // SHARE)
    return k if k >= MIN_ROWS else 0


def draw_validation(assignments: list[dict], seed: int = 0, enabled: bool = True) -> tuple[dict, dict]:
    """({id: validation split}, {file: why it is not written}) for every validation split. The draw is a
    seeded shuffle of the sorted eligible ids, so the same export options give the same files."""
    if not enabled:
        return {}, {f"{val}.parquet": "0 rows: exported with validation off (every item stays in its training "
                                      "file)" for val in VALIDATION_SPLITS}
    chosen, omitted = {}, {}
    for val, split in VALIDATION_SPLITS.items():
        eligible = sorted(str(a["id"]) for a in assignments if a.get("stage") == split)
        k = validation_size(len(eligible))
        if not k:
            omitted[f"{val}.parquet"] = _too_few(split, len(eligible))
            continue
        random.Random(f"{seed}/{val}").shuffle(eligible)
        chosen.update({i: val for i in eligible[:k]})
    return chosen, omitted


def _too_few(split: str, items: int) -> str:
    if not items:
        return (f"0 rows: no item was routed to {split} alone (items in both SFT and RL, and replay rows, "
                "are never held out), so there is nothing to validate on")
    return (f"0 rows: {items} item{'s' if items != 1 else ''} routed to {split} are too few to spare a "
            f"validation slice (one in {SHARE}, at least {MIN_ROWS}: {SHARE * MIN_ROWS} or more items); "
            f"every row stays in {split}.parquet for training")


def mark_validation(assignments, chosen: dict):
    """Each held-out item's reason says where it went (its stage stays the split it was routed to)."""
    import polars as pl

    if not chosen:
        return assignments
    reasons = [f"{a['reason']}; held out of {VALIDATION_SPLITS[chosen[a['id']]]}.parquet into "
               f"{chosen[a['id']]}.parquet for validation" if a["id"] in chosen else a["reason"]
               for a in assignments.select("id", "reason").iter_rows(named=True)]
    return assignments.with_columns(pl.Series("reason", reasons, pl.Utf8))
