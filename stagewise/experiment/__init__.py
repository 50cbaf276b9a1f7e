"""`stagewise experiment`: test the stage-specific claim (SFT for unmastered skills, RL for partially
mastered ones) at CPU scale, and report the result whatever its sign.

    import stagewise as sw
    res = sw.experiment("runs/exp", quick=True)            # one seed, every arm, a few minutes
    res = sw.experiment("runs/exp", arms="base,routed,random", seeds=3)

Modules: testbed (the addition ladder), pretrain (the tiny model, cached), arms (what each arm trains
on, through the toolkit), runner (probe -> route -> export -> train -> evaluate), report (tables, CIs,
plot).
"""

from __future__ import annotations

import sys
import types

from stagewise.experiment.arms import ARMS, DEFAULT_ARMS, JOINT_ARMS
from stagewise.experiment.config import DEFAULT, QUICK, TEST, ExperimentConfig
from stagewise.experiment.runner import ExperimentResult, experiment

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


class _CallableModule(types.ModuleType):
    # `stagewise.experiment` is both this package and the API function the top package exposes under the
    # same name. Once the package is imported, Python binds the attribute `stagewise.experiment` to the
    # module, so `sw.experiment(...)` would hit the module; calling the module runs the experiment.
    def __call__(self, *args, **kwargs):
        return experiment(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
