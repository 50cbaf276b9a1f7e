"""OpenRLHF reward function shipped with a stagewise export: scores each response with the stagewise
verifier, the same code the probe used, so RL rewards exactly what the probe measured.

    python3 -m openrlhf.cli.train_ppo_ray ... --data.label_key label --reward.remote_url EXPORT_DIR/reward_func.py

Each row's `label` is a JSON string {"answer", "task", "meta"}: the gold answer, the verifier to use and
what it needs (e.g. a reasoning-gym entry). OpenRLHF calls `reward_func` through `asyncio.to_thread`;
the hang-prone verifiers run in worker processes that are killed after 5 s, so no answer can stall a
training step. Needs only `pip install --no-deps stagewise` plus math-verify (and reasoning-gym for
`rg:` tasks); a verifier failure scores 0.
"""

from __future__ import annotations

TIMEOUT_S = 5.0


def reward_func(queries, prompts, labels, **kwargs):
    """OpenRLHF's signature: `queries` are prompt + response, as decoded by OpenRLHF. Returns its dict of
    `rewards` (for the advantage), `scores` (0/1, for dynamic filtering) and `extra_logs`."""
    from stagewise.curate.verifiers.safe import problem_from_label, score_many_safely

    responses = [str(q)[len(str(p)):] for q, p in zip(queries, prompts)]
    verdicts = score_many_safely([(r, problem_from_label(label)) for r, label in zip(responses, labels)],
                                 timeout_s=TIMEOUT_S)
    scores = [float(v.score) for v in verdicts]
    logs = {f"verifier_{status}": [float(v.status == status) for v in verdicts]
            for status in ("correct", "no_answer", "timeout", "error")}
    try:
        import torch
    except ImportError:  # a reward-only environment: plain lists
        return {"rewards": scores, "scores": scores, "extra_logs": logs}
    return {"rewards": torch.tensor(scores, dtype=torch.float32), "scores": torch.tensor(scores, dtype=torch.float32),
            "extra_logs": {k: torch.tensor(v, dtype=torch.float32) for k, v in logs.items()}}
