"""Exports are judged by their consumers: `datasets`, verl's schema and reward signature, and TRL."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from stages_helpers import SYSTEM, build_store, item, mixed_items
from stagewise.curate.errors import ConfigError, InputError, StorageError
from stagewise.curate.store import ProbeStore

import stagewise as sw
from stagewise.cli import cli

SPLITS = ("sft", "rl", "replay", "unrouted")
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
# verl's RLHFDataset layout (verl/utils/dataset/README.md), written out here independently of the exporter.
VERL_RL_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", MESSAGES),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
    ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("id", pa.string()),
                              ("task", pa.string()), ("p_hat", pa.float64()), ("n", pa.int64()),
                              ("c", pa.int64()), ("model", pa.string()), ("meta", pa.string()),
                              ("question", pa.string()), ("answer_format", pa.string())])),
])


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "run.duckdb"
    items = mixed_items()
    # one unmastered item whose reference solution reaches a wrong final answer: not a demonstration
    items[0] = item(0, "wwww", solution="We add 1 and 1 to get \\boxed{3}.")
    build_store(path, items)
    return str(path)


def _load(out, name):
    import datasets

    # a cache per export folder: these tests must see what was written, not an earlier test's rows
    return datasets.load_dataset(str(out), name, split="train", cache_dir=str(Path(out).parent / "hf-cache"))


def test_trl_export_loads_back_with_datasets_and_matches_the_manifest(store, tmp_path):
    out = tmp_path / "export"
    result = sw.export(store, out, keep_mastered=2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest, default=str))
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    configs = {c["config_name"] for c in front["configs"]}
    for name in (*SPLITS, "assignments"):
        rows = manifest["files"][f"{name}.parquet"]["rows"]
        assert pq.read_table(out / f"{name}.parquet").num_rows == rows
        if rows:
            assert len(_load(out, name)) == rows, name
        else:  # `datasets` cannot load a 0-row split, so the card does not offer it
            assert name not in configs
    # 7 SFT and 8 RL items are too few to hold a validation slice out (stages/validation.py)
    assert manifest["counts"]["splits"] == {"sft": 7, "sft_val": 0, "rl": 8, "rl_val": 0, "replay": 2,
                                            "unrouted": 1}
    for name, info in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == info["sha256"], name
    # what the trainer needs to reproduce the probe's conditions
    assert manifest["probe"]["sampling"] == {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 32}
    assert manifest["probe"]["system_prompt"] == SYSTEM
    assert manifest["route"]["policy"] == "stage" and manifest["route"]["keep_mastered"] == 2
    assert manifest["versions"]["stagewise"] and manifest["model"]["name"] == "tiny-probe"
    assert not list(tmp_path.glob(".export.tmp-*"))


def test_trl_rows_carry_the_probe_prompt_gold_answer_and_a_verified_target(store, tmp_path):
    from stagewise.curate.prompts import build_messages
    from stagewise.curate.verifiers import score

    out = tmp_path / "export"
    sw.export(store, out)
    with ProbeStore(store, read_only=True) as st:
        problems = {p.id: p for p in st.problems()}
    sft = _load(out, "sft")
    assert set(sft.column_names) >= {"prompt", "completion", "id", "task", "answer", "meta", "demo_source"}
    for row in sft:
        p = problems[row["id"]]
        assert row["prompt"] == build_messages(p, system_prompt=SYSTEM, prompt_template=None)
        assert row["prompt"][0] == {"role": "system", "content": SYSTEM}
        assert row["completion"][0]["role"] == "assistant"
        assert score(row["completion"][0]["content"], p).correct
        assert json.loads(row["demo_provenance"])["source"] == "solution"
    rl = _load(out, "rl")
    assert set(rl.column_names) >= {"prompt", "solution", "id", "task", "meta", "n", "c", "p_hat", "ci_low"}
    assert all(0 < r["p_hat"] < 1 and r["solution"] == problems[r["id"]].answer for r in rl)
    unrouted = _load(out, "unrouted")
    assert unrouted["id"] == ["q00"]
    assert "reference solution not accepted" in unrouted["reason"][0]


def test_messages_style_and_all_policy(store, tmp_path):
    out = tmp_path / "export"
    result = sw.export(store, out, policy="all", sft_style="messages")
    a = result.assignments
    # every item to RL; the one with a rejected reference solution is RL only, and says why
    assert set(a["stage"]) == {"both", "rl"}
    assert a.filter(a["stage"] == "rl")["id"].to_list() == ["q00"]
    assert "RL only" in a.filter(a["stage"] == "rl")["reason"][0]
    assert len(_load(out, "rl")) == 24 and len(_load(out, "sft")) == 23
    row = _load(out, "sft")[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]


def test_card_has_configs_for_every_split_and_a_png_that_decodes(store, tmp_path):
    from PIL import Image

    out = tmp_path / "export"
    sw.export(store, out, keep_mastered=2)
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert {c["config_name"] for c in front["configs"]} == {"assignments", *SPLITS}
    for png in ("mastery.png", "pass_rate_by_source.png"):
        assert f"]({png})" in text
        with Image.open(out / png) as im:
            im.load()
            assert im.size[0] > 100
    assert "P(0/4) = 0.66" in text  # at p = 0.1 with n = 4 samples
    assert "0/4 correct does not mean never solvable" in text
    assert "c = 0 (no sample correct) → SFT" in text


def test_verl_rows_match_the_schema_and_the_shipped_reward_scores(store, tmp_path):
    out = tmp_path / "verl"
    sw.export(store, out, format="verl", keep_mastered=2)
    for split in ("rl", "replay"):
        schema = pq.read_schema(out / f"{split}.parquet").remove_metadata()
        assert schema.equals(VERL_RL_SCHEMA), f"{split}: {schema}"
    rows = pq.read_table(out / "rl.parquet").to_pylist()
    assert rows[0]["data_source"] == "stagewise/gsm8k" and rows[0]["ability"] == "math"
    assert rows[0]["extra_info"]["split"] == "rl" and rows[0]["extra_info"]["model"] == "tiny-probe"
    assert [r["extra_info"]["index"] for r in rows] == list(range(len(rows)))
    sft = pq.read_table(out / "sft.parquet").to_pylist()
    assert sft[0]["messages"][-1]["role"] == "assistant"

    spec = importlib.util.spec_from_file_location("verl_reward", out / "reward.py")
    reward = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reward)
    r = rows[0]
    gold = r["reward_model"]["ground_truth"]
    assert reward.compute_score(r["data_source"], f"so \\boxed{{{gold}}}", gold, r["extra_info"]) == 1.0
    assert reward.compute_score(r["data_source"], "so \\boxed{12345}", gold, r["extra_info"]) == 0.0
    assert "custom_reward_function.path=" in (out / "README.md").read_text()


def test_openrlhf_layout(store, tmp_path):
    out = tmp_path / "orl"
    sw.export(store, out, format="openrlhf")
    rl = pq.read_table(out / "rl.parquet").to_pylist()
    sft = pq.read_table(out / "sft.parquet").to_pylist()
    assert {"input", "label", "id", "task"} <= set(rl[0]) and rl[0]["input"][-1]["role"] == "user"
    assert {"input", "output", "id", "task"} <= set(sft[0])
    # OpenRLHF concatenates input + output messages when applying the chat template
    assert sft[0]["output"][0]["role"] == "assistant"


def test_existing_directory_is_never_clobbered_without_overwrite(store, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--overwrite"):
        sw.export(store, out)
    assert (out / "keep.txt").read_text() == "mine"
    sw.export(store, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_bad_input_leaves_no_directory_behind(tmp_path):
    empty = tmp_path / "empty.duckdb"
    ProbeStore(empty).close()
    out = tmp_path / "export"
    with pytest.raises(InputError, match="no probe run"):
        sw.export(empty, out)
    with pytest.raises(ConfigError) as exc:  # all option problems reported at once
        sw.export(empty, out, format="csv", policy="band", low=0.9, high=0.1, keep_mastered=-1)
    assert all(flag in str(exc.value) for flag in ("--format", "--low", "--keep-mastered"))
    assert not out.exists() and list(tmp_path.iterdir()) == [empty]


def test_several_runs_need_a_run_id(tmp_path):
    from stages_helpers import CONFIG

    path = tmp_path / "two.duckdb"
    build_store(path, [item(0, "wwww")])
    second = build_store(path, [item(0, "cwcw")], config=dict(CONFIG, model={"name": "other"}))
    with pytest.raises(ConfigError, match="--run-id"):
        sw.export(path, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    result = sw.export(path, tmp_path / "x", run_id=second)
    assert result.manifest["counts"]["splits"]["rl"] == 1


def test_cli_export_prints_summary(store, tmp_path):
    out = tmp_path / "export"
    res = CliRunner().invoke(cli, ["export", "--store", store, "--out", str(out), "--format", "verl"])
    assert res.exit_code == 0, res.output
    assert "buckets × stages" in res.output and "rl.parquet 8" in res.output


def _stagewise(*args):
    """The installed console script in a real subprocess: exit codes and stderr as a user sees them."""
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "stagewise")
    return subprocess.run([script, *map(str, args)], capture_output=True, text=True, timeout=300, check=False)


def test_exporting_again_reuses_the_same_options_refuses_other_ones_and_overwrite_replaces(store, tmp_path):
    out = tmp_path / "export"
    band = ["export", "--store", store, "--out", out, "--policy", "band", "--high", "0.9"]
    first = _stagewise(*band, "--low", "0.1")
    assert first.returncode == 0, first.stderr
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    same = _stagewise(*band, "--low", "0.1")
    assert same.returncode == 0, same.stderr
    assert f"{out}/ was exported earlier with the same options: reused it" in same.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written  # nothing rewritten

    other = _stagewise(*band, "--low", "0.6", "--format", "verl")
    assert other.returncode == 1 and other.stdout == ""
    assert "Traceback" not in other.stderr
    assert other.stderr.strip() == (f"Error: {out}/ was exported with format=trl, low=0.1, this run asks "
                                    "format=verl, low=0.6; pass --overwrite to replace it")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written  # refused: left as it was

    replaced = _stagewise(*band, "--low", "0.6", "--format", "verl", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "verl" and manifest["route"]["low"] == 0.6
    assert (out / "reward.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run.duckdb"]  # no temporary sibling


def test_a_probe_resumed_into_the_same_run_changes_what_an_export_reads(store, tmp_path):
    out = tmp_path / "export"
    first = sw.export(store, out)
    assert not first.reused
    again = sw.export(store, out)
    assert again.reused and again.manifest == first.manifest
    assert again.assignments.equals(first.assignments) and again.demos == first.demos
    assert again.summary.to_dict() == first.summary.to_dict()
    with ProbeStore(store) as st:  # one more sample of q00 in the same run
        st.add_samples(first.manifest["run_id"], [{"problem_id": "q00", "sample_idx": 4, "status": "wrong",
                                                   "completion": "It is \\boxed{999}", "score": 0.0}])
    from stagewise.curate.steps import OtherOptionsError

    with pytest.raises(OtherOptionsError, match=r"was exported with store\.samples=96, this run asks "
                                                r"store\.samples=97; pass --overwrite"):
        sw.export(store, out)


def test_an_overwrite_that_fails_midway_leaves_the_earlier_export_whole(store, tmp_path, monkeypatch):
    import stagewise.stages.export as export_mod

    out = tmp_path / "export"
    sw.export(store, out, policy="stage")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def half_written(tmp, *args, **kwargs):
        (tmp / "sft.parquet").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_mod, "_write_export", half_written)
    with pytest.raises(StorageError, match="no space left"):
        sw.export(store, out, policy="band", low=0.1, high=0.9, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run.duckdb"]


def test_one_real_trl_step_on_the_exported_files(store, tmp_path, tiny_model_dir):
    from stagewise.curate.verifiers import score
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    out = tmp_path / "export"
    sw.export(store, out)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    common = {"max_steps": 1, "per_device_train_batch_size": 2, "use_cpu": True, "bf16": False,
              "report_to": "none", "save_strategy": "no", "logging_steps": 1}

    sft = _load(out, "sft")
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), processing_class=tok,
                         train_dataset=sft, args=SFTConfig(output_dir=str(tmp_path / "sft"), max_length=256,
                                                           **common))
    assert trainer.train().global_step == 1

    seen = []

    def reward(completions, solution, task, meta, **kwargs):
        seen.extend(solution)
        return [score(c[0]["content"], {"answer": a, "task": t, "meta": m}).score
                for c, a, t, m in zip(completions, solution, task, meta)]

    rl = _load(out, "rl")
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), processing_class=tok,
                          reward_funcs=reward, train_dataset=rl,
                          args=GRPOConfig(output_dir=str(tmp_path / "rl"), num_generations=2,
                                          max_completion_length=8, **common))
    assert trainer.train().global_step == 1
    assert seen and set(seen) <= set(rl["solution"])
    assert Path(out / "rl.parquet").exists()


def test_reasoning_gym_items_carry_their_entry_and_score_through_reward_py(tmp_path):
    from stagewise.curate.prompts import RG_SYSTEM_PROMPT

    problems = list(sw.load_problems("rg:basic_arithmetic?size=3&seed=1"))
    path = tmp_path / "rg.duckdb"
    with ProbeStore(path) as st:
        st.add_problems(problems)
        run_id = st.start_run({"model": {"name": "tiny"}, "sampling": {"temperature": 1.0},
                               "system_prompt": None, "prompt_template": None, "num_samples": 2, "seed": 0})
        st.add_samples(run_id, [{"problem_id": p.id, "sample_idx": k, "status": s,
                                 "completion": f"<answer>{p.answer if s == 'correct' else 'x'}</answer>"}
                                for p in problems for k, s in enumerate(("correct", "wrong"))])
    out = tmp_path / "verl"
    sw.export(path, out, format="verl", demos="samples", policy="all")
    rows = pq.read_table(out / "rl.parquet").to_pylist()
    assert len(rows) == 3 and rows[0]["prompt"][0] == {"role": "system", "content": RG_SYSTEM_PROMPT}
    assert all("rg_entry" in json.loads(r["extra_info"]["meta"]) for r in rows)
    assert rows[0]["ability"] == "reasoning" and rows[0]["data_source"] == "stagewise/rg:basic_arithmetic"
    sft = pq.read_table(out / "sft.parquet").to_pylist()
    assert len(sft) == 3 and all(r["messages"][-1]["content"].startswith("<answer>") for r in sft)

    spec = importlib.util.spec_from_file_location("verl_reward_rg", out / "reward.py")
    reward = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reward)
    r = rows[0]
    gold = r["reward_model"]["ground_truth"]
    assert reward.compute_score(r["data_source"], f"<answer>{gold}</answer>", gold, r["extra_info"]) == 1.0
    assert reward.compute_score(r["data_source"], "<answer>nope</answer>", gold, r["extra_info"]) == 0.0


# ------------------------------------------------------------------------------------------ SFT replay

def test_sft_replay_makes_up_the_asked_share_of_sft_marked_counted_and_never_held_out(store, tmp_path):
    import polars as pl

    out = tmp_path / "export"
    result = sw.export(store, out, keep_mastered=2, sft_replay=0.3, heldout=["q16"])
    sft = pl.read_parquet(out / "sft.parquet")
    replay_rows = sft.filter(pl.col("stage") == "replay-sft")
    # 7 routed SFT rows; round(0.3 * 7 / 0.7) = 3 replay rows: 3 / 10 = 30% of sft.parquet
    assert len(sft) == 10 and len(replay_rows) == 3
    assert result.manifest["counts"]["sft_replay"] == 3
    assert result.manifest["demonstrations"]["sft_replay"]["achieved"] == 0.3
    assert all(r.startswith("4/4 correct: mastered item replayed in SFT (--sft-replay 0.3)")
               for r in replay_rows["reason"].to_list())
    assert all(json.loads(p)["sft_replay"] is True for p in replay_rows["demo_provenance"].to_list())
    assert set(replay_rows["demo_source"].to_list()) == {"samples"}  # the model's own verified samples
    forgetting = set(pl.read_parquet(out / "replay.parquet")["id"].to_list())
    assert len(forgetting) == 2 and not forgetting & set(replay_rows["id"].to_list())
    assert "q16" not in replay_rows["id"].to_list()
    stages = dict(zip(result.assignments["id"].to_list(), result.assignments["stage"].to_list()))
    assert {stages[i] for i in replay_rows["id"].to_list()} == {"replay-sft"}
    card = (out / "README.md").read_text()
    assert "## SFT replay" in card and all(f"`{i}`" in card for i in replay_rows["id"].to_list())


def test_sft_replay_short_of_items_writes_what_exists_and_warns_with_the_numbers(store, tmp_path):
    result = sw.export(store, tmp_path / "export", keep_mastered=2, sft_replay=0.9)
    assert result.manifest["counts"]["sft_replay"] == 6  # 8 mastered - 2 kept to measure forgetting
    warning = next(w for w in result.manifest["warnings"] if "--sft-replay 0.9" in w)
    assert "asked for 63 replay rows beside 7 SFT rows, but only 6 items" in warning


def test_sft_replay_from_partial_keeps_those_items_in_rl_too(store, tmp_path):
    import polars as pl

    out = tmp_path / "export"
    sw.export(store, out, sft_replay=0.5, sft_replay_from="mastered,partial", seed=1)
    sft = pl.read_parquet(out / "sft.parquet").filter(pl.col("stage") == "replay-sft")
    assert len(sft) == 7
    rl_ids = set(pl.read_parquet(out / "rl.parquet")["id"].to_list())
    replayed_partial = [i for i, b in zip(sft["id"].to_list(), sft["bucket"].to_list()) if b == "partial"]
    assert replayed_partial and set(replayed_partial) <= rl_ids and len(rl_ids) == 8


def test_cli_export_takes_sft_replay_and_a_bad_fraction_is_one_clear_error(store, tmp_path):
    res = CliRunner().invoke(cli, ["export", "--store", store, "--out", str(tmp_path / "e"), "--sft-replay", "0.3"])
    assert res.exit_code == 0, res.output
    assert "sft replay: 3 rows (30% of sft.parquet, asked 0.3) marked stage = replay-sft" in res.output
    bad = CliRunner().invoke(cli, ["export", "--store", store, "--out", str(tmp_path / "f"), "--sft-replay", "1"])
    assert bad.exit_code == 1 and "--sft-replay 1 is outside [0, 1)" in bad.output and "Traceback" not in bad.output


def test_truncated_exclude_is_recorded_and_the_card_shows_the_cut_off_share(tmp_path):
    path = tmp_path / "t.duckdb"
    build_store(path, [item(0, "wttt"), item(1, "cwtt"), item(2, "cccc"), item(3, "wwww")])
    result = sw.export(str(path), tmp_path / "export", truncated="exclude")
    assert result.manifest["route"]["truncated"] == "exclude"
    assert result.manifest["counts"]["truncation"]["partial"] == {"samples": 4, "truncated": 2, "rate": 0.5}
    assert any("cut off at max_new_tokens (the probe ran with --max-new-tokens 32)" in w
               for w in result.manifest["warnings"])
    card = (tmp_path / "export" / "README.md").read_text()
    assert "excluded from n (`--truncated exclude`)" in card
# ------------------------------------------------- decontamination, samples.parquet, pooled runs, order


def test_contaminated_items_go_to_unrouted_with_their_reason_and_are_counted(store, tmp_path):
    bench = tmp_path / "bench.jsonl"
    # q09 ("What is 1 + 10?") is partial: it would go to RL; q20 is mastered
    bench.write_text("".join(json.dumps({"question": q, "answer": "0"}) + "\n"
                             for q in ("What is 1 + 10?", "What is 1 + 21?")))
    out = tmp_path / "export"
    res = sw.export(store, out, keep_mastered=8, decontaminate=[str(bench)])
    unrouted = {r["id"]: r for r in pq.read_table(out / "unrouted.parquet").to_pylist()}
    label = f"{tmp_path.name}/bench"
    assigned = {r["id"]: r for r in pq.read_table(out / "assignments.parquet").to_pylist()}
    assert assigned["q09"]["stage"] == "unrouted" and assigned["q09"]["bucket"] == "partial"
    assert assigned["q09"]["reason"] == f"contaminated: 8-gram overlap with {label}#0"
    assert assigned["q20"]["reason"] == f"contaminated: 8-gram overlap with {label}#1"
    assert {"q09", "q20"} <= set(unrouted)
    assert "q09" not in {r["id"] for r in pq.read_table(out / "rl.parquet").to_pylist()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["contaminated"] == 2 and res.manifest["counts"]["contaminated"] == 2
    assert manifest["route"]["decontaminate"]["against"] == ["bench.jsonl"]
    assert manifest["route"]["decontaminate"]["ngram"] == 8
    assert "2 items left out" in (out / "README.md").read_text()
    assert str(tmp_path) not in (out / "manifest.json").read_text()


def test_a_bad_benchmark_spec_writes_nothing(store, tmp_path):
    with pytest.raises(InputError, match="not found"):
        sw.export(store, tmp_path / "export", decontaminate=[str(tmp_path / "missing.jsonl")])
    assert not (tmp_path / "export").exists()


def test_with_samples_writes_every_sample_of_the_run(store, tmp_path):
    out = tmp_path / "export"
    res = sw.export(store, out, with_samples=True)
    samples = pq.read_table(out / "samples.parquet")
    assert samples.column_names == ["id", "run_id", "sample_idx", "completion", "extracted", "score", "status",
                                    "finish_reason"]
    assert samples.num_rows == 24 * 4 and len(set(samples.column("id").to_pylist())) == 24
    assert res.manifest["files"]["samples.parquet"]["rows"] == 96 and res.manifest["counts"]["samples"] == 96
    assert not (tmp_path / "plain").exists() and "samples.parquet" not in \
        sw.export(store, tmp_path / "plain").manifest["files"]


def test_pooled_runs_and_curriculum_order_reach_the_splits(tmp_path):
    from stages_helpers import CONFIG

    path = tmp_path / "two.duckdb"
    a = build_store(path, [item(i, "wc") for i in range(4)])
    b = build_store(path, [item(i, ["cc", "wc", "ww", "wc"][i]) for i in range(4)], config=dict(CONFIG, seed=5))
    out = tmp_path / "export"
    res = sw.export(str(path), out, runs=f"{a},{b}", order="p_hat-desc", by_model=True)
    rl = [r["id"] for r in pq.read_table(out / "rl.parquet").to_pylist()]
    assert rl == ["q00", "q01", "q03", "q02"]  # p̂ 3/4, then 2/4 (ties by id), then 1/4
    assigned = pq.read_table(out / "assignments.parquet").to_pylist()
    assert [r["n"] for r in assigned] == [4, 4, 4, 4] and "p_hat:tiny-probe" in assigned[0]
    assert res.manifest["run_id"] == f"{a},{b}" and res.manifest["route"]["runs"] == [a, b]
    same_seed = build_store(path, [item(0, "c")], config=dict(CONFIG, num_samples=1))
    with pytest.raises(ConfigError, match="same samples"):
        sw.export(str(path), tmp_path / "bad", runs=[a, same_seed])
    assert not (tmp_path / "bad").exists()


def test_cli_export_decontaminates_and_writes_samples(store, tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "What is 1 + 10?", "answer": "0"}) + "\n")
    out = tmp_path / "export"
    res = CliRunner().invoke(cli, ["export", "--store", store, "--out", str(out), "--decontaminate", str(bench),
                                   "--with-samples", "--order", "p_hat-asc"])
    assert res.exit_code == 0, res.output
    assert "left out 1 items overlapping" in res.output and (out / "samples.parquet").exists()


@pytest.mark.parametrize("fmt", ["trl", "verl"])
def test_splits_streamed_in_small_chunks_hold_the_same_rows_as_one_write(store, tmp_path, monkeypatch, fmt):
    from stagewise.stages import export as export_mod

    whole = sw.export(store, tmp_path / "whole", format=fmt, keep_mastered=2)
    monkeypatch.setattr(export_mod, "_CHUNK_ROWS", 2)  # every split of this store spans several writes
    chunked = sw.export(store, tmp_path / "chunked", format=fmt, keep_mastered=2)
    written = [s for s in SPLITS if (tmp_path / "whole" / f"{s}.parquet").exists()]
    assert {"sft", "rl", "replay"} <= set(written)
    for split in written:
        a = pq.read_table(tmp_path / "whole" / f"{split}.parquet")
        b = pq.read_table(tmp_path / "chunked" / f"{split}.parquet")
        assert a.schema == b.schema and a.to_pylist() == b.to_pylist()  # verl's extra_info.index included
        assert pq.ParquetFile(tmp_path / "chunked" / f"{split}.parquet").num_row_groups == -(-a.num_rows // 2)
        for result, folder in ((whole, "whole"), (chunked, "chunked")):
            entry = result.manifest["files"][f"{split}.parquet"]
            assert entry["rows"] == a.num_rows
            assert entry["arrow_bytes"] == pq.read_table(tmp_path / folder / f"{split}.parquet").nbytes
    assert whole.manifest["counts"] == chunked.manifest["counts"]
    assert whole.assignments.equals(chunked.assignments)
