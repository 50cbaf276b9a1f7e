"""`bridge`: BRIDGE ("Beyond Two-Stage Training: Cooperative SFT and RL for LLM Reasoning", arXiv
2509.06948), bilevel in penalty form. θ the base weights, w a LoRA adapter, θ̂ an RL-only shadow of the
base weights; J(θ, w) the expected verifier reward of the model with weights θ and adapter w, L_RL its
GRPO surrogate. Each step, on the same prompts, at the step's learning rate η_t:

    θ̂ ← θ̂ − η_t · ∇_θ̂ L_RL(θ̂, w)                            RL gradient only, on the shadow's own rollouts
    θ  ← θ  − η_t · ∇_θ [L_RL(θ, w) + α · s · L_SFT(θ, w)]     the fused SFT+RL gradient (`base_objective`)
    w  ← w  − η_t · ∇_w [L_SFT(θ, w) − λ · (Ĵ(θ, w) − Ĵ(θ̂, w))]
       with −Ĵ replaced by the GRPO surrogate: ∇_w[L_SFT + λ · L_RL(θ, w)] − λ · ∇_w L_RL(θ̂, w)
       (`adapter_objective`, `adapter_gradient`)

α = sft_weight, λ = gain_weight, s = sft_learning_rate / learning_rate. J(θ, w) − J(θ̂, w) is the
cooperative gain: what the SFT signal adds to the reward over RL alone on the same prompts; it is logged
(bridge/cooperative_gain = reward − bridge/reward_shadow) every step.

θ's rule is weighted's (train/joint/weighted.py) with λ = α: what bridge adds is the adapter w. w starts
as the identity (LoRA's B = 0); while θ and θ̂ are close the gain's two gradients nearly cancel, so early
on w is trained by the SFT term alone, and a short run at a small rate ends close to weighted's model.

Our reading of the paper's text: the shadow shares the current adapter w (it is the lower-level solution
for that w); the gain's gradient is taken through GRPO surrogates on each model's own rollouts (not a
differentiable reward); one optimizer step per level per RL step; θ, w and θ̂ take the same optimizer and
the same learning-rate schedule (θ̂ is stepped at θ's current rate, so it is exactly a pure-RL run).
Cost: one more copy of the weights plus its optimizer state (AdamW: 2 more copies), about 3x the model's
parameter memory on top of the usual, and twice the rollouts (the shadow samples its own).
Limits: one process (gradients are written per parameter group, outside DDP's hooks) and
gradient_accumulation_steps = 1; the adapter's dropout is 0 so an untouched adapter is exact identity."""

from __future__ import annotations

import copy
import shutil

import torch
from stagewise.curate.errors import ConfigError, require
from stagewise.train.joint.sft_term import SFTTermMixin
from stagewise.train.joint.weighted import weighted_loss
from stagewise.train.rewards import VerifierReward
from stagewise.train.rl import build_grpo_trainer
from trl import GRPOTrainer

# ---------------------------------------------------------------------------------- the update rule


def base_objective(rl, sft, alpha: float, scale: float):
    """θ's objective, L_RL + α · s · L_SFT: weighted's loss with α in λ's place."""
    return weighted_loss(rl, sft, alpha, scale)


def adapter_objective(rl, sft, gain_weight: float):
    """The joint model's share of w's objective, L_SFT + λ · L_RL(θ, w); the shadow's −λ · L_RL(θ̂, w)
    comes in through `adapter_gradient`."""
    return sft + gain_weight * rl


def adapter_gradient(g_joint, g_shadow, gain_weight: float):
    """w's gradient: ∇_w[L_SFT + λ · L_RL(θ, w)] − λ · ∇_w L_RL(θ̂, w). None stands for no gradient."""
    if g_shadow is None:
        return g_joint
    if g_joint is None:
        return -gain_weight * g_shadow
    return g_joint - gain_weight * g_shadow


def cooperative_gain(joint_reward: float, shadow_reward: float) -> float:
    """Ĵ(θ, w) − Ĵ(θ̂, w): the mean reward of the joint model's rollouts minus the shadow's."""
    return joint_reward - shadow_reward


def check_config(cfg: dict) -> None:
    if cfg["gradient_accumulation_steps"] != 1:
        raise ConfigError("bridge needs gradient_accumulation_steps=1 (it writes each level's gradient itself)")


# ------------------------------------------------------------------------------------------ trainer


def _add_grad(p: torch.Tensor, g) -> None:
    if g is not None:
        p.grad = g.detach() if p.grad is None else p.grad + g.detach()


class BridgeTrainer(SFTTermMixin, GRPOTrainer):
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
        self.shadow_opt = self._shadow_optimizer()

    def _shadow_optimizer(self):
        """The optimizer a pure-RL trainer would build (same class, settings and weight-decay groups),
        over the shadow's base weights only."""
        for p in self.shadow_lora:
            p.requires_grad_(False)
        try:
            self.shadow.optimizer = None
            return self.shadow.create_optimizer()
        finally:
            for p in self.shadow_lora:
                p.requires_grad_(True)  # w's gradient through the shadow is still taken

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
        # θ's rate at this step (warmup, decay): the scheduler set it on θ's optimizer, which steps next.
        lr = self.optimizer.param_groups[0]["lr"]
        for group in self.shadow_opt.param_groups:
            group["lr"] = lr
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
        base = base_objective(rl, sft, self.alpha, self.sft_scale)
        g_base = torch.autograd.grad(base, self.base_params, retain_graph=True, allow_unused=True)
        g_joint_w = torch.autograd.grad(adapter_objective(rl, sft, self.lam), self.lora_params, allow_unused=True)
        for p, g in zip(self.base_params, g_base):
            _add_grad(p, g)
        for p, g, gs in zip(self.lora_params, g_joint_w, self._shadow_grad_w):
            _add_grad(p, adapter_gradient(g, gs, self.lam))
        joint_reward = (self._metrics["train"].get("reward") or [float("nan")])[-1]
        self._log("sft/loss", sft.item())
        self._log("bridge/reward_shadow", self._shadow_reward)
        self._log("bridge/cooperative_gain", cooperative_gain(joint_reward, self._shadow_reward))
        # Gradients are already in place; the returned value only reports θ's objective to the Trainer.
        return base.detach().requires_grad_()


def _lora_model(net, cfg):
    peft = require("peft", "peft")
    lcfg = peft.LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=0.0,
                           target_modules=cfg["lora_target_modules"], task_type="CAUSAL_LM")
    model = peft.get_peft_model(net, lcfg)
    for _, p in model.named_parameters():  # the base weights train too (they take the fused gradient)
        p.requires_grad_(True)
    return model


def build_trainer(run, cfg: dict, rl_rows: list[dict], sft_rows: list[dict], reward, export, resources):
    """The mode's trainer on `run`'s model (train/joint/__init__.py calls every mode this way): the joint
    model and its shadow, each with its own LoRA adapter (the shadow's is overwritten by w every step)."""
    shadow_net = _lora_model(copy.deepcopy(run.model), cfg)
    joint_net = _lora_model(run.model, cfg)
    shadow_reward = VerifierReward(workers=1, timeout_s=cfg["verifier_timeout_s"])
    resources.callback(shadow_reward.close)
    no_lora = dict(cfg, lora=False)  # the adapter is ours; TRL must not add its own
    shadow = build_grpo_trainer(rl_rows, shadow_net, run.tokenizer, no_lora, run.out / "shadow", shadow_reward)
    return build_grpo_trainer(rl_rows, joint_net, run.tokenizer, no_lora, run.out, reward, callbacks=run.callbacks,
                              trainer_cls=BridgeTrainer, sft_rows=sft_rows, joint_cfg=cfg, shadow_trainer=shadow)


def result_extra(trainer: BridgeTrainer, out) -> dict:
    """Saves the shadow (the RL-only model, adapter merged) to OUT/shadow_model and names it."""
    shadow_dir = out / "shadow_model"
    shutil.rmtree(shadow_dir, ignore_errors=True)
    trainer.shadow.model.merge_and_unload().save_pretrained(str(shadow_dir))
    return {"shadow_model": str(shadow_dir)}
