"""The held-out SFT loss during RL: SFT and RL do not decouple, and RL tends to raise the SFT loss while it
raises the reward. `HeldoutSFTLoss` logs it at the start of RL, every few steps and at the end
(train/stage_eval.py's `plot_curves` draws it against the step)."""

from __future__ import annotations

import torch
from transformers import TrainerCallback


def sft_token_batches(rows: list[dict], tokenizer, max_length: int = 1024) -> list[tuple[list[int], int]]:
    """(token ids of prompt + demonstration, index where the demonstration starts) per SFT row."""
    out = []
    for row in rows:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str):
            p_text, full = prompt, prompt + (completion if isinstance(completion, str)
                                             else completion[0]["content"])
        else:
            p_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(prompt + list(completion), tokenize=False)
        p_ids = tokenizer(p_text, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) > len(p_ids):
            out.append((ids, len(p_ids)))
    return out


@torch.no_grad()
def sft_loss(model, batches: list[tuple[list[int], int]]) -> float:
    """Mean NLL per demonstration token (completion-only, like SFT's nll), one sequence at a time."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for ids, start in batches:
        x = torch.tensor([ids], device=device)
        logits = model(input_ids=x).logits[0, :-1].float()  # (T-1, V)
        targets = x[0, 1:]
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")  # (T-1,)
        total += nll[start - 1:].sum().item()
        count += len(ids) - start
    if was_training:
        model.train()
    return total / max(count, 1)


class HeldoutSFTLoss(TrainerCallback):
    """Logs `heldout_sft_loss` at the start of RL, every `every` steps and at the end (to metrics.jsonl
    via `sink`)."""

    def __init__(self, rows: list[dict], tokenizer, every: int = 5, sink=None, stage: str = "rl"):
        self.batches = sft_token_batches(rows, tokenizer)
        self.every, self.sink, self.stage = every, sink, stage
        self.history: list[tuple[int, float]] = []

    def _record(self, step: int, model) -> None:
        value = sft_loss(model, self.batches)
        self.history.append((step, value))
        if self.sink is not None:
            self.sink.write({"stage": self.stage, "step": step, "heldout_sft_loss": value})

    def on_train_begin(self, args, state, control, model=None, **kw):
        if model is not None and self.batches:
            self._record(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kw):
        if model is not None and self.batches and state.global_step % self.every == 0:
            self._record(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kw):
        # The last step too, so a short run still shows where RL left the SFT loss.
        if model is not None and self.batches and (not self.history or self.history[-1][0] != state.global_step):
            self._record(state.global_step, model)
