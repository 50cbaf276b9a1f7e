"""The export contract: an export directory is self-contained, checked, and holds no absolute path."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import stagewise as sw
from stagewise.cli import cli
from stagewise.curate.backends.hf import HFBackend
from stagewise.curate.errors import InputError
from stagewise.curate.paths import absolute_paths, portable, portable_name
from stagewise.curate.prompts import RG_SYSTEM_PROMPT
from stagewise.stages.contract import ExportManifest, read_manifest
from stagewise.train.data import load_rl_rows, load_sft_rows, open_export
from stagewise.train.stage_eval import evaluate_checkpoint, export_problems


@pytest.fixture(scope="module")
def mixed_export(tmp_path_factory, tiny_model_dir, repo_data_dir):
    """A real probe of a mixed pool (GSM8K rows, which get no system prompt, and reasoning-gym rows,
    which get reasoning-gym's), exported, then moved elsewhere with the probe store deleted."""
    root = tmp_path_factory.mktemp("contract")
    store = root / "probe.duckdb"
    with open(os.path.join(repo_data_dir, "gsm8k", "train_head500.jsonl")) as fh:
        (root / "train_head4.jsonl").write_text("".join(next(fh) for _ in range(4)))
    sw.probe([f"gsm8k:{root / 'train_head4.jsonl'}", "rg:chain_sum?size=4&seed=3"], model=tiny_model_dir,
             store=str(store), num_samples=2, max_new_tokens=4, progress=False)
    sw.export(str(store), root / "export", keep_mastered=0)
    moved = root / "elsewhere" / "copied-export"
    shutil.copytree(root / "export", moved)
    shutil.rmtree(root / "export")
    store.unlink()
    return moved


def test_a_moved_export_asks_each_item_exactly_what_the_probe_asked(mixed_export):
    export = open_export(mixed_export)
    problems, bucket_of = export_problems(export)
    rows = {r["id"]: r for r in pq.read_table(mixed_export / "sft.parquet").to_pylist()}
    assert len(problems) == len(rows) == 8 and set(bucket_of.values()) == {"unmastered"}
    systems = set()
    for p in problems:
        assert p.messages == rows[p.id]["prompt"]  # the exact prompt, item by item
        assert p.prompt == rows[p.id]["question"] and p.task == rows[p.id]["task"]
        systems.add(next((m["content"] for m in p.messages if m["role"] == "system"), None))
    assert systems == {None, RG_SYSTEM_PROMPT}  # two families, two prompts: no first-item fallback
    formats = {r["task"].split(":")[0]: r["answer_format"] for r in rows.values()}
    assert formats == {"gsm8k": "boxed", "rg": "tags"}


def test_the_probe_sends_an_exported_item_its_own_messages(mixed_export, tiny_model_dir):
    class RecordingHF(HFBackend):
        def generate_stream(self, requests):
            self.sent = getattr(self, "sent", []) + [r.messages for r in requests]
            yield from super().generate_stream(requests)

    problems, _ = export_problems(open_export(mixed_export))
    backend = RecordingHF(tiny_model_dir, batch_size=8)
    sw.probe(problems, model=tiny_model_dir, backend=backend, store=":memory:", num_samples=1, max_new_tokens=2,
             system_prompt="IGNORED", prompt_template="IGNORED {prompt}", progress=False)
    assert sorted(map(json.dumps, backend.sent)) == sorted(json.dumps(p.messages) for p in problems)


def test_a_moved_export_evaluates_and_trains_with_the_probe_store_gone(mixed_export, tiny_model_dir, tmp_path):
    export = open_export(mixed_export)
    ev = evaluate_checkpoint(tiny_model_dir, "before", export=export, num_samples=1, ks=(1,), max_new_tokens=2)
    groups = {r.group for r in ev.rows if r.set == "export items"}
    assert "unmastered" in groups
    res = sw.train_pipeline(mixed_export, tiny_model_dir, tmp_path / "train", reprobe=True,
                            sft={"max_steps": 1, "batch_size": 2}, rl={"max_steps": 1, "batch_size": 2,
                                                                     "num_generations": 2},
                            eval={"enabled": False}, progress=False)
    assert res.sft.global_step == 1
    assert (tmp_path / "train" / "transitions.parquet").exists()  # the re-probe ran from the rows alone


def test_the_manifest_holds_no_absolute_path(mixed_export):
    text = (mixed_export / "manifest.json").read_text()
    manifest = json.loads(text)
    assert absolute_paths(manifest) == []
    assert str(mixed_export.parent.parent) not in text and "probe.duckdb" not in text
    assert manifest["model"]["name"] == "tiny-model0" and len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["probe"]["data"][0] == "gsm8k:train_head4.jsonl"
    assert read_manifest(mixed_export).run_id == manifest["run_id"]


def test_a_split_without_task_is_refused_naming_file_and_column(mixed_export, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(mixed_export, broken)
    table = pq.read_table(broken / "sft.parquet")
    pq.write_table(table.drop_columns(["task"]), broken / "sft.parquet")
    with pytest.raises(InputError) as exc:
        load_sft_rows(open_export(broken, verify=False))  # tampered on purpose: past the integrity check
    assert "sft.parquet" in str(exc.value) and "column 'task'" in str(exc.value)
    out = CliRunner().invoke(cli, ["train", "--data", str(broken), "--model", "x", "--out", str(tmp_path / "o"),
                                   "--no-verify"])
    assert out.exit_code == 1 and "column 'task'" in out.output and "Traceback" not in out.output


def test_a_row_with_an_empty_task_is_refused_with_its_line(tmp_path):
    from train_helpers import make_export, rl_row

    data = make_export(tmp_path / "export", rl=[("q", "7")])
    rows = [rl_row(0, "q", "7"), dict(rl_row(1, "r", "8"), task="")]
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "export" / "rl.parquet")
    with pytest.raises(InputError, match=r"rl.parquet, line 2, column 'task'"):
        load_rl_rows(open_export(data))


def test_a_manifest_of_another_version_is_refused(tmp_path):
    (tmp_path / "sft.parquet").write_bytes(b"")
    (tmp_path / "manifest.json").write_text(json.dumps({"stagewise_export": 1, "format": "trl"}))
    with pytest.raises(InputError, match="version 1"):
        open_export(tmp_path)
    with pytest.raises(InputError, match="missing"):
        ExportManifest.from_dict({"stagewise_export": 2, "format": "trl"})


def test_paths_become_base_names_and_urls_stay():
    assert portable_name("/home/u/models/tiny") == "tiny" and portable_name("org/model") == "org/model"
    value = {"data": ["gsm8k:/data/sets/train.jsonl", "rg:chain_sum?size=4"], "url": "http://127.0.0.1:8000/v1"}
    assert portable(value) == {"data": ["gsm8k:train.jsonl", "rg:chain_sum?size=4"],
                               "url": "http://127.0.0.1:8000/v1"}
    assert absolute_paths(value) == ["/data/sets/train.jsonl"]
