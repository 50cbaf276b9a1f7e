"""relift's buffer rule against cases worked out by hand: which groups move, once, with which
demonstration, and how a full buffer becomes SFT updates."""

import pytest
import torch
from stagewise.train.joint.relift import admit, all_wrong, full_updates, learning_rate


def test_a_group_is_all_wrong_when_no_completion_scored_one():
    assert all_wrong([0.0, 0.5, 0.99])  # partial credit is still not a correct completion
    assert not all_wrong([0.0, 1.0, 0.0, 0.0])
    assert not all_wrong([])  # no completions: nothing to learn from, nothing to move


def test_all_wrong_prompts_move_once_and_only_with_a_demonstration():
    groups = {"a": [0, 0, 0, 0], "b": [0, 1, 0, 0], "c": [0, 0, 0, 0], "d": [0.5, 0, 0, 0], "e": [0, 0]}
    demos = {"a": {"id": "a"}, "b": {"id": "b"}, "c": {"id": "c"}, "e": {"id": "e"}}
    step = admit(groups, moved={"c"}, demonstration=demos.get)
    # a, c, d and e are all wrong (b has a correct completion); c moved at an earlier step; d has no
    # demonstration: a and e move, in the order of the groups.
    assert step.ids == ["a", "e"]
    assert step.rows == [{"id": "a"}, {"id": "e"}]
    assert (step.all_wrong, step.no_demo) == (4, 1)


def test_a_full_buffer_becomes_updates_of_buffer_size_items_oldest_first():
    assert full_updates(list(range(10)), 4) == ([[0, 1, 2, 3], [4, 5, 6, 7]], [8, 9])
    assert full_updates(list(range(8)), 4) == ([[0, 1, 2, 3], [4, 5, 6, 7]], [])
    assert full_updates([0, 1, 2], 4) == ([], [0, 1, 2])


def test_the_sft_update_steps_at_the_sft_rate_and_leaves_the_rl_rates_as_they_were():
    p, q = torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.SGD([{"params": [p], "lr": 1e-5}, {"params": [q], "lr": 2e-5}])
    (2 * p + 4 * q).backward()  # grads 2 and 4
    with learning_rate(opt, 3e-4):
        opt.step()
    # SGD: 1 − 3e-4 · 2 = 0.9994 and 1 − 3e-4 · 4 = 0.9988, both at the SFT rate
    assert (p.item(), q.item()) == (pytest.approx(0.9994), pytest.approx(0.9988))
    assert [g["lr"] for g in opt.param_groups] == [1e-5, 2e-5]
