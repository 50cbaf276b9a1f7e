"""The `rg:<name>` verifier: reasoning-gym's `extract_answer` then the dataset's own `score_answer`.

The problem's meta carries the reasoning-gym entry under "rg_entry" (curate/presets.py writes it);
"rg_config" (optional) holds the dataset config kwargs when scoring depends on them. Scores in (0, 1)
(reasoning-gym's partial credit) are status "wrong": "correct" means score >= 1.
"""

from __future__ import annotations

import functools
import json

from stagewise.curate.errors import require
from stagewise.curate.verifiers.base import Verdict, Verifier
from stagewise.curate.verifiers.extract import last_boxed


@functools.lru_cache(maxsize=256)
def _scorer(name: str, config_json: str):
    require("reasoning_gym", "rg")
    from reasoning_gym.factory import DATASETS

    if name not in DATASETS:
        raise KeyError(f"reasoning-gym has no dataset {name!r}")
    dataset_cls, config_cls = DATASETS[name]
    config = config_cls(**json.loads(config_json))
    return dataset_cls(config=config).score_answer


class ReasoningGymVerifier(Verifier):
    isolate = True  # some datasets score with sympy or run code: keep them killable

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.name = f"rg:{dataset}"

    def score(self, completion: str, problem) -> Verdict:
        from reasoning_gym.utils import extract_answer

        meta = problem.meta
        entry = meta.get("rg_entry")
        if not isinstance(entry, dict):
            return Verdict(0.0, None, "error", "problem meta has no 'rg_entry' (the reasoning-gym entry); "
                                               "load it with an rg: source so the entry is kept")
        name = meta.get("rg_dataset") or (entry.get("metadata") or {}).get("source_dataset") or self.dataset
        answer = extract_answer(completion or "")
        if answer is None:
            boxed = last_boxed(completion)
            answer = boxed[1] if boxed else None
        if answer is None:
            return Verdict(0.0, None, "no_answer")
        scorer = _scorer(name, json.dumps(meta.get("rg_config") or {}, sort_keys=True))
        value = float(scorer(answer, entry))
        return Verdict(value, answer, "correct" if value >= 1.0 else "wrong")
