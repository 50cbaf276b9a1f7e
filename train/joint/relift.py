"""`relift`: ReLIFT's interleaving (arXiv 2506.07527), our reading of its buffer rule.

RL on the RL split. After each generation, every prompt whose group has no correct completion (all rewards
< 1: its GRPO advantage is zero, so RL learns nothing from it) moves into an SFT buffer, with its verified
demonstration: the SFT split's demonstration for the same id if there is one, else one written from the
gold answer in the answer format the probe's prompt asked for (`answer_demonstration`, with the manifest's
system prompt and template, as the exporter writes them), kept only if the verifier scores it correct;
without one the item is counted as "no demonstration". A prompt moves once. The SFT split's items start
in the buffer. Whenever the buffer holds `buffer_size` items (ReLIFT: 128), one SFT update (one optimizer
step of the same optimizer on those items, the SFT loss over all their target tokens, at
sft_learning_rate) runs after the RL step, and the items leave the buffer, oldest first.

Every move and update is logged to metrics.jsonl (events relift_move / relift_sft_update). The buffer (its
rows, the moved ids and the counts) is saved in every checkpoint (relift_buffer.json) and restored on
--resume. Under several processes a prompt's group may be spread over ranks: the scores are gathered from
every rank before deciding, so each rank holds the same buffer and runs the same SFT updates at the same
step (DDP's all-reduce needs every rank to take part)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.atomic import write_text_atomic
from stagewise.train.heldout_loss import sft_token_batches
from stagewise.train.joint.sft_term import SFTTermMixin, collate, target_tokens
from stagewise.train.loop import answer_demonstration
from stagewise.train.rl import build_grpo_trainer
from transformers import TrainerCallback
from trl import GRPOTrainer

BUFFER_FILE = "relift_buffer.json"


# ---------------------------------------------------------------------------------- the update rule


def all_wrong(scores: list[float]) -> bool:
    """A group RL learns nothing from: it has completions and none scored 1."""
    return bool(scores) and max(scores) < 1.0


@dataclass
class Admission:
    """What one generation step adds to the buffer."""

    ids: list[str] = field(default_factory=list)     # moved now, in the order of the groups
    rows: list[dict] = field(default_factory=list)   # their demonstrations, same order
    all_wrong: int = 0    # all-wrong groups this step, whether their prompt moved before or not
    no_demo: int = 0      # all-wrong, not moved before, and no demonstration to move with


def admit(groups: dict[str, list[float]], moved, demonstration: Callable[[str], dict | None]) -> Admission:
    """Which of this step's groups (prompt id -> scores) join the SFT buffer: every all-wrong group whose
    prompt has not moved before (`moved`) and has a demonstration (`demonstration(id)`, None when none)."""
    out = Admission()
    for pid, scores in groups.items():
        if not all_wrong(scores):
            continue
        out.all_wrong += 1
        if pid in moved:
            continue
        row = demonstration(pid)
        if row is None:
            out.no_demo += 1
            continue
        out.ids.append(pid)
        out.rows.append(row)
    return out


def full_updates(buffer: list, size: int) -> tuple[list[list], list]:
    """The SFT updates the buffer holds now (consecutive `size`-item slices, oldest first) and what stays."""
    size = max(1, int(size))
    n = len(buffer) // size * size
    return [buffer[i:i + size] for i in range(0, n, size)], buffer[n:]


# ------------------------------------------------------------------------------------------ trainer


@contextmanager
def learning_rate(optimizer, lr: float):
    """Every parameter group at `lr` inside the block, back to its own rate after (the RL schedule's)."""
    saved = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"] = lr
    try:
        yield optimizer
    finally:
        for g, old in zip(optimizer.param_groups, saved):
            g["lr"] = old


class ReliftTrainer(SFTTermMixin, GRPOTrainer):
    """RL; all-wrong groups move (with a verified demonstration) into an SFT buffer; a full buffer runs one
    SFT update."""

    BUFFER_FILE = BUFFER_FILE

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
        self.buffer_restored = False
        trainer = self

        class _AfterStep(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                trainer.drain_buffer()

        self.add_callback(_AfterStep())

    def buffer_state(self) -> dict:
        return {"buffer": self.buffer, "moved": sorted(self.moved), "counts": dict(self.counts)}

    def train(self, resume_from_checkpoint=None, **kwargs):
        # The buffer comes back from the same checkpoint TRL resumes from.
        checkpoint = resume_from_checkpoint if isinstance(resume_from_checkpoint, (str, os.PathLike)) else None
        self.buffer_restored = self.restore_buffer(checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        # Beside TRL's own state in the checkpoint just written; one writer (every rank holds the same buffer).
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            ckpt = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            write_text_atomic(Path(ckpt) / BUFFER_FILE, json.dumps(self.buffer_state(), default=str))

    def restore_buffer(self, checkpoint: str | None) -> bool:
        """Load the buffer saved with `checkpoint`; False (buffer from the SFT split) when it has none."""
        path = Path(checkpoint or "") / BUFFER_FILE
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
            step = admit(self._all_groups(), self.moved, self.demonstration)
            self.counts["all_wrong_groups"] += step.all_wrong
            self.counts["no_demo"] += step.no_demo
            self.moved.update(step.ids)
            self.buffer.extend(step.rows)
            if step.ids:
                self.counts["moved"] += len(step.ids)
                self._event({"event": "relift_move", "ids": step.ids, "buffer": len(self.buffer)})
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
        updates, self.buffer = full_updates(self.buffer, self.joint_cfg["buffer_size"])
        for i, rows in enumerate(updates):
            value = self.sft_update(rows)
            self.counts["sft_updates"] += 1
            left = sum(len(u) for u in updates[i + 1:]) + len(self.buffer)
            self._event({"event": "relift_sft_update", "n_items": len(rows), "sft_loss": value, "buffer": left})

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
        with learning_rate(self.optimizer, float(self.joint_cfg["sft_learning_rate"])):
            self.optimizer.step()
        self.optimizer.zero_grad()
        return total


def build_trainer(run, cfg: dict, rl_rows: list[dict], sft_rows: list[dict], reward, export, resources):
    """The mode's trainer on `run`'s model (train/joint/__init__.py calls every mode this way)."""
    return build_grpo_trainer(rl_rows, run.model, run.tokenizer, cfg, run.out, reward, callbacks=run.callbacks,
                              trainer_cls=ReliftTrainer, sft_rows=sft_rows, rl_rows=rl_rows, joint_cfg=cfg,
                              verifier_reward=reward, sink=run.metrics, prompting=export.probe)


def result_extra(trainer: ReliftTrainer, out) -> dict:
    """The buffer's record: moves, updates, what is left, and whether --resume restored it."""
    return {"relift": dict(trainer.counts, buffer_left=len(trainer.buffer), moved_ids=sorted(trainer.moved),
                           buffer_restored=trainer.buffer_restored)}
