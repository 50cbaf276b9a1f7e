"""The completion marker every step shares: done only after `mark`, only for the same config, and a
mismatch names the keys that differ."""

from __future__ import annotations

import json

import pytest
from stagewise.curate import atomic
from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.steps import OtherOptionsError, Step, config_hash, differences, flatten


def test_a_step_is_done_only_after_it_is_marked_and_only_for_the_same_config(tmp_path):
    step = Step(tmp_path, "export", {"k_min": 2, "route": {"low": 0.1}})
    assert not step.exists() and not step.done() and step.result() is None
    assert step.path == tmp_path / "export.done.json"

    step.mark({"rows": 12}, seconds=1.5)
    assert step.done() and step.result() == {"rows": 12}
    assert Step(tmp_path, "export", {"route": {"low": 0.1}, "k_min": 2}).done()  # key order does not matter

    other = Step(tmp_path, "export", {"k_min": 3, "route": {"low": 0.1}})
    assert other.exists() and not other.done() and other.result() is None
    assert other.differences() == [("k_min", 2, 3)]
    assert other.describe_differences() == "k_min=2, this run asks k_min=3"


def test_the_marker_holds_the_config_its_hash_and_the_result(tmp_path):
    Step(tmp_path, "train", {"a": 1, "b": (1, 2)}).mark({"global_step": 4}, seconds=2.0)
    record = json.loads((tmp_path / "train.done.json").read_text())
    assert record["step"] == "train"
    assert record["config"] == {"a": 1, "b": [1, 2]}
    assert record["config_hash"] == "8baa73198470c7bb4c3ce142a8fd651affc0310d878bb9bd159e37a573fb4874"
    assert record["result"] == {"global_step": 4} and record["seconds"] == 2.0


def test_equal_configs_hash_equal_whatever_their_python_types():
    np = pytest.importorskip("numpy")
    digest = "8baa73198470c7bb4c3ce142a8fd651affc0310d878bb9bd159e37a573fb4874"  # sha256 of {"a":1,"b":[1,2]}
    assert config_hash({"a": 1, "b": [1, 2]}) == digest
    assert config_hash({"b": (1, 2), "a": np.int64(1)}) == digest
    assert config_hash({"a": 1, "b": [2, 1]}) != digest


def test_nested_keys_are_named_with_dots_and_a_missing_key_says_so():
    assert flatten({"route": {"low": 0.1, "high": 0.9}, "seed": 0}) == {"route.low": 0.1, "route.high": 0.9,
                                                                        "seed": 0}
    assert differences({"route": {"low": 0.1, "high": 0.9}}, {"route": {"low": 0.2}}) == [
        ("route.high", 0.9, "(not set)"), ("route.low", 0.1, 0.2)]
    assert differences({"a": {"b": 1}}, {"a": {"b": 1}}) == []


def test_output_made_with_other_options_is_refused_with_one_message_naming_the_keys(tmp_path):
    Step(tmp_path, "export", {"k_min": 2, "policy": "stage"}).mark()
    asked = Step(tmp_path, "export", {"k_min": 3, "policy": "stage"})
    with pytest.raises(OtherOptionsError) as exc:
        asked.refuse_other_options("out/ was exported", "pass --overwrite to replace it")
    assert str(exc.value) == "out/ was exported with k_min=2, this run asks k_min=3; pass --overwrite to replace it"
    assert isinstance(exc.value, ConfigError) and exc.value.made.endswith("this run asks k_min=3")
    # the same options, or no marker at all, are not refused
    Step(tmp_path, "export", {"k_min": 2, "policy": "stage"}).refuse_other_options("out/", "fix")
    Step(tmp_path / "empty", "export", {"k_min": 3}).refuse_other_options("out/", "fix")


def test_a_failed_write_keeps_the_earlier_marker_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    Step(tmp_path, "eval", {"k": 1}).mark({"pass@1": 0.5})

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        Step(tmp_path, "eval", {"k": 2}).mark({"pass@1": 0.75})
    monkeypatch.undo()
    assert Step(tmp_path, "eval", {"k": 1}).result() == {"pass@1": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.done.json"]


def test_an_unreadable_marker_names_its_file_and_the_fix(tmp_path):
    (tmp_path / "probe.done.json").write_text("{not json")
    with pytest.raises(InputError, match=r"probe\.done\.json: unreadable completion marker .*delete it"):
        Step(tmp_path, "probe", {}).done()
