"""Per-item mastery statistics (docs/DESIGN.md, "Counts and statistics"), in Python.

The store's `mastery` view computes the same numbers in SQL (curate/store.py, `SQL_MACROS`);
tests/test_statistics.py checks that the two agree. n counts verified samples, c the correct ones.

Every function here takes the counts as keyword-only `n=..., c=...` (the store's column order): the two
are both ints, so a positional call could swap them silently; keyword-only makes it fail loudly.
"""

from __future__ import annotations

import math
from statistics import NormalDist

Z_95 = NormalDist().inv_cdf(0.975)  # 1.959964..., the two-sided 95% normal quantile


def p_hat(*, n: int, c: int) -> float | None:
    """The plain success rate c/n; None when nothing was verified (n = 0)."""
    _check(n=n, c=c)
    return c / n if n else None


def posterior_mean(*, n: int, c: int) -> float:
    """Mean of the Beta(1+c, 1+n-c) posterior under a uniform prior: (c+1)/(n+2)."""
    _check(n=n, c=c)
    return (c + 1) / (n + 2)


def wilson_interval(*, n: int, c: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for c successes in n trials (95% by default; the same numbers as
    statsmodels' `proportion_confint(c, n, method="wilson")`).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at c = 0 or c = n,
    which is exactly where most probed items sit. With n = 0 there is no evidence: (0, 1).
    """
    _check(n=n, c=c)
    if n == 0:
        return 0.0, 1.0
    p = c / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At c = 0 (c = n) the bound is exactly 0 (1) in exact arithmetic; floats give +-1e-17.
    low = 0.0 if c == 0 else max(0.0, centre - half)
    high = 1.0 if c == n else min(1.0, centre + half)
    return low, high


def pass_at_k(*, n: int, c: int, k: int) -> float | None:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k); None when n < k.

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the huge binomials.
    """
    _check(n=n, c=c)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        return None
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_ks(*, n: int) -> list[int]:
    """The k reported for an item with n samples: 1, 2, 4, 8, ... up to n."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


def bucket(*, n: int, c: int) -> str | None:
    """The bucket (docs/DESIGN.md, "Buckets") on all verified samples: c = 0 unmastered, c = n mastered,
    else partial; None when nothing was verified."""
    _check(n=n, c=c)
    if n == 0:
        return None
    if c == 0:
        return "unmastered"
    if c == n:
        return "mastered"
    return "partial"


def mastery_row(*, n: int, c: int, ks: list[int] | None = None) -> dict:
    """All statistics of one item as a dict with the `mastery` view's column names."""
    low, high = wilson_interval(n=n, c=c)
    row = {"n": n, "c": c, "p_hat": p_hat(n=n, c=c), "posterior_mean": posterior_mean(n=n, c=c),
           "ci_low": low, "ci_high": high}
    for k in ks if ks is not None else pass_at_ks(n=n):
        row[f"pass_at_{k}"] = pass_at_k(n=n, c=c, k=k)
    return row


def _check(*, n: int, c: int) -> None:
    if n < 0 or c < 0 or c > n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
