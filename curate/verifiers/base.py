"""The verifier contract: `score(completion, problem) -> Verdict` (docs/DESIGN.md, "Verifier").

The verifier is named by the problem's `task`. The probe and the RL reward call exactly this code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

STATUSES = ("correct", "wrong", "no_answer", "timeout", "error")


@dataclass(frozen=True)
class Verdict:
    score: float
    extracted: str | None
    status: str  # one of STATUSES; "correct" means score >= 1
    reason: str | None = None  # why a sample is unverifiable (timeout / error), stored with it

    @property
    def correct(self) -> bool:
        return self.status == "correct"


class Verifier(ABC):
    """Base class. `name` is the task it serves (e.g. "gsm8k", "math", "rg:basic_arithmetic")."""

    name = "base"

    @abstractmethod
    def score(self, completion: str, problem) -> Verdict:
        """Score one completion against the problem's gold answer; never raises (crashes become status error)."""
