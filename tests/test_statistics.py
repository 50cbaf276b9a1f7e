"""Mastery statistics against hand computations, exact arithmetic, and the SQL in the store's view."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagewise.curate.statistics import (
    Z_95,
    bucket,
    mastery_row,
    p_hat,
    pass_at_k,
    pass_at_ks,
    posterior_mean,
    wilson_interval,
)

# statsmodels.stats.proportion.proportion_confint(c, n, alpha=0.05, method="wilson"), statsmodels 0.15.0
STATSMODELS_WILSON = [
    # (n, c, low, high)
    (8, 3, 0.13684428582359737, 0.6942576053973728),
    (8, 0, 0.0, 0.32440756488388034),
    (8, 8, 0.6755924351161198, 1.0),
    (4, 1, 0.0455872608097006, 0.6993581574175982),
    (16, 5, 0.14164643854782027, 0.5559564416525933),
    (100, 37, 0.2818236053432453, 0.46779470419057095),
    (1, 1, 0.2065493143772374, 1.0),
]


@pytest.mark.parametrize("n,c,low,high", STATSMODELS_WILSON)
def test_wilson_interval_matches_statsmodels(n, c, low, high):
    got_low, got_high = wilson_interval(n=n, c=c)
    assert got_low == pytest.approx(low, abs=1e-12)
    assert got_high == pytest.approx(high, abs=1e-12)


def test_the_95_percent_z_is_the_normal_quantile_not_1_96():
    assert Z_95 == pytest.approx(1.959963984540054, abs=1e-15)


def test_wilson_at_the_edges_is_not_degenerate():
    z2 = Z_95 * Z_95
    low, high = wilson_interval(n=8, c=0)
    assert low == 0.0 and high == pytest.approx(z2 / (8 + z2), abs=1e-12)  # z^2 / (n + z^2)
    low, high = wilson_interval(n=8, c=8)
    assert high == 1.0 and low == pytest.approx(8 / (8 + z2), abs=1e-12)
    assert wilson_interval(n=0, c=0) == (0.0, 1.0)


@pytest.mark.parametrize("call", [
    lambda: wilson_interval(3, 8),
    lambda: pass_at_k(10, 3, 1),
    lambda: bucket(8, 3),
    lambda: p_hat(8, 3),
    lambda: posterior_mean(8, 3),
    lambda: mastery_row(8, 3),
    lambda: pass_at_ks(8),
])
def test_counts_passed_by_position_fail_loudly(call):
    with pytest.raises(TypeError):
        call()


def test_counts_in_the_wrong_order_name_both_values():
    with pytest.raises(ValueError, match=r"n=3, c=8"):
        bucket(n=3, c=8)


def test_posterior_mean_is_beta_mean():
    assert posterior_mean(n=8, c=0) == pytest.approx(0.1)
    assert posterior_mean(n=8, c=3) == pytest.approx(0.4)
    assert posterior_mean(n=0, c=0) == 0.5


@pytest.mark.parametrize("n,c,k,expected", [
    (10, 3, 1, 0.3),
    (10, 3, 2, 1 - 21 / 45),  # 1 - C(7,2)/C(10,2)
    (10, 3, 8, 1.0),  # only 7 wrong samples: every 8-subset has a correct one
    (16, 0, 4, 0.0),
    (4, 4, 4, 1.0),
    (8, 1, 4, 0.5),  # 1 - C(7,4)/C(8,4) = 1 - 35/70
    (20, 5, 4, 1 - 1365 / 4845),  # C(15,4)=1365, C(20,4)=4845
])
def test_pass_at_k_known_values(n, c, k, expected):
    assert pass_at_k(n=n, c=c, k=k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_undefined_when_fewer_samples_than_k():
    assert pass_at_k(n=3, c=1, k=4) is None
    with pytest.raises(ValueError):
        pass_at_k(n=3, c=4, k=1)


def test_reported_ks_are_powers_of_two_up_to_n():
    assert pass_at_ks(n=0) == []
    assert pass_at_ks(n=8) == [1, 2, 4, 8]
    assert pass_at_ks(n=12) == [1, 2, 4, 8]
    assert set(mastery_row(n=5, c=2)) >= {"pass_at_1", "pass_at_2", "pass_at_4"}
    assert "pass_at_8" not in mastery_row(n=5, c=2)


def test_buckets():
    assert [bucket(n=8, c=0), bucket(n=8, c=3), bucket(n=8, c=8), bucket(n=0, c=0)] == ["unmastered", "partial", "mastered", None]


nc = st.integers(min_value=1, max_value=60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n)))


@given(nc, st.integers(min_value=1, max_value=60))
@settings(max_examples=300, deadline=None)
def test_pass_at_k_equals_the_binomial_formula(n_c, k):
    n, c = n_c
    got = pass_at_k(n=n, c=c, k=k)
    if k > n:
        assert got is None
        return
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert got == pytest.approx(float(exact), abs=1e-12)


@given(nc)
@settings(max_examples=300, deadline=None)
def test_pass_at_k_properties(n_c):
    n, c = n_c
    assert pass_at_k(n=n, c=c, k=1) == pytest.approx(c / n)
    values = [pass_at_k(n=n, c=c, k=k) for k in range(1, n + 1)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values))  # more tries never hurt
    if c < n:
        assert pass_at_k(n=n, c=c + 1, k=1) > pass_at_k(n=n, c=c, k=1)


@given(nc)
@settings(max_examples=300, deadline=None)
def test_wilson_properties(n_c):
    n, c = n_c
    low, high = wilson_interval(n=n, c=c)
    assert 0.0 <= low <= c / n <= high <= 1.0
    wide_low, wide_high = wilson_interval(n=n, c=c, z=2.58)
    assert wide_low <= low + 1e-12 and high <= wide_high + 1e-12
    # More evidence at the same rate narrows the interval.
    low4, high4 = wilson_interval(n=4 * n, c=4 * c)
    assert high4 - low4 < high - low


def test_sql_view_agrees_with_python(tmp_path):
    """Every (n, c) with n <= 20, plus an item with only unverifiable samples (n = 0)."""
    from stagewise.curate.store import ProbeStore

    with ProbeStore(tmp_path / "s.duckdb") as store:
        run_id = store.start_run({"model": "m", "seed": 0})
        rows = []
        for n in range(1, 21):
            for c in range(n + 1):
                pid = f"n{n}c{c}"
                rows += [{"problem_id": pid, "sample_idx": i, "status": "correct" if i < c else "wrong",
                          "score": float(i < c)} for i in range(n)]
        rows.append({"problem_id": "unverified", "sample_idx": 0, "status": "timeout", "reason": "t"})
        store.add_samples(run_id, rows)
        view = store.mastery(run_id)
    assert view.height == sum(n + 1 for n in range(1, 21)) + 1
    pass_cols = [c for c in view.columns if c.startswith("pass_at_")]
    assert pass_cols == ["pass_at_1", "pass_at_2", "pass_at_4", "pass_at_8", "pass_at_16"]
    for row in view.iter_rows(named=True):
        n, c = row["n"], row["c"]
        expected = mastery_row(n=n, c=c, ks=[1, 2, 4, 8, 16])
        for key, value in expected.items():
            if value is None:
                assert row[key] is None, (n, c, key)
            else:
                assert row[key] == pytest.approx(value, abs=1e-12), (n, c, key)
