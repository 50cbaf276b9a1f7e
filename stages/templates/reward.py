"""verl reward function shipped with a stagewise export: scores a rollout with the stagewise verifier,
the same code the probe used, so RL rewards exactly what the probe measured.

    reward.custom_reward_function.path=EXPORT_DIR/reward.py reward.custom_reward_function.name=compute_score

verl calls `compute_score` from its reward loop's worker threads, where no alarm can interrupt a
verifier: the hang-prone ones run in worker processes that are killed after 5 s (the process-wide pool
of stagewise.curate.verifiers.safe), so no answer can stall a training step. Needs only
`pip install --no-deps stagewise` plus math-verify (and reasoning-gym for `rg:` tasks). A verifier
failure scores 0; a row without a task is refused.
"""

from __future__ import annotations

TIMEOUT_S = 5.0


def _task(data_source, extra_info) -> str:
    if isinstance(extra_info, dict) and extra_info.get("task"):
        return str(extra_info["task"])
    if isinstance(data_source, str) and data_source.startswith("stagewise/"):
        return data_source[len("stagewise/"):]
    raise ValueError(f"no stagewise task for data_source {data_source!r}: set extra_info['task'] to a verifier "
                     "name (gsm8k, math, exact, rg:<name>) or data_source to 'stagewise/<task>'")


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """verl's signature; returns the stagewise verifier's score (1.0 correct, 0.0 otherwise)."""
    from stagewise.curate.verifiers.safe import score_safely

    extra_info = extra_info if isinstance(extra_info, dict) else {}
    if isinstance(ground_truth, (list, tuple)):  # verl examples sometimes wrap the answer in a list
        ground_truth = ground_truth[0] if ground_truth else ""
    problem = {"id": extra_info.get("id", ""), "answer": str(ground_truth),
               "task": _task(data_source, extra_info), "meta": extra_info.get("meta") or {}}
    return float(score_safely(solution_str or "", problem, timeout_s=TIMEOUT_S).score)
