"""Shared fixtures. Models are tiny, built on the spot (no download), so the suite runs on 2 CPU cores."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A randomly initialised ~90k-parameter Llama with a character tokenizer and a chat template."""
    from stagewise.curate.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def repo_data_dir() -> str:
    """The data shipped with the package (GSM8K test + a train slice, MIT)."""
    import stagewise

    return os.path.join(os.path.dirname(stagewise.__file__), "data")


# `make test-fast`: the pure core (statistics, routing, formats, verifiers, readers, store, config, docs) in
# seconds. A test belongs to it when its module is one of these and it neither builds a model, starts worker
# processes nor draws a plot.
FAST_MODULES = {"test_statistics", "test_routing", "test_docs", "test_cli_docs", "test_verifiers", "test_sources",
                "test_store", "test_contract", "test_cards", "test_config", "test_decontaminate", "test_reroute",
                "test_train_loop", "test_steps", "test_imports"}
NEEDS_PROCESSES = ("pool", "hung", "hang", "kill_9", "another_process", "across_processes", "reruns", "workers",
                   "merge", "second_writer", "png")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        heavy = {"tiny_model_dir", "mixed_export"} & set(getattr(item, "fixturenames", ()))
        if module in FAST_MODULES and not heavy and not any(w in item.name for w in NEEDS_PROCESSES):
            item.add_marker(pytest.mark.fast)
