"""`stagewise experiment`: test the stage-specific claim (SFT for unmastered skills, RL for partially
mastered ones) at CPU scale, and report the result whatever its sign.

    import stagewise as sw
    res = sw.experiment("runs/exp", quick=True)                  # design v2: every arm once, one seed
    res = sw.experiment("runs/exp")                              # design v2: 3 base models x 2 seeds
    res = sw.experiment("runs/exp-v1", design="v1", seeds=3)     # the first design

Design v1 modules: testbed (the addition ladder), pretrain (the tiny model, cached), arms, runner,
results. Design v2: testbed_v2 (three tasks x 2-4 digits, difficulty from carries), pretrain.pretrain_v2 (three base models),
validity (the checks before any arm), arms_v2, runner_v2, stats (the paired hierarchical bootstrap),
results_v2.
"""

from __future__ import annotations

from stagewise.experiments.arms import ARMS, DEFAULT_ARMS, JOINT_ARMS
from stagewise.experiments.config import DEFAULT, QUICK, TEST, ExperimentConfig
from stagewise.experiments.runner import ExperimentResult, experiment

__all__ = [
    "ARMS",
    "DEFAULT",
    "DEFAULT_ARMS",
    "JOINT_ARMS",
    "QUICK",
    "TEST",
    "ExperimentConfig",
    "ExperimentResult",
    "experiment",
]
