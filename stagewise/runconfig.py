"""Configuration of `stagewise run`: the commented default, scale presets and its keys (read, merged and
checked by the one config system, curate/config.py), and the diff that keeps a run directory from being
resumed with another config."""

from __future__ import annotations

from pathlib import Path

from stagewise.curate.config import Layers, read_yaml, type_problems, unknown_keys
from stagewise.curate.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
SECTIONS = ("data", "probe", "route", "export", "train", "sft", "rl", "eval")
TOP_KEYS = ("model", "backend", "seed", "base_url") + SECTIONS

# What each preset costs is written beside it; `small` is the default file itself.
SCALES = {
    # 46 one-digit arithmetic items, k=4, 8 SFT + 2 RL steps, 44 held-out items x 4 samples: about five
    # minutes on 2 idle CPU cores (projected from a loaded machine; benchmarks/RESULTS.md has the runs).
    "small": {},
    # ~200 items, k=8, 50 SFT + 20 RL steps: estimated (not measured) ~1.5 hours on 2 CPU cores.
    "medium": {
        "data": {"limit_per_source": 50,
                 "sources": ["rg:chain_sum?size=50&seed=1&min_terms=2&max_terms=2&min_digits=1&max_digits=1",
                             "rg:basic_arithmetic?size=50&seed=2&min_terms=2&max_terms=3&min_digits=1&max_digits=2",
                             "rg:chain_sum?size=50&seed=3&min_terms=3&max_terms=4&min_digits=2&max_digits=3",
                             "gsm8k:train"]},
        "probe": {"num_samples": 8, "max_new_tokens": 256},
        "sft": {"max_steps": 50, "batch_size": 8},
        "rl": {"max_steps": 20, "batch_size": 8, "num_generations": 8},
        "eval": {"num_samples": 4},
    },
    # GSM8K train (500 shipped rows; point data.sources at the full set), k=16: a GPU job (use --backend vllm).
    "large": {
        "data": {"limit_per_source": 500, "sources": ["gsm8k:train"]},
        "probe": {"num_samples": 16, "max_new_tokens": 512, "batch_size": 256},
        "sft": {"max_steps": 500, "batch_size": 32},
        "rl": {"max_steps": 200, "batch_size": 32, "num_generations": 8, "max_new_tokens": 512},
        "eval": {"num_samples": 8, "max_new_tokens": 512},
    },
}


def load_config(path: str | Path | None = None, *, scale: str | None = None,
                overrides: dict | None = None) -> dict:
    """Default <- scale preset <- config file <- overrides; every unknown key reported at once."""
    return resolve_config(path, scale=scale, overrides=overrides).data


def resolve_config(path: str | Path | None = None, *, scale: str | None = None,
                   overrides: dict | None = None, check=None) -> Layers:
    """The run config and where each key was set: every unknown key and wrong type, and every problem
    `check(config)` returns as (dotted key, problem) (the pipeline's check of the stage sections against
    their APIs), reported at once, each at the file:line:column that set it."""
    defaults, _ = read_yaml(DEFAULT_CONFIG)
    layers = Layers(defaults)
    if scale:
        if scale not in SCALES:
            raise ConfigError(f"unknown --scale {scale!r}; choose one of {', '.join(SCALES)}")
        layers.add(SCALES[scale], f"--scale {scale}")
    if path is not None:
        layers.add(*read_yaml(path, fix=f"`stagewise run --print-config > {path}` writes one"))
    layers.add(overrides, "overrides")
    known = {**dict.fromkeys(TOP_KEYS), **defaults}
    problems = unknown_keys(layers.data, known, into=("data",)) + type_problems(layers.data, defaults)
    problems += check(layers.data) if check is not None else []
    layers.fail("invalid run config", problems, fix="`stagewise run --print-config` shows every key")
    return layers
