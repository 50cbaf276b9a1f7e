"""SFT replay sizing and candidates, as pure functions with literal numbers."""

from __future__ import annotations

import pytest
from stagewise.curate.errors import ConfigError
from stagewise.stages.replay import (
    check_fraction,
    parse_replay_from,
    replay_candidates,
    replay_order,
    replay_rows_wanted,
    size_replay,
)


def test_replay_rows_make_up_the_fraction_of_the_written_sft_split():
    assert replay_rows_wanted(70, 0.3) == 30  # 30 / (70 + 30) = 0.3
    assert replay_rows_wanted(10, 0.3) == 4  # round(4.29): 4 / 14 = 0.286
    assert replay_rows_wanted(10, 0.5) == 10
    assert replay_rows_wanted(10, 0.0) == 0
    assert replay_rows_wanted(0, 0.3) == 0  # nothing to anchor: no SFT rows, no replay


def test_too_few_replayable_items_are_all_written_with_a_warning_giving_the_numbers():
    s = size_replay(70, 0.3, available=12)
    assert (s.wanted, s.taken) == (30, 12)
    assert s.achieved == pytest.approx(12 / 82)
    assert "asked for 30 replay rows beside 70 SFT rows" in s.warning
    assert "only 12 items" in s.warning and "wrote 12, 15% of sft.parquet" in s.warning
    enough = size_replay(70, 0.3, available=100)
    assert enough.taken == 30 and enough.warning is None and enough.achieved == pytest.approx(0.3)


def test_a_fraction_outside_zero_to_one_and_unknown_buckets_are_config_errors():
    assert check_fraction("0.3") == 0.3
    for bad in (1.0, -0.1, "a lot"):
        with pytest.raises(ConfigError, match="--sft-replay"):
            check_fraction(bad)
    assert parse_replay_from("mastered,partial") == ("mastered", "partial")
    assert parse_replay_from(None) == ("mastered",)
    with pytest.raises(ConfigError, match="choose from mastered, partial"):
        parse_replay_from("mastered,unmastered")


def test_candidates_are_never_held_out_never_the_forgetting_split_and_never_already_in_sft():
    rows = [
        {"id": "m1", "bucket": "mastered", "stage": "drop"},
        {"id": "m2", "bucket": "mastered", "stage": "replay"},  # --keep-mastered: measures forgetting
        {"id": "m3", "bucket": "mastered", "stage": "drop"},  # held out below
        {"id": "p1", "bucket": "partial", "stage": "rl"},
        {"id": "p2", "bucket": "partial", "stage": "both"},  # already in SFT
        {"id": "u1", "bucket": "unmastered", "stage": "sft"},
        {"id": "m4", "bucket": "mastered", "stage": "unrouted"},
    ]
    assert replay_candidates(rows, ("mastered",), heldout={"m3"}) == ["m1"]
    assert replay_candidates(rows, ("mastered", "partial"), heldout={"m3"}) == ["m1", "p1"]


def test_the_replay_draw_repeats_with_the_same_seed():
    ids = [f"m{i}" for i in range(10)]
    assert replay_order(ids, seed=3) == replay_order(list(reversed(ids)), seed=3)
    assert sorted(replay_order(ids, seed=3)) == sorted(ids)


def test_draw_replay_verifies_only_as_many_demonstrations_as_needed_and_warns_when_short(tmp_path):
    from stages_helpers import build_store, item
    from stagewise.curate.store import ProbeStore
    from stagewise.stages.demonstrations import make_sources
    from stagewise.stages.replay import draw_replay

    path = tmp_path / "s.duckdb"
    items = [item(i, "cccc") for i in range(6)] + [item(10 + i, "wwww") for i in range(4)]
    run_id = build_store(path, items)
    with ProbeStore(path, read_only=True) as st:
        problems = {p.id: p for p in st.problems()}
        samples = st.samples(run_id)
    rows = [{"id": f"q{i:02d}", "bucket": "mastered", "stage": "drop"} for i in range(6)]
    sources = make_sources(["samples", "solution"], store_samples=samples, run_id=run_id)
    chosen, sizing, report = draw_replay(rows, problems, sources, fraction=0.3, n_sft=4, heldout={"q05"})
    assert sizing.wanted == 2 and len(chosen) == 2 and sizing.warning is None  # round(0.3 * 4 / 0.7) = 2
    assert report["samples"] == {"tried": 2, "verified": 2}  # the model's own samples, only two checked
    assert "q05" not in chosen and all(d.source == "samples" for d in chosen.values())
    chosen, sizing, _ = draw_replay(rows, problems, sources, fraction=0.5, n_sft=10, heldout={"q05"})
    assert (sizing.wanted, len(chosen), sizing.available) == (10, 5, 5)
    assert "only 5 items" in sizing.warning and "wrote 5, 33% of sft.parquet" in sizing.warning
