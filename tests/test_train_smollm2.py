"""The recipes on the real default model (SmolLM2-135M-Instruct): `make test-slow`."""

import pytest

from stagewise.train.rl import train_rl
from stagewise.train.sft import train_sft

from train_helpers import make_gsm8k_export

pytestmark = pytest.mark.slow


def test_smollm2_sft_step_and_rl_trainer_build(tmp_path):
    data = make_gsm8k_export(tmp_path / "export", n=8)
    sft = train_sft(data, "smollm2-135m", tmp_path / "sft", max_steps=1, batch_size=2, max_length=128,
                    learning_rate=1e-5, progress=False)
    assert sft.global_step == 1 and sft.metrics["train_loss"] < 5.0  # an instruct model already fits GSM8K text
    rl = train_rl(data, sft.model_dir, tmp_path / "rl", batch_size=1, num_generations=2, beta=0.01,
                  dry_run=True, progress=False)
    assert rl.dry_run and rl.config["resolved_precision"] == "fp32" and rl.config["max_new_tokens"] == 64
