"""Routing policies on real probe stores: buckets, stages, reasons in words, options and bad input."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from stages_helpers import CONFIG, build_store, item, mixed_items
from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.store import ProbeStore
from stagewise.stages.routing import route_summary

import stagewise as sw
from stagewise.cli import cli


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "run.duckdb"
    build_store(path, mixed_items())
    return str(path)


def _stages(df):
    return dict(zip(df["id"].to_list(), df["stage"].to_list()))


def test_stage_policy_routes_by_c_against_n_with_reasons_in_words(store):
    df = sw.route(store)
    assert df.columns[:6] == ["id", "task", "source", "bucket", "stage", "reason"]
    stats = {"n", "c", "p_hat", "posterior_mean", "ci_low", "ci_high", "pass_at_1", "pass_at_4"}
    assert stats <= set(df.columns)
    by = {r["id"]: r for r in df.iter_rows(named=True)}
    assert (by["q00"]["bucket"], by["q00"]["stage"]) == ("unmastered", "sft")
    assert by["q00"]["reason"].startswith("0/4 correct")
    assert (by["q09"]["bucket"], by["q09"]["stage"]) == ("partial", "rl")
    assert by["q09"]["reason"].startswith("2/4 correct")
    assert (by["q20"]["bucket"], by["q20"]["stage"]) == ("mastered", "drop")
    assert df.group_by("stage").len().sort("stage").rows() == [("drop", 8), ("rl", 8), ("sft", 8)]
    assert by["q09"]["ci_low"] < 0.5 < by["q09"]["ci_high"]


def test_band_policy_keeps_the_open_band_and_says_which_bound_failed(store):
    df = sw.route(store, policy="band", low=0.3, high=0.9)
    by = {r["id"]: r for r in df.iter_rows(named=True)}
    assert by["q09"]["stage"] == "rl" and "in (0.3, 0.9)" in by["q09"]["reason"]  # 2/4
    assert by["q08"]["stage"] == "drop" and "p̂ 0.25 ≤ low 0.3" in by["q08"]["reason"]  # 1/4
    assert by["q20"]["stage"] == "drop" and "p̂ 1.00 ≥ high 0.9" in by["q20"]["reason"]
    assert set(df["stage"]) == {"rl", "drop"}


@pytest.mark.parametrize("low,high", [(0.5, 0.5), (0.9, 0.1), (-0.1, 0.5)])
def test_band_with_an_empty_or_invalid_band_is_a_config_error(store, low, high):
    with pytest.raises(ConfigError, match="--low"):
        sw.route(store, policy="band", low=low, high=high)


def test_all_sft_only_rl_only(store):
    assert set(sw.route(store, policy="all")["stage"]) == {"both"}
    assert set(sw.route(store, policy="sft-only")["stage"]) == {"sft"}
    assert set(sw.route(store, policy="rl-only")["stage"]) == {"rl"}


def test_random_keeps_stage_pool_sizes_and_is_seeded(store):
    stage = sw.route(store).group_by("stage").len().sort("stage").rows()
    a, b, c = (sw.route(store, policy="random", seed=s) for s in (1, 1, 2))
    assert a.group_by("stage").len().sort("stage").rows() == stage
    assert _stages(a) == _stages(b)
    assert _stages(a) != _stages(c)
    # random means the mastery signal is gone: some non-partial items land in RL
    assert (a.filter(pl.col("stage") == "rl")["bucket"] != "partial").any()


def test_relift_buckets_on_p_hat(tmp_path):
    path = tmp_path / "r.duckdb"
    build_store(path, [item(0, "wwww"), item(1, "cwww"), item(2, "ccww"), item(3, "cccw"), item(4, "cccc")])
    by = {r["id"]: r for r in sw.route(path, policy="relift").iter_rows(named=True)}
    assert [by[f"q0{i}"]["stage"] for i in range(5)] == ["sft", "rl", "rl", "drop", "drop"]
    assert "hard" in by["q01"]["reason"] and "medium" in by["q02"]["reason"] and "easy" in by["q03"]["reason"]


def test_keep_mastered_makes_a_replay_split_never_rl(store):
    for policy in ("stage", "rl-only", "all"):
        df = sw.route(store, policy=policy, keep_mastered=3, seed=7)
        replay = df.filter(pl.col("stage") == "replay")
        assert len(replay) == 3 and set(replay["bucket"]) == {"mastered"}
        assert "forgetting" in replay["reason"][0]
    # asking for more than there are keeps all mastered items, no more
    assert len(sw.route(store, keep_mastered=100).filter(pl.col("stage") == "replay")) == 8


def test_require_samples_leaves_thin_items_unrouted(tmp_path):
    path = tmp_path / "r.duckdb"
    build_store(path, [item(0, "cw"), item(1, "cwcw"), item(2, "xxxx")])
    by = {r["id"]: r for r in sw.route(path, require_samples=4).iter_rows(named=True)}
    assert by["q00"]["stage"] == "unrouted" and "fewer than --require-samples 4" in by["q00"]["reason"]
    assert by["q01"]["stage"] == "rl"
    # every sample timed out: nothing verified, so no bucket and never a guess
    assert by["q02"]["stage"] == "unrouted" and by["q02"]["bucket"] is None


def test_summary_warns_when_a_split_is_empty_and_says_what_to_change(tmp_path):
    path = tmp_path / "r.duckdb"
    build_store(path, [item(i, "wwww") for i in range(3)] + [item(9, "cccc")])
    summary = route_summary(sw.route(path))
    assert summary.counts["unmastered"]["sft"] == 3 and summary.counts["mastered"]["drop"] == 1
    text = " ".join(summary.warnings)
    assert "RL split is empty" in text and "--num-samples" in text
    assert "SFT split has only 3" in text
    replay = " ".join(route_summary(sw.route(path, keep_mastered=4), keep_mastered=4).warnings)
    assert "--keep-mastered 4 asked for a replay split, but only 1 item is mastered" in replay


def test_store_without_a_run_and_missing_store_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.duckdb"
    ProbeStore(empty).close()
    with pytest.raises(InputError, match="no probe run"):
        sw.route(empty)
    with pytest.raises(InputError, match="does not exist"):
        sw.route(tmp_path / "nope.duckdb")


def test_several_runs_ask_which_and_run_id_picks_one(tmp_path):
    path = tmp_path / "two.duckdb"
    first = build_store(path, [item(0, "wwww")])
    other = dict(CONFIG, model={"name": "other-model", "sha256": "cd" * 32})
    second = build_store(path, [item(0, "cccc")], config=other)
    with pytest.raises(ConfigError) as exc:
        sw.route(path)
    assert first in str(exc.value) and second in str(exc.value) and "--run-id" in str(exc.value)
    assert "2 different models" in str(exc.value)
    assert sw.route(path, run_id=second)["stage"].to_list() == ["drop"]
    with pytest.raises(ConfigError, match="not in"):
        sw.route(path, run_id="nope")


def test_cli_route_prints_the_table_and_writes_assignments(store, tmp_path):
    out = tmp_path / "a.parquet"
    res = CliRunner().invoke(cli, ["route", "--store", store, "--keep-mastered", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "buckets × stages" in res.output and "0/4 correct" in res.output
    assert len(pl.read_parquet(out)) == 24


def test_cli_route_bad_band_is_one_line_not_a_traceback(store):
    res = CliRunner().invoke(cli, ["route", "--store", store, "--policy", "band", "--low", "0.9",
                                   "--high", "0.1"])
    assert res.exit_code == 1
    assert "Traceback" not in res.output and "--low 0.9 ≥ --high 0.1" in res.output


# --------------------------------------------------------------------------------- truncation-aware mastery

def _truncated_store(tmp_path):
    path = tmp_path / "trunc.duckdb"
    build_store(path, [item(0, "cttt"), item(1, "cwtt"), item(2, "tttt"), item(3, "wwww"), item(4, "ccct")])
    return str(path)


def test_by_default_a_cut_off_sample_counts_as_wrong_as_rl_scores_it(tmp_path):
    df = sw.route(_truncated_store(tmp_path))
    by = {r["id"]: r for r in df.iter_rows(named=True)}
    assert (by["q00"]["n"], by["q00"]["c"], by["q00"]["stage"]) == (4, 1, "rl")
    assert (by["q02"]["bucket"], by["q02"]["stage"]) == ("unmastered", "sft")
    assert (by["q00"]["n_samples"], by["q00"]["n_truncated"]) == (4, 3)


def test_truncated_exclude_takes_cut_off_samples_out_of_n_and_unroutes_items_left_with_too_few(tmp_path):
    df = sw.route(_truncated_store(tmp_path), truncated="exclude")
    by = {r["id"]: r for r in df.iter_rows(named=True)}
    assert (by["q04"]["n"], by["q04"]["c"], by["q04"]["bucket"], by["q04"]["stage"]) == (3, 3, "mastered", "drop")
    assert by["q04"]["p_hat"] == 1.0 and by["q04"]["pass_at_4"] is None  # 3 usable samples: no pass@4
    assert (by["q01"]["n"], by["q01"]["c"], by["q01"]["stage"]) == (2, 1, "rl")
    assert (by["q00"]["n"], by["q00"]["stage"]) == (1, "unrouted")
    assert by["q00"]["reason"].startswith("3 of 4 samples cut at max_new_tokens and excluded (--truncated exclude): "
                                          "1 usable, fewer than 2")
    assert by["q02"]["stage"] == "unrouted" and "0 usable" in by["q02"]["reason"]
    assert (by["q03"]["n"], by["q03"]["stage"]) == (4, "sft")  # nothing truncated: untouched


def test_a_bucket_with_over_20_percent_truncated_samples_warns_naming_max_new_tokens(tmp_path):
    df = sw.route(_truncated_store(tmp_path))
    s = route_summary(df, "stage", max_new_tokens=32)
    assert s.truncation["unmastered"] == {"samples": 8, "truncated": 4, "rate": 0.5}  # q02 tttt + q03 wwww
    assert s.truncation["partial"] == {"samples": 12, "truncated": 6, "rate": 0.5}  # q00, q01, q04
    assert "mastered" not in s.truncation
    warned = [w for w in s.warnings if "cut off at max_new_tokens" in w]
    assert len(warned) == 2 and any("50% of the unmastered bucket's samples (4 of 8)" in w for w in warned)
    assert "--max-new-tokens 32" in warned[0] and "--truncated exclude" in warned[0]


def test_route_cli_takes_truncated_and_prints_the_warning(tmp_path):
    res = CliRunner().invoke(cli, ["route", "--store", _truncated_store(tmp_path), "--truncated", "exclude"])
    assert res.exit_code == 0, res.output
    assert "cut off at max_new_tokens (the probe ran with --max-new-tokens 32)" in " ".join(res.output.split())
    bad = CliRunner().invoke(cli, ["route", "--store", _truncated_store(tmp_path), "--truncated", "drop"])
    assert bad.exit_code != 0 and "wrong" in bad.output
# ------------------------------------------------------------------ several runs, per-model columns, order


def _two_seed_store(tmp_path):
    path = tmp_path / "pool.duckdb"
    a = build_store(path, [item(0, "ww"), item(1, "cc"), item(2, "wc")])
    b = build_store(path, [item(0, "wc"), item(1, "cc"), item(2, "ww")], config=dict(CONFIG, seed=7))
    return path, a, b


def test_runs_of_the_same_model_and_sampling_pool_their_samples(tmp_path):
    path, a, b = _two_seed_store(tmp_path)
    pooled = sw.route(path, runs=f"{a},{b}").sort("id")
    assert pooled["n"].to_list() == [4, 4, 4] and pooled["c"].to_list() == [1, 4, 1]
    assert pooled["bucket"].to_list() == ["partial", "mastered", "partial"]
    assert pooled["run_id"][0] == f"{a},{b}"
    assert pooled["difficulty"].to_list() == pytest.approx([1 - 2 / 6, 1 - 5 / 6, 1 - 2 / 6])
    alone = sw.route(path, run_id=a).sort("id")
    assert alone["bucket"].to_list() == ["unmastered", "mastered", "partial"]


def test_runs_that_differ_are_refused_naming_the_keys(tmp_path):
    path, a, _ = _two_seed_store(tmp_path)
    other = build_store(path, [item(0, "cc")], config=dict(CONFIG, seed=3, sampling=dict(
        CONFIG["sampling"], temperature=0.6), model=dict(CONFIG["model"], name="other-model")))
    with pytest.raises(ConfigError, match="differ in model.name, sampling.temperature"):
        sw.route(path, runs=[a, other])
    same_seed = build_store(path, [item(0, "cc")], config=dict(CONFIG, num_samples=8))
    with pytest.raises(ConfigError, match="same samples"):
        sw.route(path, runs=[a, same_seed])
    with pytest.raises(ConfigError, match="nope not in"):
        sw.route(path, runs=f"{a},nope")
    with pytest.raises(ConfigError, match="not both"):
        sw.route(path, runs=[a], run_id=a)
    out = tmp_path / "a.parquet"
    with pytest.raises(ConfigError):
        sw.route(path, runs=[a, other], out=out)
    assert not out.exists()


def test_by_model_adds_a_p_hat_column_per_model(tmp_path):
    path, a, _ = _two_seed_store(tmp_path)
    build_store(path, [item(0, "cccc"), item(1, "wwww")], config=dict(CONFIG, model=dict(CONFIG["model"],
                                                                                           name="teacher-1.7b")))
    table = sw.route(path, run_id=a, by_model=True).sort("id")
    assert table["p_hat:teacher-1.7b"].to_list() == [1.0, 0.0, None]
    assert table["p_hat:tiny-probe"].to_list() == [0.0, 1.0, 0.5]
    assert table["n:teacher-1.7b"].to_list() == [4, 4, None]
    # the unmastered-by-the-student, mastered-by-the-teacher item: an SFT candidate with a teacher demo
    row = table.filter(pl.col("id") == "q00").row(0, named=True)
    assert row["bucket"] == "unmastered" and row["p_hat:teacher-1.7b"] == 1.0


def test_order_gives_a_curriculum_and_a_bad_order_is_refused(tmp_path):
    path, a, _ = _two_seed_store(tmp_path)
    assert sw.route(path, run_id=a, order="p_hat-asc")["id"].to_list() == ["q00", "q02", "q01"]
    assert sw.route(path, run_id=a, order="p_hat-desc")["id"].to_list() == ["q01", "q02", "q00"]
    assert sw.route(path, run_id=a, order="source")["id"].to_list() == ["q00", "q01", "q02"]
    with pytest.raises(ConfigError, match="--order 'hardest'"):
        sw.route(path, run_id=a, order="hardest")


def test_cli_route_json_holds_only_json_with_the_assignments_and_warnings(tmp_path):
    path, a, b = _two_seed_store(tmp_path)
    res = CliRunner().invoke(cli, ["route", "--store", str(path), "--runs", f"{a},{b}", "--order", "p_hat-asc",
                                   "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["run_id"] == f"{a},{b}" and data["policy"] == "stage"
    assert [r["id"] for r in data["assignments"]][-1] == "q01" and "difficulty" in data["assignments"][0]
    assert data["summary"]["buckets"]["partial"] == 2 and data["warnings"] == data["summary"]["warnings"]
    assert data["warnings"] and all(f"warning: {w}" in res.stderr for w in data["warnings"])
    bad = CliRunner().invoke(cli, ["route", "--store", str(path), "--runs", "nope", "--json"])
    assert bad.exit_code == 1 and bad.stdout == "" and "nope not in" in bad.stderr


@pytest.mark.parametrize("policy", ["stage", "band", "all", "sft-only", "rl-only", "relift"])
def test_a_per_item_policy_decides_a_pool_as_it_decides_each_item_alone(policy):
    from stagewise.stages.routing import Item, make_router

    router = make_router(policy, **({"low": 0.2, "high": 0.8} if policy == "band" else {}))
    items = [Item(id=f"q{i}", n=n, c=c) for i, (n, c) in enumerate(
        [(4, 0), (4, 2), (4, 4), (4, 2), (8, 1), (8, 7), (1, 0), (4, 0), (16, 16), (8, 1)])]
    assert router.decide(items) == [router.decide_one(it) for it in items]
