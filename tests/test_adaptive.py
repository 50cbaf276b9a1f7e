"""The adaptive stopping rule: routes exactly like fixed k = k_max on the same samples, at oracle cost."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagewise.curate.adaptive import compare_buckets, next_round, next_samples, oracle_minimum, replay
from stagewise.curate.errors import ConfigError
from stagewise.curate.store import ProbeStore

T, F, U = True, False, None


@pytest.mark.parametrize("outcomes,more", [
    ((), 4),  # first round: up to min_samples
    ((T,), 3),
    ((T, F, T, F), 0),  # partial with min_samples: done
    ((T, F), 2),  # partial but below min_samples: finish the minimum for a usable p_hat
    ((F, F, F, F), 1),  # uniform so far: keep going
    ((T,) * 15, 1),
    ((T,) * 16, 0),  # k_max reached
    ((F, U, F, U), 1),  # unverifiable samples are drawn but show nothing
    ((F, U, T, F), 0),
])
def test_next_samples(outcomes, more):
    assert next_samples(outcomes, min_samples=4, k_max=16) == more


def test_round_size_is_capped_by_k_max():
    assert next_samples((F,) * 4, min_samples=4, k_max=16, round_size=4) == 4
    assert next_samples((F,) * 14, min_samples=4, k_max=16, round_size=4) == 2


def test_next_round_includes_unsampled_items_and_skips_done_ones():
    plan = next_round({"a": (T, F, T, F), "b": (F,) * 4}, ["a", "b", "c"], min_samples=4, k_max=8)
    assert plan == {"b": 1, "c": 4}


def test_bad_settings_name_the_flag():
    with pytest.raises(ConfigError, match="--min-samples"):
        next_samples((), min_samples=9, k_max=8)
    with pytest.raises(ConfigError, match="--k-max"):
        next_samples((), min_samples=1, k_max=0)


def test_oracle_minimum_by_hand():
    fixed = {"uniform": (F,) * 8, "early": (T, F) + (T,) * 6, "late": (F,) * 6 + (T, T)}
    # uniform: k_max = 8; early: both seen at 2 -> min_samples 4; late: both seen at 7
    assert oracle_minimum(fixed, min_samples=4, k_max=8) == 8 + 4 + 7


outcome = st.sampled_from([True, False, None])
store_like = st.dictionaries(st.text("abcdef", min_size=1, max_size=4),
                             st.lists(outcome, min_size=16, max_size=16), min_size=1, max_size=30)


@given(store_like, st.integers(1, 16), st.integers(1, 5))
@settings(max_examples=200, deadline=None)
def test_replay_routes_exactly_like_fixed_k(fixed, min_samples, round_size):
    r = replay(fixed, min_samples=min_samples, k_max=16, round_size=round_size)
    assert r.buckets == r.fixed_buckets and r.agreement == 1.0
    assert r.oracle_generations <= r.generations <= r.fixed_generations
    n_partial = sum(b == "partial" for b in r.fixed_buckets.values())
    assert r.generations <= r.oracle_generations + (round_size - 1) * n_partial
    if round_size == 1:
        assert r.generations == r.oracle_generations


def test_replay_of_a_fixed_k_store(tmp_path):
    """A fixed k=16 probe stored in DuckDB, replayed through the rule: identical buckets, fewer samples."""
    rng = random.Random(0)
    with ProbeStore(tmp_path / "fixed.duckdb") as store:
        run_id = store.start_run({"model": "m", "num_samples": 16, "seed": 0})
        rows = []
        for item in range(60):
            p = [0.0, 0.05, 0.3, 0.5, 0.9, 1.0][item % 6]
            for i in range(16):
                ok = rng.random() < p
                rows.append({"problem_id": f"q{item}", "sample_idx": i, "status": "correct" if ok else "wrong"})
        store.add_samples(run_id, rows)
        fixed = store.outcomes(run_id)
        mastery = {r["problem_id"]: r for r in store.mastery(run_id).iter_rows(named=True)}
    r = replay(fixed, min_samples=4, k_max=16)
    assert r.buckets == r.fixed_buckets
    for pid, b in r.fixed_buckets.items():  # and the fixed buckets are those of the mastery view
        m = mastery[pid]
        assert b == ("unmastered" if m["c"] == 0 else "mastered" if m["c"] == m["n"] else "partial")
    assert r.generations == r.oracle_generations < 0.75 * r.fixed_generations
    assert r.to_dict()["bucket_agreement"] == 1.0


def test_replay_refuses_a_store_with_fewer_than_k_max_samples():
    with pytest.raises(ConfigError, match="k_max=16"):
        replay({"a": (T,) * 8}, min_samples=4, k_max=16)


def test_compare_buckets():
    out = compare_buckets({"a": "partial", "b": "mastered", "c": "partial"},
                          {"a": "partial", "b": "partial", "d": "mastered"})
    assert (out["items"], out["agree"], out["rate"]) == (2, 1, 0.5)
    assert out["confusion"][("mastered", "partial")] == 1
