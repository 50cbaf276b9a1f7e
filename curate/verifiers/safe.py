"""Scoring that is safe from any thread or event loop: the one code path of every reward function.

    from stagewise.curate.verifiers.safe import score_safely, score_many_safely
    score_safely("... \\boxed{9^{9^{9^{9}}}}", {"answer": "3", "task": "math"})   # status "timeout" after 5 s

Trainers call reward functions from places where `score()`'s main-thread alarm cannot work: verl's
reward loop from worker threads, OpenRLHF through `asyncio.to_thread`, TRL wherever it likes. A
pathological answer there would hold the interpreter for minutes. Here the verifiers that can hang
(`isolate = True`: math, reasoning-gym, custom) always run in a process-wide `VerifierPool`, started on
first use and stopped at exit, whose workers are killed when an answer overruns its limit; the fast
ones (numeric, exact) run inline. Always the pool, not only off the main thread: one path whatever the
caller, and a hang in C code (where no alarm fires) is bounded too. The cost is a pipe round trip per
answer once the workers are up.

The shipped reward files (verl's `reward.py`, OpenRLHF's `reward_func.py`) and the bundled TRL reward
(`train/rewards.py`) all score through `score_many_safely`. This module imports nothing heavy: a
trainer's environment needs only `pip install --no-deps stagewise` plus math-verify / reasoning-gym.
"""

from __future__ import annotations

import atexit
import json
import os
import threading

from stagewise.curate.errors import InputError
from stagewise.curate.verifiers.base import Verdict
from stagewise.curate.verifiers.pool import VerifierPool

DEFAULT_TIMEOUT_S = 5.0
WORKERS_ENV = "STAGEWISE_VERIFIER_WORKERS"

_pools: dict[tuple[float, int], object] = {}
_pools_lock = threading.Lock()
_atexit_registered = False


def default_workers() -> int:
    """Worker processes of the shared pool: $STAGEWISE_VERIFIER_WORKERS, else a quarter of the cores
    (2 to 8): verifying is a small share of a training step, and the trainer needs its cores."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    return min(8, max(2, (os.cpu_count() or 2) // 4))


def shared_pool(timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None):
    """The process-wide VerifierPool for this time limit and size, created on first use."""
    global _atexit_registered

    key = (float(timeout_s), int(workers or default_workers()))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = VerifierPool(workers=key[1], timeout_s=key[0])
            if not _atexit_registered:
                atexit.register(close_shared_pools)
                _atexit_registered = True
        return pool


def close_shared_pools() -> None:
    """Stop every shared pool's workers (registered with atexit; a later call starts new ones)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def score_many_safely(items, *, timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None,
                      on_result=None) -> list[Verdict]:
    """Verdicts for (completion, problem) pairs, in order; callable from any thread, many at once.

    Never raises for an answer and never takes much longer than `timeout_s` per answer and worker:
    an overrun is status "timeout" with score 0."""
    return shared_pool(timeout_s, workers).score_many(items, on_result=on_result)


def score_safely(completion: str, problem, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
    """One verdict; see score_many_safely."""
    return score_many_safely([(completion, problem)], timeout_s=timeout_s)[0]


def label_json(answer, task: str, meta) -> str:
    """The label of an OpenRLHF row: one JSON string with the gold answer, the verifier's task and meta
    (OpenRLHF hands reward functions the label alone, so everything the verifier needs travels in it)."""
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta.strip() else {}
        except json.JSONDecodeError:
            meta = {}
    return json.dumps({"answer": "" if answer is None else str(answer), "task": task, "meta": meta or {}},
                      ensure_ascii=False, sort_keys=True)


def problem_from_label(label) -> dict:
    """The problem a label_json string describes; InputError for anything else (a bare answer says nothing
    about which verifier scores it, and guessing would reward the wrong thing)."""
    try:
        data = json.loads(label) if isinstance(label, str) else label
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or "answer" not in data or not data.get("task"):
        raise InputError(f"label {str(label)[:80]!r} is not a stagewise label (a JSON object with answer, task "
                         "and meta)", column="label",
                         fix="train on the rl.parquet of a current `stagewise export --format openrlhf`")
    return {"answer": data["answer"], "task": data["task"], "meta": data.get("meta") or {}}


__all__ = ["DEFAULT_TIMEOUT_S", "label_json", "problem_from_label", "close_shared_pools", "default_workers", "score_many_safely", "score_safely",
           "shared_pool"]
