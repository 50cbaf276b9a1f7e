"""Configuration of `stagewise run`: the commented default, scale presets, overrides, validation,
and the check that a run directory is only ever resumed with the config that made it."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path

import yaml

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


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path | None = None, *, scale: str | None = None,
                overrides: dict | None = None) -> dict:
    """Default <- scale preset <- config file <- overrides; every unknown key reported at once."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    if scale:
        if scale not in SCALES:
            raise ConfigError(f"unknown --scale {scale!r}; choose one of {', '.join(SCALES)}")
        config = deep_merge(config, SCALES[scale])
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist; `stagewise run --print-config > {p}` writes one")
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{p}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(user, dict):
            raise ConfigError(f"{p}: expected a mapping with sections {', '.join(SECTIONS)}")
        _check_keys(user, config, str(p))
        config = deep_merge(config, user)
    if overrides:
        _check_keys(overrides, config, "overrides")
        config = deep_merge(config, overrides)
    return config


def _check_keys(user: dict, known: dict, where: str) -> None:
    problems = []
    for key, value in user.items():
        if key not in TOP_KEYS:
            problems.append(_unknown(key, TOP_KEYS, ""))
        elif key == "data" and isinstance(value, dict):
            # Stage sections are checked against their API signatures by the pipeline (check_sections).
            for sub in value:
                if sub not in known["data"]:
                    problems.append(_unknown(sub, list(known["data"]), "data."))
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def _unknown(key: str, options, prefix: str) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(options)})"
    return f"unknown key {prefix}{key}{hint}"


def diff_configs(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_configs(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def parse_override(text: str) -> tuple[str, object]:
    """`probe.num_samples=8` -> ("probe.num_samples", 8); values parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. probe.num_samples=8")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def overrides_to_dict(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for dotted, value in pairs:
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
