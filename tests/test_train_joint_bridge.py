"""bridge's update rule against numbers worked out by hand, on a one-parameter adapter w with
L_SFT(w) = (w − 1)² and L_RL(θ, w) = θ · w (so ∇_w L_RL = θ)."""

import pytest
import torch
from stagewise.train.joint.bridge import adapter_gradient, adapter_objective, base_objective, cooperative_gain
from stagewise.train.joint.weighted import weighted_loss


def _adapter_grad(w0: float, theta: float, theta_shadow: float, gain_weight: float) -> float:
    w = torch.tensor(w0, requires_grad=True)
    (g_joint,) = torch.autograd.grad(adapter_objective(theta * w, (w - 1) ** 2, gain_weight), [w])
    (g_shadow,) = torch.autograd.grad(theta_shadow * w, [w])
    return adapter_gradient(g_joint, g_shadow, gain_weight).item()


def test_the_base_weights_take_weighteds_loss_with_alpha_as_the_sft_weight():
    # L_RL 0.2 + α 0.5 · s 10 · L_SFT 0.8 = 4.2: the same number as weighted with λ = α
    assert base_objective(0.2, 0.8, 0.5, 10.0) == pytest.approx(4.2) == weighted_loss(0.2, 0.8, 0.5, 10.0)


def test_the_adapter_gradient_is_the_sft_gradient_plus_gain_weight_times_the_rl_gradient_gap():
    # w = 0.5, θ = 3, θ̂ = 2, λ = 0.5:  2(w − 1) + λ (θ − θ̂) = −1 + 0.5 = −0.5
    assert _adapter_grad(0.5, 3.0, 2.0, 0.5) == pytest.approx(-0.5)
    # λ = 2: −1 + 2 · (3 − 2) = 1: the gain term now outweighs the SFT term
    assert _adapter_grad(0.5, 3.0, 2.0, 2.0) == pytest.approx(1.0)


def test_while_the_joint_model_and_its_shadow_agree_the_adapter_learns_from_sft_alone():
    # θ = θ̂: the two RL gradients cancel whatever λ is; only 2(w − 1) = −1 is left
    assert _adapter_grad(0.5, 3.0, 3.0, 0.5) == pytest.approx(-1.0)
    assert _adapter_grad(0.5, 3.0, 3.0, 7.0) == pytest.approx(-1.0)


def test_a_missing_gradient_counts_as_zero():
    assert adapter_gradient(None, torch.tensor(2.0), 0.5).item() == pytest.approx(-1.0)
    assert adapter_gradient(torch.tensor(1.5), None, 0.5).item() == pytest.approx(1.5)
    assert adapter_gradient(None, None, 0.5) is None


def test_the_cooperative_gain_is_the_joint_reward_minus_the_shadows():
    assert cooperative_gain(0.875, 0.8125) == pytest.approx(0.0625)
