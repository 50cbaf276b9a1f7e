"""A stagewise export read by OpenRLHF's own code (`make test-consumers`): its releases pin flash-attn and
deepspeed, which do not install on a CPU machine, so this venv holds `--no-deps openrlhf` plus what
`openrlhf.datasets` and its reward executor import. Its dataset preprocessing reads the export, its
single-turn executor loads and calls the shipped reward_func.py, and the card's flags are checked
against the argument parsers in OpenRLHF's installed source."""

from __future__ import annotations

import ast
import asyncio
import json
import time
import types
from pathlib import Path

import pytest

pytestmark = pytest.mark.consumers
openrlhf = pytest.importorskip("openrlhf", reason="OpenRLHF is not installed here; run `make test-consumers`")

from exports import make_export, manifest  # noqa: E402
from stagewise.stages import commands  # noqa: E402


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("openrlhf"), "openrlhf")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _strategy(**data):
    """What OpenRLHF's datasets read of their strategy: the parsed `--data.*` args and rank-0 printing."""
    return types.SimpleNamespace(args=types.SimpleNamespace(data=types.SimpleNamespace(**data)),
                                 is_rank_0=lambda: True, print=lambda *a, **k: None)


def test_openrlhfs_prompt_dataset_reads_the_rl_split_with_its_json_labels(export_dir, tokenizer):
    from openrlhf.datasets import PromptDataset
    from openrlhf.datasets.utils import blending_datasets

    strategy = _strategy(input_key="input", label_key="label", apply_chat_template=True)
    data = blending_datasets(str(export_dir / "rl.parquet"), None, strategy)
    ds = PromptDataset(data, tokenizer, strategy)
    assert len(ds) == manifest(export_dir)["counts"]["splits"]["rl"] > 0
    _source, prompt, label, _images = ds[0]
    import pyarrow.parquet as pq

    row = pq.read_table(export_dir / "rl.parquet").to_pylist()[0]
    assert prompt == tokenizer.apply_chat_template(row["input"], tokenize=False, add_generation_prompt=True)
    parsed = json.loads(label)
    assert set(parsed) == {"answer", "task", "meta"} and parsed["task"]


def test_openrlhfs_sft_dataset_reads_input_and_output(export_dir, tokenizer):
    from openrlhf.datasets import SFTDataset
    from openrlhf.datasets.utils import blending_datasets

    strategy = _strategy(input_key="input", output_key="output", apply_chat_template=True)
    data = blending_datasets(str(export_dir / "sft.parquet"), None, strategy)
    ds = SFTDataset(data, tokenizer, 4096, strategy, num_processors=1)
    assert len(ds) == manifest(export_dir)["counts"]["splits"]["sft"] > 0
    assert all(r.strip() for r in ds.responses)


def test_openrlhfs_datasets_read_the_validation_files_the_card_passes_as_eval_dataset(export_dir, tokenizer):
    from openrlhf.datasets import PromptDataset, SFTDataset
    from openrlhf.datasets.utils import blending_datasets

    m = manifest(export_dir)
    assert f"--eval.dataset {export_dir}/sft_val.parquet" in commands.openrlhf_sft_args(m, str(export_dir))
    assert f"--eval.dataset {export_dir}/rl_val.parquet" in commands.openrlhf_ppo_args(m, str(export_dir))
    sft = _strategy(input_key="input", output_key="output", apply_chat_template=True)
    ds = SFTDataset(blending_datasets(str(export_dir / "sft_val.parquet"), None, sft), tokenizer, 4096, sft,
                    num_processors=1)
    assert len(ds) == m["counts"]["splits"]["sft_val"] >= 2
    rl = _strategy(input_key="input", label_key="label", apply_chat_template=True)
    prompts = PromptDataset(blending_datasets(str(export_dir / "rl_val.parquet"), None, rl), tokenizer, rl)
    assert len(prompts) == m["counts"]["splits"]["rl_val"] >= 2
    assert json.loads(prompts[0][2])["task"]


def test_openrlhfs_executor_loads_and_calls_the_shipped_reward_func(export_dir, tokenizer):
    from openrlhf.datasets import PromptDataset
    from openrlhf.datasets.utils import blending_datasets
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    executor = SingleTurnAgentExecutor(remote_rm_url=str(export_dir / "reward_func.py"))
    assert executor.reward_func is not None
    strategy = _strategy(input_key="input", label_key="label", apply_chat_template=True)
    ds = PromptDataset(blending_datasets(str(export_dir / "rl.parquet"), None, strategy), tokenizer, strategy)
    _source, prompt, label, _ = ds[0]
    gold = json.loads(label)["answer"]
    answers = [f"so \\boxed{{{gold}}}", "so \\boxed{-12345}", "so \\boxed{9^{9^{9^{9}}}}"]

    async def score_all():  # as OpenRLHF does: one reward_func call per rollout, each in asyncio.to_thread
        return await asyncio.gather(*(executor._fetch_rewards_via_func([prompt + a], [prompt], [label])
                                      for a in answers))

    started = time.monotonic()
    results = asyncio.run(score_all())
    assert time.monotonic() - started < 60
    rewards = [float(r[0]["rewards"][0]) for r in results]
    assert rewards[:2] == [1.0, 0.0]
    assert rewards[2] == 0.0  # a number math-verify would chew on for minutes: bounded, scored 0
    assert set(results[0][0]) == {"rewards", "scores", "extra_logs"}


def _flags(module_file: Path) -> dict[str, list | None]:
    """Every `--flag` an OpenRLHF CLI module's argparse accepts, with its choices (from its source)."""
    flags: dict[str, list | None] = {}
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            first = node.args[0]
            names = [first.value] if isinstance(first, ast.Constant) else []
            if isinstance(first, ast.JoinedStr):  # f"--{prefix}.optim" style: keep the literal tail
                continue
            choices = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "choices"), None)
            for name in names:
                flags[name] = choices
    return flags


@pytest.mark.parametrize("module,args", [("train_ppo_ray", commands.openrlhf_ppo_args),
                                         ("train_sft", commands.openrlhf_sft_args)])
def test_every_flag_in_the_card_exists_in_the_installed_openrlhf(export_dir, module, args):
    source = Path(openrlhf.__file__).parent / "cli" / f"{module}.py"
    accepted = _flags(source)
    assert accepted, f"no add_argument calls found in {source}"
    for arg in args(manifest(export_dir), str(export_dir)):
        flag, _, value = arg.partition(" ")
        assert flag in accepted, f"{flag} is not an option of openrlhf.cli.{module}"
        if accepted[flag]:
            assert value in accepted[flag]
