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
