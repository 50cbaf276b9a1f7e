"""Trainer commands derived from an export's sizes: they run as written on small exports and any k.

verl's own config checks run in its venv (tests/consumers/test_verl.py); here TRL's GRPOConfig, which
the main venv has, checks the TRL snippet the card prints."""

from __future__ import annotations

import ast
import functools
import re

import pytest
from stagewise.stages import commands


def _manifest(k=8, sft=40, rl=30, replay=5, fmt="verl", sft_val=0, rl_val=0):
    splits = {"sft": sft, "sft_val": sft_val, "rl": rl, "rl_val": rl_val, "replay": replay, "unrouted": 0}
    files = {f"{s}.parquet": {"rows": n, "bytes": 1, "sha256": "0"} for s, n in splits.items() if n}
    omitted = {f"{s}.parquet": "0 rows: too few items" for s, n in splits.items() if not n}
    return {"format": fmt, "probe": {"num_samples": k, "sampling": {"temperature": 1.0, "top_p": 1.0,
                                                                    "max_new_tokens": 256}},
            "counts": {"splits": splits}, "files": files, "omitted": omitted}


def _value(overrides, key):
    return next(int(o.split("=", 1)[1]) for o in overrides if o.startswith(key + "="))


@pytest.mark.parametrize("rl_rows", [1, 3, 7, 100, 5000])
@pytest.mark.parametrize("k", [1, 2, 5, 8, 16])
def test_verl_ppo_batches_fit_the_rl_split_and_micro_batches_divide_them(rl_rows, k):
    o = commands.verl_ppo_overrides(_manifest(k=k, rl=rl_rows))
    batch, n = _value(o, "data.train_batch_size"), _value(o, "actor_rollout_ref.rollout.n")
    mini = _value(o, "actor_rollout_ref.actor.ppo_mini_batch_size")
    micro = _value(o, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu")
    assert 1 <= batch <= rl_rows and batch <= commands.MAX_BATCH  # drop_last leaves at least one batch
    assert n == max(2, k) and mini <= batch and (mini * n) % micro == 0
    assert _value(o, "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu") == micro


def test_verl_validates_ppo_on_held_out_rl_items_else_the_replay_split_and_never_on_the_training_file():
    held_out = commands.verl_ppo_overrides(_manifest(replay=5, rl_val=3), "EXP")
    assert "data.val_files=EXP/rl_val.parquet" in held_out and "trainer.test_freq=-1" not in held_out
    with_replay = commands.verl_ppo_overrides(_manifest(replay=5), "EXP")
    assert "data.val_files=EXP/replay.parquet" in with_replay
    without = commands.verl_ppo_overrides(_manifest(replay=0), "EXP")
    # verl's loader needs a file; validation itself is switched off
    assert "trainer.val_before_train=false" in without and "trainer.test_freq=-1" in without
    sft = commands.verl_sft_overrides(_manifest(), "EXP")
    assert "data.val_files=null" in sft and "data.train_files=EXP/sft.parquet" in sft


@pytest.mark.parametrize("sft_rows,val_rows", [(38, 2), (57, 3), (190, 10), (950, 50), (9000, 256)])
def test_verl_sft_validates_on_sft_val_with_a_batch_both_loaders_can_fill(sft_rows, val_rows):
    o = commands.verl_sft_overrides(_manifest(sft=sft_rows, sft_val=val_rows), "EXP")
    assert "data.val_files=EXP/sft_val.parquet" in o and "data.train_files=EXP/sft.parquet" in o
    batch, micro = _value(o, "data.train_batch_size"), _value(o, "data.micro_batch_size_per_gpu")
    # verl batches the validation file like the training file and drops a partial batch in both
    assert 1 <= batch <= min(val_rows, sft_rows, commands.MAX_BATCH) and batch % micro == 0


def test_the_card_names_the_validation_files_or_says_why_there_are_none():
    card = commands.card_markdown(_manifest(sft_val=2, rl_val=2), "EXP", model="m")
    assert "Validation runs on `sft_val.parquet` (2 demonstrations held out of `sft.parquet`)" in card
    assert "Validation runs on `rl_val.parquet` (RL items held out of `rl.parquet`)" in card
    small = commands.card_markdown(_manifest(replay=0), "EXP", model="m")
    assert "no held-out SFT file (too few items), so `data.val_files=null`" in small
    orl = _manifest(fmt="openrlhf", sft_val=2, rl_val=3)
    assert "--eval.dataset EXP/sft_val.parquet" in commands.openrlhf_sft_args(orl, "EXP")
    assert "--eval.dataset EXP/rl_val.parquet" in commands.openrlhf_ppo_args(orl, "EXP")
    plain = commands.openrlhf_sft_args(_manifest(fmt="openrlhf"), "EXP")
    assert not any("--eval.dataset" in a for a in plain)


@pytest.mark.parametrize("k", list(range(1, 17)))
def test_the_trl_snippet_builds_a_grpo_config_for_any_k(k, tmp_path, monkeypatch):
    from trl import GRPOConfig

    monkeypatch.chdir(tmp_path)
    card = commands.card_markdown(_manifest(k=k, fmt="trl"), "EXP", model="m", py_model="'m'")
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    call = next(n for n in ast.walk(ast.parse(code))
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "GRPOConfig")
    # use_cpu: TRL defaults to bf16 on a GPU, which this machine lacks; the batch checks are the same.
    on_cpu = functools.partial(GRPOConfig, use_cpu=True, bf16=False)
    config = eval(compile(ast.Expression(call), "card", "eval"), {"GRPOConfig": on_cpu})  # noqa: S307
    assert config.num_generations == max(2, k)
    assert config.generation_batch_size % config.num_generations == 0


def test_the_trl_snippet_evaluates_sft_on_the_validation_split_when_the_export_has_one(tmp_path, monkeypatch):
    from trl import SFTConfig

    monkeypatch.chdir(tmp_path)
    card = commands.card_markdown(_manifest(fmt="trl", sft_val=3), "EXP", model="m", py_model="'m'")
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert 'sft_val = load_dataset("EXP", "sft", split="validation")' in code
    calls = {getattr(n.func, "id", ""): n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)}
    trainer, call = calls["SFTTrainer"], calls["SFTConfig"]
    assert {k.arg: getattr(k.value, "id", None) for k in trainer.keywords}["eval_dataset"] == "sft_val"
    on_cpu = functools.partial(SFTConfig, use_cpu=True, bf16=False)
    config = eval(compile(ast.Expression(call), "card", "eval"), {"SFTConfig": on_cpu})  # noqa: S307
    assert config.eval_strategy == "epoch"
    without = commands.card_markdown(_manifest(fmt="trl"), "EXP", model="m", py_model="'m'")
    assert "sft_val" not in without and "eval_dataset" not in without


def test_openrlhf_commands_use_the_dotted_flags_of_openrlhf_0_10():
    args = commands.openrlhf_ppo_args(_manifest(fmt="openrlhf"), "EXP")
    flags = {a.split(" ")[0] for a in args}
    assert {"--reward.remote_url", "--data.label_key", "--data.input_key", "--data.apply_chat_template",
            "--actor.model_name_or_path", "--data.prompt_dataset"} <= flags
    assert "--reward.remote_url EXP/reward_func.py" in args
    assert not any(a.startswith(("--remote_rm_url", "--label_key", "--pretrain ")) for a in args)
