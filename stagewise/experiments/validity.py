"""The second design's validity checks: is this testbed one where routing could win or lose on its merits?

They are computed on each base model's probes before any arm runs, printed, and written to results.json;
when one fails the experiment refuses to report arms (the table would compare arms on a testbed that
cannot show the effect). Pure functions of probe counts, so each rule is tested with literal numbers.
"""

from __future__ import annotations

from stagewise.curate.statistics import bucket

BUCKETS = ("unmastered", "partial", "mastered")
MIN_BUCKET_SHARE = 0.20       # each bucket holds at least this share of the pool
MIN_UNMASTERED_CELLS = 3      # unmastered items come from at least this many cells ...
MAX_CELL_SHARE = 0.50         # ... and no cell holds more than this share of them
MIN_REACHABLE = 0.50          # share of unmastered (0/k) items with >= 1 correct at the larger k
MIN_HEADROOM = 0.15           # 1 - base pass@k on the test set


def check(name: str, value: float, threshold: float, passed: bool) -> dict:
    return {"check": name, "value": round(float(value), 4), "threshold": threshold, "passed": bool(passed)}


def bucket_shares(counts: dict[str, tuple[int, int]]) -> dict[str, float]:
    """{bucket: share of items} from {id: (n, c)} (items with n = 0 count in no bucket but in the total)."""
    total = len(counts) or 1
    out = {b: 0 for b in BUCKETS}
    for n, c in counts.values():
        b = bucket(n=n, c=c) if n else None
        if b:
            out[b] += 1
    return {b: out[b] / total for b in BUCKETS}


def unmastered_cells(counts: dict[str, tuple[int, int]], cell_of: dict[str, str]) -> dict[str, int]:
    """{cell: number of unmastered items} over the pool."""
    out: dict[str, int] = {}
    for pid, (n, c) in counts.items():
        if n and c == 0:
            out[cell_of[pid]] = out.get(cell_of[pid], 0) + 1
    return dict(sorted(out.items()))


def reachable_share(unmastered_ids, capability_counts: dict[str, tuple[int, int]]) -> float:
    """Share of the unmastered items with at least one correct sample in the capability probe."""
    ids = list(unmastered_ids)
    if not ids:
        return 0.0
    return sum(1 for i in ids if capability_counts.get(i, (0, 0))[1] > 0) / len(ids)


def pass_at_n(counts: dict[str, tuple[int, int]]) -> float:
    """pass@n with n = every sample drawn: the share of items with at least one correct sample."""
    items = [c for n, c in counts.values() if n]
    return sum(1 for c in items if c > 0) / len(items) if items else 0.0


def validity_checks(pool: dict[str, tuple[int, int]], cell_of: dict[str, str],
                    capability: dict[str, tuple[int, int]], test: dict[str, tuple[int, int]], *,
                    prefix: str = "", k: int = 16, k_capability: int = 128) -> list[dict]:
    """The four checks of one base model. `pool`/`test`: {id: (n, c)} of the base probes at k;
    `capability`: {id: (n, c)} of the unmastered pool items' extra samples (ids absent = none drawn)."""
    shares = bucket_shares(pool)
    cells = unmastered_cells(pool, cell_of)
    n_unm = sum(cells.values())
    top = max(cells.values()) / n_unm if n_unm else 1.0
    unm_ids = [i for i, (n, c) in pool.items() if n and c == 0]
    reach = reachable_share(unm_ids, capability)
    headroom = 1.0 - pass_at_n(test)
    p = f"{prefix}: " if prefix else ""
    return [
        check(f"{p}smallest bucket share of the pool ({min(shares, key=shares.get)})", min(shares.values()),
              MIN_BUCKET_SHARE, min(shares.values()) >= MIN_BUCKET_SHARE),
        check(f"{p}cells with unmastered items", len(cells), MIN_UNMASTERED_CELLS,
              len(cells) >= MIN_UNMASTERED_CELLS),
        check(f"{p}largest cell share of the unmastered items", top, MAX_CELL_SHARE, top <= MAX_CELL_SHARE),
        check(f"{p}unmastered (0/{k}) items with >= 1 correct at k = {k_capability}", reach, MIN_REACHABLE,
              reach >= MIN_REACHABLE),
        check(f"{p}headroom above base pass@{k} on test", headroom, MIN_HEADROOM, headroom >= MIN_HEADROOM),
    ]


def all_passed(checks: list[dict]) -> bool:
    return all(c["passed"] for c in checks)


def format_checks(checks: list[dict]) -> list[str]:
    """One printable line per check."""
    return [f"  [{'pass' if c['passed'] else 'FAIL'}] {c['check']}: {c['value']:.3g} "
            f"(threshold {c['threshold']})" for c in checks]
