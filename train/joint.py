"""Cooperative single-stage SFT+RL: `weighted`, `relift` and `bridge`, each a small subclass of TRL's
GRPOTrainer (generation, advantages, the GRPO-family loss, accelerate, checkpoints all stay TRL's).

Sources: "Beyond Two-Stage Training: Cooperative SFT and RL for LLM Reasoning" (BRIDGE, arXiv 2509.06948);
"On the Non-decoupling of SFT and RL in Post-training" (arXiv 2601.07389: either order undoes part of
the other, so both the held-out SFT loss and the reward are tracked throughout); ReLIFT (arXiv 2506.07527).

weighted  (one optimizer step t, θ all weights)
    L(θ) = L_RL(θ; on-policy groups of RL-split prompts) + λ_t · L_SFT(θ; a batch of SFT-split demonstrations)
    λ_t = λ (constant) or λ · (1 − t / T) (linear decay to 0 at the last step). L_SFT is nll, dft or iw-sft,
    as in the two-stage recipe (train/losses.py), summed over demonstration tokens and divided by the target
    tokens of all SFT batches of the optimizer step, so gradient accumulation does not change it.
    sft_learning_rate (default: the SFT stage's learning rate) scales the SFT term by
    sft_learning_rate / learning_rate; the resolved rate is recorded in config.yaml.

relift  (ReLIFT's interleaving, our reading of its buffer rule)
    RL on the RL split. After each generation, every prompt whose group has no correct completion (all
    rewards < 1: its GRPO advantage is zero, so RL learns nothing from it) moves into an SFT buffer, with its
    verified demonstration: the SFT split's demonstration for the same id if there is one, else a
    demonstration written from the gold answer in the answer format the probe's prompt asked for
    (`format_target` with the manifest's system prompt and template, as the exporter writes them) and
    accepted only if the stagewise verifier scores it correct; without one the item is counted as
    "no demonstration". The SFT split's items start in the buffer. Whenever the buffer holds
    `buffer_size` items (ReLIFT: 128), one SFT update (one optimizer step of the same optimizer on those
    items, SFT loss over all their target tokens, at sft_learning_rate) runs after the RL step and the
    items leave the buffer. Every move and update is logged to metrics.jsonl (events relift_move /
    relift_sft_update). The buffer (its rows, the moved ids and the counts) is saved in every checkpoint (relift_buffer.json) and restored on --resume.
    Under several processes (accelerate/torchrun) a prompt's group may be spread over ranks: the scores
    are gathered from every rank before deciding, so each rank holds the same buffer and runs the same
    SFT updates at the same step (DDP's all-reduce needs every rank to take part).

bridge  (bilevel, penalty form; θ base weights, w a LoRA adapter, θ̂ an RL-only shadow of the base weights)
    J(θ, w): expected verifier reward of the model with weights θ and adapter w; L_RL its GRPO surrogate.
    Each step, on the same prompts:
      θ̂ ← θ̂ − η · ∇_θ̂ L_RL(θ̂, w)                            RL gradient only, on the shadow's own rollouts
      θ  ← θ  − η · ∇_θ [L_RL(θ, w) + α · L_SFT(θ, w)]           the fused SFT+RL gradient
      w  ← w  − η · ∇_w [L_SFT(θ, w) − λ · (Ĵ(θ, w) − Ĵ(θ̂, w))]
         with −Ĵ replaced by the GRPO surrogate: ∇_w[L_SFT + λ · (L_RL(θ, w) − L_RL(θ̂, w))]
    J(θ, w) − J(θ̂, w) is the cooperative gain: what the SFT signal adds to the reward over RL alone on
    the same prompts; it is logged (reward/joint − reward/shadow) every step.
    Follows the paper's text: the three roles (fused SFT+RL update of the base weights, an RL-only copy,
    a LoRA adapter as the upper-level variable maximising SFT objective plus λ × cooperative gain).
    Our reading: the shadow shares the current adapter w (it is the lower-level solution for that w),
    the gain's gradient is taken through GRPO surrogates on each model's own rollouts (not a
    differentiable reward), one optimizer step per level per RL step, the same optimizer settings for
    θ, w and θ̂, and α (the SFT weight on θ) = 1 by default.
    Cost: one more copy of the weights plus its optimizer state (AdamW: 2 more copies): about 3x the
    model's parameter memory on top of the usual, and twice the rollouts (the shadow samples its own).
    Limits: one process (gradients are written per parameter group, outside DDP's hooks) and
    gradient_accumulation_steps = 1; the adapter's dropout is 0 so an untouched adapter is exact identity.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import torch
from stagewise.curate.errors import ConfigError, InputError
from stagewise.train import config as C
from stagewise.train.common import (
    TrainResult,
    callbacks_for,
    checkpoint_to_resume,
    finished_run,
    load_model_and_tokenizer,
    mark_finished,
    save_final,
)
from stagewise.train.data import load_rl_rows, load_sft_rows, open_export
from stagewise.train.stage_eval import sft_token_batches
from stagewise.train.loop import answer_demonstration
from stagewise.train.losses import iw_sft_loss, token_loss
from trl import GRPOTrainer

MODES = ("weighted", "relift", "bridge")


# --------------------------------------------------------------------------------------------- SFT side


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


class _SFTMixin:
    """The SFT-side state shared by the three modes."""

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


# --------------------------------------------------------------------------------------------- weighted


class WeightedJointTrainer(_SFTMixin, GRPOTrainer):
    """GRPO loss + λ_t × SFT loss every step."""

    def __init__(self, *args, sft_rows=(), joint_cfg=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_sft(list(sft_rows), joint_cfg)

    def current_lambda(self) -> float:
        lam = float(self.joint_cfg["sft_weight"])
        if self.joint_cfg["lambda_schedule"] == "linear":
            lam *= max(0.0, 1.0 - self.state.global_step / max(self.state.max_steps, 1))
        return lam

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        lam = self.current_lambda()
        if self.model.training and lam > 0 and self.sft_batcher:
            # Already divided by the step's target tokens: summed over the micro-steps it is the step's
            # SFT loss, so no division by the accumulation steps.
            sft = self.accumulated_sft_term(model)
            loss = loss + lam * self.sft_scale * sft
            self._log("sft/loss", sft.item())
        self._log("sft/lambda", lam)
        return loss


# --------------------------------------------------------------------------------------------- relift


class ReliftTrainer(_SFTMixin, GRPOTrainer):
    """RL; all-wrong groups move (with a verified demonstration) into an SFT buffer; a full buffer runs one
    SFT update."""

    def __init__(self, *args, sft_rows=(), rl_rows=(), joint_cfg=None, verifier_reward=None, sink=None,
                 prompting: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_sft([], joint_cfg)
        self.reward, self.sink = verifier_reward, sink
        # The probe's system prompt and template (manifest.json): demonstrations written from the gold
        # answer take the answer format the prompt asked for, exactly as the exporter writes them.
        self.prompting = {k: (prompting or {}).get(k) for k in ("system_prompt", "prompt_template")}
        self.buffer: list[dict] = list(sft_rows)  # the SFT split starts in the buffer
        self.demos = {str(r.get("id")): r for r in sft_rows}
        self.rl_by_id = {str(r.get("id")): r for r in rl_rows}
        self.moved: set[str] = set()
        self.counts = {"moved": 0, "no_demo": 0, "sft_updates": 0, "all_wrong_groups": 0}
        from transformers import TrainerCallback

        trainer = self

        class _AfterStep(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                trainer.drain_buffer()

        self.add_callback(_AfterStep())

    BUFFER_FILE = "relift_buffer.json"

    def buffer_state(self) -> dict:
        return {"buffer": self.buffer, "moved": sorted(self.moved), "counts": dict(self.counts)}

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        # Beside TRL's own state in the checkpoint just written; one writer (every rank holds the same buffer).
        if self.args.should_save:
            import json
            import os

            from stagewise.curate.atomic import write_text_atomic
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            ckpt = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            write_text_atomic(Path(ckpt) / self.BUFFER_FILE, json.dumps(self.buffer_state(), default=str))

    def restore_buffer(self, checkpoint: str | None) -> bool:
        """Load the buffer saved with `checkpoint`; False (buffer from the SFT split) when it has none."""
        import json

        path = Path(checkpoint or "") / self.BUFFER_FILE
        if not checkpoint or not path.exists():
            return False
        state = json.loads(path.read_text())
        self.buffer, self.moved = list(state["buffer"]), set(state["moved"])
        self.counts.update(state["counts"])
        return True

    def _all_groups(self) -> dict[str, list[float]]:
        """This step's scores per prompt id, from every rank."""
        groups = self.reward.groups()
        if self.accelerator.num_processes == 1:
            return groups
        from accelerate.utils import gather_object

        merged: dict[str, list[float]] = {}
        for pid, scores in gather_object(sorted(groups.items())):
            merged.setdefault(pid, []).extend(scores)
        return dict(sorted(merged.items()))

    def _event(self, record: dict) -> None:
        if self.sink is not None:
            self.sink.write({"stage": "joint-relift", "step": self.state.global_step, **record})

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training:
            moved_now = []
            for pid, scores in self._all_groups().items():
                if scores and max(scores) < 1.0:
                    self.counts["all_wrong_groups"] += 1
                    if pid in self.moved:
                        continue
                    row = self.demonstration(pid)
                    if row is None:
                        self.counts["no_demo"] += 1
                        continue
                    self.moved.add(pid)
                    self.buffer.append(row)
                    moved_now.append(pid)
            if moved_now:
                self.counts["moved"] += len(moved_now)
                self._event({"event": "relift_move", "ids": moved_now, "buffer": len(self.buffer)})
            self._log("relift/buffer", len(self.buffer))
        return out

    def demonstration(self, pid: str) -> dict | None:
        """The SFT split's demonstration for this id, else one written from the gold answer and verified."""
        if pid in self.demos:
            return self.demos[pid]
        row = self.rl_by_id.get(pid)
        if row is None or not self.joint_cfg["answer_demos"]:
            return None
        return answer_demonstration(row, self.prompting)

    def drain_buffer(self) -> None:
        size = self.joint_cfg["buffer_size"]
        while len(self.buffer) >= size:
            rows, self.buffer = self.buffer[:size], self.buffer[size:]
            value = self.sft_update(rows)
            self.counts["sft_updates"] += 1
            self._event({"event": "relift_sft_update", "n_items": len(rows), "sft_loss": value,
                         "buffer": len(self.buffer)})

    def sft_update(self, rows: list[dict]) -> float:
        """One optimizer step of SFT loss over `rows` (micro-batches of sft_batch_size), normalised over
        the target tokens of all of them, at `sft_learning_rate` (the RL steps keep theirs)."""
        model = self.model_wrapped
        model.train()
        items = sft_token_batches(rows, self.processing_class)
        mb = self.joint_cfg["sft_batch_size"]
        batches = [collate(items[i:i + mb], self.processing_class.pad_token_id, self.accelerator.device)
                   for i in range(0, len(items), mb)]
        n_tokens = target_tokens(batches)
        self.optimizer.zero_grad()
        total = 0.0
        for batch in batches:
            loss = self.sft_term(model, batch, num_items_in_batch=n_tokens)
            self.accelerator.backward(loss)
            total += loss.item()
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
        rl_lrs = [g["lr"] for g in self.optimizer.param_groups]
        for g in self.optimizer.param_groups:
            g["lr"] = float(self.joint_cfg["sft_learning_rate"])
        try:
            self.optimizer.step()
        finally:
            for g, lr in zip(self.optimizer.param_groups, rl_lrs):
                g["lr"] = lr
        self.optimizer.zero_grad()
        return total


# --------------------------------------------------------------------------------------------- bridge


class BridgeTrainer(_SFTMixin, GRPOTrainer):
    """Base weights: fused SFT+RL gradient; RL-only shadow: RL gradient; LoRA adapter: SFT + λ × cooperative
    gain. The shadow is driven through a second GRPOTrainer (TRL's generation and loss, no own loop)."""

    def __init__(self, *args, sft_rows=(), joint_cfg=None, shadow_trainer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_sft(list(sft_rows), joint_cfg)
        self.shadow = shadow_trainer
        # The shadow trainer is driven step by step, never through its own train(): set what train() would.
        self.shadow.current_gradient_accumulation_steps = 1
        self.lam = float(joint_cfg["gain_weight"])
        self.alpha = float(joint_cfg["sft_weight"])
        net = self.accelerator.unwrap_model(self.model)
        self.lora_params = [p for n, p in net.named_parameters() if "lora_" in n]
        self.base_params = [p for n, p in net.named_parameters() if "lora_" not in n and p.requires_grad]
        snet = self.shadow.model
        self.shadow_lora = [p for n, p in snet.named_parameters() if "lora_" in n]
        self.shadow_base = [p for n, p in snet.named_parameters() if "lora_" not in n]
        self.shadow_opt = torch.optim.AdamW(self.shadow_base, lr=self.args.learning_rate,
                                            betas=(self.args.adam_beta1, self.args.adam_beta2),
                                            eps=self.args.adam_epsilon, weight_decay=self.args.weight_decay)

    def training_step(self, model, inputs, num_items_in_batch):
        # The shadow samples first, from the RNG state this step starts with, exactly as a pure-RL run
        # would; the joint model then samples from the same state.
        rng = torch.get_rng_state()
        self._shadow_grad_w = self._shadow_step(inputs)
        torch.set_rng_state(rng)
        return super().training_step(model, inputs, num_items_in_batch)

    def _shadow_step(self, generation_batch):
        sh = self.shadow
        with torch.no_grad():  # the shadow shares the current adapter w
            for ps, pj in zip(self.shadow_lora, self.lora_params):
                ps.copy_(pj)
        sh.model.train()
        sh_inputs = sh._prepare_inputs(generation_batch)
        loss = sh.compute_loss(sh.model, sh_inputs)
        grads = torch.autograd.grad(loss, self.shadow_base + self.shadow_lora, allow_unused=True)
        g_base, g_w = grads[:len(self.shadow_base)], grads[len(self.shadow_base):]
        for p, g in zip(self.shadow_base, g_base):
            p.grad = None if g is None else g.detach()
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.shadow_base, self.args.max_grad_norm)
        self.shadow_opt.step()
        self.shadow_opt.zero_grad(set_to_none=True)
        rewards = sh._metrics["train"].get("reward") or [float("nan")]
        self._shadow_reward = rewards[-1]
        return [None if g is None else g.detach() for g in g_w]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rl = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self.model.training:
            return rl
        sft = self.sft_term(model) if self.sft_batcher else torch.zeros((), device=rl.device)
        g_base = torch.autograd.grad(rl + self.alpha * self.sft_scale * sft, self.base_params, retain_graph=True,
                                     allow_unused=True)
        g_w = torch.autograd.grad(sft + self.lam * rl, self.lora_params, allow_unused=True)
        for p, g in zip(self.base_params, g_base):
            p.grad = g.detach() if p.grad is None or g is None else p.grad + g.detach()
        for p, g, gs in zip(self.lora_params, g_w, self._shadow_grad_w):
            total = (torch.zeros_like(p) if g is None else g.detach()) - (0 if gs is None else self.lam * gs)
            p.grad = total if p.grad is None else p.grad + total
        joint_reward = (self._metrics["train"].get("reward") or [float("nan")])[-1]
        self._log("sft/loss", sft.item())
        self._log("bridge/reward_shadow", self._shadow_reward)
        self._log("bridge/cooperative_gain", joint_reward - self._shadow_reward)
        # Gradients are already in place; the returned value only reports the loss to the Trainer.
        return (rl + self.alpha * sft).detach().requires_grad_()


# --------------------------------------------------------------------------------------------- recipe


def _lora_model(net, cfg):
    from stagewise.curate.errors import require

    peft = require("peft", "peft")
    lcfg = peft.LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=0.0,
                           target_modules=cfg["lora_target_modules"], task_type="CAUSAL_LM")
    model = peft.get_peft_model(net, lcfg)
    for n, p in model.named_parameters():  # the base weights train too (they take the fused gradient)
        p.requires_grad_(True)
    return model


def train_joint(data, model, out, *, mode: str | None = None, max_steps: int | None = None,
                learning_rate: float | None = None, batch_size: int | None = None, seed: int | None = None,
                resume: bool = False, config=None, dry_run: bool = False, progress: bool = True,
                sft_eval_rows: list[dict] | None = None, sft_rows: list[dict] | None = None,
                rl_rows: list[dict] | None = None, verify: bool = True, **overrides) -> TrainResult:
    """Single-stage cooperative SFT+RL on an export (SFT split = demonstrations, RL split = prompts).

    mode: weighted | relift | bridge (None: the config's, default weighted); see the module docstring for
    the update rules and sources.
    Options: stagewise/configs/train_joint.yaml (the RL options plus the joint ones). `sft_rows`/`rl_rows`
    replace the export's splits (the pipeline passes the SFT split minus its held-out part)."""
    from stagewise.curate.models import resolve_model
    from stagewise.train.stage_eval import HeldoutSFTLoss
    from stagewise.train.rewards import VerifierReward
    from stagewise.train.rl import build_grpo_trainer, check_rl_model, resolve_sampling
    from transformers import set_seed

    cfg = C.build_config("joint", config, mode=mode, max_steps=max_steps, learning_rate=learning_rate,
                         batch_size=batch_size, seed=seed, **overrides)
    cfg = resolve_sft_learning_rate(C.resolve_device(cfg))
    if cfg["mode"] == "bridge" and cfg["gradient_accumulation_steps"] != 1:
        raise ConfigError("bridge needs gradient_accumulation_steps=1 (it writes each level's gradient itself)")
    out = Path(out)
    export = open_export(data, verify=verify)
    cfg = resolve_sampling(cfg, export.sampling)
    if rl_rows is None:
        rl_rows = load_rl_rows(export)
    if sft_rows is None:
        sft_rows = load_sft_rows(export) if export.has("sft") and _nonempty(export, "sft") else []
    if not sft_rows and cfg["mode"] in ("weighted", "bridge"):
        raise InputError(f"mode {cfg['mode']} needs SFT demonstrations and the SFT split is empty or missing",
                         path=str(export.root), fix="use --mode relift, or export with an SFT split")
    resolved = {"stage": f"joint-{cfg['mode']}", "data": str(data), "model": resolve_model(model),
                "out": str(out), "n_rl": len(rl_rows), "n_sft": len(sft_rows), **cfg, "probe": export.probe,
                "verify_export": verify}
    done = finished_run(out, resolved, resume)
    if done is not None and not dry_run:
        return done
    resume_from = checkpoint_to_resume(out, resume)
    set_seed(cfg["seed"])
    model_path, net, tok = load_model_and_tokenizer(model, cfg)
    check_rl_model(cfg, model_path)
    stage = f"joint-{cfg['mode']}"
    metrics_cb, cbs = callbacks_for(out, stage, progress and not dry_run)
    if sft_eval_rows and cfg["sft_eval_steps"]:
        cbs.append(HeldoutSFTLoss(sft_eval_rows, tok, every=cfg["sft_eval_steps"], sink=metrics_cb, stage=stage))
    reward = VerifierReward(workers=cfg["verifier_workers"], timeout_s=cfg["verifier_timeout_s"])
    shadow_reward = None
    try:
        if cfg["mode"] == "weighted":
            trainer = build_grpo_trainer(rl_rows, net, tok, cfg, out, reward, callbacks=cbs,
                                         trainer_cls=WeightedJointTrainer, sft_rows=sft_rows, joint_cfg=cfg)
        elif cfg["mode"] == "relift":
            trainer = build_grpo_trainer(rl_rows, net, tok, cfg, out, reward, callbacks=cbs,
                                         trainer_cls=ReliftTrainer, sft_rows=sft_rows, rl_rows=rl_rows,
                                         joint_cfg=cfg, verifier_reward=reward, sink=metrics_cb,
                                         prompting=export.probe)
        else:
            shadow_net = _lora_model(copy.deepcopy(net), cfg)
            joint_net = _lora_model(net, cfg)
            shadow_reward = VerifierReward(workers=1, timeout_s=cfg["verifier_timeout_s"])
            no_lora = dict(cfg, lora=False)
            shadow = build_grpo_trainer(rl_rows, shadow_net, tok, no_lora, out / "shadow", shadow_reward)
            trainer = build_grpo_trainer(rl_rows, joint_net, tok, no_lora, out, reward, callbacks=cbs,
                                         trainer_cls=BridgeTrainer, sft_rows=sft_rows, joint_cfg=cfg,
                                         shadow_trainer=shadow)
        C.write_resolved(resolved, out)
        if dry_run:
            return TrainResult(stage, str(out), None, config=resolved, dry_run=True)
        restored = cfg["mode"] == "relift" and trainer.restore_buffer(resume_from)
        output = trainer.train(resume_from_checkpoint=resume_from)
        model_dir = save_final(trainer, tok, out)
        extra = {"verifier_status": dict(reward.status_counts), "step_times_s": metrics_cb.step_times,
                                                        "step_cpu_s": metrics_cb.step_cpu_times}
        if cfg["mode"] == "relift":
            extra["relift"] = dict(trainer.counts, buffer_left=len(trainer.buffer), moved_ids=sorted(trainer.moved),
                                   buffer_restored=restored)
        if cfg["mode"] == "bridge":
            import shutil

            shadow_dir = out / "shadow_model"
            shutil.rmtree(shadow_dir, ignore_errors=True)
            shadow.model.merge_and_unload().save_pretrained(str(shadow_dir))
            extra["shadow_model"] = str(shadow_dir)
    finally:
        reward.close()
        if shadow_reward is not None:
            shadow_reward.close()
    metrics = {**metrics_cb.last_logs, **output.metrics}
    result = TrainResult(stage, str(out), model_dir, trainer.state.global_step, metrics, resolved, resume_from,
                         metrics_cb.mean_step_time(), extra=extra)
    mark_finished(out, result)
    return result


def resolve_sft_learning_rate(cfg: dict) -> dict:
    """Make the SFT term's step size explicit and record it (a comparison with two-stage SFT must know it).

    `sft_learning_rate` unset means the SFT stage's own default (train_sft.yaml's learning_rate), so
    joint and two-stage SFT take SFT steps of the same size. relift takes its SFT updates at exactly that
    rate. weighted and bridge add the SFT term to the RL loss in one optimizer step at the RL rate; their
    SFT term is multiplied by sft_learning_rate / learning_rate (on top of λ or α), which under plain SGD
    is exactly an SFT step at sft_learning_rate (under AdamW it sets the SFT share of the shared,
    normalised step). Recorded: sft_learning_rate, sft_scale, and the SFT term's effective rate."""
    cfg = dict(cfg)
    if cfg.get("sft_learning_rate") is None:
        cfg["sft_learning_rate"] = float(C.default_config("sft")["learning_rate"])
        cfg["sft_learning_rate_source"] = "train_sft.yaml learning_rate (the SFT stage's default)"
    else:
        cfg["sft_learning_rate_source"] = "config"
    cfg["sft_scale"] = sft_scale(cfg)
    weight = float(cfg["sft_weight"]) if cfg["mode"] in ("weighted", "bridge") else 1.0
    cfg["sft_effective_learning_rate"] = (float(cfg["sft_learning_rate"]) if cfg["mode"] == "relift"
                                          else weight * cfg["sft_scale"] * float(cfg["learning_rate"]))
    return cfg


def sft_scale(cfg: dict) -> float:
    """The SFT term's multiplier in a step shared with RL: sft_learning_rate / learning_rate (1 for relift,
    whose SFT update has its own step)."""
    if cfg.get("mode") == "relift" or cfg.get("sft_learning_rate") is None or not float(cfg["learning_rate"]):
        return 1.0
    return float(cfg["sft_learning_rate"]) / float(cfg["learning_rate"])


def _nonempty(export, split) -> bool:
    import pyarrow.parquet as pq

    path = export.path(split)
    return path.exists() and pq.ParquetFile(path).metadata.num_rows > 0  # an empty split has no file
