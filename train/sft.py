"""SFT recipe on TRL's SFTTrainer: validate config -> load data and model -> build trainer -> train ->
save. Losses: `nll` (completion-only cross-entropy, TRL), `dft` (TRL), `iw-sft` (ours, train/losses.py).

    train_sft("export/", "smollm2-135m", "runs/sft", loss="iw-sft", max_steps=20)
"""

from __future__ import annotations

from pathlib import Path

import torch
from stagewise.train import config as C
from stagewise.train.common import TrainResult, open_recipe, quiet_trainer, start_run
from stagewise.train.data import load_sft_rows, sft_dataset_rows
from stagewise.train.losses import iw_sft_loss
from trl import SFTConfig, SFTTrainer


class IWSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is importance-weighted SFT against a frozen copy of the starting model.

    With LoRA the reference is the base model with the adapter switched off (no second copy)."""

    def __init__(self, *args, ref_model=None, iw_clip: float = 16.0, **kwargs):
        super().__init__(*args, **kwargs)
        from trl.trainer.utils import add_fused_lm_head

        self.iw_clip = iw_clip
        self.ref_model = None
        if ref_model is not None:
            ref_model.requires_grad_(False)
            ref_model.eval()
            add_fused_lm_head(ref_model)
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def _ref_logps(self, model, inputs):
        with torch.no_grad():
            if self.ref_model is not None:
                return self.ref_model(**inputs, fused_lm_head=True).log_probs
            unwrapped = self.accelerator.unwrap_model(model)
            with unwrapped.disable_adapter():  # peft: the base weights are the frozen start
                return model(**inputs, fused_lm_head=True).log_probs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs = {**inputs, "use_cache": False}
        outputs = model(**inputs, fused_lm_head=True)
        ref_logps = self._ref_logps(model, inputs)
        loss, metrics = iw_sft_loss(outputs.log_probs, ref_logps, outputs.label_mask,
                                    num_items_in_batch=num_items_in_batch, clip=self.iw_clip)
        # As TRL's nll: num_items_in_batch counts every rank's tokens and DDP averages gradients over ranks.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        for k, v in metrics.items():
            self._metrics[mode][k].append(v)
        num_valid = outputs.label_mask.sum()
        self._metrics[mode]["mean_token_accuracy"].append(
            (outputs.is_top1.sum() / num_valid).item() if num_valid > 0 else 0.0)
        return (loss, outputs) if return_outputs else loss


def sft_config(cfg: dict, out: Path) -> SFTConfig:
    """The SFTConfig our recipe uses (the `trl:` section laid over it); the benchmark builds its bare-TRL
    baseline from the same object."""
    return C.trl_config("sft", cfg, {
        **C.trainer_args(cfg, out),
        "per_device_train_batch_size": cfg["batch_size"],
        "per_device_eval_batch_size": cfg["batch_size"],
        "max_length": cfg["max_length"],
        "loss_type": "nll" if cfg["loss"] == "iw-sft" else cfg["loss"],
        "completion_only_loss": None,  # TRL: on for prompt-completion rows, so only the demonstration is trained
        "packing": False,  # iw-sft weighs whole sequences; packing would mix several in one row
        "dataset_num_proc": None,
    })


def build_sft_trainer(rows: list[dict], model, tokenizer, cfg: dict, out: Path, *, callbacks=(),
                      eval_rows: list[dict] | None = None, model_path: str | None = None):
    """An SFTTrainer (or IWSFTTrainer) ready to train on exported SFT rows."""
    from datasets import Dataset

    args = sft_config(cfg, out)
    train_ds = Dataset.from_list(sft_dataset_rows(rows))
    eval_ds = Dataset.from_list(sft_dataset_rows(eval_rows)) if eval_rows else None
    kwargs = dict(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                  processing_class=tokenizer, callbacks=list(callbacks), peft_config=C.peft_config(cfg))
    if cfg["loss"] != "iw-sft":
        trainer = SFTTrainer(**kwargs)
        quiet_trainer(trainer)
        return trainer
    ref = None
    if not cfg.get("lora"):
        # A frozen copy of the starting weights: deepcopy, so it is exactly the model we start from even
        # when the caller passed an in-memory model.
        import copy

        from transformers import AutoModelForCausalLM

        ref = copy.deepcopy(model) if model_path is None else AutoModelForCausalLM.from_pretrained(
            model_path, dtype=model.dtype)
    trainer = IWSFTTrainer(**kwargs, ref_model=ref, iw_clip=float(cfg["iw_clip"]))
    quiet_trainer(trainer)
    return trainer


def train_sft(data, model, out, *, loss: str | None = None, max_steps: int | None = None,
              learning_rate: float | None = None, batch_size: int | None = None, seed: int | None = None,
              resume: bool = False, config=None, dry_run: bool = False, progress: bool = True,
              sft_eval_rows: list[dict] | None = None, rows: list[dict] | None = None, verify: bool = True,
              **overrides) -> TrainResult:
    """Supervised fine-tuning on an export's SFT split (`data`: export dir or sft.parquet).

    Options not named here (gradient_accumulation_steps, lora, precision, ...) go through `overrides`
    or `config` (a YAML path or dict); see stagewise/configs/train_sft.yaml. `rows` replaces the
    export's rows (the pipeline passes the split minus its held-out part); `sft_eval_rows` (held-out
    demonstrations) are evaluated at the end (eval_loss in the result's metrics)."""
    cfg, export = open_recipe("sft", config, data, verify=verify, loss=loss, max_steps=max_steps,
                              learning_rate=learning_rate, batch_size=batch_size, seed=seed, **overrides)
    rows = load_sft_rows(export) if rows is None else rows
    run = start_run("sft", data, model, out, cfg, export, {"n_train": len(rows)}, resume=resume, dry_run=dry_run,
                    progress=progress, verify=verify, sft_eval_rows=sft_eval_rows)
    if run.finished:
        return run.finished
    trainer = build_sft_trainer(rows, run.model, run.tokenizer, cfg, run.out, callbacks=run.callbacks,
                                eval_rows=sft_eval_rows, model_path=run.model_path)
    return run.train(trainer)
