"""Verifiers: `score(completion, problem) -> Verdict`, named by the problem's task (docs/DESIGN.md, "Verifier").

    from stagewise.curate.verifiers import score, VerifierPool
    score("... so the answer is \\boxed{2125}", {"answer": "2,125", "task": "gsm8k"})
    with VerifierPool(workers=2, timeout_s=5.0) as pool:
        verdicts = pool.score_many([(completion, problem), ...])

Tasks: `gsm8k` / `numeric`, `math` (math-verify), `rg:<name>` (reasoning-gym), `exact`, and custom
verifiers named explicitly as `module:function`. The probe and the RL reward call exactly this code.

Verifiers never raise on an answer: a crash is status "error" with the reason, an overrun is status
"timeout". In `score()`, the time limit is a main-thread alarm; `VerifierPool` runs the verifiers that
can hang (math, reasoning-gym, custom) in worker processes that are killed and replaced on overrun.
Reward functions, called from trainers' threads and event loops, score through `score_many_safely`
(verifiers/safe.py): a process-wide pool, started on first use.
"""

from __future__ import annotations

from stagewise.curate.verifiers.base import STATUSES, Verdict, Verifier
from stagewise.curate.verifiers.guard import can_alarm
from stagewise.curate.verifiers.pool import VerifierPool
from stagewise.curate.verifiers.registry import (
    BUILTIN_TASKS,
    ProblemView,
    as_problem,
    get_verifier,
    run_verifier,
    task_of,
)
from stagewise.curate.verifiers.safe import score_many_safely, score_safely


def score(completion: str, problem, *, timeout_s: float | None = 5.0) -> Verdict:
    """Score one completion. Never raises for an answer: failures of the verifier come back as status
    error/timeout, an unknown task as status error. A problem without a task raises InputError (see
    `as_problem`): that is the caller's data, not the answer.

    In the main thread the time limit is an alarm in this process. Elsewhere no alarm can fire, so a
    verifier that can hang is sent to the process-wide pool of curate/verifiers/safe.py, whose workers
    are killed on overrun (reward functions call that module directly, from any thread).
    """
    view = as_problem(problem)
    try:
        verifier = get_verifier(view.task)
    except Exception as exc:  # noqa: BLE001 - a bad task marks the sample, it does not stop the run
        return Verdict(0.0, None, "error", f"{type(exc).__name__}: {exc}")
    if timeout_s and getattr(verifier, "isolate", True) and not can_alarm():
        return score_safely(completion, view, timeout_s=timeout_s)
    return run_verifier(verifier, completion, view, timeout_s)


__all__ = [
    "BUILTIN_TASKS",
    "STATUSES",
    "ProblemView",
    "Verdict",
    "Verifier",
    "VerifierPool",
    "as_problem",
    "get_verifier",
    "run_verifier",
    "score",
    "score_many_safely",
    "score_safely",
    "task_of",
]
