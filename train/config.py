"""Trainer configuration: commented YAML defaults (stagewise/configs/train_*.yaml), an optional user
YAML file, then command-line flags, in that order of precedence, read and merged by the one config system
(curate/config.py). Validated all at once; the resolved config (device, precision and probe sampling
filled in) is written to OUT/config.yaml for every run. The `trl:` section reaches TRL's SFTConfig or
GRPOConfig unchanged (trl_config).
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path

from stagewise.curate.atomic import write_text_atomic
from stagewise.curate.config import Layers, merge, parse_yaml, read_yaml, section, type_problems, unknown_keys
from stagewise.curate.errors import ConfigError, require

KINDS = ("sft", "rl", "joint", "eval")
SFT_LOSSES = ("nll", "dft", "iw-sft")  # train/losses.py
LOSS_TYPES = ("grpo", "dr_grpo", "dapo")  # TRL's GRPO-family losses
JOINT_MODES = ("weighted", "relift", "bridge")  # one module each in train/joint/
_CHOICES = {
    "loss": SFT_LOSSES,
    "loss_type": LOSS_TYPES,
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "scale_rewards": ("group", "batch", "none"),
    "use_vllm": ("auto", True, False),
    "vllm_mode": ("colocate", "server"),
    "report_to": ("none", "tensorboard", "wandb"),
    "mode": JOINT_MODES,
    "lambda_schedule": ("constant", "linear"),
    "sft_loss": SFT_LOSSES,
}
_POSITIVE = ("max_steps", "batch_size", "gradient_accumulation_steps", "num_generations", "logging_steps",
             "save_steps", "max_length", "buffer_size", "lora_r", "sft_batch_size")
_NON_NEGATIVE = ("beta", "learning_rate", "weight_decay", "warmup_steps", "iw_clip", "sft_eval_steps",
                 "sft_weight", "max_grad_norm", "gain_weight", "sft_learning_rate")


def default_config(kind: str) -> dict:
    """The packaged defaults for one stage (`sft`, `rl`, `joint` or `eval`)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown trainer kind {kind!r}; expected one of {KINDS}")

    def load(name):
        text = resources.files("stagewise").joinpath("configs", f"train_{name}.yaml").read_text()
        return parse_yaml(text, f"stagewise/configs/train_{name}.yaml")[0]

    if kind == "joint":  # the RL options plus the joint ones
        return {**load("rl"), **load("joint")}
    return load(kind)


def _norm_keys(d: dict) -> dict:
    # Keys are long option names: `max-steps` and `max_steps` mean the same thing.
    return {str(k).replace("-", "_"): v for k, v in d.items()}


def build_config(kind: str, config: str | os.PathLike | dict | None = None, **overrides) -> dict:
    """Defaults <- config file or dict <- overrides (None means "not given"). A file with a section named
    after the stage (a `stagewise run` file: sft:, rl:, ...) gives that section. Raises ConfigError listing
    every unknown key and bad value at once, each at the file:line:column (or layer) that set it."""
    layers = Layers(default_config(kind))
    if isinstance(config, dict):
        layers.add(_norm_keys(config), "config")
    elif config is not None:
        values, origins = read_yaml(config)
        if isinstance(values.get(kind), dict):
            values, origins = section(values, origins, kind)
        layers.add(_norm_keys(values), {k.replace("-", "_"): v for k, v in origins.items()})
    layers.add({k: v for k, v in _norm_keys(overrides).items() if v is not None}, "overrides")
    layers.fail(f"invalid {kind} config", check(kind, layers.data),
                fix=f"see stagewise/configs/train_{kind}.yaml for every option")
    return layers.data


def check(kind: str, values: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Every problem of a stage's options laid over its defaults, as (dotted key, problem): unknown keys,
    wrong types, bad values, and `trl:` keys that TRL's config for the stage does not have."""
    defaults = default_config(kind)
    cfg = merge(defaults, _norm_keys(values))
    problems = unknown_keys(cfg, defaults, prefix) + type_problems(cfg, defaults, prefix)
    typed = {key for key, _ in problems}
    problems += [(prefix + key, prefix + text) for key, text in validate(cfg) if prefix + key not in typed]
    trl = cfg.get("trl") or {}
    if kind in TRL_CONFIGS and isinstance(trl, dict):
        problems += [(f"{prefix}trl.{key}", not_a_trl_field(kind, key, prefix)) for key in trl
                     if key not in trl_fields(kind)]
    return problems


def validate(cfg: dict) -> list[tuple[str, str]]:
    problems = []
    for key, choices in _CHOICES.items():
        if key in cfg and cfg[key] not in choices:
            problems.append((key, f"{key}={cfg[key]!r} (choose from {', '.join(map(str, choices))})"))
    for key in _POSITIVE:
        if key in cfg and cfg[key] is not None and not (isinstance(cfg[key], int) and cfg[key] > 0):
            problems.append((key, f"{key}={cfg[key]!r} (must be a positive integer)"))
    for key in _NON_NEGATIVE:
        if key in cfg and cfg[key] is not None and not (isinstance(cfg[key], (int, float)) and cfg[key] >= 0):
            problems.append((key, f"{key}={cfg[key]!r} (must be >= 0)"))
    if isinstance(cfg.get("num_generations"), int) and cfg["num_generations"] < 2:
        problems.append(("num_generations", (f"num_generations={cfg['num_generations']} (GRPO needs at least 2 "
                                             "per group: the advantage is relative to the group)")))
    for key in ("temperature", "top_p"):
        v = cfg.get(key)
        if v is not None and not (isinstance(v, (int, float)) and v > 0):
            problems.append((key, f"{key}={v!r} (must be > 0)"))
    return problems


def route_sets(values: dict) -> dict:
    """`stagewise train --set ...` per stage: `sft.loss=dft` goes to one stage; an unprefixed key to every
    stage whose config has it (unknown everywhere: the SFT stage reports it); an unprefixed `trl.KEY` to
    every stage whose TRL config has that field (to SFT when none has it: TRL's refusal is reported)."""
    known = {kind: set(default_config(kind)) for kind in ("sft", "rl", "eval", "joint")}
    out: dict = {kind: {} for kind in known}
    for key, value in _norm_keys(values).items():
        if key in out and isinstance(value, dict):
            out[key] = merge(out[key], value)
        elif key == "trl" and isinstance(value, dict):
            for name, v in value.items():
                for kind in [k for k in TRL_CONFIGS if name in trl_fields(k)] or ["sft"]:
                    out[kind] = merge(out[kind], {"trl": {name: v}})
        else:
            for kind in [k for k in known if key in known[k]] or ["sft"]:
                out[kind][key] = value
    return out


# TRL's config class per stage. The `trl:` section is passed to it unchanged (after the arguments stagewise
# derives, so it can override them): any TRL feature is one key away, and TRL checks its own names.
TRL_CONFIGS = {"sft": "SFTConfig", "rl": "GRPOConfig", "joint": "GRPOConfig"}


def trl_fields(kind: str) -> set[str]:
    import dataclasses

    import trl

    return {f.name for f in dataclasses.fields(getattr(trl, TRL_CONFIGS[kind]))} if kind in TRL_CONFIGS else set()


def not_a_trl_field(kind: str, key: str, prefix: str = "") -> str:
    import trl

    return (f"{prefix}trl.{key} is not an option of TRL's {TRL_CONFIGS[kind]} (trl {trl.__version__}); the "
            f"trl: section is passed to it unchanged, so use the field names of its documentation")


def trl_config(kind: str, cfg: dict, args: dict):
    """TRL's config for the stage: the arguments stagewise derives with the `trl:` section laid over them,
    unchanged. TRL refuses an unknown name (TypeError) or a bad value (ValueError): a ConfigError here."""
    import trl

    cls = getattr(trl, TRL_CONFIGS[kind])
    extra = cfg.get("trl") or {}
    try:
        return cls(**{**args, **extra})
    except TypeError as exc:
        unknown = [key for key in extra if key not in trl_fields(kind)]
        if not unknown:
            raise
        raise ConfigError("; ".join(not_a_trl_field(kind, key) for key in unknown) + f" (TRL: {exc})",
                          fix="fix or remove it in the trl: section (or the --set trl.KEY=VALUE)") from None
    except ValueError as exc:
        given = f" with trl: {extra}" if extra else ""
        raise ConfigError(f"TRL's {cls.__name__} refused the {kind} config{given}: {exc}",
                          fix="change the value TRL names") from None


def resolve_device(cfg: dict) -> dict:
    """Fill in bf16/fp16/use_cpu from `precision` and the hardware; CPU gets fp32."""
    import torch

    cfg = copy.deepcopy(cfg)
    gpu = torch.cuda.is_available()
    precision = cfg.get("precision", "auto")
    if precision == "auto":
        precision = "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp32"
    if not gpu and precision != "fp32":
        raise ConfigError(f"precision={precision} needs a GPU; on CPU use --precision fp32 (or auto)")
    cfg["resolved_precision"] = precision
    cfg["device"] = "cuda" if gpu else "cpu"
    if cfg.get("report_to") in ("tensorboard", "wandb"):  # only when asked, and then it must be installed
        import importlib.util

        module = {"tensorboard": "tensorboard", "wandb": "wandb"}[cfg["report_to"]]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"report_to={cfg['report_to']} needs {module}: pip install {module} "
                              "(or report_to: none; metrics.jsonl is always written)")
    return cfg


def trainer_args(cfg: dict, out: Path) -> dict:
    """Arguments shared by SFTConfig and GRPOConfig (transformers TrainingArguments names)."""
    extra = {"gradient_checkpointing": True} if cfg["gradient_checkpointing"] else {}
    return {
        **extra,
        "output_dir": str(out / "checkpoints"),
        "max_steps": cfg["max_steps"],
        "optim": cfg["optim"],
        "learning_rate": float(cfg["learning_rate"]),
        "lr_scheduler_type": cfg["lr_scheduler_type"],
        "warmup_steps": cfg["warmup_steps"],
        "weight_decay": cfg["weight_decay"],
        "max_grad_norm": cfg["max_grad_norm"],
        "gradient_accumulation_steps": cfg["gradient_accumulation_steps"],
        "seed": cfg["seed"],
        "data_seed": cfg["seed"],
        "bf16": cfg["resolved_precision"] == "bf16",
        "fp16": cfg["resolved_precision"] == "fp16",
        "use_cpu": cfg["device"] == "cpu",
        "save_strategy": "steps",
        "save_steps": cfg["save_steps"],
        "save_total_limit": cfg["save_total_limit"],
        "logging_steps": cfg["logging_steps"],
        "report_to": [] if cfg["report_to"] == "none" else [cfg["report_to"]],
        "dataloader_num_workers": 0,  # workers fork the process: no gain on small tokenized data, 2 CPU cores
        "disable_tqdm": True,  # stagewise shows its own progress line
    }


def peft_config(cfg: dict):
    """A peft LoraConfig when `lora: true`, else None."""
    if not cfg.get("lora"):
        return None

    peft = require("peft", "peft")
    targets = cfg["lora_target_modules"]
    return peft.LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
                           target_modules=targets, task_type="CAUSAL_LM")


def write_resolved(cfg: dict, out: Path, name: str = "config.yaml") -> Path:
    """Write the resolved config atomically (temp file + os.replace)."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    if int(os.environ.get("RANK", "0")) != 0:  # one writer under accelerate launch
        return path
    write_text_atomic(path, yaml.safe_dump(cfg, sort_keys=False))
    return path
