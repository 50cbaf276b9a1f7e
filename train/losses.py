"""SFT losses on top of TRL's SFTTrainer: `nll` and `dft` are TRL's own; `iw-sft` is ours.

iw-SFT (Qin & Springenberg, "Supervised Fine Tuning on Curated Data is Reinforcement Learning (and can be
improved)"), as in their released code: each demonstration i gets one weight

    w_i = clamp(exp(mean_t [log π_θ(y_t | ·) − log π_ref(y_t | ·)]), 0, clip)      (no gradient)

over its response tokens, π_ref the frozen starting model, and

    loss = Σ_i w_i · Σ_t NLL_{i,t} / N

where N is the number of target tokens. N is transformers' `num_items_in_batch`: the target-token count
of the whole *accumulated* batch (all micro-batches of one optimizer step, all ranks), so a batch of 8
and 4 micro-batches × 2 accumulation steps give the same loss and the same gradient, exactly as TRL's
`nll`/`dft` do. (Dividing each micro-batch by its own token count instead would weight short
micro-batches up; that is the gradient-accumulation bug transformers fixed in 4.46.)
"""

from __future__ import annotations

import torch


def token_loss(logps: torch.Tensor, mask: torch.Tensor, loss: str = "nll", *,
               num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """Σ over target tokens of the per-token loss / N: `nll` (−log π) or `dft` (−log π · π, no gradient
    through the π factor, as TRL's dft). N = `num_items_in_batch` (the accumulated batch's target
    tokens) when given, else this batch's: the same rule as `iw_sft_loss`, so a loss computed over
    micro-batches and summed equals the loss of the whole batch."""
    if loss not in ("nll", "dft"):
        raise ValueError(f"token_loss handles nll and dft, not {loss!r} (iw-sft: iw_sft_loss)")
    mask = mask.to(logps.dtype)
    per_token = -logps
    if loss == "dft":
        per_token = per_token * logps.detach().exp()
    n = mask.sum() if num_items_in_batch is None else num_items_in_batch
    return (per_token * mask).sum() / torch.as_tensor(n, dtype=logps.dtype, device=logps.device).clamp(min=1)


def iw_sft_weights(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                   clip: float = 16.0) -> torch.Tensor:
    """Per-sequence importance weights, shape (B,), without gradient.

    logps, ref_logps: (B, T) log-probabilities of the target tokens under π_θ and π_ref.
    mask: (B, T) 1 on response (target) tokens, 0 elsewhere.
    A sequence with no target token gets weight 0 (it has no loss to weight anyway).
    """
    with torch.no_grad():
        mask = mask.to(logps.dtype)
        n_tokens = mask.sum(dim=1)  # (B,)
        diff = ((logps.detach() - ref_logps.detach()) * mask).sum(dim=1) / n_tokens.clamp(min=1)  # (B,)
        w = torch.exp(diff).clamp(min=0.0, max=clip)
        return torch.where(n_tokens > 0, w, torch.zeros_like(w))


def iw_sft_loss(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, *,
                num_items_in_batch: torch.Tensor | int | None = None,
                clip: float = 16.0) -> tuple[torch.Tensor, dict]:
    """Σ_i w_i · Σ_t NLL_{i,t} / N. Returns (loss, metrics).

    N = `num_items_in_batch` when the trainer passes it (the accumulated batch's target tokens), else
    this batch's target-token count.
    """
    mask = mask.to(logps.dtype)
    w = iw_sft_weights(logps, ref_logps, mask, clip)  # (B,)
    nll_per_seq = -(logps * mask).sum(dim=1)  # (B,)
    n = mask.sum() if num_items_in_batch is None else num_items_in_batch
    loss = (w * nll_per_seq).sum() / torch.as_tensor(n, dtype=logps.dtype, device=logps.device).clamp(min=1)
    has_tokens = mask.sum(dim=1) > 0
    metrics = {
        "nll_unweighted": (nll_per_seq.detach().sum() / mask.sum().clamp(min=1)).item(),
        "iw_weight_mean": w[has_tokens].mean().item() if has_tokens.any() else 0.0,
        "iw_weight_max": w.max().item() if w.numel() else 0.0,
        "iw_clipped_frac": (w[has_tokens] >= clip).float().mean().item() if has_tokens.any() else 0.0,
    }
    return loss, metrics
