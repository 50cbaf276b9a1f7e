"""The RL reward: the stagewise verifier, the same code the probe scored with (docs/DESIGN.md, "Verifier").

GRPOTrainer calls a reward function with the prompts, the completions and every extra dataset column,
repeated once per generation. rl.parquet carries `solution` (the gold answer), `task` (which verifier)
and `meta` (e.g. the reasoning-gym entry), so the function rebuilds the problem the probe saw and asks
`score_many_safely` (curate/verifiers/safe.py) for the verdicts, the same function the shipped verl and
OpenRLHF reward files call: math-verify runs in the process-wide pool's worker processes with a timeout
(its signal.alarm does not work in threads), and a hung or crashing answer scores 0 with its status
recorded, never stopping training.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from stagewise.curate.errors import InputError
from stagewise.curate.verifiers.safe import close_shared_pools, score_many_safely


def completion_text(completion) -> str:
    """GRPOTrainer passes conversational completions as [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    return str(completion)


class VerifierReward:
    """A GRPOTrainer reward function scoring completions with curate.verifiers.

    Keeps the verdicts of the last call (`last`: one (id, score, status) per completion) and running
    status counts, which the relift mode and the logs read."""

    __name__ = "stagewise_verifier"  # TRL names the reward column after the function

    def __init__(self, workers: int = 2, timeout_s: float = 5.0):
        self.workers, self.timeout_s = workers, timeout_s
        self.status_counts: Counter = Counter()
        self.last: list[tuple[str, float, str]] = []

    def __call__(self, prompts, completions, solution, task=None, meta=None, id=None, **kwargs) -> list[float]:
        n = len(completions)
        if not task or any(not t for t in task):
            raise InputError("a reward row has no `task`: stagewise cannot tell which verifier scores it",
                             column="task", fix="train on a `stagewise export` (every row names its verifier) "
                                                "or add a `task` column to the RL rows")
        meta = meta or ["{}"] * n
        ids = id or [""] * n
        problems = [{"answer": s, "task": t, "meta": m, "id": i} for s, t, m, i in zip(solution, task, meta, ids)]
        verdicts = score_many_safely([(completion_text(c), p) for c, p in zip(completions, problems)],
                                     timeout_s=self.timeout_s, workers=self.workers)
        self.last = [(i, float(v.score), v.status) for i, v in zip(ids, verdicts)]
        self.status_counts.update(v.status for v in verdicts)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for status in ("correct", "no_answer", "timeout", "error"):
                log_metric(f"verifier/{status}_frac", sum(v.status == status for v in verdicts) / max(n, 1))
        return [float(v.score) for v in verdicts]

    def groups(self) -> dict[str, list[float]]:
        """Scores of the last call grouped by prompt id (one GRPO group per id)."""
        out = defaultdict(list)
        for i, s, _ in self.last:
            out[i].append(s)
        return dict(out)

    def close(self) -> None:
        """Stop the shared pool's workers now (they would stop at exit); a later call starts new ones."""
        close_shared_pools()
