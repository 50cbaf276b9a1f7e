"""Two training processes on the CPU: `accelerate launch --multi_gpu --num_processes 2 -m stagewise.cli train ...`.

accelerate's torchrun launcher starts two ranks; the trainer's use_cpu makes them join over gloo (DDP on
CPU). Each recipe runs 2 steps; rank 0 alone writes metrics, checkpoints, the model and the report.
About a minute per launch on 2 cores, so these run with `make test-multiproc` (marker `multiproc`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from train_helpers import make_export

pytestmark = pytest.mark.multiproc

PROBE = {"sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 2},
         "system_prompt": None, "prompt_template": "{prompt}", "model": "tiny"}
SFT_ITEMS = [(f"s{i}", "7") for i in range(8)]
RL_ITEMS = [(f"q{i}", "7") for i in range(8)]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("mp") / "export", sft=SFT_ITEMS, rl=RL_ITEMS, probe=PROBE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "stagewise.cli", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def _records(out_dir):
    return [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]


def _check_written_once(out_dir, stdout, stage, steps=2):
    done = json.loads((out_dir / "train.done.json").read_text())["result"]
    assert done["processes"] == 2 and done["global_step"] == steps
    assert (out_dir / "model" / "model.safetensors").exists()
    # one record per logged step: rank 1 wrote nothing
    step_logs = [r["step"] for r in _records(out_dir) if "loss" in r]
    assert step_logs == sorted(set(step_logs)) and step_logs[-1] == steps
    assert stdout.count(f"{stage}: {steps} steps") == 1  # one report, from rank 0
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".model.tmp")]


@pytest.mark.parametrize("recipe", [["sft"], ["rl", "--num-generations", "4"],
                                    ["joint", "--mode", "weighted", "--num-generations", "4"]],
                         ids=["sft", "rl", "joint-weighted"])
def test_two_processes_train_two_steps_and_rank_0_writes_once(export, tiny_model_dir, tmp_path, recipe):
    out = tmp_path / recipe[0]
    res = launch(*recipe, "--data", export, "--model", tiny_model_dir, "--out", str(out), "--max-steps", "2",
                 "--batch-size", "4")
    stage = {"sft": "sft", "rl": "rl", "joint": "joint-weighted"}[recipe[0]]
    _check_written_once(out, res.stdout, stage)
    if recipe[0] == "sft":
        # 8 demonstrations, 4 per rank per step: both ranks consumed data, so one step is a whole epoch
        first = next(r for r in _records(out) if "loss" in r)
        assert first["epoch"] == pytest.approx(1.0)


def test_relift_under_two_processes_checkpoints_its_buffer_and_resumes_it(export, tiny_model_dir, tmp_path):
    out = tmp_path / "relift"
    common = ["joint", "--mode", "relift", "--data", export, "--model", tiny_model_dir, "--out", str(out),
              "--batch-size", "4", "--num-generations", "4", "--buffer-size", "6", "--set", "save_steps=1"]
    res = launch(*common, "--max-steps", "2")
    _check_written_once(out, res.stdout, "joint-relift")
    saved = json.loads((out / "checkpoints" / "checkpoint-2" / "relift_buffer.json").read_text())
    # the 8 SFT items filled the buffer: one SFT update ran on both ranks at the same step (DDP would hang
    # if only one rank stepped)
    assert saved["counts"]["sft_updates"] >= 1
    updates = [r for r in _records(out) if r.get("event") == "relift_sft_update"]
    assert len(updates) == saved["counts"]["sft_updates"]

    res = launch(*common, "--max-steps", "3", "--resume")
    done = json.loads((out / "train.done.json").read_text())["result"]
    relift = done["extra"]["relift"]
    assert done["global_step"] == 3 and done["resumed_from"].endswith("checkpoint-2")
    assert relift["buffer_restored"] is True
    # counts continue from the checkpoint instead of restarting from the SFT split
    assert relift["sft_updates"] >= saved["counts"]["sft_updates"]
    assert set(saved["moved"]) <= set(relift["moved_ids"])
    assert res.stdout.count("joint-relift: 3 steps") == 1
