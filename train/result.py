"""What a training stage returns, and which process reports it. Imports nothing heavy, so the command
line can show a result without loading torch."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch`/torchrun (RANK is set there), or a plain single process. Only it
    writes metrics, configs, markers and the final model, so ranks never race on one file."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class TrainResult:
    """What one stage produced. `model_dir` loads with from_pretrained; `metrics` holds the last logs."""

    stage: str
    out: str
    model_dir: str | None
    global_step: int = 0
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    resumed_from: str | None = None
    step_time_s: float | None = None  # mean wall time of an optimizer step (first step excluded when > 1)
    dry_run: bool = False
    extra: dict = field(default_factory=dict)
    # Processes that trained together (WORLD_SIZE under accelerate launch / torchrun); the result and its
    # files are written by rank 0 only.
    processes: int = field(default_factory=lambda: int(os.environ.get("WORLD_SIZE", "1")))

    def to_dict(self) -> dict:
        return asdict(self)
