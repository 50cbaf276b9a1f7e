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
