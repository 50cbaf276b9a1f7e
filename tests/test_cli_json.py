"""`--json` everywhere: stdout is one JSON document whose top-level keys are the ones the README lists,
warnings go to stderr and into `warnings`, and a failing command prints nothing on stdout."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from readme_json import assert_documented, documented_keys
from stages_helpers import build_store, item, mixed_items

from stagewise.cli import cli

TASK = "probe_helpers:parity"


def invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), res.stderr


def test_the_readme_documents_every_command_with_json():
    assert set(documented_keys()) == {"profile", "decontaminate", "probe", "eval", "merge", "route", "export",
                                      "show", "samples", "train", "train sft/rl/joint", "run"}


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "run.duckdb"
    build_store(path, mixed_items())
    return path


def test_profile_and_decontaminate(tmp_path):
    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"question": "What is 1 + 1?", "answer": "2"}\nnot json\n')
    data, err = invoke("profile", bad, "--skip-bad", "--json")
    assert_documented("profile", data)
    assert data["warnings"] == ["skipped 1 bad rows"] and "warning: skipped 1 bad rows" in err
    data, _ = invoke("decontaminate", "gsm8k:train", "--against", "gsm8k:test", "--json", "--show", "2")
    assert_documented("decontaminate", data)
    assert data["contaminated"] == 5 and len(data["matches"]) == 2 and data["matches_total"] == 5


def test_route_export_show_samples_and_merge(store, tmp_path):
    data, _ = invoke("route", "--store", store, "--json")
    assert_documented("route", data)
    assert len(data["assignments"]) == 24 and data["warnings"] == data["summary"]["warnings"]
    data, _ = invoke("export", "--store", store, "--out", tmp_path / "export", "--keep-mastered", "2", "--json")
    assert_documented("export", data)
    assert data["format"] == "trl" and data["files"]["sft.parquet"]["rows"] == 8
    data, _ = invoke("show", "q00", "--store", store, "--json")
    assert_documented("show", data)
    data, _ = invoke("samples", "--store", store, "--limit", "2", "--json")
    assert_documented("samples", data)
    other = tmp_path / "other.duckdb"
    build_store(other, [item(40, "cw")])
    data, _ = invoke("merge", store, other, "--out", tmp_path / "merged.duckdb", "--json")
    assert_documented("merge", data)


def test_probe_and_eval_print_the_documented_json(tiny_model_dir, tmp_path):
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": str(i)}) + "\n" for i in range(2)))
    common = ["--task", TASK, "--model", tiny_model_dir, "-k", "1", "--max-new-tokens", "4", "--json"]
    out, _ = invoke("probe", data, "--store", tmp_path / "p.duckdb", *common)
    assert_documented("probe", out)
    out, _ = invoke("eval", data, "--ks", "1", *common)
    assert_documented("eval", out)


def test_a_failing_command_prints_nothing_on_stdout(store):
    res = CliRunner().invoke(cli, ["route", "--store", str(store), "--run-id", "nope", "--json"])
    assert res.exit_code == 1 and res.stdout == "" and "nope" in res.stderr
