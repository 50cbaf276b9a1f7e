"""stagewise: decide what a small language model should learn at which stage of post-training.

    import stagewise as sw
    problems = sw.load_problems("gsm8k:data/test.jsonl")
    store = sw.probe(problems, model="smollm2-135m", store="run.duckdb", num_samples=8)
    assignments = sw.route(store="run.duckdb", policy="stage")
    sw.export(store="run.duckdb", out="export/", format="trl")

The public API is resolved lazily so `import stagewise` stays fast and the CLI starts quickly.
"""

from __future__ import annotations

import importlib
import os

__version__ = "0.1.0"

# In a source checkout the sub-packages live at the top of the repo (curate/, stages/, train/) and are
# installed as stagewise.curate etc. through setuptools' package-dir. When the checkout's own
# `stagewise/` folder shadows the installed package (python run from the repo root), let the
# sub-packages resolve to the sibling folders too.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_root, "curate", "__init__.py")) and _root not in __path__:
    __path__.append(_root)

_API = {
    "load_problems": "stagewise.curate.sources",
    "profile": "stagewise.curate.profile",
    "probe": "stagewise.curate.probe",
    "evaluate": "stagewise.curate.evaluate",
    "merge": "stagewise.curate.store",
    "decontaminate": "stagewise.curate.decontaminate",
    "route": "stagewise.stages.routing",
    "export": "stagewise.stages.export",
    "show": "stagewise.stages.browse",
    "samples": "stagewise.stages.browse",
    "train_sft": "stagewise.train.sft",
    "train_rl": "stagewise.train.rl",
    "train_joint": "stagewise.train.joint",
    # `sw.train` would be the stagewise.train sub-package itself, so the two-stage trainer is train_pipeline.
    "train_pipeline": "stagewise.train.two_stage:train",
    "run": "stagewise.end_to_end",
    "experiment": "stagewise.experiments.runner",
    "StagewiseError": "stagewise.curate.errors",
    "InputError": "stagewise.curate.errors",
    "ConfigError": "stagewise.curate.errors",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        module, _, attr = _API[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stagewise' has no attribute {name!r}")
