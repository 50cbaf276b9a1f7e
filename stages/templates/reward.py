"""verl reward function shipped with a stagewise export: scores a rollout with the stagewise verifier,
the same code the probe used, so RL rewards exactly what the probe measured.

    custom_reward_function.path=EXPORT_DIR/reward.py custom_reward_function.name=compute_score

Needs `pip install stagewise` in the verl environment. A verifier failure scores 0 and never crashes
a training step.
"""

from __future__ import annotations

import json


def _task(data_source, extra_info) -> str:
    if isinstance(extra_info, dict) and extra_info.get("task"):
        return str(extra_info["task"])
    if isinstance(data_source, str) and data_source.startswith("stagewise/"):
        return data_source[len("stagewise/"):]
    raise ValueError(f"no stagewise task for data_source {data_source!r}: set extra_info['task'] to a verifier "
                     "name (gsm8k, math, exact, rg:<name>) or data_source to 'stagewise/<task>'")


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """verl's signature; returns the stagewise verifier's score (1.0 correct, 0.0 otherwise)."""
    from stagewise.curate.verifiers import score

    extra_info = extra_info if isinstance(extra_info, dict) else {}
    if isinstance(ground_truth, (list, tuple)):  # verl examples sometimes wrap the answer in a list
        ground_truth = ground_truth[0] if ground_truth else ""
    meta = extra_info.get("meta") or "{}"
    if not isinstance(meta, str):
        meta = json.dumps(meta)
    problem = {"id": extra_info.get("id", ""), "answer": str(ground_truth),
               "task": _task(data_source, extra_info), "meta": meta}  # a row without a task is refused
    try:
        return float(score(solution_str or "", problem).score)
    except Exception:  # noqa: BLE001 - a crashing verifier must not kill a verl step
        return 0.0
