"""A full disk or an unwritable folder: one message naming the path (exit 1, no traceback), nothing partial."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
from stagewise.curate.errors import StorageError, storage_error, writing

HERE = os.path.dirname(os.path.abspath(__file__))
TASK = "probe_helpers:parity"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        # Leave 16 KiB free: enough to create a store, not to fill it.
        with open(mount / "filler", "wb") as f:
            f.write(b"\0" * (48 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_and_a_denied_folder_become_one_message_naming_the_path():
    full = storage_error(OSError(errno.ENOSPC, "No space left on device"), "/data/out", option="--out")
    assert str(full) == ("cannot write /data/out: no space left on the device; free space there, or write to "
                         "another disk with --out")
    denied = storage_error(PermissionError(errno.EACCES, "Permission denied", "/data/out/x.parquet"), "/data/out")
    assert str(denied).startswith("cannot write /data/out/x.parquet: permission denied")
    assert storage_error(OSError(errno.ENOENT, "No such file"), "/data/out") is None
    with pytest.raises(KeyError):  # anything else passes through untouched
        with writing("/s.duckdb"):
            raise KeyError("x")


def test_a_library_error_without_errno_on_a_full_disk_is_recognised_by_asking_the_disk(tiny_disk):
    # DuckDB and torch.save report a full disk in words only; the disk itself is asked instead.
    with open(tiny_disk / "rest", "wb") as f:
        try:
            f.write(b"\0" * (64 * 1024))
        except OSError:
            pass
    with pytest.raises(StorageError, match=f"cannot write {tiny_disk / 's.duckdb'}: no space left"):
        with writing(tiny_disk / "s.duckdb"):
            raise RuntimeError("IO Error: Could not write file")


def _write_problems(path, n=6):
    path.write_text("".join(json.dumps({"question": f"Question {i}: what comes after {i}?", "answer": str(i + 1)})
                            + "\n" for i in range(n)))


def _probe_cli(tiny_model_dir, data, store):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "stagewise.cli", "probe", str(data), "--task", TASK,
                           "--model", tiny_model_dir, "--store", str(store), "-k", "4", "--max-new-tokens", "24",
                           "--batch-size", "4", "--no-progress"],
                          capture_output=True, text=True, timeout=600, env=env)


def test_probe_onto_a_full_disk_says_so_in_one_line_naming_the_store(tiny_model_dir, tmp_path, tiny_disk):
    data = tmp_path / "toy.jsonl"
    _write_problems(data, 40)
    store = tiny_disk / "run.duckdb"
    out = _probe_cli(tiny_model_dir, data, store)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert f"cannot write {store}" in out.stderr and "no space left on the device" in out.stderr
    assert "--store" in out.stderr


def test_probe_into_a_store_it_may_not_write_names_the_store(tiny_model_dir, tmp_path, monkeypatch):
    # Root ignores permission bits, so the denial is simulated at the store's write.
    from stagewise.curate.store import ProbeStore

    import stagewise as sw
    from stagewise.curate.schema import Problem

    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ProbeStore, "add_samples", denied)
    monkeypatch.syspath_prepend(HERE)
    store = tmp_path / "run.duckdb"
    problems = [Problem(prompt=f"Question {i}?", answer=str(i), task=TASK, source="toy") for i in range(2)]
    with pytest.raises(StorageError, match=f"cannot write {store}: permission denied.*--store"):
        sw.probe(problems, model=tiny_model_dir, store=str(store), num_samples=2, max_new_tokens=6, batch_size=2,
                 progress=False, backend_args={"threads": 1})


def test_sft_on_a_full_disk_names_out_and_leaves_no_half_written_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    from stagewise.train.sft import train_sft
    from train_helpers import MEMO, make_export

    data = make_export(tmp_path / "export", sft=MEMO)
    out = tmp_path / "out"

    def save_then_fill_the_disk(trainer, tok, out_dir):
        # a half-written checkpoint and final model, then the disk fills up
        (out_dir / "checkpoints" / "checkpoint-3").mkdir(parents=True)
        (out_dir / ".model.tmp1").mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")

    import stagewise.train.common as recipe_skeleton  # every recipe saves through RecipeRun.train

    monkeypatch.setattr(recipe_skeleton, "save_final", save_then_fill_the_disk)
    with pytest.raises(StorageError, match=f"cannot write {out}: no space left on the device.*--out"):
        train_sft(data, tiny_model_dir, out, max_steps=2, batch_size=4, progress=False, save_steps=1000)
    assert not (out / "checkpoints" / "checkpoint-3").exists()
    assert not list(out.glob(".model.tmp*"))
    assert not (out / "train.done.json").exists()
