"""Which verifier a task names, what a verifier sees of a problem, and running one under a time limit.

The package's `score` (curate/verifiers/__init__.py) and the worker processes of `VerifierPool`
(curate/verifiers/pool.py) both use these."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.verifiers.base import STATUSES, Verdict, Verifier
from stagewise.curate.verifiers.custom import CustomVerifier
from stagewise.curate.verifiers.exact import ExactVerifier
from stagewise.curate.verifiers.guard import VerifierTimeout, time_limit
from stagewise.curate.verifiers.math import MathVerifier
from stagewise.curate.verifiers.numeric import NumericVerifier
from stagewise.curate.verifiers.rg import ReasoningGymVerifier

BUILTIN_TASKS = ("gsm8k", "numeric", "math", "exact", "rg:<name>", "module:function")


@dataclass(frozen=True)
class ProblemView:
    """What a verifier sees of a problem: the gold answer, the task, and meta as a dict."""

    answer: str
    task: str
    meta: dict = field(default_factory=dict)
    id: str = ""
    prompt: str = ""


def task_of(problem) -> str:
    """The task of a Problem, ProblemView or dict. Required: it names the verifier (and the prompt family),
    and guessing one would score every answer by the wrong rule without a word. A missing or empty task
    is an InputError naming the column and the fix."""
    get = problem.get if isinstance(problem, dict) else lambda k, d=None: getattr(problem, k, d)
    task = get("task")
    if task is None or not str(task).strip():
        pid = get("id")
        raise InputError(f"problem{f' {pid!r}' if pid else ''} has no task, so there is no verifier to score it",
                         column="task", fix=f"give every problem a task naming its verifier ({', '.join(BUILTIN_TASKS)}), "
                         "e.g. with --task or a task column in the data")
    return str(task).strip()


def as_problem(problem) -> ProblemView:
    """Accept a curate.schema.Problem, a ProblemView, or a dict with answer / task / meta (task required,
    see `task_of`)."""
    if isinstance(problem, ProblemView):
        return problem
    get = problem.get if isinstance(problem, dict) else lambda k, d=None: getattr(problem, k, d)
    task = task_of(problem)
    meta = get("meta") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta.strip() else {}
        except json.JSONDecodeError:
            meta = {}
    answer = get("answer")
    return ProblemView(answer="" if answer is None else str(answer), task=task,
                       meta=meta if isinstance(meta, dict) else {}, id=str(get("id") or ""),
                       prompt=str(get("prompt") or ""))


@functools.cache
def get_verifier(task: str) -> Verifier:
    """The verifier for a task name; ConfigError (listing the choices) for an unknown one."""
    if task in ("gsm8k", "numeric"):
        return NumericVerifier()
    if task == "math":
        return MathVerifier()
    if task == "exact":
        return ExactVerifier()
    if task.startswith("rg:") and len(task) > 3:
        return ReasoningGymVerifier(task[3:])
    module, sep, func = task.partition(":")
    if sep and module and func and all(part.isidentifier() for part in module.split(".")) and func.isidentifier():
        return CustomVerifier(task)
    raise ConfigError(f"unknown task {task!r}: choose one of {', '.join(BUILTIN_TASKS)} "
                      "(set it with --task or the data's task column)")


def run_verifier(verifier: Verifier, completion: str, view: ProblemView, timeout_s: float | None) -> Verdict:
    """Call one verifier under a time limit, turning every failure into a Verdict."""
    try:
        with time_limit(timeout_s):
            verdict = verifier.score("" if completion is None else str(completion), view)
    except VerifierTimeout:
        return Verdict(0.0, None, "timeout", f"{verifier.name} verifier exceeded {timeout_s:g}s")
    except RecursionError:
        return Verdict(0.0, None, "error", f"{verifier.name} verifier: RecursionError (answer too deeply nested)")
    except MemoryError:
        return Verdict(0.0, None, "error", f"{verifier.name} verifier: MemoryError")
    except Exception as exc:  # noqa: BLE001 - a verifier crash marks the sample, it does not stop the run
        return Verdict(0.0, None, "error", f"{verifier.name} verifier: {type(exc).__name__}: {exc}"[:500])
    if verdict.status not in STATUSES:
        return Verdict(0.0, verdict.extracted, "error", f"{verifier.name} returned status {verdict.status!r}")
    return verdict
