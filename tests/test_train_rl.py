"""RL recipe on a tiny char-level model: the stagewise verifier's reward rises; options and bad inputs."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stagewise.curate.errors import ConfigError, InputError
from stagewise.train.rl import train_rl
from stagewise.train.sft import train_sft
from train_helpers import make_export

# A trivially learnable task: every prompt's answer is "7", completions are one token long (the probe's
# max_new_tokens travels in the manifest), scored by the `exact` verifier. A few SFT steps on a mix of
# "7" and other answers make "7" likely but not certain, so GRPO groups are mixed and carry signal.
ONE_TOKEN_PROBE = {"sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 1},
                   "system_prompt": None, "prompt_template": "{prompt}", "model": "tiny"}
RL_ITEMS = [(f"q{i}", "7") for i in range(8)]
SFT_ITEMS = [(f"q{i}", "7" if i < 3 else "x") for i in range(8)]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from stagewise.curate.models import build_tiny_model

    root = tmp_path_factory.mktemp("rl-toy")
    model = build_tiny_model(root / "tiny", seed=0)
    data = make_export(root / "export", sft=SFT_ITEMS, rl=RL_ITEMS, probe=ONE_TOKEN_PROBE)
    warm = train_sft(data, model, root / "warm", max_steps=5, learning_rate=1e-2, batch_size=8, progress=False)
    return {"data": data, "model": warm.model_dir, "root": root}


def _rewards(out):
    return [r["reward"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "reward" in r]


def test_few_rl_steps_raise_the_verifier_reward(toy, tmp_path):
    out = tmp_path / "rl"
    res = train_rl(toy["data"], toy["model"], out, max_steps=8, learning_rate=1e-2, batch_size=4,
                   num_generations=8, seed=0, progress=False)
    rewards = _rewards(out)
    assert res.global_step == 8 and len(rewards) == 8
    # Stated margin: mean reward of the last two steps exceeds the first two by at least 0.4
    # (measured with seed 0: ~0.27 -> ~0.98).
    assert sum(rewards[-2:]) / 2 - sum(rewards[:2]) / 2 >= 0.4, rewards
    # Sampling came from the probe's manifest, and every completion was scored by the verifier.
    assert res.config["max_new_tokens"] == 1 and res.config["sampling_source"]["max_new_tokens"] == "probe manifest"
    assert sum(res.extra["verifier_status"].values()) == 8 * 4 * 8


@pytest.mark.parametrize("loss_type", ["dr_grpo", "dapo"])
def test_loss_types_and_kl_build(toy, tmp_path, loss_type):
    res = train_rl(toy["data"], toy["model"], tmp_path / "rl", loss_type=loss_type, beta=0.04, dry_run=True,
                   progress=False, num_generations=2, batch_size=2)
    assert res.dry_run and res.config["loss_type"] == loss_type and res.config["beta"] == 0.04


def test_rl_split_without_answers_is_a_clear_error(tmp_path, tiny_model_dir):
    path = tmp_path / "rl.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": [{"role": "user", "content": "q"}], "id": "x",
                                          "task": "exact"}]), path)
    with pytest.raises(InputError, match=r"rl.parquet, column 'solution': missing column"):
        train_rl(path, tiny_model_dir, tmp_path / "out", progress=False)


def test_rl_row_with_a_missing_answer_names_the_row(tmp_path, tiny_model_dir):
    path = tmp_path / "rl.parquet"
    rows = [{"prompt": [{"role": "user", "content": "q"}], "solution": "1", "id": "a", "task": "exact"},
            {"prompt": [{"role": "user", "content": "r"}], "solution": None, "id": "b", "task": "exact"}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(InputError, match=r"line 2.*column 'solution'"):
        train_rl(path, tiny_model_dir, tmp_path / "out", progress=False)


def test_empty_rl_split_is_a_clear_error(tmp_path, tiny_model_dir):
    data = make_export(tmp_path / "export", sft=[("a", "b")], rl=[])
    with pytest.raises(InputError, match=r"rl.parquet.*empty"):
        train_rl(data, tiny_model_dir, tmp_path / "out", progress=False)


def test_group_size_must_allow_an_advantage(tmp_path, tiny_model_dir):
    data = make_export(tmp_path / "export", rl=RL_ITEMS)
    with pytest.raises(ConfigError, match="num_generations=1"):
        train_rl(data, tiny_model_dir, tmp_path / "out", num_generations=1, progress=False)


def test_rl_records_per_prompt_its_groups_and_the_all_wrong_ones(toy, tmp_path):
    from stagewise.train.loop import GroupLedger

    # "zq" asks for "ZZ", which no one-token completion can be: its group is all wrong by construction.
    data = make_export(tmp_path / "export", rl=RL_ITEMS[:7] + [("zq", "ZZ")], probe=ONE_TOKEN_PROBE)
    ledger = GroupLedger()
    res = train_rl(data, toy["model"], tmp_path / "rl", max_steps=2, learning_rate=1e-2, batch_size=4,
                   num_generations=4, seed=0, progress=False, ledger=ledger)
    rows = {r["id"]: r for r in ledger.rows(1)}
    assert sum(r["groups"] for r in rows.values()) == 2 * 4  # 2 steps x 4 prompts, one group each
    assert sum(res.extra["verifier_status"].values()) == 2 * 4 * 4
    assert rows["r7"]["all_wrong"] == rows["r7"]["groups"] == 1 and "r7" in ledger.all_wrong_prompts()
    for r in rows.values():
        assert r["zero_variance"] == r["all_wrong"] + r["all_right"]  # 0/1 rewards
    assert res.extra["groups"] == ledger.totals()
