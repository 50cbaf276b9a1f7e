"""The canonical problem row (docs/DESIGN.md, "Problem row") and the stable id every later stage keys on."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field

COLUMNS = ("id", "prompt", "answer", "solution", "source", "task", "meta")


@dataclass
class Problem:
    """One candidate problem. `task` names the verifier; `meta` keeps everything else (JSON string)."""

    prompt: str
    answer: str
    id: str = ""
    solution: str | None = None
    source: str = ""
    task: str = "exact"
    meta: str = "{}"
    # The exact chat messages to send, when they travel with the item (an exported row); otherwise the
    # probe builds them from `prompt` and the prompting options.
    messages: list | None = field(default=None, repr=False)
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not self.id:
            self.id = stable_id(self.prompt, self.answer)
        if not isinstance(self.meta, str):
            self.meta = json.dumps(self.meta, sort_keys=True, default=str)

    def row(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d.pop("messages")
        return d

    @property
    def meta_dict(self) -> dict:
        return json.loads(self.meta or "{}")


def normalise_text(text: str) -> str:
    """Lower-case, NFKC, collapse whitespace: two prompts that differ only in spacing are duplicates."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return re.sub(r"\s+", " ", text).strip()


def stable_id(prompt: str, answer: str) -> str:
    """A stable id from the normalised prompt and answer (16 hex chars of sha256)."""
    key = normalise_text(prompt) + "\x1f" + normalise_text(answer)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
