"""`weighted`: one optimizer step t on θ (all weights) minimises

    L(θ) = L_RL(θ; on-policy groups of RL-split prompts) + λ_t · s · L_SFT(θ; a batch of SFT demonstrations)

λ_t = λ (constant) or λ · (1 − t / T) (linear decay to 0 at the last step). s = sft_learning_rate /
learning_rate (`sft_scale`): under plain SGD the SFT term then takes a step of exactly the SFT rate.
L_SFT is nll, dft or iw-sft, summed over demonstration tokens and divided by the target tokens of all SFT
batches of the optimizer step, so gradient accumulation does not change it."""

from __future__ import annotations

from stagewise.train.joint.sft_term import SFTTermMixin
from stagewise.train.rl import build_grpo_trainer
from trl import GRPOTrainer


def sft_weight_at(step: int, max_steps: int, weight: float, schedule: str = "constant") -> float:
    """λ_t: `weight` every step (constant), or weight · (1 − step / max_steps) (linear: 0 at the last step,
    never negative)."""
    if schedule == "linear":
        return float(weight) * max(0.0, 1.0 - step / max(max_steps, 1))
    return float(weight)


def weighted_loss(rl, sft, weight: float, scale: float):
    """L_RL + λ_t · s · L_SFT (numbers or tensors alike)."""
    return rl + weight * scale * sft


class WeightedJointTrainer(SFTTermMixin, GRPOTrainer):
    """GRPO loss + λ_t × SFT loss every step."""

    def __init__(self, *args, sft_rows=(), joint_cfg=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_sft(list(sft_rows), joint_cfg)

    def current_lambda(self) -> float:
        return sft_weight_at(self.state.global_step, self.state.max_steps, self.joint_cfg["sft_weight"],
                             self.joint_cfg["lambda_schedule"])

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        lam = self.current_lambda()
        if self.model.training and lam > 0 and self.sft_batcher:
            # Already divided by the step's target tokens: summed over the micro-steps it is the step's
            # SFT loss, so no division by the accumulation steps.
            sft = self.accumulated_sft_term(model)
            loss = weighted_loss(loss, sft, lam, self.sft_scale)
            self._log("sft/loss", sft.item())
        self._log("sft/lambda", lam)
        return loss


def build_trainer(run, cfg: dict, rl_rows: list[dict], sft_rows: list[dict], reward, export, resources):
    """The mode's trainer on `run`'s model (train/joint/__init__.py calls every mode this way)."""
    return build_grpo_trainer(rl_rows, run.model, run.tokenizer, cfg, run.out, reward, callbacks=run.callbacks,
                              trainer_cls=WeightedJointTrainer, sft_rows=sft_rows, joint_cfg=cfg)


def result_extra(trainer, out) -> dict:
    """What the mode adds to the result's extra: nothing beyond the logged sft/loss and sft/lambda."""
    return {}
