"""Imports a reader can follow, and a command line that starts without loading the heavy libraries.

stagewise's own modules import each other at the top of the module; only the training recipes, which
subclass TRL and transformers classes and so load torch with their module, are imported where they run.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import stagewise

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("stagewise", "curate", "stages", "train")
# Modules that import torch, transformers or TRL when they load: importing one is importing those.
RECIPES = ("stagewise.train.sft", "stagewise.train.rl", "stagewise.train.joint", "stagewise.train.heldout_loss")
# Files a trainer's process loads by path (exports ship them); they import stagewise only when they score.
SHIPPED = {"stages/templates/reward.py", "stages/templates/reward_func.py"}


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in SHIPPED:
                yield rel, ast.parse(path.read_text(encoding="utf-8"))


def _own_imports_inside_functions(tree):
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stagewise":
                yield node.lineno, node.module
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "stagewise":
                        yield node.lineno, alias.name


def test_stagewise_modules_import_each_other_at_the_top_except_the_training_recipes():
    inside = sorted({f"{rel}:{line} imports {module}" for rel, tree in _sources()
                     for line, module in _own_imports_inside_functions(tree)
                     if not module.startswith(RECIPES)})
    assert not inside, "function-local imports of stagewise modules:\n" + "\n".join(inside)


def test_the_public_api_is_bound_by_name_not_resolved_on_first_use():
    assert not hasattr(stagewise, "__getattr__")
    for name in stagewise.__all__:
        assert name in vars(stagewise), f"stagewise.{name} is not imported in stagewise/__init__.py"
    assert stagewise.probe.__module__ == "stagewise.curate.probe"
    assert stagewise.route.__module__ == "stagewise.stages.routing"


def test_help_loads_none_of_the_heavy_libraries():
    heavy = ("torch", "transformers", "trl", "polars", "duckdb", "pyarrow", "numpy", "datasets", "vllm", "ray")
    code = ("import json, sys\nfrom stagewise.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
            f"    pass\nprint(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=120, check=True)
    assert "Usage: stagewise" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_comment_or_docstring_in_the_code_cites_an_issue_number():
    pattern = re.compile(r"\bissues? #?\d+\b|\(#\d+\)", re.IGNORECASE)
    cited = []
    for folder in (*PACKAGES, "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if pattern.search(line):
                    cited.append(f"{path.relative_to(ROOT)}:{number}")
    assert not cited, f"issue numbers in the code: {cited}"
