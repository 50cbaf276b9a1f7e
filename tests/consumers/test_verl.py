"""A stagewise export loaded by verl itself (verl's venv: `make test-consumers`): its RLHFDataset, its
multi-turn SFT dataset (training and validation files), its custom-reward loader and reward manager, and
its PPO and SFT configs composed with Hydra plus the card's overrides, turned into its dataloaders."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.consumers
verl = pytest.importorskip("verl", reason="verl is not installed here; run `make test-consumers`")

from exports import make_export, manifest  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from stagewise.stages import commands  # noqa: E402


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("verl"), "verl")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _rows(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_verls_rlhf_dataset_reads_every_rl_row_with_its_reward_fields(export_dir, tokenizer, tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 1024, "cache_dir": str(tmp_path),
                               "filter_overlong_prompts": True, "return_raw_chat": True})
    ds = RLHFDataset(data_files=[str(export_dir / "rl.parquet")], tokenizer=tokenizer, config=config)
    rows = _rows(export_dir / "rl.parquet")
    assert len(ds) == len(rows) == manifest(export_dir)["counts"]["splits"]["rl"] > 0
    item = ds[0]
    assert item["data_source"] == f"stagewise/{rows[0]['extra_info']['task']}"
    assert item["reward_model"]["ground_truth"] == rows[0]["reward_model"]["ground_truth"]
    assert item["raw_prompt"] == rows[0]["prompt"]
    batch = collate_fn([ds[i] for i in range(len(ds))])
    assert len(batch["data_source"]) == len(rows)


def test_verls_multiturn_sft_dataset_masks_the_prompt_and_trains_on_the_demonstration(export_dir, tokenizer):
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    config = OmegaConf.create({"messages_key": "messages", "max_length": 2048, "pad_mode": "right",
                               "truncation": "error"})
    ds = MultiTurnSFTDataset(str(export_dir / "sft.parquet"), tokenizer, config)
    rows = _rows(export_dir / "sft.parquet")
    assert len(ds) == len(rows) > 0
    item = ds[0]
    trained = item["input_ids"][item["loss_mask"].bool()]
    assert 0 < int(item["loss_mask"].sum()) < int(item["attention_mask"].sum())
    assert rows[0]["messages"][-1]["content"].strip() in tokenizer.decode(trained)


def test_verls_sft_dataset_reads_the_validation_file_which_shares_no_item_with_training(export_dir,
                                                                                       tokenizer):
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    m = manifest(export_dir)
    config = OmegaConf.create({"messages_key": "messages", "max_length": 2048, "pad_mode": "right",
                               "truncation": "error"})
    val = MultiTurnSFTDataset(str(export_dir / "sft_val.parquet"), tokenizer, config)
    assert len(val) == m["files"]["sft_val.parquet"]["rows"] == m["counts"]["splits"]["sft_val"] >= 2
    assert int(val[0]["loss_mask"].sum()) > 0
    held = {r["id"] for r in _rows(export_dir / "sft_val.parquet")}
    trained = {r["id"] for r in _rows(export_dir / "sft.parquet")}
    assert held and not held & trained


def test_verls_custom_reward_loader_and_reward_manager_score_with_the_shipped_reward(export_dir, tokenizer):
    import asyncio

    import numpy as np
    import torch
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn

    overrides = commands.verl_ppo_overrides(manifest(export_dir), str(export_dir))
    reward_cfg = OmegaConf.from_dotlist([o for o in overrides if o.startswith("reward.")])
    compute_score = get_custom_reward_fn(reward_cfg)
    assert compute_score is not None
    row = _rows(export_dir / "rl.parquet")[0]
    gold = row["reward_model"]["ground_truth"]

    def call(text):
        return compute_score(data_source=row["data_source"], solution_str=text, ground_truth=gold,
                             extra_info=row["extra_info"])

    assert call(f"so the answer is \\boxed{{{gold}}}") == 1.0
    assert call("so the answer is \\boxed{-12345}") == 0.0

    # verl's reward manager calls compute_score in its event loop's thread pool, many at once.
    manager = NaiveRewardManager(OmegaConf.create({"reward": {}}), tokenizer, compute_score)

    def proto(text):
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        return DataProto.from_dict(
            tensors={"responses": ids, "attention_mask": torch.ones_like(ids)},
            non_tensors={"data_source": np.array([row["data_source"]], dtype=object),
                         "reward_model": np.array([dict(row["reward_model"])], dtype=object),
                         "extra_info": np.array([dict(row["extra_info"])], dtype=object)})

    texts = [f"\\boxed{{{gold}}}", "\\boxed{-12345}", f"The answer is {gold}."]

    async def score_all():
        return await asyncio.gather(*(manager.run_single(proto(t)) for t in texts))

    results = manager.loop.run_until_complete(score_all())
    assert [r["reward_score"] for r in results] == [1.0, 0.0, 1.0]


_DATALOADER = textwrap.dedent(r"""
    import json, os, sys, types
    import verl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.utils.config import validate_config

    overrides = json.loads(sys.argv[1])
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(config_name="ppo_trainer", overrides=overrides)
    OmegaConf.resolve(config)
    validate_config(config, use_reference_policy=False, use_critic=False)
    holder = types.SimpleNamespace(config=config, processor=None,
                                   tokenizer=AutoTokenizer.from_pretrained(config.actor_rollout_ref.model.path))
    RayPPOTrainer._create_dataloader(holder, None, None, None, None)
    batch = next(iter(holder.train_dataloader))
    print(json.dumps({"train_batches": len(holder.train_dataloader), "val_batches": len(holder.val_dataloader),
                      "batch": len(batch["data_source"]), "steps": holder.total_training_steps,
                      "val_rows": len(holder.val_dataset)}))
""")


@pytest.mark.parametrize("replay", [True, False], ids=["with-validation", "no-validation"])
def test_verls_ppo_config_with_the_card_overrides_validates_and_builds_its_dataloader(export_dir, tiny_model_dir,
                                                                                      tmp_path, replay):
    if not replay:  # a small export without rl_val or replay: verl is given rl.parquet, validation is off
        from stages_helpers import build_store, mixed_items

        import stagewise as sw

        build_store(tmp_path / "s.duckdb", mixed_items())
        export_dir = tmp_path / "no-replay"
        sw.export(str(tmp_path / "s.duckdb"), str(export_dir), format="verl", policy="stage", keep_mastered=0)
        assert not (export_dir / "replay.parquet").exists() and not (export_dir / "rl_val.parquet").exists()
    m = manifest(export_dir)
    overrides = commands.verl_ppo_overrides(m, str(export_dir), model=tiny_model_dir)
    val = "rl_val.parquet" if replay else "rl.parquet"
    assert f"data.val_files={export_dir}/{val}" in overrides
    overrides.append(f"+data.cache_dir={tmp_path}")  # verl caches downloaded files there
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _DATALOADER, json.dumps(overrides)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert time.monotonic() - started < 120
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rl_rows = m["counts"]["splits"]["rl"]
    assert result["train_batches"] >= 1 and result["val_batches"] >= 1
    assert result["batch"] == min(rl_rows, commands.MAX_BATCH)
    if replay:  # the validation loader holds exactly the held-out RL items
        assert result["val_rows"] == m["counts"]["splits"]["rl_val"] >= 2


_SFT_DATALOADERS = textwrap.dedent(r"""
    import json, os, sys
    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.sft_trainer import SFTTrainer

    overrides = json.loads(sys.argv[1])
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(config_name="sft_trainer_engine", overrides=overrides)
    # SFTTrainer.__init__ also starts the FSDP engine, which needs a GPU; its dataset and dataloader steps
    # run as written, in one data-parallel process (what --nproc_per_node=1 gives).
    trainer = object.__new__(SFTTrainer)
    trainer.config = config
    trainer._build_config()
    trainer._build_dataset()
    trainer.engine = type("OneProcess", (), {"get_data_parallel_rank": lambda self: 0,
                                             "get_data_parallel_size": lambda self: 1})()
    trainer._build_dataloader()
    val_batch = next(iter(trainer.val_dataloader))
    print(json.dumps({"train_rows": len(trainer.train_dataset), "val_rows": len(trainer.val_dataset),
                      "train_batches": len(trainer.train_dataloader),
                      "val_batches": len(trainer.val_dataloader),
                      "val_batch": len(val_batch["input_ids"])}))
""")


def test_verls_sft_config_with_the_card_overrides_builds_its_train_and_validation_loaders(export_dir,
                                                                                          tiny_model_dir):
    m = manifest(export_dir)
    overrides = commands.verl_sft_overrides(m, str(export_dir), model=tiny_model_dir)
    assert f"data.val_files={export_dir}/sft_val.parquet" in overrides
    # The test's own setting: no dataloader worker processes on a shared CPU.
    out = subprocess.run([sys.executable, "-c", _SFT_DATALOADERS,
                          json.dumps(overrides + ["data.num_workers=0"])], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["train_rows"] == m["counts"]["splits"]["sft"]
    assert result["val_rows"] == m["counts"]["splits"]["sft_val"] >= 2
    # verl drops a partial batch in both loaders: the derived batch size leaves at least one of each
    assert result["train_batches"] >= 1 and result["val_batches"] >= 1
    assert result["val_batch"] == next(int(o.split("=")[1]) for o in overrides
                                       if o.startswith("data.train_batch_size="))


def test_the_card_prints_the_overrides_verl_was_tested_with(export_dir):
    from stagewise.stages.datacard import _model_refs

    m = manifest(export_dir)
    card = (export_dir / "README.md").read_text()
    for override in (commands.verl_ppo_overrides(m, export_dir.name, model=_model_refs(m)[0])
                     + commands.verl_sft_overrides(m, export_dir.name, model=_model_refs(m)[0])):
        assert override in card
    assert f"data.val_files={export_dir.name}/sft_val.parquet" in card
