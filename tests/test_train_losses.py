"""iw-SFT against numbers worked out by hand (not by re-running the implementation)."""

import math

import pytest
import torch
from stagewise.train.losses import iw_sft_loss, iw_sft_weights

# Two sequences. A: two target tokens, padded to 3 (the padded position carries junk that the mask must
# ignore). B: three target tokens.
#   A: mean(log pi - log pi_ref) = mean(-1.0+1.5, -2.0+2.5) = 0.5      -> w_A = e^0.5 = 1.6487212707
#   B: mean(0, -0.5+3.5, 0)      = 1.0                                  -> w_B = e^1   = 2.7182818285
#   NLL_A = 1.0 + 2.0 = 3.0, NLL_B = 0.5 * 3 = 1.5, target tokens N = 5
#   loss = (1.6487212707 * 3.0 + 2.7182818285 * 1.5) / 5 = (4.9461638121 + 4.0774227428) / 5 = 1.8047173110
LOGP = [[-1.0, -2.0, -7.0], [-0.5, -0.5, -0.5]]
REF = [[-1.5, -2.5, -9.0], [-0.5, -3.5, -0.5]]
MASK = [[1, 1, 0], [1, 1, 1]]


def _tensors():
    return (torch.tensor(LOGP, dtype=torch.float64, requires_grad=True), torch.tensor(REF, dtype=torch.float64),
            torch.tensor(MASK))


def test_iw_sft_weights_match_hand_computation():
    logp, ref, mask = _tensors()
    w = iw_sft_weights(logp, ref, mask)
    assert w.tolist() == pytest.approx([1.6487212707, 2.7182818285], abs=1e-9)
    assert not w.requires_grad  # stop-gradient


def test_iw_sft_loss_matches_hand_computation():
    logp, ref, mask = _tensors()
    loss, metrics = iw_sft_loss(logp, ref, mask)
    assert loss.item() == pytest.approx(1.8047173110, abs=1e-9)
    assert metrics["iw_weight_mean"] == pytest.approx((1.6487212707 + 2.7182818285) / 2, abs=1e-9)
    # The weight is a constant: d loss / d log pi(token) = -w / N, nothing flows through w.
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-1.6487212707 / 5, -1.6487212707 / 5, 0.0], abs=1e-9)
    assert logp.grad[1].tolist() == pytest.approx([-2.7182818285 / 5] * 3, abs=1e-9)


def test_iw_sft_loss_divides_by_the_accumulated_token_count():
    logp, ref, mask = _tensors()
    loss, _ = iw_sft_loss(logp, ref, mask, num_items_in_batch=10)
    assert loss.item() == pytest.approx(9.0235865549 / 10, abs=1e-9)


def test_iw_sft_weight_is_clamped_at_16():
    # mean log-ratio 3.0 -> e^3 = 20.09 -> clamped to 16; mean -50 -> e^-50 ~ 2e-22 stays >= 0
    logp = torch.tensor([[-0.1], [-60.0]])
    ref = torch.tensor([[-3.1], [-10.0]])
    w = iw_sft_weights(logp, ref, torch.ones(2, 1))
    assert w[0].item() == 16.0
    assert 0.0 <= w[1].item() < 1e-20
    assert math.exp(3.0) > 16.0
