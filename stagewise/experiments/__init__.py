"""`stagewise experiment`: test the stage-specific claim (SFT for unmastered skills, RL for partially
mastered ones) at CPU scale, and report the result whatever its sign.

    import stagewise as sw
    res = sw.experiment("runs/exp", quick=True)            # one seed, every arm, a few minutes
    res = sw.experiment("runs/exp", arms="base,routed,random", seeds=3)

Modules: testbed (the addition ladder), pretrain (the tiny model, cached), arms (what each arm trains
on, through the toolkit), runner (probe -> route -> export -> train -> evaluate), results (tables, CIs,
plot).
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
