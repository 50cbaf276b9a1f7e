"""The one config system (curate/config.py): YAML with positions, `--set`, layers, and the run and
experiment configs built from it. Pure: no model, no TRL."""

from __future__ import annotations

import pytest
from stagewise.curate.config import parse_sets, parse_yaml, read_yaml
from stagewise.curate.errors import ConfigError

from stagewise.runconfig import load_config, resolve_config


def test_every_key_of_a_yaml_file_knows_its_line_and_column(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("model: tiny\nsft:\n  max_steps: 3\n  trl:\n    num_iterations: 2\n")
    values, origins = read_yaml(path)
    assert values == {"model": "tiny", "sft": {"max_steps": 3, "trl": {"num_iterations": 2}}}
    assert origins == {"model": f"{path}:1:1", "sft": f"{path}:2:1", "sft.max_steps": f"{path}:3:3",
                       "sft.trl": f"{path}:4:3", "sft.trl.num_iterations": f"{path}:5:5"}


def test_bad_yaml_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("probe:\n  num_samples: 4\n  max_new_tokens: [48\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    message = str(err.value)
    assert message.startswith(f"{path}:4:1: not valid YAML") and "fix the YAML there" in message
    assert f"while parsing a flow sequence at {path}:3:19" in message  # where the bracket opened


def test_a_file_that_is_not_a_mapping_or_missing_is_a_config_error_with_the_fix(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- probe\n- sft\n")
    with pytest.raises(ConfigError, match=r"list.yaml:1:1: expected a mapping .*; write one `key: value` per line"):
        read_yaml(path)
    with pytest.raises(ConfigError, match=r"does not exist; `stagewise run --print-config > nowhere.yaml`"):
        load_config("nowhere.yaml")


def test_e_notation_is_a_number_in_files_and_in_set():
    assert parse_yaml("learning_rate: 1e-5\nwarmup: 10\nname: 1e\n", "f.yaml")[0] == {
        "learning_rate": 1e-5, "warmup": 10, "name": "1e"}
    assert parse_sets(["learning_rate=2E-6"]) == {"learning_rate": 2e-6}


def test_set_builds_nested_mappings_from_dotted_keys_with_yaml_values():
    assert parse_sets(["probe.num_samples=8", "eval.ks=[1, 4]", "trl.num_iterations=2", "lora=true",
                       "probe.backend_args.dtype=bfloat16", "note="]) == {
        "probe": {"num_samples": 8, "backend_args": {"dtype": "bfloat16"}}, "eval": {"ks": [1, 4]},
        "trl": {"num_iterations": 2}, "lora": True, "note": ""}


def test_set_without_a_value_or_into_a_value_is_a_config_error():
    with pytest.raises(ConfigError, match=r"--set 'probe.num_samples' must look like KEY=VALUE"):
        parse_sets(["probe.num_samples"])
    with pytest.raises(ConfigError, match="probe was already given a value"):
        parse_sets(["probe=3", "probe.num_samples=8"])


def test_run_config_reports_every_bad_key_and_type_at_its_place(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("modle: tiny\nseed: ten\ndata:\n  limit_per_sorce: 3\n  sources: rg:chain_sum\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith("invalid run config: ")
    assert f"{path}:1:1: unknown key 'modle' (did you mean model?)" in message
    assert f"{path}:2:1: seed='ten' must be a number" in message
    assert f"{path}:4:3: unknown key 'data.limit_per_sorce' (did you mean data.limit_per_source?)" in message
    assert f"{path}:5:3: data.sources='rg:chain_sum' must be a list" in message
    assert message.endswith("`stagewise run --print-config` shows every key")


def test_overrides_win_over_the_file_and_are_reported_as_overrides(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("seed: 1\nprobe:\n  num_samples: 2\n")
    layers = resolve_config(path, scale="medium", overrides=parse_sets(["probe.num_samples=8"]))
    assert layers.data["seed"] == 1 and layers.data["probe"]["num_samples"] == 8
    assert layers.data["probe"]["max_new_tokens"] == 256  # from --scale medium, under the file
    assert layers.where("probe.num_samples") == "overrides" and layers.where("seed") == f"{path}:1:1"
    assert layers.where("probe.max_new_tokens") == "--scale medium"
    with pytest.raises(ConfigError, match=r"invalid run config: overrides: seed='x' must be a number"):
        load_config(path, overrides={"seed": "x"})


def test_experiment_config_is_a_preset_under_a_file_under_overrides(tmp_path):
    from stagewise.experiments.config import TEST, configure

    path = tmp_path / "exp.yaml"
    path.write_text("total_steps: 6\nlevels: [2, 3]\npretrain:\n  steps: 10\n  mix: [[2, 0.5], [3, 0.5]]\n")
    cfg = configure(TEST, path, parse_sets(["seeds=2", "pretrain.hidden_size=32"]))
    assert (cfg.total_steps, cfg.seeds, cfg.levels) == (6, 2, (2, 3))
    assert (cfg.pretrain.steps, cfg.pretrain.hidden_size, cfg.pretrain.mix) == (10, 32, ((2, 0.5), (3, 0.5)))
    assert cfg.pretrain.num_layers == TEST.pretrain.num_layers and cfg.batch_size == TEST.batch_size
    path.write_text("seeds: two\npretrain:\n  stepz: 10\n")
    with pytest.raises(ConfigError) as err:
        configure(TEST, path, {"total_step": 4})
    message = str(err.value)
    assert f"{path}:1:1: seeds='two' must be a number" in message
    assert f"{path}:3:3: unknown key 'pretrain.stepz' (did you mean pretrain.steps?)" in message
    assert "overrides: unknown key 'total_step' (did you mean total_steps?)" in message


def test_a_commands_flags_lie_over_its_sets_and_an_unset_flag_sets_nothing():
    from stagewise.curate.config import overrides

    assert overrides(["max_steps=3", "loss=dft", "trl.top_k=5"], max_steps=None, loss="nll", seed=1) == {
        "max_steps": 3, "loss": "nll", "seed": 1, "trl": {"top_k": 5}}
