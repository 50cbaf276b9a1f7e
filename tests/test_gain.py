"""The paired held-out gain and the status split (stagewise/gain.py), on literal per-item counts."""

import pytest

from stagewise.gain import gain_report, paired_gain, status_split
from stagewise.train.stage_eval import ItemResult


def items(label, counts, set_name="heldout"):
    """ItemResults from {id: (n, c)}; every non-correct sample is `wrong`."""
    return [ItemResult(label, set_name, i, n, c, {"correct": c, "wrong": n - c}) for i, (n, c) in counts.items()]


def test_the_gain_is_the_mean_of_per_item_pass_at_1_differences():
    before = items("before", {"a": (4, 0), "b": (4, 1), "c": (2, 0)})
    after = items("after", {"a": (4, 4), "b": (4, 1), "c": (4, 2)})
    gain = paired_gain(before, after)
    assert gain["mean"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert gain["n_items"] == 3 and gain["excluded"] == 0
    assert 0.0 <= gain["ci_low"] <= gain["mean"] <= gain["ci_high"] <= 1.0


def test_two_items_give_the_interval_of_the_bootstrap_means_zero_to_one():
    # diffs {0, 1}: resampled means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    # percentiles are 0 and 1.
    gain = paired_gain(items("b", {"x": (2, 0), "y": (2, 0)}), items("a", {"x": (2, 0), "y": (2, 2)}))
    assert (gain["mean"], gain["ci_low"], gain["ci_high"]) == (0.5, 0.0, 1.0)


def test_pairing_keeps_the_interval_tight_when_every_item_moves_the_same_way():
    # Items range from never to always solved, but each gains exactly 0.25: the paired interval is the
    # point itself, where two independent means would give a wide interval.
    before = items("b", {f"i{j}": (4, j % 4) for j in range(40)})
    after = items("a", {f"i{j}": (4, j % 4 + 1) for j in range(40)})
    gain = paired_gain(before, after)
    assert (gain["mean"], gain["ci_low"], gain["ci_high"]) == (0.25, 0.25, 0.25)


def test_a_half_and_half_gain_over_forty_items_has_the_normal_width():
    # 20 items go 0 -> 1, 20 stay: mean 0.5, standard error sqrt(0.25 / 40) = 0.079, so about +-0.155.
    before = items("b", {f"i{j}": (4, 0) for j in range(40)})
    after = items("a", {f"i{j}": (4, 4 if j < 20 else 0) for j in range(40)})
    gain = paired_gain(before, after, seed=3)
    assert gain["mean"] == 0.5
    assert gain["ci_low"] == pytest.approx(0.345, abs=0.03)
    assert gain["ci_high"] == pytest.approx(0.655, abs=0.03)


def test_the_interval_is_reproducible_from_its_seed():
    before = items("b", {f"i{j}": (4, j % 3) for j in range(30)})
    after = items("a", {f"i{j}": (4, (j * 7) % 5) for j in range(30)})
    assert paired_gain(before, after, seed=1) == paired_gain(before, after, seed=1)
    # Percentiles of resampled means land on a grid of 1/120, so seeds can agree; five cannot all agree.
    intervals = {(g["ci_low"], g["ci_high"]) for g in (paired_gain(before, after, seed=s, resamples=200)
                                                      for s in range(5))}
    assert len(intervals) > 1


def test_items_unverified_at_either_checkpoint_or_missing_are_left_out_and_counted():
    before = items("b", {"a": (4, 0), "b": (0, 0), "c": (4, 1)})
    after = items("a", {"a": (4, 2), "b": (4, 4), "d": (4, 4)})
    gain = paired_gain(before, after)
    assert gain["n_items"] == 1 and gain["excluded"] == 3
    assert gain["mean"] == 0.5 and gain["ci_low"] is None and gain["ci_high"] is None


def test_only_the_heldout_set_counts_unless_told_otherwise():
    before = items("b", {"h": (4, 0)}) + items("b", {"e": (4, 0)}, "export items")
    after = items("a", {"h": (4, 1)}) + items("a", {"e": (4, 4)}, "export items")
    assert paired_gain(before, after)["mean"] == 0.25
    assert paired_gain(before, after, set_name=None)["mean"] == pytest.approx((0.25 + 1.0) / 2)


def test_plain_dicts_from_a_summary_file_work_like_item_results():
    before = [{"set": "heldout", "id": "a", "n": 4, "c": 1, "statuses": {"correct": 1, "no_answer": 3}}]
    after = [{"set": "heldout", "id": "a", "n": 4, "c": 3, "statuses": {"correct": 3, "wrong": 1}}]
    assert paired_gain(before, after)["mean"] == 0.5


def test_the_status_split_separates_the_format_part_from_the_answer_part():
    before = [ItemResult("b", "heldout", "a", 4, 0, {"no_answer": 3, "wrong": 1}),
              ItemResult("b", "heldout", "b", 4, 1, {"correct": 1, "wrong": 2, "timeout": 1}),
              ItemResult("b", "export items", "z", 4, 4, {"correct": 4})]
    split = status_split(before)
    assert {k: split[k] for k in ("correct", "wrong", "no_answer", "other")} == {
        "correct": 1, "wrong": 3, "no_answer": 3, "other": 1}
    assert split["samples"] == 8 and split["fractions"]["no_answer"] == 3 / 8


def test_an_unknown_status_is_an_error_not_silently_other():
    with pytest.raises(ValueError, match="unknown verifier status 'bogus'"):
        status_split([ItemResult("b", "heldout", "a", 1, 0, {"bogus": 1})])


def test_the_gain_report_holds_the_gain_and_both_splits():
    before = [ItemResult("b", "heldout", "a", 2, 0, {"no_answer": 2}), ItemResult("b", "heldout", "b", 2, 0, {"wrong": 2})]
    after = [ItemResult("a", "heldout", "a", 2, 2, {"correct": 2}), ItemResult("a", "heldout", "b", 2, 0, {"wrong": 2})]
    report = gain_report(before, after, seed=0)
    assert report["gain"]["mean"] == 0.5
    assert report["statuses"]["before"]["no_answer"] == 2 and report["statuses"]["after"]["correct"] == 2
