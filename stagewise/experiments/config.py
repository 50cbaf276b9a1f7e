"""Experiment configuration and its three presets (default, quick, test); `configure` lays a YAML file
and overrides over a preset through the one config system (curate/config.py).

The compute currency is the optimizer step at a fixed batch of `batch_size` sequences: an SFT step
trains on `batch_size` demonstrations, an RL step on `batch_size` sampled completions
(`batch_size / num_generations` prompts x `num_generations`). Every arm gets `total_steps` steps;
two-stage arms give `sft_fraction` of them to SFT and the rest to RL. RL steps cost more wall time
(they generate), so the report shows wall time and generated tokens per arm beside the metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass, replace

from stagewise.curate.config import build_dataclass
from stagewise.curate.errors import ConfigError
from stagewise.experiments.pretrain import PretrainConfig
from stagewise.experiments.testbed_v2 import SLIP_COLUMNS, all_cells

# The prompt the probe sends (through the tiny model's chat template). Short on purpose: a 0.7M
# character model reads every character. The answer format is the numeric verifier's \boxed{}.
PROMPT_TEMPLATE = "{prompt}"


class _StepBudget:
    """What both designs share: every arm gets `total_steps` optimizer steps; two-stage arms give
    `sft_fraction` of them to SFT and the rest to RL."""

    @property
    def sft_steps(self) -> int:
        return max(1, round(self.total_steps * self.sft_fraction))

    @property
    def rl_steps(self) -> int:
        return max(1, self.total_steps - self.sft_steps)

    def _budget_problems(self) -> list[str]:
        problems = []
        if not 0 < self.sft_fraction < 1:
            problems.append(f"sft_fraction {self.sft_fraction} must be strictly between 0 and 1")
        if self.total_steps < 2:
            problems.append(f"total_steps {self.total_steps} must be at least 2 (one per stage)")
        if max(self.ks) > self.eval_samples:
            problems.append(f"pass@{max(self.ks)} needs eval_samples >= {max(self.ks)}")
        return problems

    def _raise_if(self, problems: list[str]):
        if problems:
            raise ConfigError("invalid experiment config: " + "; ".join(problems))
        return self


@dataclass(frozen=True)
class ExperimentConfig(_StepBudget):
    levels: tuple = (2, 3, 4, 5)        # digits per operand: the rungs of the ladder
    pool_per_level: int = 32            # probe pool (the candidates routed to SFT / RL) per level
    heldout_per_level: int = 12         # held-out evaluation items per level (never trained on)
    probe_samples: int = 8              # k for the base probe that defines the buckets
    eval_samples: int = 16              # samples per held-out item: pass@1 is their mean; pass@16 needs 16
    ks: tuple = (1, 4, 16)
    max_new_tokens: int = 96            # a 5-digit worked solution plus the answer sentence is ~80 characters
    total_steps: int = 32               # optimizer steps per arm (the equal-compute budget)
    sft_fraction: float = 0.5           # share of steps for the SFT stage in two-stage arms
    batch_size: int = 16                # sequences per optimizer step (SFT demos or RL completions)
    num_generations: int = 4            # GRPO group size
    # Chosen on a pilot (not on the held-out set): at SFT 5e-4 a few steps on 5-digit items wrecked the
    # answer read-out on every level, and RL at 1e-4 lowered held-out accuracy while its reward rose.
    sft_learning_rate: float = 1e-4
    rl_learning_rate: float = 2e-5
    rl_loss_type: str = "grpo"
    seeds: int = 3
    probe_batch_size: int = 256         # generation batch: for a tiny model the cost is per decode step
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    prompt_template: str = PROMPT_TEMPLATE
    base_model: str | None = None       # a ready model dir instead of pretraining (its format must match)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pretrain"] = self.pretrain.to_dict()
        d["levels"] = list(self.levels)
        d["ks"] = list(self.ks)
        return d

    def validate(self) -> ExperimentConfig:
        problems = self._budget_problems()
        if self.batch_size % self.num_generations:
            problems.append(f"batch_size {self.batch_size} must be a multiple of num_generations "
                            f"{self.num_generations} (an RL step is batch_size completions in whole groups)")
        if self.seeds < 1:
            problems.append(f"seeds {self.seeds} must be at least 1")
        return self._raise_if(problems)


DEFAULT = ExperimentConfig()
# One seed, few steps, every arm: the mechanics in about three minutes.
QUICK = replace(DEFAULT, pool_per_level=12, heldout_per_level=6, total_steps=4, seeds=1)
# The test suite's configuration: smaller still (pass arms=... to pick a few), with a test-size model
# pretrained in seconds, so a cold cache never pretrains the full model inside the suite.
TEST = replace(DEFAULT, pool_per_level=12, heldout_per_level=4, total_steps=4, seeds=1, batch_size=8,
               levels=(2, 3, 4), pretrain=PretrainConfig(hidden_size=64, num_layers=2, steps=300, batch_size=32,
                                                         warmup_steps=30, mix=((2, 0.6), (3, 0.4))))


def preset(quick: bool = False, test: bool = False) -> ExperimentConfig:
    return TEST if test else QUICK if quick else DEFAULT


def configure(preset, config=None, overrides: dict | None = None):
    """The experiment config: `preset` <- `config` (a YAML file of fields, or a ready config object that
    replaces the preset) <- `overrides` (fields, `pretrain` a nested mapping), built and checked by the one
    config system: every unknown field and wrong type at once, at its file:line:column. Then validated."""
    if is_dataclass(config):
        preset, config = config, None
    built = build_dataclass(preset, config, overrides, what="invalid experiment config",
                            fix=f"the fields of {type(preset).__name__} (stagewise/experiments/config.py) are the keys")
    return built.validate()


# ------------------------------------------------------------------------------------------ design v2

from stagewise.experiments.pretrain import PINNED_NUMERICS, PretrainV2Config  # noqa: E402

# The carry-scarce testbed's pretraining (data_cards/experiment-v2/README.md has every candidate tried):
# cells of 2-4 digits, exposure falling off by 0.6 per extra digit and by half for a+b+c, and a
# carrying column of a pretraining item kept with probability 0.3 per digit above two (1, 0.3, 0.09),
# so long carry chains are rare: an item's difficulty grows with its carries, within every cell.
# Every base stops at step 650 of a 700-step schedule, the middle of the stops probed (600, 650, 700).
CARRY_SCARCE_PRETRAIN = PretrainV2Config(levels=(2, 3, 4), level_decay=0.6, carry_level_decay=0.3,
                                         task_weights=(("add", 1.0), ("sub", 1.0), ("add3", 0.5)),
                                         steps=650, horizon=700)
# The default testbed, the slip testbed (the card's tenth to eighteenth rounds): the carry-scarce mix on a
# larger model (160 x 4 layers, 1.04M parameters), carries kept 0.4 per digit above two, and a carry slip:
# in 4-digit pretraining items each carrying or borrowing column drops its carry with probability 0.3, an
# error shared by every long item that sampling sometimes avoids and RL can remove. Trained with pinned
# kernels (numerics "avx2"), so its bases rebuild on any x86-64 CPU with AVX2; its seeds (1, 4, 10) are
# the three of twelve whose probes pass every validity check. The carry-scarce testbed it replaced is
# data_cards/experiment-v2/carry-scarce.yaml.
SLIP_PRETRAIN = replace(CARRY_SCARCE_PRETRAIN, hidden_size=160, num_layers=4, carry_level_decay=0.4, slip_rate=0.3,
                        slip_columns="carry", slip_min_level=4, numerics="avx2")


@dataclass(frozen=True)
class ExperimentV2Config(_StepBudget):
    """The second design. Compute currency as in v1: `total_steps` optimizer steps per arm; an SFT step
    trains on `sft_batch_size` demonstrations, an RL step on `rl_prompts` prompts x `num_generations`
    completions. Both stages warm up for `warmup_fraction` of their steps, then decay (cosine).

    The learning rates are chosen by a sweep of the sft-all-rl-all baseline on the validation split
    (`sft_lr_grid`, then `rl_lr_grid` from the best SFT model); `sft_learning_rate`/`rl_learning_rate`
    are used only when `sweep` is off (the quick preset)."""

    tasks: tuple = ("add", "sub", "add3")
    levels: tuple = (2, 3, 4)
    pool_per_cell: int = 32             # the routed candidate pool: 9 cells x 32 = 288 items, probed at k
    val_per_cell: int = 8               # validation: only for choosing learning rates (72 items)
    test_per_cell: int = 11             # test: 9 cells x 11 = 99 items, bucketed by an independent probe
    probe_samples: int = 16             # k of the base probes (pool and test)
    capability_samples: int = 128       # k for the check that unmastered items sit near capability
    eval_samples: int = 16              # samples per test item per arm (pass@1 = their mean; pass@16)
    after_sft_samples: int = 8          # samples per test item for the model after SFT (pass@1 / pass@8 attribution)
    val_samples: int = 8                # samples per validation item in the learning-rate sweep
    ks: tuple = (1, 4, 16)
    # Sampling temperature of every probe, evaluation and RL rollout of the design (the exports carry the
    # probe's sampling to the RL stage).
    temperature: float = 1.0
    top_p: float = 1.0                  # nucleus sampling, likewise everywhere
    max_new_tokens: int = 96            # the longest worked solution (add3, 4 digits) + answer is 78 characters
    # 24 steps (12 SFT + 12 RL in two-stage arms) and one seed for the joint arms keep the full design near
    # the 45-minute target: projected from a quick run's CPU seconds (benchmarks/experiment_v2_budget.py),
    # 32 steps, two joint seeds and 16 after-SFT samples about 59 min on 2 idle cores (24 steps: about 42).
    total_steps: int = 24
    sft_fraction: float = 0.5
    sft_batch_size: int = 16
    rl_prompts: int = 4                 # prompts per RL step
    num_generations: int = 8            # GRPO group size
    warmup_fraction: float = 0.1
    lr_scheduler: str = "cosine"
    sweep: bool = True
    # The first testbed's sweep chose the lowest rate of both 3-point grids, so each grid reaches a
    # factor of 3 lower.
    sft_lr_grid: tuple = (3e-5, 1e-4, 3e-4, 1e-3)
    rl_lr_grid: tuple = (3e-6, 1e-5, 3e-5, 1e-4)
    sft_learning_rate: float = 3e-4
    rl_learning_rate: float = 3e-5
    sft_replay: float = 0.3             # share of replayed mastered demonstrations in the SFT set (replay arms)
    joint_sft_weight: float = 0.5       # lambda of joint-weighted
    bases: int = 3                      # base models (pretraining seeds); all are probed and checked
    arm_bases: int | None = None        # how many of them the arms train on (None: all)
    seeds: int = 2                      # training seeds per base
    joint_seeds: int | None = 1         # seeds of the joint arms (None: all; fewer puts them in a secondary table)
    probe_batch_size: int = 256
    jobs: int = 2                       # (base, seed, arm) runs trained in parallel processes
    pretrain: PretrainV2Config = field(default_factory=lambda: SLIP_PRETRAIN)
    # Where each base model's pretraining stops, when the bases stop at different points: [first-phase
    # steps, polishing steps, polishing level decay] per base; empty: every base uses `pretrain` as it is
    # (the default). The first testbed needed one per base (data_cards/experiment-v2/first-testbed.yaml).
    base_stops: tuple = ()
    # The pretraining seed of each base model, in order. A base is a valid testbed only when its probes
    # pass the checks; the seeds screened and why each was kept or left are in data_cards/experiment-v2.
    base_seeds: tuple = (1, 4, 10)
    prompt_template: str = PROMPT_TEMPLATE
    design: str = "v2"

    def base_pretrain(self, index: int) -> PretrainV2Config:
        """The pretraining config of base model `index` (its seed is `base_seeds[index]`)."""
        pre = replace(self.pretrain, seed=int(self.base_seeds[index]))
        if self.base_stops:
            steps, polish, decay = self.base_stops[index]
            pre = replace(pre, steps=int(steps), polish_steps=int(polish), polish_level_decay=float(decay))
        return pre

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pretrain"] = self.pretrain.to_dict()
        for k in ("tasks", "levels", "ks", "sft_lr_grid", "rl_lr_grid", "base_seeds"):
            d[k] = list(d[k])
        d["base_stops"] = [list(stop) for stop in self.base_stops]
        return d

    @property
    def cells(self) -> list[str]:
        return all_cells(self.tasks, self.levels)

    @property
    def rl_batch(self) -> int:
        return self.rl_prompts * self.num_generations

    @property
    def n_arm_bases(self) -> int:
        return self.bases if self.arm_bases is None else min(self.arm_bases, self.bases)

    def warmup(self, steps: int) -> int:
        return max(1, round(steps * self.warmup_fraction)) if steps > 2 else 0

    def validate(self) -> ExperimentV2Config:
        problems = self._budget_problems()
        if self.num_generations < 8:
            problems.append(f"num_generations {self.num_generations}: the design uses GRPO groups of at least 8")
        if self.bases < 1 or self.seeds < 1:
            problems.append(f"bases {self.bases} and seeds {self.seeds} must be at least 1")
        if self.capability_samples <= self.probe_samples:
            problems.append(f"capability_samples {self.capability_samples} must exceed probe_samples "
                            f"{self.probe_samples}")
        if self.after_sft_samples > self.eval_samples or self.after_sft_samples < 1:
            problems.append(f"after_sft_samples {self.after_sft_samples} must be in [1, eval_samples]")
        if self.joint_seeds is not None and not 1 <= self.joint_seeds <= self.seeds:
            problems.append(f"joint_seeds {self.joint_seeds} must be in [1, seeds]")
        if self.jobs < 1:
            problems.append(f"jobs {self.jobs} must be at least 1")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p {self.top_p} must be in (0, 1]")
        if not self.temperature > 0:
            problems.append(f"temperature {self.temperature} must be above 0 (the design samples)")
        if not 0 <= self.pretrain.slip_rate < 1:
            problems.append(f"pretrain.slip_rate {self.pretrain.slip_rate} must be in [0, 1)")
        if not isinstance(self.pretrain.slip_min_level, int) or self.pretrain.slip_min_level < 0:
            problems.append(f"pretrain.slip_min_level {self.pretrain.slip_min_level} must be a digit count >= 0")
        if self.pretrain.slip_columns not in SLIP_COLUMNS:
            problems.append(f"pretrain.slip_columns {self.pretrain.slip_columns!r} must be one of {list(SLIP_COLUMNS)}")
        if self.pretrain.numerics not in ("native", *PINNED_NUMERICS):
            problems.append(f"pretrain.numerics {self.pretrain.numerics!r} must be one of "
                            f"{['native', *PINNED_NUMERICS]}")
        if not 0 <= self.sft_replay < 1:
            problems.append(f"sft_replay {self.sft_replay} must be in [0, 1)")
        if tuple(self.pretrain.levels) != tuple(self.levels) \
                or tuple(t for t, _ in self.pretrain.task_weights) != tuple(self.tasks):
            problems.append(f"pretrain levels {list(self.pretrain.levels)} and tasks "
                            f"{[t for t, _ in self.pretrain.task_weights]} must be the design's "
                            f"({list(self.levels)}, {list(self.tasks)}): every cell is seen in pretraining")
        if len(self.base_seeds) < self.bases or len(set(self.base_seeds)) != len(self.base_seeds) \
                or any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in self.base_seeds):
            problems.append(f"base_seeds {list(self.base_seeds)} must give a distinct pretraining seed (an "
                            f"integer >= 0) to each of the {self.bases} bases")
        if self.base_stops and (len(self.base_stops) < self.bases
                                or any(len(stop) != 3 for stop in self.base_stops)):
            problems.append(f"base_stops {list(map(list, self.base_stops))} must give [steps, polish_steps, "
                            f"polish_level_decay] for each of the {self.bases} bases")
        elif any(int(stop[0]) > self.pretrain.horizon for stop in self.base_stops):
            problems.append(f"base_stops: a first phase longer than the schedule's horizon "
                            f"({self.pretrain.horizon} steps) is not a stop on it")
        return self._raise_if(problems)


V2_DEFAULT = ExperimentV2Config()
# Every arm once, one base, one seed, few steps, no sweep: the same cached bases, pool and base probes as
# the full design (so its validity checks are the full design's), in about five minutes.
# It evaluates with 8 samples per test item (pass@8) to fit the budget, and trains at the rates the full
# design's sweep chose on the default testbed (SFT 3e-5, RL 3e-5: data_cards/experiment-v2/slip-testbed-full;
# every v2 testbed's sweep chose SFT 3e-5, the lowest of its grid).
V2_QUICK = replace(V2_DEFAULT, total_steps=4, arm_bases=1, seeds=1, sweep=False, eval_samples=8,
                   after_sft_samples=8, ks=(1, 8), sft_learning_rate=3e-5, rl_learning_rate=3e-5)


def preset_v2(quick: bool = False) -> ExperimentV2Config:
    return V2_QUICK if quick else V2_DEFAULT
