"""stagewise: decide what a small language model should learn at which stage of post-training.

    import stagewise as sw
    problems = sw.load_problems("gsm8k:data/test.jsonl")
    store = sw.probe(problems, model="smollm2-135m", store="run.duckdb", num_samples=8)
    assignments = sw.route(store="run.duckdb", policy="stage")
    sw.export(store="run.duckdb", out="export/", format="trl")

Every name below is imported from the module that defines it. None of those modules imports polars,
duckdb, torch or TRL when it loads (they are imported where they are used), so `import stagewise` and
`import stagewise.curate.verifiers` stay light: a reward worker installed with --no-deps can score.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

# In a source checkout the sub-packages live at the top of the repo (curate/, stages/, train/) and are
# installed as stagewise.curate etc. through setuptools' package-dir. When the checkout's own
# `stagewise/` folder shadows the installed package (python run from the repo root), let the
# sub-packages resolve to the sibling folders too.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_root, "curate", "__init__.py")) and _root not in __path__:
    __path__.append(_root)

from stagewise.curate.decontaminate import decontaminate
from stagewise.curate.errors import ConfigError, InputError, StagewiseError
from stagewise.curate.evaluate import evaluate
from stagewise.curate.probe import probe
from stagewise.curate.profile import profile
from stagewise.curate.sources import load_problems
from stagewise.curate.store import merge
from stagewise.end_to_end import run
from stagewise.experiments.runner import experiment
from stagewise.stages.browse import samples, show
from stagewise.stages.export import export
from stagewise.stages.routing import route
from stagewise.train import train_joint, train_rl, train_sft

# `sw.train` is the stagewise.train sub-package itself, so the two-stage trainer is train_pipeline.
from stagewise.train.two_stage import train as train_pipeline

__all__ = [
    "ConfigError",
    "InputError",
    "StagewiseError",
    "__version__",
    "decontaminate",
    "evaluate",
    "experiment",
    "export",
    "load_problems",
    "merge",
    "probe",
    "profile",
    "route",
    "run",
    "samples",
    "show",
    "train_joint",
    "train_pipeline",
    "train_rl",
    "train_sft",
]
