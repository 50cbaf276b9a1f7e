"""`stagewise train` end to end on a tiny model: SFT -> (re-probe) -> RL with before/after evaluation."""

import json

import pytest
from click.testing import CliRunner
from stagewise.train.two_stage import train
from train_helpers import MEMO, make_export

from stagewise.cli import cli

ONE_TOKEN_PROBE = {"sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 3},
                   "system_prompt": None, "prompt_template": "{prompt}", "model": "tiny"}
FAST = {"sft": {"max_steps": 8, "learning_rate": 1e-2, "batch_size": 4},
        "rl": {"max_steps": 2, "learning_rate": 1e-3, "batch_size": 2, "num_generations": 2, "sft_eval_steps": 1},
        "eval": {"num_samples": 2, "ks": [1, 2], "sft_holdout": 0.25}}


@pytest.fixture()
def export(tmp_path):
    return make_export(tmp_path / "export", sft=MEMO, rl=[("q0", "7"), ("q1", "7")], replay=[("m0", "cat")],
                       probe=ONE_TOKEN_PROBE)


def test_train_runs_both_stages_with_stage_aware_evaluation(tmp_path, tiny_model_dir, export):
    out = tmp_path / "run"
    res = train(export, tiny_model_dir, out, sft=FAST["sft"], rl=FAST["rl"], eval=FAST["eval"], progress=False)
    assert res.sft.global_step == 8 and res.rl.global_step == 2
    assert res.model_dir == res.rl.model_dir
    # SFT trained on the split minus its held-out quarter (2 of 8 rows).
    assert res.sft.config["n_train"] == 6 and res.rl.config["n_sft_eval"] == 2
    # One evaluation per checkpoint, per bucket: unmastered (SFT items), partial (RL), mastered (replay).
    assert [e.checkpoint for e in res.evals] == ["before", "after SFT", "after RL"]
    groups = {r.group for e in res.evals for r in e.rows}
    assert {"unmastered", "partial", "mastered"} <= groups
    unmastered = [r for e in res.evals for r in e.rows if r.group == "unmastered" and r.k == 1]
    assert [r.checkpoint for r in unmastered] == ["before", "after SFT", "after RL"]
    assert all(0 <= r.ci_low <= r.value <= r.ci_high <= 1 for r in unmastered)
    assert set(res.forgetting["mastered_pass@1"]) == {"before", "after SFT", "after RL"}
    # The held-out SFT loss is tracked during RL (at its start and after each step).
    rl_log = [json.loads(x) for x in (out / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rl_log if "heldout_sft_loss" in r] == [0, 1, 2]
    for name in ("report.md", "summary.json", "eval.json", "curves.png"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "Forgetting" in report and "| after RL |" in report


def test_reprobe_re_routes_every_sft_and_rl_item_with_the_exports_own_router(tmp_path, tiny_model_dir, export):
    import pyarrow.parquet as pq

    out = tmp_path / "run"
    # Enough SFT that some answers are right sometimes (sampling at temperature 1), not always: with seed 0,
    # 30 steps leave SFT items partially mastered, and the RL items (answer "7", never taught) at 0/n.
    res = train(export, tiny_model_dir, out, reprobe=True, sft={**FAST["sft"], "max_steps": 30},
                rl=FAST["rl"], eval={**FAST["eval"], "enabled": False}, progress=False)
    rep = res.loop.reprobes[0]
    assert rep.items == rep.probed == 6 + 2  # the SFT rows minus the held-out quarter, and both RL rows
    moves = {m.id: m for m in rep.moves}
    joined = sorted(i for i, m in moves.items() if m.joined_rl)
    assert joined and all(0 < moves[i].c < moves[i].n for i in joined) and joined == res.moved
    # Items that left the band left RL: RL trained on exactly the items the router now sends to RL.
    in_rl = sorted(i for i, m in moves.items() if m.after_stage == "rl")
    assert res.rl.config["n_train"] == len(in_rl)
    transitions = pq.read_table(out / "transitions.parquet").to_pylist()
    assert sum(t["count"] for t in transitions) == 8 and {t["round"] for t in transitions} == {1}
    rounds = pq.read_table(out / "rounds.parquet").to_pylist()
    assert len(rounds) == 8 and set(rounds[0]) == {"id", "round", "bucket", "stage", "reason"}
    assert "Bucket transitions at the re-probe" in (out / "report.md").read_text()


def test_two_rounds_on_the_cli_write_transitions_and_rounds(tmp_path, tiny_model_dir, export):
    import pyarrow.parquet as pq

    out = tmp_path / "loop"
    result = CliRunner().invoke(cli, ["train", "--data", export, "--model", tiny_model_dir, "--out", str(out),
                                      "--rounds", "2", "--reprobe", "--max-steps", "1", "--no-eval",
                                      "--set", "rl.num_generations=2", "--set", "rl.batch_size=2",
                                      "--set", "learning_rate=0.01"])
    assert result.exit_code == 0, result.output
    # --max-steps applies per stage per round
    for r in (1, 2):
        assert json.loads((out / f"round-{r}" / "sft" / "train.done.json").read_text())["result"]["global_step"] == 1
    rounds = pq.read_table(out / "rounds.parquet").to_pylist()
    ids = {r["id"] for r in rounds}
    assert {r["round"] for r in rounds} == {1, 2} and len(rounds) == 2 * len(ids) == 2 * (7 + 2)  # 1 SFT row held out
    transitions = pq.read_table(out / "transitions.parquet").to_pylist()
    assert {t["round"] for t in transitions} == {1, 2}
    assert "re-probe round 2" in result.output and "rounds.parquet" in result.output


def test_cli_train_dry_run_builds_both_trainers(tmp_path, tiny_model_dir, export):
    result = CliRunner().invoke(cli, ["train", "--data", export, "--model", tiny_model_dir, "--out",
                                      str(tmp_path / "run"), "--dry-run", "--set", "rl.num_generations=2",
                                      "--set", "sft.loss=iw-sft"])
    assert result.exit_code == 0, result.output
    assert "dry run: sft trainer built" in result.output and "dry run: rl trainer built" in result.output
    assert not (tmp_path / "run" / "sft" / "model").exists()


def test_cli_train_json_prints_only_the_result_as_json(tmp_path, tiny_model_dir, export):
    import json

    result = CliRunner().invoke(cli, ["train", "--data", export, "--model", tiny_model_dir, "--out",
                                      str(tmp_path / "run"), "--dry-run", "--set", "rl.num_generations=2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    from readme_json import assert_documented

    assert_documented("train", data)
    assert data["dry_run"] is True and data["sft"]["dry_run"] and data["rl"]["stage"] == "rl"
    assert data["warnings"] == [] and "out" in data and "evaluation" in data
    one = CliRunner().invoke(cli, ["train", "sft", "--data", export, "--model", tiny_model_dir, "--out",
                                   str(tmp_path / "sft"), "--dry-run", "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["stage"] == "sft"
    assert_documented("train sft/rl/joint", json.loads(one.stdout))


def test_cli_reports_a_missing_model_without_traceback(tmp_path, export):
    result = CliRunner().invoke(cli, ["train", "sft", "--data", export, "--model", str(tmp_path / "nope"),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "model path does not exist" in result.output and "Traceback" not in result.output


def test_train_consumes_a_real_export(tmp_path, tiny_model_dir):
    """The exporter's own output (store -> route -> export), not the fixture builder, trains and evaluates."""
    import stagewise as sw

    from stages_helpers import build_store, mixed_items

    store = tmp_path / "probe.duckdb"
    build_store(store, mixed_items())
    exported = sw.export(str(store), tmp_path / "export", format="trl", keep_mastered=2)
    res = train(exported.out, tiny_model_dir, tmp_path / "run", sft={"max_steps": 2, "batch_size": 4},
                rl={"max_steps": 1, "batch_size": 2, "num_generations": 2},
                eval={"num_samples": 1, "ks": [1], "max_items_per_bucket": 2, "sft_holdout": 0.0},
                progress=False)
    assert res.sft.config["n_train"] == 8 and res.rl.config["n_train"] == 8
    # The RL stage sampled the way the probe did: max_new_tokens from the store's run config.
    assert res.rl.config["max_new_tokens"] == 32
    assert res.rl.config["sampling_source"]["max_new_tokens"] == "probe manifest"
    groups = {r.group for e in res.evals for r in e.rows}
    assert {"unmastered", "partial", "mastered"} <= groups


def test_resuming_a_finished_run_reuses_training_and_evaluation(tmp_path, tiny_model_dir, export):
    out = tmp_path / "run"
    kw = dict(sft={"max_steps": 2, "batch_size": 4}, rl={"max_steps": 1, "batch_size": 2, "num_generations": 2},
              eval={"num_samples": 1, "ks": [1]}, progress=False)
    first = train(export, tiny_model_dir, out, **kw)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "eval").iterdir()}
    again = train(export, tiny_model_dir, out, resume=True, **kw)
    assert [e.to_dict() for e in again.evals] == [e.to_dict() for e in first.evals]
    assert again.model_dir == first.model_dir
    assert {p.name: p.stat().st_mtime_ns for p in (out / "eval").iterdir()} == stamps  # nothing re-evaluated


def test_train_with_a_joint_stage_is_evaluated_the_same_way(tmp_path, tiny_model_dir, export):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", export, "--model", tiny_model_dir, "--out", str(out),
                                      "--joint", "relift", "--max-steps", "2", "--set", "joint.buffer_size=4",
                                      "--set", "joint.num_generations=2", "--set", "joint.batch_size=2",
                                      "--set", "eval.num_samples=1", "--set", "eval.ks=[1]"])
    assert result.exit_code == 0, result.output
    assert "joint-relift: 2 steps" in result.output and "after joint-relift" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sft"] is None and summary["rl"] is None and summary["joint"]["global_step"] == 2
    assert [e["checkpoint"] for e in summary["evaluation"]] == ["before", "after joint-relift"]
