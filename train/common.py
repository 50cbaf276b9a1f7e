"""Pieces the recipes share: the recipe skeleton (`open_recipe`, `start_run`, `RecipeRun.train`), model
loading, metrics.jsonl and progress callbacks, checkpoint/resume decisions, the final save, and the result
record."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.curate.errors import ConfigError, InputError, StagewiseError, storage_error
from stagewise.curate.models import resolve_model
from stagewise.curate.steps import Step
from stagewise.train import config as C
from stagewise.train.data import Export, open_export
from stagewise.train.heldout_loss import HeldoutSFTLoss
from stagewise.train.result import TrainResult, is_main_process
from transformers import TrainerCallback


def load_model_and_tokenizer(model: str, cfg: dict):
    """Resolve `model` (alias, directory, hub id) and load it at the resolved precision."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model)
    quiet_libraries()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["resolved_precision"], torch.float32)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        net = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise InputError(f"cannot load the model ({exc})", path=path,
                         fix="pass a transformers model directory, a hub id, or smollm2-135m") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # batching needs a pad token; eos is the usual stand-in
    if tok.chat_template is None:
        raise InputError("the tokenizer has no chat template; exported prompts are chat messages", path=path,
                         fix="use an instruct/chat model or add a chat_template to tokenizer_config.json")
    return path, net, tok


def quiet_libraries() -> None:
    """The per-map progress bars of datasets and the weight-loading bar of transformers drown the one
    progress line a stage shows; turn them off."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    # TRL 1.16 itself still calls the renamed gradient_checkpointing API; nothing for a user to change.
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def quiet_trainer(trainer) -> None:
    """transformers prints every log dict when tqdm is off; metrics.jsonl and the progress line replace it."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


class MetricsJsonl(TrainerCallback):
    """Appends every log record to OUT/metrics.jsonl (one JSON object per line, flushed at once), with the
    stage name and step, and times optimizer steps."""

    def __init__(self, path: Path, stage: str):
        self.path, self.stage = Path(path), stage
        self.step_times: list[float] = []
        self.step_cpu_times: list[float] = []  # this process's CPU seconds: steadier than wall time on a busy machine
        self.last_logs: dict = {}
        self._t0 = self._c0 = None

    def write(self, record: dict) -> None:
        if not is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def on_step_begin(self, args, state, control, **kw):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kw):
        if self._t0 is not None:
            self.step_times.append(time.perf_counter() - self._t0)
            self.step_cpu_times.append(time.process_time() - self._c0)

    def on_log(self, args, state, control, logs=None, **kw):
        logs = dict(logs or {})
        self.last_logs.update(logs)
        self.write({"stage": self.stage, "step": state.global_step, "time": time.time(), **logs})

    def mean_step_time(self) -> float | None:
        times = self.step_times[1:] if len(self.step_times) > 1 else self.step_times
        return sum(times) / len(times) if times else None


class RichProgress(TrainerCallback):
    """One progress line per stage (transformers' tqdm is turned off)."""

    def __init__(self, stage: str):
        self.stage = stage
        self._progress = self._task = None

    def on_train_begin(self, args, state, control, **kw):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn(f"[bold]{self.stage}[/]"), BarColumn(),
                                  TextColumn("{task.completed}/{task.total} steps {task.fields[loss]}"),
                                  TimeRemainingColumn(), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(self.stage, total=state.max_steps, completed=state.global_step,
                                             loss="")

    def on_log(self, args, state, control, logs=None, **kw):
        if self._progress is not None and logs:
            key = next((k for k in ("loss", "reward") if k in logs), None)
            if key:
                self._progress.update(self._task, loss=f"{key} {logs[key]:.4f}")

    def on_step_end(self, args, state, control, **kw):
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_train_end(self, args, state, control, **kw):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def checkpoint_to_resume(out: Path, resume: bool) -> str | None:
    """The checkpoint to continue from. Refuses to train over existing checkpoints without --resume."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = out / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last and not resume:
        raise ConfigError(f"{out} already holds checkpoints ({Path(last).name}); pass --resume to continue "
                          "from it, or choose another --out")
    return last if resume else None


def finished_run(out: Path, resolved: dict, resume: bool) -> TrainResult | None:
    """A stage that already finished with the same resolved config (its marker OUT/train.done.json):
    resuming it is a no-op. Without --resume, a finished OUT is never trained over."""
    step = Step(out, "train", resolved)
    if not step.exists():
        return None
    if not resume:
        raise ConfigError(f"{out} already holds a finished run ({step.path.name}); pass --resume to reuse it, "
                          "or choose another --out")
    if not step.done():
        return None  # e.g. more --max-steps: continue from the last checkpoint
    record = step.result() or {}
    if not Path(record.get("model_dir") or "").exists():
        return None
    return TrainResult(**{k: v for k, v in record.items() if k in TrainResult.__dataclass_fields__})


def mark_finished(out: Path, result: TrainResult) -> None:
    """Completion marker written last (atomically): its presence means OUT/model is complete."""
    if not is_main_process():
        return
    Step(out, "train", result.config).mark(result.to_dict())


def save_final(trainer, tokenizer, out: Path) -> str:
    """Save the trained model (LoRA merged into the weights, adapter kept beside) to OUT/model atomically."""
    import shutil

    target = out / "model"
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        trainer.accelerator.wait_for_everyone()
        return str(target)
    tmp = out / f".model.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # peft: keep the adapter, ship merged weights RL can load
        model.save_pretrained(str(out / "adapter"))
        model = model.merge_and_unload()
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    trainer.accelerator.wait_for_everyone()
    return str(target)


def callbacks_for(out: Path, stage: str, progress: bool) -> tuple[MetricsJsonl, list]:
    metrics = MetricsJsonl(out / "metrics.jsonl", stage)
    cbs = [metrics]
    if progress:
        cbs.append(RichProgress(stage))
    return metrics, cbs


class out_storage_guard:
    """`with out_storage_guard(out):` around training and saving. A full disk or an unwritable --out ends
    the stage with one StorageError naming OUT, after removing what was half written: a checkpoint
    without its trainer_state.json (HF writes that last) and the final model's temporary folder. The
    complete checkpoints before it stay, so `--resume` continues once there is room."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, StagewiseError) or not isinstance(exc, Exception):
            return False
        err = storage_error(exc, self.out, option="--out")  # torch.save's has no errno: the disk is asked
        if err is None:
            return False
        remove_partial_writes(self.out)
        raise err from exc


def remove_partial_writes(out: Path) -> None:
    import shutil

    ckpts = Path(out) / "checkpoints"
    if ckpts.is_dir():
        for d in ckpts.iterdir():
            if d.is_dir() and (d.name.startswith("tmp-") or not (d / "trainer_state.json").exists()):
                shutil.rmtree(d, ignore_errors=True)
    for d in Path(out).glob(".model.tmp*"):
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------ recipe skeleton
# Every recipe (sft, rl, joint) is: open_recipe -> its own config steps and rows -> start_run -> build its
# trainer from run.model/run.tokenizer/run.callbacks -> run.train(trainer, extra=...). The steps they
# share live here once, so a change (a new resolved key, the resume record) reaches all three.


def open_recipe(kind: str, config, data, *, verify: bool = True, **options) -> tuple[dict, Export]:
    """The stage's config (packaged defaults < `config` < `options`, device and precision resolved) and
    its export, opened (and its files checked against the manifest unless verify=False)."""
    cfg = C.resolve_device(C.build_config(kind, config, **options))
    return cfg, open_export(data, verify=verify)


@dataclass
class RecipeRun:
    """One stage on its way to training: what start_run prepared for the recipe's trainer.

    `finished` is the earlier result when this stage already finished with the same resolved config
    (the recipe returns it as it is); everything after it is None then."""

    stage: str
    out: Path
    resolved: dict          # what OUT/config.yaml and the marker OUT/train.done.json record
    dry_run: bool
    finished: TrainResult | None = None
    resume_from: str | None = None
    model_path: str | None = None
    model: Any = None
    tokenizer: Any = None
    metrics: MetricsJsonl | None = None
    callbacks: list = field(default_factory=list)

    def train(self, trainer, extra: Callable[[], dict] = dict) -> TrainResult:
        """Write OUT/config.yaml; unless a dry run, train (from `resume_from`), save OUT/model, evaluate
        when the trainer has an eval set, and return the result marked finished. `extra()` is the
        recipe's own record, read after the save (it may write files: it runs under the storage guard)."""
        C.write_resolved(self.resolved, self.out)
        if self.dry_run:
            return TrainResult(self.stage, str(self.out), None, config=self.resolved, dry_run=True)
        if self.resume_from:
            self.metrics.write({"stage": self.stage, "event": "resume", "checkpoint": self.resume_from})
        with out_storage_guard(self.out):
            output = trainer.train(resume_from_checkpoint=self.resume_from)
            model_dir = save_final(trainer, self.tokenizer, self.out)
            more = extra()
        metrics = {**self.metrics.last_logs, **output.metrics}
        if getattr(trainer, "eval_dataset", None) is not None:
            metrics.update(trainer.evaluate())
        result = TrainResult(self.stage, str(self.out), model_dir, trainer.state.global_step, metrics,
                             self.resolved, self.resume_from, self.metrics.mean_step_time(),
                             extra={"step_times_s": self.metrics.step_times,
                                    "step_cpu_s": self.metrics.step_cpu_times, **more})
        mark_finished(self.out, result)
        return result


def start_run(stage: str, data, model, out, cfg: dict, export: Export, counts: dict, *, resume: bool,
              dry_run: bool, progress: bool, verify: bool, sft_eval_rows: list[dict] | None = None) -> RecipeRun:
    """The prologue every recipe shares, in this order: the resolved record, the finished-run check, the
    checkpoint to resume from (refused without --resume), the seed, the model and tokenizer, and the
    metrics/progress callbacks, plus the held-out SFT loss every `sft_eval_steps` when the stage's
    config has that key and `sft_eval_rows` are given. `counts` are the stage's row counts (n_train, ...)."""
    from transformers import set_seed

    out = Path(out)
    resolved = {"stage": stage, "data": str(data), "model": resolve_model(model), "out": str(out), **counts,
                "n_sft_eval": len(sft_eval_rows or []), **cfg, "probe": export.probe, "verify_export": verify}
    run = RecipeRun(stage, out, resolved, dry_run)
    done = finished_run(out, resolved, resume)
    if done is not None and not dry_run:
        run.finished = done
        return run
    run.resume_from = checkpoint_to_resume(out, resume)
    set_seed(cfg["seed"])
    run.model_path, run.model, run.tokenizer = load_model_and_tokenizer(model, cfg)
    run.metrics, run.callbacks = callbacks_for(out, stage, progress and not dry_run)
    if sft_eval_rows and cfg.get("sft_eval_steps"):
        run.callbacks.append(HeldoutSFTLoss(sft_eval_rows, run.tokenizer, every=cfg["sft_eval_steps"],
                                            sink=run.metrics, stage=stage))
    return run
