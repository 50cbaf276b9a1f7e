"""Cooperative single-stage modes on a tiny char-level model (weighted, relift, bridge)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from stagewise.curate.errors import InputError
from stagewise.train.heldout_loss import sft_loss, sft_token_batches
from stagewise.train.joint import train_joint
from stagewise.train.rl import train_rl
from stagewise.train.sft import train_sft
from train_helpers import make_export, sft_row

# Demonstrations on prompts s0..s7 and RL prompts q0..q7 share one skill (answer "7", one token), so SFT
# and RL pull the same way; the probe's max_new_tokens=1 travels in the manifest. "zq" can never be
# answered in one token ("ZZ"): its group is all wrong by construction.
ONE_TOKEN_PROBE = {"sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 1},
                   "system_prompt": None, "prompt_template": "{prompt}", "model": "tiny"}
SFT_ITEMS = [(f"s{i}", "7") for i in range(8)]
RL_ITEMS = [(f"q{i}", "7") for i in range(8)]
WITH_IMPOSSIBLE = RL_ITEMS[:7] + [("zq", "ZZ")]
IMPOSSIBLE_ID = "r7"
KW = dict(learning_rate=1e-2, sft_learning_rate=1e-2, batch_size=4, num_generations=8, sft_batch_size=4, seed=0,
          progress=False)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from stagewise.curate.models import build_tiny_model

    root = tmp_path_factory.mktemp("joint-toy")
    model = build_tiny_model(root / "tiny", seed=0)
    data = make_export(root / "export", sft=SFT_ITEMS, rl=RL_ITEMS, probe=ONE_TOKEN_PROBE)
    data_zz = make_export(root / "export-zz", sft=SFT_ITEMS, rl=WITH_IMPOSSIBLE, probe=ONE_TOKEN_PROBE)
    # Three SFT steps: "7" becomes likely enough that GRPO groups are mixed, not yet certain.
    warm = train_sft(data, model, root / "warm", max_steps=3, learning_rate=1e-2, batch_size=8, progress=False)
    return {"data": data, "data_zz": data_zz, "model": warm.model_dir}


def _sft_loss(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [sft_row(i, q, a) for i, (q, a) in enumerate(SFT_ITEMS)]
    return sft_loss(model, sft_token_batches(rows, tok))


def _log(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _reward_gain(out):
    rewards = [r["reward"] for r in _log(out) if "reward" in r]
    return rewards[-1] - rewards[0], rewards


@pytest.mark.parametrize("mode", ["weighted", "relift", "bridge"])
def test_each_mode_lowers_sft_loss_and_raises_reward(toy, tmp_path, mode):
    out = tmp_path / mode
    res = train_joint(toy["data"], toy["model"], out, mode=mode, max_steps=4, buffer_size=4, **KW)
    assert res.global_step == 4
    before, after = _sft_loss(toy["model"]), _sft_loss(res.model_dir)
    gain, rewards = _reward_gain(out)
    # Stated margins (seed 0): the completion NLL of the 8 demonstrations falls by >= 15%, and the reward of
    # the last step exceeds the first by >= 0.3 (measured for relift: NLL 2.03 -> 1.60, reward 0.06 -> 0.72).
    assert after <= 0.85 * before, (before, after)
    assert gain >= 0.3, rewards


def test_relift_moves_an_all_wrong_item_into_the_sft_buffer(toy, tmp_path):
    out = tmp_path / "relift"
    res = train_joint(toy["data_zz"], toy["model"], out, mode="relift", max_steps=2, buffer_size=100, **KW)
    info = res.extra["relift"]
    assert IMPOSSIBLE_ID in info["moved_ids"]
    moves = [r for r in _log(out) if r.get("event") == "relift_move"]
    assert any(IMPOSSIBLE_ID in r["ids"] for r in moves)
    # The SFT split (8 items) started in the buffer; moved items joined it; no update yet (buffer 100).
    assert info["buffer_left"] == 8 + info["moved"] and info["sft_updates"] == 0


def test_relift_runs_one_sft_update_per_full_buffer(toy, tmp_path):
    out = tmp_path / "relift"
    res = train_joint(toy["data_zz"], toy["model"], out, mode="relift", max_steps=1, buffer_size=4, **KW)
    updates = [r for r in _log(out) if r.get("event") == "relift_sft_update"]
    assert res.extra["relift"]["sft_updates"] == len(updates) >= 2  # 8 SFT items + moves, 4 per update
    assert all(u["n_items"] == 4 for u in updates) and res.extra["relift"]["buffer_left"] < 4


def test_bridge_shadow_is_exactly_the_pure_rl_run_under_a_warmup_and_decay_schedule(toy, tmp_path):
    # Step 1 is the warmup's rate 0, step 2 the full rate: the shadow must follow the joint model's schedule,
    # as a pure-RL run with the same settings does (it once stepped at the constant peak rate).
    kw = dict(KW, max_steps=2, lr_scheduler_type="cosine", warmup_steps=1)
    joint = train_joint(toy["data"], toy["model"], tmp_path / "bridge", mode="bridge", **kw)
    pure = train_rl(toy["data"], toy["model"], tmp_path / "rl", **{k: v for k, v in kw.items()
                                                                     if k not in ("sft_batch_size", "sft_learning_rate")})
    shadow = load_file(joint.extra["shadow_model"] + "/model.safetensors")
    rl = load_file(pure.model_dir + "/model.safetensors")
    joint_w = load_file(joint.model_dir + "/model.safetensors")
    start = load_file(toy["model"] + "/model.safetensors")
    assert set(shadow) == set(rl)
    for k in rl:  # the shadow after two steps IS the pure-RL model from the same seed
        assert torch.equal(shadow[k], rl[k]), k
    assert any(not torch.equal(start[k], rl[k]) for k in rl)  # RL moved the weights
    assert max((joint_w[k] - rl[k]).abs().max().item() for k in rl) > 1e-3  # the joint took SFT too


def test_relift_resumes_its_buffer_from_the_checkpoint_and_logs_the_resume(toy, tmp_path):
    out = tmp_path / "relift"
    kw = dict(KW, batch_size=8, buffer_size=100, save_steps=1)  # all 8 prompts, "zq" among them, every step
    first = train_joint(toy["data_zz"], toy["model"], out, mode="relift", max_steps=1, **kw)
    saved = json.loads((out / "checkpoints" / "checkpoint-1" / "relift_buffer.json").read_text())
    assert first.extra["relift"]["buffer_restored"] is False
    assert saved["buffer"] and IMPOSSIBLE_ID in saved["moved"]
    res = train_joint(toy["data_zz"], toy["model"], out, mode="relift", max_steps=2, resume=True, **kw)
    info = res.extra["relift"]
    assert res.resumed_from.endswith("checkpoint-1") and info["buffer_restored"] is True
    # The moved item is not moved a second time (the resumed step's generation runs at global step 1), and
    # the buffer is the checkpoint's plus this step's moves (no update: buffer_size 100).
    moves = [r for r in _log(out) if r.get("event") == "relift_move"]
    assert not any(IMPOSSIBLE_ID in r["ids"] for r in moves if r["step"] >= 1)
    assert info["moved"] >= saved["counts"]["moved"]
    assert info["buffer_left"] == len(saved["buffer"]) + info["moved"] - saved["counts"]["moved"]
    resumes = [r for r in _log(out) if r.get("event") == "resume"]
    assert [r["stage"] for r in resumes] == ["joint-relift"] and resumes[0]["checkpoint"].endswith("checkpoint-1")


def test_weighted_needs_demonstrations(tmp_path, tiny_model_dir):
    data = make_export(tmp_path / "export", sft=[], rl=WITH_IMPOSSIBLE, probe=ONE_TOKEN_PROBE)
    with pytest.raises(InputError, match="mode weighted needs SFT demonstrations"):
        train_joint(data, tiny_model_dir, tmp_path / "out", mode="weighted", progress=False)


def test_cli_joint_runs_relift_and_reports_moves(toy, tmp_path):
    from click.testing import CliRunner

    from stagewise.cli import cli

    out = tmp_path / "cli"
    result = CliRunner().invoke(cli, ["train", "joint", "--data", toy["data_zz"], "--model", toy["model"], "--out",
                                      str(out), "--mode", "relift", "--max-steps", "1", "--batch-size", "4",
                                      "--num-generations", "4", "--buffer-size", "100"])
    assert result.exit_code == 0, result.output
    assert "joint-relift: 1 steps" in result.output and "items moved to the SFT buffer" in result.output
    assert (out / "model" / "config.json").exists() and (out / "train.done.json").exists()


def test_the_sft_term_over_micro_batches_adds_up_to_the_loss_of_the_whole_batch(tiny_model_dir):
    from stagewise.train.joint import collate, sft_objective, target_tokens
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # Demonstrations of very different lengths: per-micro-batch means would weight the short ones up.
    rows = [sft_row(0, "a", "7"), sft_row(1, "b", "7" * 40), sft_row(2, "c", "8"), sft_row(3, "d", "9" * 25)]
    items = sft_token_batches(rows, tok)
    whole = collate(items, tok.pad_token_id, "cpu")
    micro = [collate(items[:1], tok.pad_token_id, "cpu"), collate(items[1:], tok.pad_token_id, "cpu")]
    n = target_tokens(micro)
    assert n == int(whole["target"].sum().item())
    for loss in ("nll", "dft"):
        full = sft_objective(model, whole, loss).item()
        summed = sum(sft_objective(model, b, loss, num_items_in_batch=n).item() for b in micro)
        per_micro_mean = sum(sft_objective(model, b, loss).item() for b in micro) / 2
        assert summed == pytest.approx(full, rel=1e-5)
        assert abs(per_micro_mean - full) > 1e-3  # the old rule would not have matched


def test_relift_writes_answer_demonstrations_in_the_format_the_probe_asked_for():
    from stagewise.curate.prompts import RG_SYSTEM_PROMPT
    from stagewise.train.loop import answer_demonstration

    boxed = answer_demonstration({"id": "g1", "prompt": [{"role": "user", "content": "What is 3 + 4?"}],
                                  "solution": "7", "task": "gsm8k"},
                                 {"system_prompt": None, "prompt_template": "{prompt}"})
    assert boxed["completion"][0]["content"] == "The final answer is \\boxed{7}."
    # A prompt that does not mention "boxed" in its text still gets the format the probe's template asks.
    from stagewise.curate.sources import load_problems

    rg = next(iter(load_problems("rg:basic_arithmetic?size=1&seed=0")))
    tags = answer_demonstration({"id": rg.id, "prompt": [{"role": "user", "content": rg.prompt}],
                                 "solution": rg.answer, "task": rg.task, "meta": rg.meta},
                                {"system_prompt": RG_SYSTEM_PROMPT, "prompt_template": None})
    assert tags["completion"][0]["content"] == f"<answer>{rg.answer}</answer>"


def test_joint_modes_record_an_explicit_sft_learning_rate():
    from stagewise.train import config as C
    from stagewise.train.joint import resolve_sft_learning_rate

    relift = resolve_sft_learning_rate(C.build_config("joint", mode="relift", learning_rate=1e-6))
    assert relift["sft_learning_rate"] == 1e-5  # train_sft.yaml's learning rate, not the RL one
    assert relift["sft_effective_learning_rate"] == 1e-5 and relift["sft_scale"] == 1.0
    weighted = resolve_sft_learning_rate(C.build_config("joint", mode="weighted", learning_rate=1e-6,
                                                        sft_learning_rate=2e-6, sft_weight=0.5))
    assert weighted["sft_scale"] == pytest.approx(2.0)
    assert weighted["sft_effective_learning_rate"] == pytest.approx(0.5 * 2.0 * 1e-6)
    assert weighted["sft_learning_rate_source"] == "config"
