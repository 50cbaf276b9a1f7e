"""RL recipe on TRL's GRPOTrainer: validate config -> load data and model -> build trainer -> train ->
save. Loss types grpo / dr_grpo / dapo (TRL's); reward = the stagewise verifier (train/rewards.py);
sampling (temperature, top_p, max_new_tokens) defaults to the probe's, from the export's manifest.json.

    train_rl("export/", "runs/sft/model", "runs/rl", loss_type="dr_grpo", num_generations=8)

GPU notes: with a GPU, precision auto -> bf16 and `use_vllm: auto` turns on vLLM colocate generation when
vLLM is installed in a version TRL supports (TRL 1.16 accepts vLLM 0.22-0.31; see
`trl.import_utils.is_vllm_available`). Multi-GPU / multi-node: `accelerate launch -m stagewise.cli train rl
...` with any accelerate/DeepSpeed/FSDP config, exactly as for a bare TRL script.
"""

from __future__ import annotations

from pathlib import Path

from stagewise.curate.errors import ConfigError
from stagewise.train import config as C
from stagewise.train.common import TrainResult, open_recipe, quiet_trainer, start_run
from stagewise.train.data import load_rl_rows, rl_dataset_rows
from stagewise.train.rewards import VerifierReward
from trl import GRPOConfig, GRPOTrainer

SAMPLING_FALLBACK = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 256}


def resolve_sampling(cfg: dict, probe_sampling: dict) -> dict:
    """Flag/config value, else the probe's (manifest.json), else the fallback; records where each came from."""
    cfg = dict(cfg)
    source = {}
    for key, fallback in SAMPLING_FALLBACK.items():
        if cfg.get(key) is not None:
            source[key] = "config"
        elif probe_sampling.get(key) is not None:
            cfg[key], source[key] = probe_sampling[key], "probe manifest"
        else:
            cfg[key], source[key] = fallback, "default"
    cfg["sampling_source"] = source
    return cfg


def _use_vllm(cfg: dict) -> bool:
    if cfg["use_vllm"] is False:
        return False
    from trl.import_utils import is_vllm_available

    available = cfg["device"] == "cuda" and is_vllm_available()
    if cfg["use_vllm"] is True and not available:
        raise ConfigError("use_vllm=true needs a GPU and vLLM 0.22-0.31 (TRL 1.16's supported range); "
                          "set use_vllm: auto or false")
    return available


def grpo_config(cfg: dict, out: Path) -> GRPOConfig:
    """The GRPOConfig our recipe uses (the `trl:` section laid over it); the benchmark builds its bare-TRL
    baseline from the same object."""
    use_vllm = _use_vllm(cfg)
    extra = {"vllm_mode": cfg["vllm_mode"], "vllm_gpu_memory_utilization": cfg["vllm_gpu_memory_utilization"]} \
        if use_vllm else {}
    return C.trl_config("rl", cfg, {
        **C.trainer_args(cfg, out),
        "per_device_train_batch_size": cfg["batch_size"] * cfg["num_generations"],
        "num_generations": cfg["num_generations"],
        "loss_type": cfg["loss_type"],
        "beta": float(cfg["beta"]),
        "epsilon": float(cfg["epsilon"]),
        "scale_rewards": cfg["scale_rewards"],
        "temperature": float(cfg["temperature"]),
        "top_p": float(cfg["top_p"]),
        "max_completion_length": int(cfg["max_new_tokens"]),
        "use_vllm": use_vllm,
        "log_completions": False,
        **extra,
    })


def check_rl_model(cfg: dict, model) -> None:
    if float(cfg["beta"]) > 0 and not (isinstance(model, str) and Path(model).is_dir()):
        raise ConfigError(f"beta={cfg['beta']} needs the reference model as a saved directory (TRL reloads it "
                          "from the --model path and cannot use an in-memory model); save the model first "
                          "or set --beta 0")


class GroupRecordingTrainer(GRPOTrainer):
    """GRPOTrainer that records, per prompt, its groups and how many were all wrong / all right
    (train/loop.py GroupLedger): the loop's RL-failure signal. Reads the verdicts the reward function
    (`VerifierReward`) kept for the batch it just scored; nothing about training changes."""

    def __init__(self, *args, ledger=None, verifier_reward=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ledger, self.verifier_reward = ledger, verifier_reward

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training and self.ledger is not None and self.verifier_reward.last:
            ids = [i for i, _, _ in self.verifier_reward.last]
            scores = [s for _, s, _ in self.verifier_reward.last]
            try:
                self.ledger.record(ids, scores, self.num_generations)
            except ValueError:
                # Completions not laid out group by group (a TRL change): group by prompt id instead.
                for pid, group in self.verifier_reward.groups().items():
                    self.ledger.record([pid] * len(group), group, len(group))
        return out


def build_grpo_trainer(rows: list[dict], model, tokenizer, cfg: dict, out: Path, reward, *, callbacks=(),
                       trainer_cls=GRPOTrainer, **kwargs):
    """A GRPOTrainer (or subclass) on exported RL rows with the stagewise verifier as the reward."""
    from datasets import Dataset

    args = grpo_config(cfg, out)
    dataset = Dataset.from_list(rl_dataset_rows(rows))
    trainer = trainer_cls(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=list(callbacks),
                          peft_config=C.peft_config(cfg), **kwargs)
    quiet_trainer(trainer)
    return trainer


def train_rl(data, model, out, *, loss_type: str | None = None, num_generations: int | None = None,
             beta: float | None = None, max_steps: int | None = None, learning_rate: float | None = None,
             batch_size: int | None = None, seed: int | None = None, resume: bool = False, config=None,
             dry_run: bool = False, progress: bool = True, sft_eval_rows: list[dict] | None = None,
             rows: list[dict] | None = None, ledger=None, verify: bool = True, **overrides) -> TrainResult:
    """GRPO-family RL on an export's RL split (`data`: export dir or rl.parquet).

    `sft_eval_rows` (held-out SFT demonstrations) makes the run log the held-out SFT loss every
    `sft_eval_steps` steps. `ledger` (train/loop.py GroupLedger) records per prompt its groups and the
    all-wrong / all-right ones; the result's extra["groups"] holds its totals. Other options: see
    stagewise/configs/train_rl.yaml."""
    cfg, export = open_recipe("rl", config, data, verify=verify, loss_type=loss_type,
                              num_generations=num_generations, beta=beta, max_steps=max_steps,
                              learning_rate=learning_rate, batch_size=batch_size, seed=seed, **overrides)
    cfg = resolve_sampling(cfg, export.sampling)
    rows = load_rl_rows(export) if rows is None else rows
    run = start_run("rl", data, model, out, cfg, export, {"n_train": len(rows)}, resume=resume, dry_run=dry_run,
                    progress=progress, verify=verify, sft_eval_rows=sft_eval_rows)
    if run.finished:
        return run.finished
    check_rl_model(cfg, run.model_path)
    reward = VerifierReward(workers=cfg["verifier_workers"], timeout_s=cfg["verifier_timeout_s"])
    try:
        recording = {} if ledger is None else {"trainer_cls": GroupRecordingTrainer, "ledger": ledger,
                                               "verifier_reward": reward}
        trainer = build_grpo_trainer(rows, run.model, run.tokenizer, cfg, run.out, reward, callbacks=run.callbacks,
                                     **recording)
        return run.train(trainer, extra=lambda: {"verifier_status": dict(reward.status_counts),
                                                 **({"groups": ledger.totals()} if ledger else {})})
    finally:
        reward.close()
