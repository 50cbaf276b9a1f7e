"""The SFT side every joint mode shares: demonstrations as padded token batches, the SFT loss of a batch
(nll, dft or iw-sft through train/losses.py), and the SFT term's scale in a step shared with RL."""

from __future__ import annotations

import copy
import random

import torch
from stagewise.train.heldout_loss import sft_token_batches
from stagewise.train.losses import iw_sft_loss, token_loss


def sft_scale(cfg: dict) -> float:
    """The SFT term's multiplier in a step shared with RL: sft_learning_rate / learning_rate (1 for relift,
    whose SFT update has its own step)."""
    if cfg.get("mode") == "relift" or cfg.get("sft_learning_rate") is None or not float(cfg["learning_rate"]):
        return 1.0
    return float(cfg["sft_learning_rate"]) / float(cfg["learning_rate"])


class SFTBatcher:
    """Tokenized SFT demonstrations served as padded batches, reshuffled each pass with a fixed seed."""

    def __init__(self, rows: list[dict], tokenizer, batch_size: int, seed: int = 0, max_length: int = 1024):
        self.items = sft_token_batches(rows, tokenizer, max_length)
        self.pad = tokenizer.pad_token_id
        self.batch_size, self.rng = batch_size, random.Random(seed)
        self._order: list[int] = []

    def __len__(self) -> int:
        return len(self.items)

    def next(self, device) -> dict:
        if not self._order:
            self._order = list(range(len(self.items)))
            self.rng.shuffle(self._order)
        take, self._order = self._order[:self.batch_size], self._order[self.batch_size:]
        return collate([self.items[i] for i in take], self.pad, device)


def collate(items: list[tuple[list[int], int]], pad_id: int, device) -> dict:
    """Right-padded input_ids / attention_mask and a target mask on demonstration tokens (shifted)."""
    width = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    target = torch.zeros((len(items), width - 1))
    for i, (seq, start) in enumerate(items):
        ids[i, :len(seq)] = torch.tensor(seq)
        attn[i, :len(seq)] = 1
        target[i, start - 1:len(seq) - 1] = 1  # position t predicts token t+1
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device), "target": target.to(device)}


def sft_objective(model, batch: dict, loss: str = "nll", ref_model=None, clip: float = 16.0, *,
                  num_items_in_batch=None) -> torch.Tensor:
    """The chosen SFT loss (nll, dft or iw-sft) of one batch, differentiable, through the shared loss
    functions of train/losses.py: summed over demonstration tokens and divided by `num_items_in_batch`,
    the target tokens of the whole accumulated batch (default: this batch's own), so micro-batches of one
    update add up to the loss of the whole update instead of weighting short micro-batches up."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)  # (B, T-1)
    mask = batch["target"]
    if loss == "iw-sft":
        with torch.no_grad():
            ref_logits = ref_model(input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            ref = torch.log_softmax(ref_logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
        return iw_sft_loss(logps, ref, mask, clip=clip, num_items_in_batch=num_items_in_batch)[0]
    return token_loss(logps, mask, loss, num_items_in_batch=num_items_in_batch)


def target_tokens(batches: list[dict]) -> int:
    """Demonstration (target) tokens over the batches of one update: the N every micro-batch divides by."""
    return int(sum(int(b["target"].sum().item()) for b in batches))


class SFTTermMixin:
    """The SFT-side state of a joint trainer (mixed into a GRPOTrainer subclass)."""

    def _setup_sft(self, sft_rows, joint_cfg):
        self.joint_cfg = joint_cfg
        self.sft_loss_name = joint_cfg["sft_loss"]
        self.sft_scale = sft_scale(joint_cfg)
        self.sft_batcher = SFTBatcher(sft_rows, self.processing_class, joint_cfg["sft_batch_size"],
                                      seed=self.args.seed) if sft_rows else None
        self.sft_ref = None
        if self.sft_loss_name == "iw-sft":
            self.sft_ref = copy.deepcopy(self.accelerator.unwrap_model(self.model)).eval().requires_grad_(False)

    def sft_term(self, model, batch=None, num_items_in_batch=None) -> torch.Tensor:
        batch = batch or self.sft_batcher.next(self.accelerator.device)
        return sft_objective(model, batch, self.sft_loss_name, self.sft_ref, float(self.joint_cfg["iw_clip"]),
                             num_items_in_batch=num_items_in_batch)

    def accumulated_sft_term(self, model) -> torch.Tensor:
        """This micro-step's SFT term, normalised over the target tokens of every SFT batch of the same
        optimizer step: at the first micro-step the step's batches are drawn and counted."""
        if not getattr(self, "_sft_queue", None):
            steps = max(1, int(self.current_gradient_accumulation_steps))
            self._sft_queue = [self.sft_batcher.next(self.accelerator.device) for _ in range(steps)]
            self._sft_tokens = target_tokens(self._sft_queue)
        return self.sft_term(model, self._sft_queue.pop(0), num_items_in_batch=self._sft_tokens)

    def _log(self, key, value):
        self._metrics["train"][key].append(float(value))
