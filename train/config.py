"""Trainer configuration: commented YAML defaults (stagewise/configs/train_*.yaml), an optional user
YAML file, then command-line flags, in that order of precedence. Validated all at once; the resolved
config (device, precision and probe sampling filled in) is written to OUT/config.yaml for every run.
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path

from stagewise.curate.atomic import write_text_atomic
from stagewise.curate.errors import ConfigError

KINDS = ("sft", "rl", "joint", "eval")
_CHOICES = {
    "loss": ("nll", "dft", "iw-sft"),
    "loss_type": ("grpo", "dr_grpo", "dapo"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "scale_rewards": ("group", "batch", "none"),
    "use_vllm": ("auto", True, False),
    "vllm_mode": ("colocate", "server"),
    "report_to": ("none", "tensorboard", "wandb"),
    "mode": ("weighted", "relift", "bridge"),
    "lambda_schedule": ("constant", "linear"),
    "sft_loss": ("nll", "dft", "iw-sft"),
}
_POSITIVE = ("max_steps", "batch_size", "gradient_accumulation_steps", "num_generations", "logging_steps",
             "save_steps", "max_length", "buffer_size", "lora_r", "sft_batch_size")
_NON_NEGATIVE = ("beta", "learning_rate", "weight_decay", "warmup_steps", "iw_clip", "sft_eval_steps",
                 "sft_weight", "max_grad_norm", "gain_weight", "sft_learning_rate")


def default_config(kind: str) -> dict:
    """The packaged defaults for one stage (`sft`, `rl` or `joint`)."""
    import yaml

    if kind not in KINDS:
        raise ConfigError(f"unknown trainer kind {kind!r}; expected one of {KINDS}")
    def load(name):
        return yaml.safe_load(resources.files("stagewise").joinpath("configs", f"train_{name}.yaml").read_text()) or {}

    if kind == "joint":  # the RL options plus the joint ones
        return {**load("rl"), **load("joint")}
    return load(kind)


def _norm_keys(d: dict) -> dict:
    # Keys are long option names: `max-steps` and `max_steps` mean the same thing.
    return {str(k).replace("-", "_"): v for k, v in d.items()}


def read_yaml(path: str | os.PathLike, section: str | None = None) -> dict:
    """A user config file; `section` picks one stage out of a `stagewise run` file (sft:, rl:, ...)."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of option names to values")
    if section and isinstance(data.get(section), dict):
        data = data[section]
    return _norm_keys(data)


def build_config(kind: str, config: str | os.PathLike | dict | None = None, **overrides) -> dict:
    """Defaults <- config file or dict <- overrides (None means "not given"). Raises ConfigError listing
    every unknown key and bad value at once."""
    cfg = default_config(kind)
    known = set(cfg)
    user = {}
    if isinstance(config, dict):
        user = _norm_keys(config)
    elif config is not None:
        user = read_yaml(config, section=kind)
    overrides = {k: v for k, v in _norm_keys(overrides).items() if v is not None}
    problems = [f"unknown option {k!r}" for k in {**user, **overrides} if k not in known]
    cfg.update({k: v for k, v in user.items() if k in known})
    cfg.update({k: v for k, v in overrides.items() if k in known})
    problems += validate(cfg)
    if problems:
        raise ConfigError(f"invalid {kind} config: " + "; ".join(problems)
                          + f" (see stagewise/configs/train_{kind}.yaml for every option)")
    return cfg


def validate(cfg: dict) -> list[str]:
    problems = []
    for key, choices in _CHOICES.items():
        if key in cfg and cfg[key] not in choices:
            problems.append(f"{key}={cfg[key]!r} (choose from {', '.join(map(str, choices))})")
    for key in _POSITIVE:
        if key in cfg and cfg[key] is not None and not (isinstance(cfg[key], int) and cfg[key] > 0):
            problems.append(f"{key}={cfg[key]!r} (must be a positive integer)")
    for key in _NON_NEGATIVE:
        if key in cfg and cfg[key] is not None and not (isinstance(cfg[key], (int, float)) and cfg[key] >= 0):
            problems.append(f"{key}={cfg[key]!r} (must be >= 0)")
    if cfg.get("num_generations") is not None and cfg["num_generations"] < 2:
        problems.append(f"num_generations={cfg['num_generations']} (GRPO needs at least 2 per group: "
                        "the advantage is relative to the group)")
    for key in ("temperature", "top_p"):
        v = cfg.get(key)
        if v is not None and not (isinstance(v, (int, float)) and v > 0):
            problems.append(f"{key}={v!r} (must be > 0)")
    return problems


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
    from stagewise.curate.errors import require

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
