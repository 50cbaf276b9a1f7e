"""weighted's update rule against numbers worked out by hand (not by re-running the implementation)."""

import pytest
import torch
from stagewise.train.joint.sft_term import sft_scale
from stagewise.train.joint.weighted import sft_weight_at, weighted_loss


def test_a_constant_sft_weight_is_the_same_at_every_step():
    assert [sft_weight_at(t, 8, 0.5) for t in (0, 4, 8)] == [0.5, 0.5, 0.5]


def test_a_linear_sft_weight_falls_to_zero_at_the_last_step_and_never_below():
    # λ_t = 0.5 · (1 − t/8): t=0 -> 0.5, t=2 -> 0.375, t=4 -> 0.25, t=8 -> 0, t=10 -> 0 (not -0.125)
    assert [sft_weight_at(t, 8, 0.5, "linear") for t in (0, 2, 4, 8, 10)] == [0.5, 0.375, 0.25, 0.0, 0.0]


def test_the_sft_term_is_scaled_by_the_ratio_of_the_sft_rate_to_the_rl_rate():
    # s = 3e-4 / 3e-5 = 10; relift's SFT update has its own step, so its scale is 1
    assert sft_scale({"mode": "weighted", "learning_rate": 3e-5, "sft_learning_rate": 3e-4}) == pytest.approx(10.0)
    assert sft_scale({"mode": "relift", "learning_rate": 3e-5, "sft_learning_rate": 3e-4}) == 1.0


def test_the_weighted_loss_adds_the_sft_loss_times_weight_and_scale():
    # L_RL 0.2, L_SFT 0.8, λ 0.5, s 10:  0.2 + 0.5 · 10 · 0.8 = 4.2
    assert weighted_loss(0.2, 0.8, 0.5, 10.0) == pytest.approx(4.2)
    # Gradients add the same way: L_RL = 2θ, L_SFT = θ², θ = 3:  dL/dθ = 2 + 0.5 · 10 · 2θ = 2 + 30 = 32
    theta = torch.tensor(3.0, requires_grad=True)
    weighted_loss(2 * theta, theta ** 2, 0.5, 10.0).backward()
    assert theta.grad.item() == pytest.approx(32.0)
