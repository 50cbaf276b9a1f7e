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


def _sft(i, answer="4"):
    return {"id": i, "prompt": [{"role": "user", "content": f"{i}?"}], "task": "gsm8k", "answer": answer,
            "meta": "{}", "completion": [{"role": "assistant", "content": f"\\boxed{{{answer}}}"}]}


def _rl(i, answer="4"):
    return {"id": i, "prompt": [{"role": "user", "content": f"{i}?"}], "task": "gsm8k", "solution": answer,
            "meta": "{}"}


def test_a_round_moves_items_by_the_reprobe_and_sends_all_wrong_rl_prompts_to_sft():
    from stagewise.stages.reroute import reroute, router_from_route_config
    from stagewise.train.loop import ItemPool

    pool = ItemPool([_sft("u1"), _sft("u2"), dict(_sft("m1"), stage="replay-sft")], [_rl("p1"), _rl("p2")],
                    buckets={"u1": "unmastered", "u2": "unmastered", "m1": "mastered", "p1": "partial",
                             "p2": "partial"},
                    prompting={"system_prompt": None, "prompt_template": "{prompt}"})
    pool.start_round()
    assert [r["id"] for r in pool.sft_rows()] == ["m1", "u1", "u2"]
    # After SFT: u1 became partial (joins RL), u2 still 0/4, m1 dropped to 3/4, p2 became 4/4 (leaves RL)
    moves = reroute(pool.before(), {"u1": (4, 2), "u2": (4, 0), "m1": (4, 3), "p1": (4, 1), "p2": (4, 4)},
                    router_from_route_config({"policy": "stage"}), has_demo=pool.has_demo())
    pool.apply_reprobe(moves)
    assert [r["id"] for r in pool.rl_rows()] == ["m1", "p1", "u1"]
    ledger = GroupLedger()
    ledger.record(["p1"] * 2 + ["u1"] * 2 + ["m1"] * 2, [0, 0, 1, 0, 1, 1], 2)
    rows = {r["id"]: r for r in pool.finish_round(1, ledger)}
    assert {i: (r["bucket"], r["stage"]) for i, r in rows.items()} == {
        "m1": ("partial", "sft+rl"), "p1": ("partial", "rl"), "p2": ("mastered", "drop"),
        "u1": ("partial", "sft+rl"), "u2": ("unmastered", "sft")}
    assert rows["p1"]["reason"].endswith("RL groups 1, all wrong 1, all right 0")
    # Round 2's SFT set: u2 (still unmastered) and p1 (all wrong in RL, demo written from its gold answer)
    pool.start_round()
    assert [r["id"] for r in pool.sft_rows()] == ["p1", "u2"]
    p1 = pool.items["p1"]
    assert p1.sft_row["completion"][0]["content"] == "The final answer is \\boxed{4}."
    assert p1.reason == "all 1 RL group of round 1 wrong → SFT next round"
    assert [r["id"] for r in pool.rl_rows()] == ["m1", "u1"]
