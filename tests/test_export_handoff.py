"""What a trainer meets in an export: no unreadable empty file, labels that carry the verifier, the
shipped reward files on the safe scoring path, and an integrity check before training."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from stages_helpers import build_store, item, mixed_items
from stagewise.curate.errors import InputError

import stagewise as sw
from stagewise.cli import cli
from stagewise.train.data import load_sft_rows, open_export

HANG = "so the answer is \\boxed{9^{9^{9^{9}}}}"


def _export(tmp_path, fmt="trl", items=None, name="export"):
    store = tmp_path / f"{name}.duckdb"
    build_store(store, items if items is not None else mixed_items())
    out = tmp_path / name
    sw.export(str(store), str(out), format=fmt, policy="stage")
    return out


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_empty_split_has_no_file_and_the_manifest_and_card_say_why(tmp_path):
    import datasets

    out = _export(tmp_path, items=[item(i, "wwww") for i in range(4)])  # no partial items: RL is empty
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["splits"]["rl"] == 0 and not (out / "rl.parquet").exists()
    assert "0 rows" in manifest["omitted"]["rl.parquet"]
    assert "`omitted`" in (out / "README.md").read_text()
    with pytest.raises(ValueError):  # no config for it: `datasets` says so instead of failing to read a file
        datasets.load_dataset(str(out), "rl", split="train")
    assert len(datasets.load_dataset(str(out), "sft", split="train")) == 4
    runner = CliRunner().invoke(cli, ["train", "rl", "--data", str(out), "--out", str(tmp_path / "o")])
    assert runner.exit_code == 1 and "rl split is empty" in runner.output


def _validation_items():
    """60 unmastered, 44 partial and 8 mastered items: SFT and RL both large enough to spare a slice."""
    return ([item(i, "wwww") for i in range(60)] + [item(i, "cwcw") for i in range(60, 104)]
            + [item(i, "cccc") for i in range(104, 112)])


def _ids(path):
    return set(pq.read_table(path, columns=["id"])["id"].to_pylist())


def _val_export(tmp_path, name="export", **kw):
    store = tmp_path / "val.duckdb"
    if not store.exists():
        build_store(store, _validation_items())
    out = tmp_path / name
    return out, sw.export(str(store), str(out), policy="stage", **kw)


def test_a_seeded_slice_of_sft_and_rl_items_is_held_out_into_validation_files_beside_training(tmp_path):
    import datasets
    from stagewise.stages.contract import read_split, sha256_file

    out, result = _val_export(tmp_path)
    m = result.manifest
    # one item in twenty: 60 SFT items -> 3 held out, 44 RL items -> 2
    assert {s: m["counts"]["splits"][s] for s in ("sft", "sft_val", "rl", "rl_val")} == \
        {"sft": 57, "sft_val": 3, "rl": 42, "rl_val": 2}
    for name, rows in (("sft_val.parquet", 3), ("rl_val.parquet", 2)):
        assert m["files"][name]["rows"] == rows and m["files"][name]["sha256"] == sha256_file(out / name)
        assert name not in m["omitted"]
    assert pq.read_schema(out / "sft_val.parquet") == pq.read_schema(out / "sft.parquet")
    assert pq.read_schema(out / "rl_val.parquet") == pq.read_schema(out / "rl.parquet")
    held, trained = _ids(out / "sft_val.parquet"), _ids(out / "sft.parquet")
    assert not held & trained and held | trained == {f"q{i:02d}" for i in range(60)}
    assert not _ids(out / "rl_val.parquet") & _ids(out / "rl.parquet")
    reasons = dict(zip(result.assignments["id"].to_list(), result.assignments["reason"].to_list()))
    assert all("held out of sft.parquet into sft_val.parquet for validation" in reasons[i] for i in held)
    assert len(read_split(out / "sft_val.parquet", format="trl")) == 3  # checked as SFT rows
    # `datasets` sees them as the `validation` split of the sft and rl configs
    sft = datasets.load_dataset(str(out), "sft", cache_dir=str(tmp_path / "hf-cache"))
    assert {k: len(v) for k, v in sft.items()} == {"train": 57, "validation": 3}
    assert set(sft["validation"]["id"]) == held
    rl_val = datasets.load_dataset(str(out), "rl", split="validation", cache_dir=str(tmp_path / "hf-cache"))
    assert len(rl_val) == 2
    card = (out / "README.md").read_text()
    assert "`sft` split `validation` (`sft_val.parquet`) | 3" in card
    # the same seed draws the same slice; another seed another one
    again, _ = _val_export(tmp_path, "again")
    other, _ = _val_export(tmp_path, "other", seed=1)
    assert _ids(again / "sft_val.parquet") == held and _ids(other / "sft_val.parquet") != held


def test_verl_validation_rows_say_which_file_they_are_in_and_load_as_training_rows_do(tmp_path):
    from stagewise.stages.contract import item_problem

    out, _ = _val_export(tmp_path, format="verl")
    rows = pq.read_table(out / "rl_val.parquet").to_pylist()
    assert [r["extra_info"]["split"] for r in rows] == ["rl_val", "rl_val"]
    assert [r["extra_info"]["index"] for r in rows] == [0, 1]
    sft_val = pq.read_table(out / "sft_val.parquet").to_pylist()
    problem = item_problem(sft_val[0], format="verl", split="sft_val")
    assert problem.id == sft_val[0]["id"] and problem.messages[-1]["role"] == "user"


def test_sft_replay_never_takes_a_held_out_item_and_keeps_its_share_of_the_final_sft_file(tmp_path):
    import polars as pl

    out, result = _val_export(tmp_path, sft_replay=0.1)
    sft = pl.read_parquet(out / "sft.parquet")
    replayed = set(sft.filter(pl.col("stage") == "replay-sft")["id"].to_list())
    assert replayed and not replayed & (_ids(out / "sft_val.parquet") | _ids(out / "rl_val.parquet"))
    # 57 routed SFT rows stay in sft.parquet: round(0.1 * 57 / 0.9) = 6 replay rows beside them
    sizing = result.manifest["demonstrations"]["sft_replay"]
    assert len(replayed) == sizing["taken"] == 6 and len(sft) == 63
    assert sizing["achieved"] == round(6 / 63, 4)


def test_validation_off_keeps_every_item_in_its_training_file(tmp_path):
    out, result = _val_export(tmp_path, validation=False)
    assert result.manifest["counts"]["splits"]["sft"] == 60 and result.manifest["counts"]["splits"]["rl"] == 44
    assert not (out / "sft_val.parquet").exists() and not (out / "rl_val.parquet").exists()
    assert "validation off" in result.manifest["omitted"]["sft_val.parquet"]


def test_a_split_too_small_to_spare_a_validation_slice_keeps_every_row_and_the_manifest_says_why(tmp_path):
    out = _export(tmp_path)  # 8 SFT and 8 RL items
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["splits"]["sft"] == 8 and manifest["counts"]["splits"]["sft_val"] == 0
    assert not (out / "sft_val.parquet").exists() and not (out / "rl_val.parquet").exists()
    why = manifest["omitted"]["sft_val.parquet"]
    assert "8 items routed to sft are too few" in why and "40 or more items" in why
    card = (out / "README.md").read_text()
    assert "SFT items held out for validation (never in `sft.parquet`) (none: 8 items routed to sft" in card


def test_stagewise_train_uses_the_exports_validation_file_as_its_held_out_sft_rows(tmp_path, tiny_model_dir):
    from stagewise.train.two_stage import train

    out, _ = _val_export(tmp_path)
    res = train(str(out), tiny_model_dir, tmp_path / "run", stages=("sft",), dry_run=True, progress=False,
                eval={"enabled": False, "sft_holdout": 0.1})
    # every row of sft.parquet trains; sft_val.parquet's 3 rows are the held-out ones (no second hold-out)
    assert res.sft.config["n_train"] == 57 and res.sft.config["n_sft_eval"] == 3
    table = pq.read_table(out / "sft_val.parquet")
    pq.write_table(table.slice(0, 2), out / "sft_val.parquet")
    with pytest.raises(InputError, match="sft_val.parquet was modified after export"):
        train(str(out), tiny_model_dir, tmp_path / "run2", stages=("sft",), dry_run=True, progress=False,
              eval={"enabled": False, "sft_holdout": 0.1})


def test_a_split_cut_after_export_stops_training_with_one_message(tmp_path):
    out = _export(tmp_path)
    table = pq.read_table(out / "sft.parquet")
    pq.write_table(table.slice(0, table.num_rows // 2), out / "sft.parquet")
    result = CliRunner().invoke(cli, ["train", "sft", "--data", str(out), "--model", "x", "--out",
                                      str(tmp_path / "o"), "--dry-run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (f"{out / 'sft.parquet'} was modified after export (sha256 and rows differ from manifest.json); "
            "re-export, or pass --no-verify") in " ".join(result.output.split())
    with pytest.raises(InputError, match="was modified after export"):
        load_sft_rows(open_export(out))
    assert len(load_sft_rows(open_export(out, verify=False))) == table.num_rows // 2


def test_no_verify_trains_on_a_modified_split_and_the_run_records_it(tmp_path, tiny_model_dir):
    out = _export(tmp_path)
    table = pq.read_table(out / "sft.parquet")
    pq.write_table(table.slice(0, table.num_rows - 1), out / "sft.parquet")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "sft", "--data", str(out), "--model", tiny_model_dir, "--out",
                                      str(run), "--dry-run", "--no-verify"])
    assert result.exit_code == 0, result.output
    assert "verify_export: false" in (run / "config.yaml").read_text()


def test_openrlhf_labels_carry_answer_task_and_meta(tmp_path):
    out = _export(tmp_path, fmt="openrlhf")
    rows = pq.read_table(out / "rl.parquet").to_pylist()
    labels = [json.loads(r["label"]) for r in rows]
    assert all(set(lab) == {"answer", "task", "meta"} and lab["task"] == r["task"] for lab, r in zip(labels, rows))
    assert (out / "reward_func.py").exists() and not (out / "reward.py").exists()


def test_verls_reward_from_four_threads_on_a_pathological_answer_returns_zero_within_30_seconds(tmp_path):
    from stagewise.curate.verifiers.safe import close_shared_pools

    out = _export(tmp_path, fmt="verl", items=[item(0, "cwcw", task="math", answer="3")])
    reward = _load(out / "reward.py", "verl_reward")
    row = pq.read_table(out / "rl.parquet").to_pylist()[0]
    close_shared_pools()  # the 30 s include starting the verifier workers
    scores = {}

    def call(n):
        scores[n] = reward.compute_score(row["data_source"], HANG, "3", row["extra_info"])

    started = time.monotonic()
    threads = [threading.Thread(target=call, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, 30 - (time.monotonic() - started)))
    assert scores == {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}, f"{len(scores)}/4 returned in {time.monotonic() - started:.0f}s"
    assert reward.compute_score(row["data_source"], "so \\boxed{3}", "3", row["extra_info"]) == 1.0
    assert reward.compute_score(row["data_source"], "so \\boxed{4}", "3", row["extra_info"]) == 0.0


def test_openrlhfs_reward_func_through_asyncio_to_thread_returns_zero_within_30_seconds(tmp_path):
    out = _export(tmp_path, fmt="openrlhf", items=[item(0, "cwcw", task="math", answer="3")])
    reward_func = _load(out / "reward_func.py", "orl_reward").reward_func
    label = pq.read_table(out / "rl.parquet").to_pylist()[0]["label"]
    prompt = "<|user|>What is 1 + 2?<|assistant|>"

    async def main():  # as OpenRLHF calls it: one rollout per asyncio.to_thread call
        jobs = [asyncio.to_thread(reward_func, [prompt + text], [prompt], [label])
                for text in [HANG] * 4 + ["so \\boxed{3}", "so \\boxed{4}"]]
        return await asyncio.wait_for(asyncio.gather(*jobs), timeout=30)

    results = asyncio.run(main())
    assert [float(r["rewards"][0]) for r in results] == [0.0] * 4 + [1.0, 0.0]
    assert float(results[0]["extra_logs"]["verifier_timeout"][0]) == 1.0
