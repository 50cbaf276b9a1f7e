"""The backend contract: `generate(requests) -> results` (docs/DESIGN.md, "Backend").

A request carries the chat messages, which sample indices to draw, one seed per sample index, and
the sampling parameters. Seeds are per (run seed, problem id, sample index), so a resumed or adaptive
run asks for exactly the samples a fixed run would.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """Backend-independent sampling settings; recorded with the run and read back by the trainer."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationRequest:
    """Draw `len(sample_indices)` samples for one prompt; `seeds[i]` seeds sample `sample_indices[i]`."""

    key: str  # the problem id
    messages: list[dict]
    sample_indices: list[int]
    seeds: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class GenerationResult:
    """One sample: its text, generated token count (up to and including the end token) and finish reason."""

    key: str
    sample_idx: int
    text: str
    n_tokens: int
    finish_reason: str  # "stop" (end token or stop string) or "length" (hit max_new_tokens)


def sample_seed(run_seed: int, problem_id: str, sample_idx: int) -> int:
    """Deterministic 31-bit seed for one (item, sample index)."""
    digest = hashlib.sha256(f"{run_seed}:{problem_id}:{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class Backend(ABC):
    """Base class. Subclasses set `name` and implement `generate`."""

    name = "base"

    @abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One result per (request, sample index), in any order."""

    @abstractmethod
    def identity(self) -> dict:
        """Model identity recorded with the run (name, weights hash or revision, backend)."""

    def close(self) -> None:
        """Release engines, servers and pools."""
