"""A few true subprocess runs of the installed `stagewise` console script (not click's CliRunner)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from train_helpers import make_export


def _stagewise() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "stagewise")
    path = local if os.path.exists(local) else shutil.which("stagewise")
    if path is None:
        pytest.fail("the stagewise console script is not installed (pip install -e .)")
    return path


def run(*args, cwd=None):
    return subprocess.run([_stagewise(), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          check=False)


def test_help():
    out = run("--help")
    assert out.returncode == 0
    assert "Usage: stagewise" in out.stdout and "profile" in out.stdout


def test_profile_shipped_gsm8k(tmp_path):
    # run from an unrelated directory: the shipped data must be found without the repo
    out = run("profile", "gsm8k:test", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["rows"] == 1319 and data["answer_types"]["integer"] == 1319


def test_bad_input_exits_1_with_one_paragraph_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{"question": "b", answer: 2}\n')
    out = run("profile", str(bad))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout
    message = out.stderr.strip()
    assert message.startswith("Error:") and "line 2" in message and "--skip-bad" in message
    assert "\n\n" not in message  # one paragraph


def test_an_unknown_trl_field_exits_1_with_one_message_naming_it(tmp_path):
    data = make_export(tmp_path / "export", rl=[("1+1", "2")])
    out = run("train", "rl", "--data", data, "--model", "smollm2-135m", "--out", str(tmp_path / "rl"),
              "--set", "trl.num_iterations=2", "--set", "trl.bogus=1")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout
    message = out.stderr.strip()
    assert message.startswith("Error: invalid rl config: overrides: trl.bogus is not an option of TRL's GRPOConfig")
    assert "num_iterations" not in message and "\n\n" not in message
    assert not (tmp_path / "rl").exists()  # refused before any work
