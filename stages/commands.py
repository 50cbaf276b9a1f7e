"""Trainer command lines for an export, derived from its manifest: verl (PPO/GRPO and SFT), OpenRLHF and
TRL. The data card prints them; tests/consumers run them against the real trainers' config checks.

Batch sizes come from the split sizes, so a command runs as written on a small export: verl drops the
last partial batch (`drop_last`), so a `train_batch_size` above the split's rows leaves an empty
dataloader ("Train dataloader is empty!"); its micro-batch sizes must be set and divide the mini-batch;
TRL needs the generation batch to hold whole groups of `num_generations`. Each trainer validates on the
export's held-out files (sft_val.parquet, rl_val.parquet; stages/validation.py), never on its training
file. Commands assume one GPU
(`trainer.n_gpus_per_node=1`); for N GPUs keep each batch a multiple of N.
"""

from __future__ import annotations

MAX_BATCH = 256  # verl's prompts per step for a large split (its default is 1024)
MICRO_BATCHES = (8, 4, 2, 1)


def split_rows(manifest: dict, split: str) -> int:
    return int((manifest.get("counts") or {}).get("splits", {}).get(split) or 0)


def num_samples(manifest: dict) -> int:
    probe = manifest.get("probe") or {}
    return int(probe.get("num_samples") or probe.get("k_max") or 8)


def sampling(manifest: dict) -> dict:
    return dict((manifest.get("probe") or {}).get("sampling") or {})


def batch_for(rows: int, *, cap: int = MAX_BATCH) -> int:
    """Prompts per step: every row when the split is small (one full batch, nothing dropped), else `cap`."""
    return max(1, min(rows, cap))


def micro_for(total: int) -> int:
    """The largest usual micro-batch that divides `total` (so gradient accumulation comes out even)."""
    return next(m for m in MICRO_BATCHES if total % m == 0)


def has_file(manifest: dict, name: str) -> bool:
    files = manifest.get("files") or {}
    return name in files and int(files[name].get("rows") or 0) > 0


def rl_validation_file(manifest: dict) -> str | None:
    """verl validates PPO on a file of RL-layout rows other than the training file: the held-out RL items,
    else the replay split (mastered items, which RL must not forget) when there is one."""
    for name in ("rl_val.parquet", "replay.parquet"):
        if has_file(manifest, name):
            return name
    return None


def sft_validation_file(manifest: dict) -> str | None:
    return "sft_val.parquet" if has_file(manifest, "sft_val.parquet") else None


def no_validation_reason(manifest: dict, name: str) -> str:
    """Why the export has no validation file `name` (from manifest.omitted), for the card."""
    why = (manifest.get("omitted") or {}).get(name) or "it was not written"
    return why.removeprefix("0 rows: ")


def verl_ppo_overrides(manifest: dict, dirname: str = "DIR", model: str = "MODEL") -> list[str]:
    """Hydra overrides for `python3 -m verl.trainer.main_ppo` (GRPO, the shipped reward.py)."""
    s, k = sampling(manifest), num_samples(manifest)
    n = max(2, k)  # GRPO's advantage needs two samples per prompt
    batch = batch_for(split_rows(manifest, "rl"))
    micro = micro_for(batch * n)
    val = rl_validation_file(manifest)
    out = [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={dirname}/rl.parquet",
        # verl builds a validation loader whatever happens; without a second file it gets the training
        # file, and validation is switched off below so it never runs on it.
        f"data.val_files={dirname}/{val or 'rl.parquet'}",
        f"data.train_batch_size={batch}",
        "data.prompt_key=prompt",
        f"data.max_response_length={int(s.get('max_new_tokens', 512))}",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.rollout.n={n}",
        f"actor_rollout_ref.rollout.temperature={s.get('temperature', 1.0)}",
        f"actor_rollout_ref.rollout.top_p={s.get('top_p', 1.0)}",
        f"reward.custom_reward_function.path={dirname}/reward.py",
        "reward.custom_reward_function.name=compute_score",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
    ]
    if not val:
        out.append("trainer.val_before_train=false")
        out.append("trainer.test_freq=-1")
    return out


def verl_sft_overrides(manifest: dict, dirname: str = "DIR", model: str = "MODEL") -> list[str]:
    """Hydra overrides for `torchrun -m verl.trainer.sft_trainer` (multi-turn `messages`)."""
    rows = split_rows(manifest, "sft")
    val = sft_validation_file(manifest)
    batch = batch_for(rows)
    if val:  # verl batches the validation set like the training set and drops its last partial batch too
        batch = min(batch, int(manifest["files"][val]["rows"]))
    micro = micro_for(batch)
    return [
        f"data.train_files={dirname}/sft.parquet",
        f"data.val_files={dirname}/{val}" if val else "data.val_files=null",
        "data.messages_key=messages",
        f"data.train_batch_size={batch}",
        f"data.micro_batch_size_per_gpu={micro}",
        f"model.path={model}",
        "trainer.default_local_dir=checkpoints/sft",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
    ]


def openrlhf_ppo_args(manifest: dict, dirname: str = "DIR", model: str = "MODEL") -> list[str]:
    """Arguments for `python3 -m openrlhf.cli.train_ppo_ray` (0.10+ dotted flags), GRPO-style group
    normalisation, rewards from the shipped reward_func.py."""
    s, k = sampling(manifest), num_samples(manifest)
    n = max(2, k)
    batch = batch_for(split_rows(manifest, "rl"))
    val = rl_validation_file(manifest)
    return [
        f"--actor.model_name_or_path {model}",
        f"--data.prompt_dataset {dirname}/rl.parquet",
        *([f"--eval.dataset {dirname}/{val}"] if val else []),
        "--data.input_key input",
        "--data.label_key label",
        "--data.apply_chat_template",
        f"--reward.remote_url {dirname}/reward_func.py",
        "--algo.advantage.estimator group_norm",
        f"--rollout.n_samples_per_prompt {n}",
        f"--rollout.batch_size {batch}",
        f"--train.batch_size {batch * n}",
        f"--rollout.temperature {s.get('temperature', 1.0)}",
        f"--rollout.max_new_tokens {int(s.get('max_new_tokens', 512))}",
    ]


def openrlhf_sft_args(manifest: dict, dirname: str = "DIR", model: str = "MODEL") -> list[str]:
    """Arguments for `deepspeed --module openrlhf.cli.train_sft` (0.10+ dotted flags)."""
    batch = batch_for(split_rows(manifest, "sft"))
    val = sft_validation_file(manifest)
    return [
        f"--model.model_name_or_path {model}",
        f"--data.dataset {dirname}/sft.parquet",
        *([f"--eval.dataset {dirname}/{val}"] if val else []),
        "--data.input_key input",
        "--data.output_key output",
        "--data.apply_chat_template",
        f"--train.batch_size {batch}",
        f"--train.micro_batch_size {micro_for(batch)}",
        "--ckpt.output_dir checkpoints/sft",
    ]


def trl_grpo_settings(manifest: dict) -> dict:
    """GRPOConfig batch settings valid for any k and any number of processes: each device step holds one
    prompt's whole group, and a generation covers `steps_per_generation` such steps."""
    g = max(2, num_samples(manifest))
    return {"num_generations": g, "per_device_train_batch_size": g,
            "steps_per_generation": max(1, min(4, split_rows(manifest, "rl")))}


def _shell(head: str, args: list[str]) -> list[str]:
    """One command, one argument per continued line."""
    return [head + " \\"] + [f"  {a} \\" for a in args[:-1]] + [f"  {args[-1]}"]


def card_markdown(manifest: dict, dirname: str, *, model: str, py_setup: str = "", py_model: str = "MODEL") -> str:
    """The card's "How to train" section for this export's format. `model` is the model as a shell word,
    `py_setup`/`py_model` as Python (a stagewise alias resolves to its converted local copy)."""
    fmt = manifest["format"]
    s = sampling(manifest)
    if fmt == "verl":
        val = rl_validation_file(manifest)
        sft_val = sft_validation_file(manifest)
        return "\n".join([
            "RL (GRPO) with verl, scored by the shipped `reward.py` (the stagewise verifier, run in killable "
            "worker processes, so no answer can stall a step):", "", "```bash",
            *_shell("python3 -m verl.trainer.main_ppo", verl_ppo_overrides(manifest, dirname, model)), "```", "",
            (f"Validation runs on `{val}`"
             + (" (RL items held out of `rl.parquet`)." if val == "rl_val.parquet" else
                " (mastered items: it measures forgetting).") if val else
             "The export has no second RL-layout file to validate on: verl's loader is given `rl.parquet` "
             "and validation is switched off (`trainer.test_freq=-1`), so it never validates on its "
             "training data."),
            f"Batch sizes are derived from this export's {split_rows(manifest, 'rl')} RL rows (verl drops a "
            "partial last batch). The command is for one GPU: for N, set `trainer.n_gpus_per_node=N` and keep "
            "`data.train_batch_size` × `rollout.n` a multiple of N.", "",
            "SFT with verl's multi-turn SFT trainer:", "", "```bash",
            *_shell("torchrun --nproc_per_node=1 -m verl.trainer.sft_trainer",
                    verl_sft_overrides(manifest, dirname, model)), "```", "",
            (f"Validation runs on `{sft_val}` ({manifest['files'][sft_val]['rows']} demonstrations held out "
             "of `sft.parquet`); the batch size is at most its rows, since verl drops a partial validation "
             "batch."
             if sft_val else
             "The export has no held-out SFT file (" + no_validation_reason(manifest, "sft_val.parquet")
             + "), so `data.val_files=null`: verl never validates on the training file."),
            "", _reward_env_note()])
    if fmt == "openrlhf":
        return "\n".join([
            "SFT, then RL with rewards from the shipped `reward_func.py` (OpenRLHF 0.10+ flag names):", "",
            "```bash",
            *_shell("deepspeed --module openrlhf.cli.train_sft", openrlhf_sft_args(manifest, dirname, model)), "",
            *_shell("python3 -m openrlhf.cli.train_ppo_ray", openrlhf_ppo_args(manifest, dirname, model)),
            "```", "",
            "Each RL row's `label` is a JSON string with the gold `answer`, the verifier's `task` and its "
            "`meta`; `reward_func(queries, prompts, labels)` scores `queries[i][len(prompts[i]):]` with the "
            "verifier the probe used and returns OpenRLHF's `rewards` / `scores` / `extra_logs`.", "",
            _reward_env_note()])
    g = trl_grpo_settings(manifest)
    sft_val = sft_validation_file(manifest)
    style = manifest.get("sft_style", "prompt-completion")
    cols = "`messages`" if style == "messages" else "`prompt` / `completion`"
    return "\n".join([
        (f"SFT rows are conversational {cols}; RL rows carry `prompt` plus `solution` (the gold answer), "
         "`task` and `meta`, which GRPOTrainer passes to reward functions."), "", "```python",
        "from datasets import load_dataset", "from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer",
        "from stagewise.curate.verifiers.safe import score_many_safely",
        *([py_setup] if py_setup else []), "",
        f'sft = load_dataset("{dirname}", "sft", split="train")',
        *([f'sft_val = load_dataset("{dirname}", "sft", split="validation")  # {sft_val}']
          if sft_val else []),
        f'rl = load_dataset("{dirname}", "rl", split="train")', "",
        "def reward(completions, solution, task, meta, **kw):",
        "    verdicts = score_many_safely([(c[0][\"content\"], {\"answer\": a, \"task\": t, \"meta\": m})",
        "                                  for c, a, t, m in zip(completions, solution, task, meta)])",
        "    return [v.score for v in verdicts]", "",
        (f'SFTTrainer(model={py_model}, train_dataset=sft, eval_dataset=sft_val,\n'
         '           args=SFTConfig(output_dir="sft", eval_strategy="epoch")).train()' if sft_val else
         f'SFTTrainer(model={py_model}, train_dataset=sft, args=SFTConfig(output_dir="sft")).train()'),
        f'GRPOTrainer(model={py_model}, reward_funcs=reward, train_dataset=rl,',
        (f'            args=GRPOConfig(output_dir="rl", num_generations={g["num_generations"]}, '
         f'per_device_train_batch_size={g["per_device_train_batch_size"]},'),
        (f'                            steps_per_generation={g["steps_per_generation"]}, '
         f'temperature={s.get("temperature", 1.0)},'),
        f'                            max_completion_length={int(s.get("max_new_tokens", 512))})).train()',
        "```", "",
        ("`num_generations` is the probe's k (at least 2, as GRPO needs); each device step holds one prompt's "
         "whole group, so the generation batch divides evenly for any k and any number of GPUs.")])


def _reward_env_note() -> str:
    return ("The trainer's environment needs only `pip install --no-deps stagewise math-verify` "
            "(plus `reasoning-gym` for `rg:` tasks) to run the reward file.")
