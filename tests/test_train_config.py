"""Trainer configs (train/config.py): the `trl:` pass-through reaches TRL's SFTConfig/GRPOConfig unchanged,
TRL's refusals become one ConfigError, `--set` is routed per stage, and bad keys are reported at their
line and column."""

from __future__ import annotations

import pytest
from stagewise.curate.config import parse_sets
from stagewise.curate.errors import ConfigError
from stagewise.train import config as C
from train_helpers import make_export


def test_set_trl_num_iterations_reaches_the_grpo_config_of_a_built_trainer(tiny_model_dir, tmp_path):
    from stagewise.train.common import load_model_and_tokenizer
    from stagewise.train.data import load_rl_rows, open_export
    from stagewise.train.rl import build_grpo_trainer, resolve_sampling
    from trl import GRPOConfig

    export = open_export(make_export(tmp_path / "export", rl=[("1+1", "2"), ("2+2", "4")]))
    sets = parse_sets(["trl.num_iterations=2", "trl.mask_truncated_completions=true", "trl.top_k=5"])
    cfg = C.build_config("rl", None, num_generations=2, batch_size=2, max_steps=1, **sets)
    cfg = resolve_sampling(C.resolve_device(cfg), export.sampling)
    _, net, tok = load_model_and_tokenizer(tiny_model_dir, cfg)

    def reward(completions, **kwargs):
        return [0.0] * len(completions)

    trainer = build_grpo_trainer(load_rl_rows(export), net, tok, cfg, tmp_path / "rl", reward)
    args = trainer.args
    assert type(args) is GRPOConfig
    assert (args.num_iterations, args.mask_truncated_completions, args.top_k) == (2, True, 5)
    # What stagewise derives is still there: 2 prompts x 2 completions per device, the probe's budget.
    assert args.per_device_train_batch_size == 4 and args.max_completion_length == 4
    assert cfg["trl"] == {"num_iterations": 2, "mask_truncated_completions": True, "top_k": 5}


def test_a_trl_key_overrides_what_stagewise_derives_in_the_sft_config(tmp_path):
    from stagewise.train.sft import sft_config

    cfg = C.resolve_device(C.build_config("sft", None, trl={"neftune_noise_alpha": 5, "max_length": 64}))
    args = sft_config(cfg, tmp_path)
    assert args.neftune_noise_alpha == 5 and args.max_length == 64 and cfg["max_length"] == 1024


def test_a_field_trl_does_not_have_is_refused_before_training_naming_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        C.build_config("rl", None, **parse_sets(["trl.bogus=1", "trl.num_iterations=2"]))
    message = str(err.value)
    assert "overrides: trl.bogus is not an option of TRL's GRPOConfig" in message
    assert "num_iterations" not in message
    path = tmp_path / "run.yaml"
    path.write_text("probe:\n  num_samples: 4\nsft:\n  max_steps: 2\n  trl:\n    num_iterations: 2\n")
    with pytest.raises(ConfigError, match=rf"{path}:6:5: trl.num_iterations is not an option of TRL's SFTConfig"):
        C.build_config("sft", path)


def test_trl_refusals_at_construction_become_config_errors(tmp_path):
    args = {"output_dir": str(tmp_path), "use_cpu": True, "bf16": False}
    with pytest.raises(ConfigError, match=r"trl.bogus is not an option of TRL's GRPOConfig .*unexpected keyword"):
        C.trl_config("rl", {"trl": {"bogus": 1}}, args)
    with pytest.raises(ConfigError, match=r"TRL's GRPOConfig refused the rl config with trl: \{'auto_find_batch_size': "
                                          r"True\}: auto_find_batch_size is not supported by GRPO"):
        C.trl_config("rl", {"trl": {"auto_find_batch_size": True}}, args)
    assert C.trl_config("rl", {"trl": {"num_iterations": 3}}, args).num_iterations == 3


def test_pipeline_sets_go_to_the_stage_named_or_to_every_stage_that_has_the_key():
    routed = C.route_sets(parse_sets(["sft.loss=dft", "learning_rate=0.01", "rl.trl.beta=0.1",
                                      "trl.num_iterations=2", "trl.max_length=64", "trl.logging_first_step=true",
                                      "max-steps=3", "eval.ks=[1]", "trl.bogus=1"]))
    # num_iterations is GRPO's, max_length SFT's, logging_first_step every trainer's (TrainingArguments);
    # a field of neither goes to SFT, whose check then names it.
    assert routed["sft"] == {"loss": "dft", "learning_rate": 0.01, "max_steps": 3,
                             "trl": {"max_length": 64, "logging_first_step": True, "bogus": 1}}
    assert routed["rl"] == {"learning_rate": 0.01, "max_steps": 3,
                            "trl": {"beta": 0.1, "num_iterations": 2, "logging_first_step": True}}
    assert routed["joint"]["trl"] == {"num_iterations": 2, "logging_first_step": True}
    assert routed["eval"] == {"ks": [1]}


def test_bad_values_and_types_of_a_stage_file_are_reported_at_once_at_their_place(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("loss: l2\nmax-steps: 0\nlora: maybe\nwarmup_stepz: 3\n")
    with pytest.raises(ConfigError) as err:
        C.build_config("sft", path)
    message = str(err.value)
    assert f"{path}:1:1: loss='l2' (choose from nll, dft, iw-sft)" in message
    assert f"{path}:2:1: max_steps=0 (must be a positive integer)" in message
    assert f"{path}:3:1: lora='maybe' must be true or false" in message
    assert f"{path}:4:1: unknown key 'warmup_stepz' (did you mean warmup_steps?)" in message
    assert message.endswith("see stagewise/configs/train_sft.yaml for every option")


def test_set_of_a_key_that_is_also_a_flag_reaches_the_config_on_the_cli(tmp_path):
    from click.testing import CliRunner

    from stagewise.cli import cli

    data = make_export(tmp_path / "export", sft=[("1+1", "2")])
    res = CliRunner().invoke(cli, ["train", "sft", "--data", data, "--out", str(tmp_path / "sft"),
                                   "--set", "max_steps=0", "--set", "loss=l2"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)  # a clean exit, not a TypeError
    flat = " ".join(res.output.split())
    assert "overrides: loss='l2' (choose from nll, dft, iw-sft)" in flat
    assert "overrides: max_steps=0 (must be a positive integer)" in flat
