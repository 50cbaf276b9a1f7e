"""`show` and `samples`: what the model wrote, by item or by filter, from the API and the CLI, and bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from stages_helpers import CONFIG, build_store, item
from stagewise.curate.errors import ConfigError, InputError

import stagewise as sw
from stagewise.cli import cli


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "run.duckdb"
    items = [item(0, "wwww"), item(1, "cwwx"), item(2, "cccc"), item(13, "wwcw")]
    build_store(path, items)
    return str(path)


def test_show_gives_the_item_with_its_ci_and_every_sample_and_accepts_an_id_prefix(store):
    res = sw.show(store, "q00")
    it = res["item"]
    assert it["id"] == "q00" and it["prompt"] == "What is 1 + 1?" and it["answer"] == "2"
    assert it["bucket"] == "unmastered" and it["reason"].startswith("0/4 correct")
    assert it["n"] == 4 and it["c"] == 0 and it["p_hat"] == 0 and it["ci_low"] == 0 and 0 < it["ci_high"] < 1
    assert [s["sample_idx"] for s in res["samples"]] == [0, 1, 2, 3]
    assert res["samples"][0]["completion"] == "It is \\boxed{999}" and res["samples"][0]["status"] == "wrong"
    assert res["samples"][0]["finish_reason"] == "stop"
    partial = sw.show(store, "q01")
    assert partial["item"]["bucket"] == "partial" and partial["item"]["n"] == 3  # the timeout is no evidence
    assert partial["item"]["n_unverified"] == 1 and {s["status"] for s in partial["samples"]} >= {"timeout"}


def test_samples_filter_by_bucket_status_and_limit(store):
    every = sw.samples(store)
    assert every.height == 16 and set(every["run_id"].to_list()) == {every["run_id"][0]}
    unmastered = sw.samples(store, bucket="unmastered")
    assert set(unmastered["problem_id"].to_list()) == {"q00"}
    wrong_partial = sw.samples(store, bucket="partial", status="wrong")
    assert set(wrong_partial["problem_id"].to_list()) == {"q01", "q13"} and wrong_partial.height == 5
    assert sw.samples(store, status="correct", limit=2).height == 2
    assert sw.samples(store, item_id="q1")["sample_idx"].to_list() == [0, 1, 2, 3]
    assert {"completion", "extracted", "answer", "prompt", "finish_reason"} <= set(every.columns)


def test_unknown_or_ambiguous_ids_unknown_runs_and_bad_filters_are_clear_errors(store, tmp_path):
    with pytest.raises(InputError, match="no item with id 'zz'"):
        sw.show(store, "zz")
    with pytest.raises(ConfigError, match="matches 3 items"):  # q00, q01, q02
        sw.show(store, "q0")
    assert sw.show(store, "q1")["item"]["id"] == "q13"
    with pytest.raises(ConfigError, match="not in"):
        sw.show(store, "q00", run_id="nope")
    with pytest.raises(ConfigError, match="--bucket 'easy'"):
        sw.samples(store, bucket="easy")
    with pytest.raises(ConfigError, match="--status"):
        sw.samples(store, status="fine")
    with pytest.raises(InputError, match="does not exist"):
        sw.samples(tmp_path / "missing.duckdb")
    assert not (tmp_path / "missing.duckdb").exists()


def test_several_runs_need_a_run_id(tmp_path):
    path = tmp_path / "two.duckdb"
    first = build_store(path, [item(0, "wc")])
    second = build_store(path, [item(0, "cc")], config=dict(CONFIG, seed=1))
    with pytest.raises(ConfigError, match="--run-id"):
        sw.show(path, "q00")
    assert sw.show(path, "q00", run_id=second)["item"]["bucket"] == "mastered"
    assert sw.show(path, "q00", run_id=first)["item"]["bucket"] == "partial"


def test_cli_show_prints_the_samples_and_json_has_item_and_samples(store):
    out = CliRunner().invoke(cli, ["show", "q00", "--store", store])
    assert out.exit_code == 0, out.output
    assert "What is 1 + 1?" in out.output and "gold answer: 2" in out.output and "\\boxed{999}" in out.output
    assert "sample 3: wrong" in out.output and "unmastered" in out.output
    js = CliRunner().invoke(cli, ["show", "q00", "--store", store, "--json"])
    data = json.loads(js.stdout)
    assert set(data) == {"item", "samples", "warnings"} and len(data["samples"]) == 4
    bad = CliRunner().invoke(cli, ["show", "zz", "--store", store, "--json"])
    assert bad.exit_code == 1 and bad.stdout == "" and "no item with id 'zz'" in bad.stderr


def test_cli_samples_table_json_and_jsonl(store):
    out = CliRunner().invoke(cli, ["samples", "--store", store, "--status", "timeout"])
    assert out.exit_code == 0, out.output
    assert "1 samples" in out.output and "q01" in out.output
    js = json.loads(CliRunner().invoke(cli, ["samples", "--store", store, "--bucket", "mastered", "--json"]).stdout)
    assert js["count"] == 4 and {s["problem_id"] for s in js["samples"]} == {"q02"} and js["warnings"] == []
    lines = CliRunner().invoke(cli, ["samples", "--store", store, "--limit", "3", "--jsonl"]).stdout.splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["problem_id"] == "q00"
    bad = CliRunner().invoke(cli, ["samples", "--store", store, "--bucket", "easy"])
    assert bad.exit_code == 2 and "easy" in bad.output
