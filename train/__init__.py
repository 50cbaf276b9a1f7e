"""train: SFT and RL recipes on TRL, losses, rewards (which call curate's verifiers), evaluation.

Imports `curate` and `stages`.

    train_sft(data, model, out, *, loss="nll"|"dft"|"iw-sft", max_steps, learning_rate, batch_size, seed,
              resume=False, config=None, dry_run=False, **options)            -> TrainResult   (sft.py)
    train_rl(data, model, out, *, loss_type="grpo"|"dr_grpo"|"dapo", num_generations, beta=0.0, ...)
                                                                               -> TrainResult   (rl.py)
    train(data, model, out, *, reprobe=False, eval_data=None, sft={}, rl={}, eval={}, ...)
                                                                               -> PipelineResult (pipeline.py)
    train_joint(data, model, out, *, mode="weighted"|"relift"|"bridge", ...)  -> TrainResult   (joint/)

Options and their defaults: stagewise/configs/train_{sft,rl,joint,eval}.yaml (commented). Precedence:
packaged defaults < --config YAML < flags / keyword arguments; every run writes OUT/config.yaml.

CPU (the defaults): fp32 (`precision: auto`), small batches, few steps; nothing else to set.

One GPU: the same command. `precision: auto` becomes bf16; RL generates with vLLM (colocate) when a
vLLM version TRL supports is installed (TRL 1.16: vLLM 0.22-0.31, see trl.import_utils.is_vllm_available;
`--set use_vllm=false` keeps transformers generate); `--set lora=true` trains a peft LoRA adapter and
saves merged weights (adapter kept in OUT/adapter).

Several GPUs or nodes: launch the same command through accelerate, with any accelerate / DeepSpeed / FSDP
config (TRL ships ready ones in trl/accelerate_configs/: multi_gpu, zero1-3, fsdp1-2):

    accelerate launch --config_file zero2.yaml -m stagewise.cli train --data export/ --model M --out runs/t
    accelerate launch --num_processes 8 -m stagewise.cli train rl --data export/ --model runs/t/sft/model \\
        --out runs/rl --set num_generations=16 --dry-run      # builds the trainers, prints the config

Only rank 0 writes metrics.jsonl, configs, the completion marker (train.done.json) and the final model.
The `bridge` joint mode is single-process (it writes per-level gradients itself); `weighted` and
`relift` run under accelerate like the plain recipes.

The recipes import torch, transformers and TRL when their module loads. The three entry points below
load a recipe when it is called, so `import stagewise` and `stagewise --help` stay fast.
"""

from __future__ import annotations

from stagewise.train.result import TrainResult


def train_sft(data, model, out, **options) -> TrainResult:
    """SFT on an export's SFT split: `stagewise.train.sft.train_sft`, whose options are documented there."""
    from stagewise.train.sft import train_sft as recipe  # torch and TRL load here

    return recipe(data, model, out, **options)


def train_rl(data, model, out, **options) -> TrainResult:
    """GRPO-family RL on an export's RL split: `stagewise.train.rl.train_rl`, whose options are documented there."""
    from stagewise.train.rl import train_rl as recipe  # torch and TRL load here

    return recipe(data, model, out, **options)


def train_joint(data, model, out, **options) -> TrainResult:
    """Single-stage SFT+RL on both splits: `stagewise.train.joint.train_joint`, whose options are documented there."""
    from stagewise.train.joint import train_joint as recipe  # torch and TRL load here

    return recipe(data, model, out, **options)
