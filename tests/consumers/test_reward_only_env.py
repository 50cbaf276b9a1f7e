"""The shipped reward files run in an environment holding only `pip install --no-deps stagewise` plus
math-verify and reasoning-gym (`make test-consumers` builds that venv and points
STAGEWISE_REWARD_ONLY_PYTHON at it): what a verl or OpenRLHF image needs to score stagewise exports."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

pytestmark = pytest.mark.consumers
PYTHON = os.environ.get("STAGEWISE_REWARD_ONLY_PYTHON")
if not PYTHON:
    pytest.skip("STAGEWISE_REWARD_ONLY_PYTHON is not set; run `make test-consumers`", allow_module_level=True)

from exports import make_export  # noqa: E402

HEAVY = ("polars", "duckdb", "click", "rich", "torch", "transformers", "trl", "datasets", "pyarrow")


_CALL = textwrap.dedent(r"""
    import importlib.util, json, sys, time

    def load(path, name):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    verl_dir, orl_dir, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    reward = load(f"{verl_dir}/reward.py", "reward")
    reward_func = load(f"{orl_dir}/reward_func.py", "reward_func")
    started = time.monotonic()
    verl_scores = [reward.compute_score(c["data_source"], c["text"], c["answer"], c["extra_info"])
                   for c in cases]
    prompt = "<|user|>question<|assistant|>"
    out = reward_func.reward_func([prompt + c["text"] for c in cases], [prompt] * len(cases),
                                  [c["label"] for c in cases])
    print(json.dumps({"verl": verl_scores, "openrlhf": out["rewards"], "seconds": time.monotonic() - started,
                      "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,))


def test_the_reward_files_run_with_only_stagewise_and_the_verifier_libraries(tmp_path):
    missing = subprocess.run([PYTHON, "-c", "import polars"], capture_output=True, text=True)
    assert missing.returncode != 0, "the reward-only venv must not have polars (or it proves nothing)"
    verl_dir = make_export(tmp_path, "verl")
    orl_dir = make_export(tmp_path, "openrlhf")
    import pyarrow.parquet as pq

    verl_row = pq.read_table(verl_dir / "rl.parquet").to_pylist()[0]
    orl_row = next(r for r in pq.read_table(orl_dir / "rl.parquet").to_pylist() if r["id"] == verl_row["extra_info"]["id"])
    gold = verl_row["reward_model"]["ground_truth"]
    base = {"data_source": verl_row["data_source"], "answer": gold, "extra_info": verl_row["extra_info"],
            "label": orl_row["label"]}
    cases = [dict(base, text=f"so \\boxed{{{gold}}}"), dict(base, text="so \\boxed{-12345}")]
    out = subprocess.run([PYTHON, "-c", _CALL, str(verl_dir), str(orl_dir), json.dumps(cases)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["verl"] == [1.0, 0.0]
    assert result["openrlhf"] == [1.0, 0.0]
    assert result["heavy"] == []
