"""Probe stores with chosen outcomes, built through the ProbeStore API, for the stages tests.

Each item is (id, question, answer, solution, outcomes): outcomes is a string of 'c' (correct),
'w' (wrong), 'x' (timeout) or 't' (cut off at max_new_tokens: no answer, finish_reason length), one
per sample. Completions are real text the gsm8k verifier scores
(correct ones box the gold answer), so re-verifying a stored sample means something.
"""

from __future__ import annotations

from stagewise.curate.schema import Problem
from stagewise.curate.store import ProbeStore

SYSTEM = "You are a careful solver."
CONFIG = {"model": {"name": "tiny-probe", "path": "tiny-probe", "sha256": "ab" * 32},
          "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 32},
          "system_prompt": SYSTEM, "prompt_template": None, "seed": 0, "num_samples": 4, "backend": "hf"}


def item(i: int, outcomes: str, *, solution: str | None = "default", answer: str | None = None,
         task: str = "gsm8k"):
    a = answer if answer is not None else str(i + 2)
    sol = f"We add 1 and {i + 1} to get {a}." if solution == "default" else solution
    return (f"q{i:02d}", f"What is 1 + {i + 1}?", a, sol, outcomes, task)


def build_store(path, items, *, config=None, source="unit") -> str:
    """Write a store holding one run with the given per-item outcomes; return its run_id."""
    with ProbeStore(path) as store:
        store.add_problems([Problem(id=pid, prompt=q, answer=a, solution=sol, source=source, task=task)
                            for pid, q, a, sol, _, task in items])
        run_id = store.start_run(dict(config or CONFIG))
        rows = []
        for pid, _q, a, _sol, outcomes, _task in items:
            for k, o in enumerate(outcomes):
                status = {"c": "correct", "w": "wrong", "x": "timeout", "t": "no_answer"}[o]
                text = {"c": f"It is \\boxed{{{a}}}", "w": "It is \\boxed{999}", "x": "...", "t": "Let us"}[o]
                rows.append({"problem_id": pid, "sample_idx": k, "status": status, "completion": text,
                             "score": 1.0 if o == "c" else 0.0, "extracted": None, "n_tokens": 5,
                             "finish_reason": "length" if o == "t" else "stop"})
        store.add_samples(run_id, rows)
    return run_id


def mixed_items():
    """8 unmastered, 8 partial, 8 mastered items with n = 4."""
    out = []
    for i in range(24):
        outcomes = ["wwww", "cwcw" if i % 2 else "wwwc", "cccc"][i // 8]
        out.append(item(i, outcomes))
    return out
