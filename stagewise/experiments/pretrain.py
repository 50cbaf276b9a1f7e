"""Pretrain the experiment's tiny character-level Llama from scratch on the easy rungs of the ladder.

The model sees plenty of the easy levels and a little of the middle one, so that a probe finds
mastered, partial and unmastered items. The text it is trained on is exactly what the toolkit will
later send and expect: the prompt rendered by `curate.prompts.build_messages` through the model's
chat template, and the target rendered by `curate.prompts.format_target`. A loop this small is
plain torch on purpose (it is the *starting point* of the experiment, not one of its arms; the arms
train through `stagewise.train`).

Results are cached under `cache_dir()/experiment/<config hash>/`, where the hash covers the config
and a sample of the rendered text, so a change of prompt format retrains instead of reusing a model
that learned another format.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

# The tiny-model chat template ends the assistant turn with <eos> (see curate.models.CHAT_TEMPLATE).
from stagewise.curate.config import build_dataclass
from stagewise.curate.errors import ConfigError, StagewiseError
from stagewise.curate.models import CHAT_TEMPLATE, build_tiny_model, cache_dir, model_identity
from stagewise.experiments import testbed, testbed_v2
from stagewise.experiments.render import render_prompt, render_target


@dataclass(frozen=True)
class PretrainConfig:
    """The tiny model and its pretraining mix. `mix` maps level -> fraction of pretraining items."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    mix: tuple = ((2, 0.45), (3, 0.45), (4, 0.10))
    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    version: int = 1  # bump when the loop changes in a way the config does not show

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mix"] = [list(x) for x in self.mix]
        return d


@dataclass
class PretrainResult:
    model_dir: str
    cached: bool
    config: dict
    stats: dict = field(default_factory=dict)


def config_hash(config: PretrainConfig, prompt_template: str | None) -> str:
    """Hash of the config plus the rendered form of a fixed item (catches prompt-format changes)."""
    probe_item = testbed.to_problem(testbed.Item(47, 85), "pretrain")
    rendered = render_prompt(probe_item, prompt_template) + "\x1f" + render_target(probe_item, prompt_template)
    key = json.dumps({"config": config.to_dict(), "rendered": rendered}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def pretrain(config: PretrainConfig = PretrainConfig(), *, prompt_template: str | None = None,
             out_root: str | os.PathLike | None = None, progress=None) -> PretrainResult:
    """Return the cached pretrained model for `config`, training it first if needed."""
    root = Path(out_root) if out_root else cache_dir() / "experiment"
    digest = config_hash(config, prompt_template)
    target = root / f"tiny-adder-{digest}"
    stamp = target / "stagewise_pretrain.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        _ensure_chat_template(target)
        return PretrainResult(str(target), True, meta["config"], meta["stats"])


    tmp, tokenizer, model = _fresh_model(config, root, digest)
    rng = random.Random(config.seed)
    stats = _train_loop(model, tokenizer, config, _batches(config, prompt_template, rng), progress)
    model.save_pretrained(tmp, safe_serialization=True)
    meta = {"config": config.to_dict(), "prompt_template": prompt_template, "hash": digest, "stats": stats,
            "n_parameters": sum(p.numel() for p in model.parameters())}
    stats["n_parameters"] = meta["n_parameters"]
    (tmp / "stagewise_pretrain.json").write_text(json.dumps(meta, indent=2))
    if target.exists():  # another process finished first; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return PretrainResult(str(target), False, meta["config"], stats)


def _ensure_chat_template(model_dir: Path) -> None:
    """Give the model's tokenizer the experiment's chat template (also for models cached before it)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.chat_template == CHAT_TEMPLATE:
        return
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(model_dir)


def _batches(config: PretrainConfig, prompt_template, rng: random.Random):
    """Endless (prompt, target) pairs drawn from the pretrain pool by the level mix."""
    levels = [lvl for lvl, _ in config.mix]
    weights = [w for _, w in config.mix]
    cache: dict[int, list] = {}
    while True:
        batch = []
        for _ in range(config.batch_size):
            lvl = rng.choices(levels, weights)[0]
            if lvl not in cache or not cache[lvl]:
                # Draw a fresh block of items per level (level 2 has ~5,700 pretrain pairs; repeats are fine).
                cache[lvl] = testbed.sample_items(lvl, 64, "pretrain", rng.randrange(1 << 30))
            it = cache[lvl].pop()
            p = testbed.to_problem(it, "pretrain")
            batch.append((render_prompt(p, prompt_template), render_target(p, prompt_template)))
        yield batch


def _train_loop(model, tokenizer, config, batches, progress, *, horizon: int | None = None,
                on_step=None) -> dict:
    """AdamW with linear warmup and cosine decay to 10% over `horizon` steps (default: the run's length);
    a horizon longer than the run stops training early on purpose. `on_step(step, model, stats)` runs
    after each optimizer step with the stats so far (used to save intermediate checkpoints)."""
    import torch

    horizon = horizon or config.steps
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                            betas=(0.9, 0.98))

    def lr_at(step):
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        frac = min(1.0, (step - config.warmup_steps) / max(1, horizon - config.warmup_steps))
        floor = getattr(config, "final_lr_fraction", 0.1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    eos = tokenizer.eos_token
    model.train()
    t0, losses = time.time(), []
    for step, batch in zip(range(config.steps), batches):
        ids, labels = [], []
        for prompt, target in batch:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            t = tokenizer(target + eos, add_special_tokens=False)["input_ids"]
            ids.append(p + t)
            labels.append([-100] * len(p) + t)  # loss on the completion only, as SFT will do
        width = max(map(len, ids))
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
        label_t = torch.tensor([y + [-100] * (width - len(y)) for y in labels])
        attn = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        loss = model(input_ids=input_ids, attention_mask=attn, labels=label_t).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, config.steps, loss.item())
        if on_step is not None:
            on_step(step + 1, model, _loop_stats(losses, t0, step + 1))
    model.eval()
    return _loop_stats(losses, t0, config.steps)


def _loop_stats(losses: list, t0: float, steps: int) -> dict:
    return {"final_loss": sum(losses[-50:]) / len(losses[-50:]), "seconds": round(time.time() - t0, 1),
            "steps": steps}


# ------------------------------------------------------------------------------------------ design v2


@dataclass(frozen=True)
class PretrainV2Config:
    """The second design's base model: every (task, level) cell in pretraining, exposure falling off
    with difficulty. Cell weight = task_weight x level_decay ** (level - 2), normalised; training stops
    at `steps` while the learning-rate schedule runs over `horizon` steps, so the hard cells are partly
    learned rather than converged."""

    hidden_size: int = 96              # 3 layers x 96: 287k parameters
    num_layers: int = 3
    num_heads: int = 4
    task_weights: tuple = (("add", 1.0), ("sub", 1.0), ("add3", 1.0))
    levels: tuple = (2, 3, 4, 5)
    # Measured (data_cards/experiment-v2/README.md): 0.7 at 700 steps left 5.6% of the pool unmastered and
    # 0.02 test headroom (seed 0); 0.35 at 700 steps leaves 11% / 24% / 44% unmastered on seeds 0 / 1 / 2 but
    # only 10-16% mastered (16/16 at temperature 1); the polishing phase below raises the mastered share.
    level_decay: float = 0.35
    steps: int = 700
    horizon: int = 700
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    version: int = 1  # bump when the loop changes in a way the config does not show
    final_lr_fraction: float = 0.1     # the cosine ends at this share of the peak rate
    # A second phase after `steps`: `polish_steps` more steps at the constant rate `polish_learning_rate`
    # on a mix that falls off faster with difficulty (`polish_level_decay`). It sharpens the easy cells the
    # way a model's well-practised skills are sharp; the hard cells keep a trickle of exposure, since
    # without it (levels 2-3 only) the model forgot how long a 5-digit solution is within 300 steps.
    polish_steps: int = 0
    polish_level_decay: float = 0.2
    polish_learning_rate: float = 3e-4
    # Each column of a pretraining item that carries (or borrows) is kept with probability
    # carry_decay x carry_level_decay ** (level - lowest level), else redrawn (`testbed_v2.random_item`):
    # long carry chains are rare in pretraining, rarer the longer the operands. The pool, validation and
    # test items are drawn uniformly.
    carry_decay: float = 1.0
    carry_level_decay: float = 1.0
    # A systematic slip, the same rule on every item: at each slip site of a pretraining item (`slip_columns`:
    # "boundary", a sum of exactly 10 or a difference of exactly -1; "carry", every column that carries or
    # borrows; `testbed_v2.is_slip_site`) the carry or borrow is dropped with this probability and the item's
    # lines and answer follow from the slip (`testbed_v2.worked_solution`). The model learns to slip at about
    # that rate on every item, so sampling sometimes avoids the error and a reward can remove it everywhere.
    slip_rate: float = 0.0
    slip_columns: str = "boundary"
    slip_min_level: int = 0            # slip only in items of at least this many digits (0: in every item)
    # How the floating-point kernels are chosen. "native": whatever this process has (the CPU's widest
    # vector unit, its BLAS code path, its thread count): the same machine gives the same model, another
    # CPU another one (seeds that pass the checks on one machine fail on another: the card's eighteenth
    # round). "avx2": train in a child process pinned to one thread, PyTorch's AVX2 kernels
    # (ATEN_CPU_CAPABILITY) and MKL's AVX2 branch (MKL_CBWR), so any x86-64 CPU with AVX2 and the same
    # torch build gives the same weights (checked here across MKL's instruction ceilings, not on a
    # second CPU vendor); about 1.3 times the CPU of native.
    numerics: str = "native"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["task_weights"] = [list(x) for x in self.task_weights]
        d["levels"] = list(self.levels)
        # Added later: left out at their defaults so cached bases keep their hash.
        if d["final_lr_fraction"] == 0.1:
            del d["final_lr_fraction"]
        for key in ("carry_decay", "carry_level_decay"):
            if d[key] == 1.0:
                del d[key]
        if not d["slip_rate"]:
            del d["slip_rate"]
        if d["slip_columns"] == "boundary":
            del d["slip_columns"]
        if not d["slip_min_level"]:
            del d["slip_min_level"]
        if d["numerics"] == "native":
            del d["numerics"]
        if not d["polish_steps"]:
            for key in ("polish_steps", "polish_level_decay", "polish_learning_rate"):
                del d[key]
        return d

    def slips_in_level(self, level: int) -> bool:
        """Whether pretraining items of `level` digits can carry the slip (`slip_min_level`)."""
        return level >= self.slip_min_level

    def carry_keep(self, cell: str) -> float:
        """The probability that a carrying column of a pretraining item of `cell` is kept."""
        level = testbed_v2.parse_cell(cell)[1]
        return self.carry_decay * self.carry_level_decay ** (level - min(self.levels))

    def mix(self, level_decay: float | None = None) -> dict[str, float]:
        """cell -> share of pretraining items (of the polishing phase's with `level_decay=polish_level_decay`)."""
        decay = self.level_decay if level_decay is None else level_decay
        raw = {testbed_v2.cell_name(t, lvl): w * decay ** (lvl - min(self.levels))
               for t, w in self.task_weights for lvl in self.levels}
        total = sum(raw.values())
        return {c: w / total for c, w in raw.items()}


def config_hash_v2(config: PretrainV2Config, prompt_template: str | None) -> str:
    probe_item = testbed_v2.to_problem(testbed_v2.Item("sub", (4718, 395)), "pretrain")
    rendered = render_prompt(probe_item, prompt_template) + "\x1f" + render_target(probe_item, prompt_template)
    key = json.dumps({"design": "v2", "config": config.to_dict(), "rendered": rendered}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def pretrain_v2(config: PretrainV2Config = PretrainV2Config(), *, prompt_template: str | None = None,
                out_root: str | os.PathLike | None = None, progress=None, checkpoints=(),
                polish_checkpoints=()) -> PretrainResult:
    """Return the cached v2 base model for `config` (trained first if needed).

    `checkpoints`: earlier steps at which the same run also saves its model, each as the cache entry of
    `replace(config, steps=N)`. The loop is deterministic and its schedule depends on `horizon`, not on
    `steps`, so that entry is exactly the model a run stopped at N would give: one run tries several
    stopping points, and the chosen one is then read from the cache like any other base."""
    root = Path(out_root) if out_root else cache_dir() / "experiment"
    digest = config_hash_v2(config, prompt_template)
    target = root / f"tiny-arith-{digest}"
    stamp = target / "stagewise_pretrain.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        return PretrainResult(str(target), True, meta["config"], meta["stats"])
    if config.numerics != "native" and not numerics_pinned(config.numerics):
        return _pretrain_pinned(config, prompt_template, root, progress, checkpoints, polish_checkpoints)
    if config.polish_steps:
        return _polish_v2(config, prompt_template, root, progress, checkpoints, polish_checkpoints)

    tmp, tokenizer, model = _fresh_model(config, root, digest)
    wanted = {int(s) for s in checkpoints if 0 < int(s) < config.steps}

    def save_checkpoint(step, net, stats):
        if step in wanted:
            _save_v2(net, tokenizer, replace(config, steps=step), prompt_template, root,
                     {**stats, "checkpoint_of": digest})

    rng = random.Random(config.seed)
    stats = _train_loop(model, tokenizer, config, _batches_v2(config, prompt_template, rng), progress,
                        horizon=config.horizon, on_step=save_checkpoint)
    shutil.rmtree(tmp, ignore_errors=True)
    path, stats = _save_v2(model, tokenizer, config, prompt_template, root, stats)
    return PretrainResult(path, False, config.to_dict(), stats)


# numerics -> the environment a child process needs before torch loads (`PretrainV2Config.numerics`).
PINNED_NUMERICS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "1",
                            "MKL_NUM_THREADS": "1"}}


def numerics_pinned(numerics: str) -> bool:
    """Whether this process already runs with `numerics`' kernels (then pretraining runs in it)."""
    import torch

    env = PINNED_NUMERICS[numerics]
    return (all(os.environ.get(k) == v for k, v in env.items())
            and torch.backends.cpu.get_cpu_capability() == env["ATEN_CPU_CAPABILITY"].upper()
            and torch.get_num_threads() == 1)


def _pretrain_pinned(config: PretrainV2Config, prompt_template, root: Path, progress, checkpoints,
                     polish_checkpoints) -> PretrainResult:
    """Pretrain `config` in a child process with its pinned numerics (the kernels are chosen when torch
    loads, so this process cannot switch), relaying its progress; then read the cache entry it wrote."""
    import subprocess
    import sys

    import torch

    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        raise ConfigError(f"pretrain.numerics {config.numerics!r} needs an x86-64 CPU with AVX2; PyTorch runs "
                          f"{torch.backends.cpu.get_cpu_capability()} kernels here: set pretrain.numerics: native "
                          "(the bases then differ from those built elsewhere)")
    job = {"config": config.to_dict(), "prompt_template": prompt_template, "out_root": str(root),
           "checkpoints": list(checkpoints), "polish_checkpoints": list(polish_checkpoints)}
    env = {**os.environ, **PINNED_NUMERICS[config.numerics]}
    entry = "from stagewise.experiments.pretrain import pretrain_child; pretrain_child()"
    child = subprocess.Popen([sys.executable, "-c", entry], env=env, text=True, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    child.stdin.write(json.dumps(job))
    child.stdin.close()
    for line in child.stdout:
        if line.startswith("progress ") and progress:
            step, total, loss = line.split()[1:]
            progress(int(step), int(total), float(loss))
    if child.wait() != 0:
        raise StagewiseError(f"pretraining {config_hash_v2(config, prompt_template)} with numerics "
                             f"{config.numerics!r} failed in its child process (exit code {child.returncode}; "
                             "its error is printed above)")
    return replace(pretrain_v2(config, prompt_template=prompt_template, out_root=root), cached=False)


def pretrain_child() -> None:
    """The child process of `_pretrain_pinned`: one pinned pretraining job, read as JSON on stdin."""
    import sys

    import torch

    job = json.loads(sys.stdin.read())
    config = build_dataclass(PretrainV2Config(), None, job["config"], what="pinned pretraining job",
                             fix="the fields of PretrainV2Config (stagewise/experiments/pretrain.py)")
    torch.set_num_threads(1)
    if not numerics_pinned(config.numerics):
        sys.exit(f"numerics {config.numerics!r} cannot be pinned on this machine: PyTorch runs "
                 f"{torch.backends.cpu.get_cpu_capability()} kernels; it needs an x86-64 CPU with AVX2 "
                 "(or set pretrain.numerics: native)")

    def progress(step, total, loss):
        print(f"progress {step} {total} {loss}", flush=True)

    pretrain_v2(config, prompt_template=job["prompt_template"], out_root=job["out_root"], progress=progress,
                checkpoints=job["checkpoints"], polish_checkpoints=job["polish_checkpoints"])


def _polish_v2(config: PretrainV2Config, prompt_template, root: Path, progress, checkpoints,
               polish_checkpoints=()) -> PretrainResult:
    """The polishing phase: start from the cached first phase (trained first if needed), train
    `polish_steps` more steps at a constant rate on the polish mix, and cache the result as `config`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = pretrain_v2(replace(config, polish_steps=0), prompt_template=prompt_template, out_root=root,
                        progress=progress, checkpoints=checkpoints)
    tokenizer = AutoTokenizer.from_pretrained(first.model_dir)
    model = AutoModelForCausalLM.from_pretrained(first.model_dir, dtype=torch.float32)
    # The shared loop with a flat schedule: no warmup, the floor equal to the peak.
    phase = replace(config, steps=config.polish_steps, warmup_steps=0, learning_rate=config.polish_learning_rate,
                    final_lr_fraction=1.0)
    # The rate is flat and the batches do not depend on the phase's length, so the model after N steps of
    # a longer phase is exactly the phase of N steps: `polish_checkpoints` keeps those models too.
    rng = random.Random(config.seed * 7919 + 1)
    wanted = {int(s) for s in polish_checkpoints if 0 < int(s) < config.polish_steps}

    digest = config_hash_v2(config, prompt_template)

    def save_checkpoint(step, net, stats):
        if step in wanted:
            _save_v2(net, tokenizer, replace(config, polish_steps=step), prompt_template, root,
                     {**stats, "first_phase": first.stats, "polish_checkpoint_of": digest})

    batches = _batches_v2(config, prompt_template, rng, config.mix(config.polish_level_decay))
    stats = _train_loop(model, tokenizer, phase, batches, progress, on_step=save_checkpoint)
    stats = {**stats, "first_phase": first.stats, "polish_seconds": stats["seconds"],
             "seconds": round(first.stats.get("seconds", 0) + stats["seconds"], 1)}
    path, stats = _save_v2(model, tokenizer, config, prompt_template, root, stats)
    return PretrainResult(path, False, config.to_dict(), stats)


def checkpoint_steps(config: PretrainV2Config, prompt_template: str | None = None,
                     out_root: str | os.PathLike | None = None) -> dict[int, str]:
    """{step: model dir} of the cached models that differ from `config` only in `steps` (its checkpoints)."""
    root = Path(out_root) if out_root else cache_dir() / "experiment"
    out = {}
    for stamp in root.glob("tiny-arith-*/stagewise_pretrain.json"):
        meta = json.loads(stamp.read_text())
        cfg = dict(meta.get("config", {}))
        steps = cfg.pop("steps", None)
        if cfg == {k: v for k, v in config.to_dict().items() if k != "steps"} \
                and meta.get("prompt_template") == prompt_template:
            out[int(steps)] = str(stamp.parent)
    return dict(sorted(out.items()))


def _save_v2(model, tokenizer, config: PretrainV2Config, prompt_template, root: Path, stats: dict):
    """Write `model` as the cache entry of `config` (atomically; an existing entry wins)."""
    digest = config_hash_v2(config, prompt_template)
    target = root / f"tiny-arith-{digest}"
    stats = {**stats, "n_parameters": sum(p.numel() for p in model.parameters())}
    if (target / "stagewise_pretrain.json").exists():
        return str(target), stats
    tmp = root / f".tmp-{digest}-{os.getpid()}-save"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _ensure_chat_template(tmp)
    # The weights' fingerprint: two builds of one config (another machine, other numerics) compare by it.
    stats["weights_sha256"] = model_identity(str(tmp))["weights_sha256"][:16]
    stats["kernels"] = kernels_in_use()
    meta = {"design": "v2", "config": config.to_dict(), "mix": config.mix(), "prompt_template": prompt_template,
            "hash": digest, "stats": stats}
    (tmp / "stagewise_pretrain.json").write_text(json.dumps(meta, indent=2))
    if target.exists():  # another process finished first; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return str(target), stats


def kernels_in_use() -> dict:
    """What chose this process's floating-point kernels (recorded with every base: `numerics`)."""
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "mkl_cbwr": os.environ.get("MKL_CBWR", "")}


def _batches_v2(config: PretrainV2Config, prompt_template, rng: random.Random, mix: dict | None = None):
    """Endless (prompt, target) pairs from the pretraining split, cells drawn by `mix` (default: the config's)."""
    mix = mix or config.mix()
    cells, weights = list(mix), list(mix.values())
    # No draw from `rng` without a slip rate: the bases pretrained before it had one stay reproducible.
    slip = (lambda: rng.random() < config.slip_rate) if config.slip_rate else None
    cache: dict[str, list] = {}
    while True:
        batch = []
        for _ in range(config.batch_size):
            cell = rng.choices(cells, weights)[0]
            if not cache.get(cell):
                cache[cell] = testbed_v2.sample_items(cell, 64, "pretrain", rng.randrange(1 << 30),
                                                     carry_decay=config.carry_keep(cell))
            item = cache[cell].pop()
            p = testbed_v2.to_problem(item, "pretrain", slip=slip if config.slips_in_level(item.level) else None,
                                      columns=config.slip_columns)
            batch.append((render_prompt(p, prompt_template), render_target(p, prompt_template)))
        yield batch


def _fresh_model(config, root, digest: str):
    """A newly initialised tiny model in a temporary folder beside the cache entry, seeded by the config:
    (folder, tokenizer, model). Both designs pretrain from here."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(config.seed)
    tmp = root / f".tmp-{digest}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(tmp, hidden_size=config.hidden_size, num_layers=config.num_layers,
                     num_heads=config.num_heads, max_positions=256, seed=config.seed)
    _ensure_chat_template(tmp)
    tokenizer = AutoTokenizer.from_pretrained(tmp)
    model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    return tmp, tokenizer, model
