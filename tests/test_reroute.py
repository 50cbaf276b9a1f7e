"""Re-routing after SFT under the export's own router, with literal counts."""

from __future__ import annotations

from stagewise.stages.reroute import reroute, router_from_route_config, transition_counts

BEFORE = {
    "down": ("partial", "rl"),  # 2/4 before; drops to 0/4
    "up": ("partial", "rl"),  # 2/4 before; rises to 4/4
    "newly": ("unmastered", "sft"),  # 0/4 before; becomes 1/4
    "stays": ("partial", "rl"),  # 2/4 before; 3/4 after
    "lost": ("unmastered", "sft"),  # every re-probe sample timed out
}
AFTER = {"down": (4, 0), "up": (4, 4), "newly": (4, 1), "stays": (4, 3)}


def _by_id(moves):
    return {m.id: m for m in moves}


def test_under_stage_0_of_n_and_n_of_n_leave_rl_and_a_newly_partial_item_joins_it():
    router = router_from_route_config({"policy": "stage"})
    m = _by_id(reroute(BEFORE, AFTER, router, has_demo={"down", "newly"}))
    assert (m["down"].after_bucket, m["down"].after_stage) == ("unmastered", "sft") and m["down"].left_rl
    assert "leaves RL" in m["down"].reason and m["down"].reason.startswith("re-probe: 0/4 correct")
    assert (m["up"].after_bucket, m["up"].after_stage) == ("mastered", "drop") and m["up"].left_rl
    assert (m["newly"].after_stage, m["newly"].joined_rl) == ("rl", True) and "joins RL (was sft)" in m["newly"].reason
    assert m["stays"].after_stage == "rl" and not m["stays"].left_rl and not m["stays"].joined_rl
    assert (m["lost"].after_bucket, m["lost"].after_stage) == (None, "unrouted")


def test_a_0_of_n_item_without_a_verified_demonstration_is_unrouted_not_sft():
    m = _by_id(reroute(BEFORE, AFTER, router_from_route_config({"policy": "stage"}), has_demo=set()))
    assert m["down"].after_stage == "unrouted" and "no verified demonstration" in m["down"].reason


def test_under_band_the_exports_own_thresholds_decide_not_0_lt_c_lt_n():
    router = router_from_route_config({"policy": "band", "low": 0.3, "high": 0.9, "seed": 0})
    m = _by_id(reroute(BEFORE, AFTER, router, has_demo={"down", "newly"}))
    assert m["down"].after_stage == "drop" and m["down"].left_rl  # 0/4: p̂ 0 ≤ 0.3
    assert m["up"].after_stage == "drop" and m["up"].left_rl  # 4/4: p̂ 1 ≥ 0.9
    assert m["newly"].after_stage == "drop" and "≤ low 0.3" in m["newly"].reason  # 1/4 is partial, outside the band
    assert m["stays"].after_stage == "rl"  # 3/4 = 0.75 in (0.3, 0.9)


def test_the_transition_matrix_counts_buckets_before_and_after():
    moves = reroute(BEFORE, AFTER, router_from_route_config({"policy": "stage"}), has_demo=set())
    assert transition_counts(moves, 2) == [
        {"round": 2, "before": "unmastered", "after": "partial", "count": 1},
        {"round": 2, "before": "unmastered", "after": "unverified", "count": 1},
        {"round": 2, "before": "partial", "after": "unmastered", "count": 1},
        {"round": 2, "before": "partial", "after": "partial", "count": 1},
        {"round": 2, "before": "partial", "after": "mastered", "count": 1},
    ]
