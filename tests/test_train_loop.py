"""The loop's all-wrong bookkeeping, with literal rewards."""

from __future__ import annotations

import pytest
from stagewise.train.loop import GroupLedger, next_sft_set, split_groups


def test_rewards_split_into_groups_of_consecutive_completions():
    assert split_groups(["a", "a", "b", "b"], [1, 0, 0, 0], 2) == [("a", [1.0, 0.0]), ("b", [0.0, 0.0])]
    with pytest.raises(ValueError, match="mix prompts"):
        split_groups(["a", "b", "b", "b"], [0, 0, 0, 0], 2)


def test_a_prompt_all_wrong_in_every_group_of_the_round_goes_to_the_next_sft_set():
    ledger = GroupLedger()
    # step 1: a all wrong, b mixed, c all right
    ledger.record(["a"] * 4 + ["b"] * 4 + ["c"] * 4, [0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1], 4)
    # step 2: a all wrong again, b all wrong this time, d all wrong
    ledger.record(["a"] * 4 + ["b"] * 4 + ["d"] * 4, [0] * 12, 4)
    rows = {r["id"]: r for r in ledger.rows(1)}
    assert rows["a"] == {"id": "a", "round": 1, "groups": 2, "zero_variance": 2, "all_wrong": 2, "all_right": 0}
    assert rows["b"] == {"id": "b", "round": 1, "groups": 2, "zero_variance": 1, "all_wrong": 1, "all_right": 0}
    assert rows["c"] == {"id": "c", "round": 1, "groups": 1, "zero_variance": 1, "all_wrong": 0, "all_right": 1}
    assert ledger.all_wrong_prompts() == ["a", "d"]  # b was right once
    assert ledger.totals() == {"prompts": 4, "groups": 6, "zero_variance": 5, "all_wrong": 4, "all_right": 1,
                               "all_wrong_prompts": 2}


def test_the_next_sft_set_adds_the_reprobes_unmastered_items_and_needs_a_demonstration():
    ids, left = next_sft_set(["a", "d"], ["u1", "a", "u2"], has_demo={"a", "u1", "u2"})
    assert ids == ["a", "u1", "u2"]
    assert left == {"d": "no verified demonstration: cannot go to SFT"}
