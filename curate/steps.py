"""Completion markers: a step of work (an export, a training stage, one evaluation, a stage of
`stagewise run`, an experiment arm) is done when its marker exists and was written for the same config.

    step = Step(out, "export", {"policy": "stage", "k_min": 2})
    if step.done():
        return step.result()
    step.refuse_other_options(f"{out}/ was exported", "pass --overwrite to replace it")
    ...                                      # the work
    step.mark({"rows": 12})                  # last, atomically

The marker `DIR/<name>.done.json` holds the config itself (so a mismatch names the keys that differ),
its canonical hash (what `done()` compares) and the step's result. It is written atomically and only
after the work, so a marker never describes half-done work: an interrupted step has none and runs again
(or resumes, when the work itself can).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from stagewise.curate.atomic import write_text_atomic
from stagewise.curate.errors import ConfigError, InputError

MARKER_SUFFIX = ".done.json"
_UNSET = "(not set)"


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # a numpy or torch scalar: its number
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return str(value)  # a path or another object: its text


def canonical(value: Any) -> Any:
    """`value` as plain JSON data (tuples become lists, numpy scalars numbers, paths and other objects
    their str), so a config compares equal to itself read back from its marker."""
    return json.loads(json.dumps(value, default=_plain))


def config_hash(config: Any) -> str:
    """sha256 of the canonical JSON of `config` (keys sorted): equal configs, equal hashes."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of nested mappings, e.g. {"route": {"low": 0.1}} -> {"route.low": 0.1}."""
    if not isinstance(config, dict) or (prefix and not config):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differences(old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every key whose value differs, sorted by key; a key one
    side lacks has the value "(not set)" there."""
    a, b = flatten(canonical(old)), flatten(canonical(new))
    return [(k, a.get(k, _UNSET), b.get(k, _UNSET)) for k in sorted(set(a) | set(b))
            if a.get(k, _UNSET) != b.get(k, _UNSET)]


class OtherOptionsError(ConfigError):
    """Output made with other options is there. `made` says what and how; the caller that knows the
    remedy may re-raise with its own (`stagewise run` says --fresh where `export` says --overwrite)."""

    def __init__(self, made: str, fix: str):
        self.made = made
        super().__init__(made, fix=fix)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class Step:
    """One step of work keyed by its config; its marker is `directory/<name>.done.json`."""

    def __init__(self, directory: str | Path, name: str, config: dict):
        self.directory = Path(directory)
        self.name = name
        self.config = canonical(config)
        self.hash = config_hash(self.config)

    @property
    def path(self) -> Path:
        return self.directory / f"{self.name}{MARKER_SUFFIX}"

    def record(self) -> dict | None:
        """The marker as written (config, config_hash, result, seconds, finished_at), or None."""
        if not self.path.exists():
            return None
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"unreadable completion marker ({exc})", path=str(self.path),
                             fix="delete it to run this step again") from None
        if not isinstance(record, dict):
            raise InputError("a completion marker must hold a JSON object", path=str(self.path),
                             fix="delete it to run this step again")
        return record

    def exists(self) -> bool:
        """A marker is there, whatever config it was written for."""
        return self.path.exists()

    def done(self) -> bool:
        """Finished earlier with this very config."""
        record = self.record()
        return record is not None and record.get("config_hash") == self.hash

    def result(self) -> Any:
        """What `mark` recorded, or None when the step is not done with this config."""
        return self.record().get("result") if self.done() else None

    def differences(self) -> list[tuple[str, Any, Any]]:
        """How the recorded config differs from this one ([] without a marker)."""
        record = self.record()
        return differences(record.get("config"), self.config) if record is not None else []

    def describe_differences(self) -> str:
        """'k_min=2, this run asks k_min=3': the recorded values, then the asked ones."""
        diff = self.differences()
        if not diff:
            return ""
        was = ", ".join(f"{k}={_shown(old)}" for k, old, _ in diff)
        asks = ", ".join(f"{k}={_shown(new)}" for k, _, new in diff)
        return f"{was}, this run asks {asks}"

    def refuse_other_options(self, made: str, fix: str) -> None:
        """Raise OtherOptionsError "<made> with <old values>, this run asks <new values>; <fix>" when a
        marker for another config is there; return when there is none or it matches."""
        if self.exists() and not self.done():
            raise OtherOptionsError(f"{made} with {self.describe_differences() or 'other options'}", fix)

    def mark(self, result: Any = None, *, seconds: float | None = None) -> Path:
        """Record the step as done with this config (atomically); call it last, after the work."""
        record = {"step": self.name, "config_hash": self.hash, "config": self.config,
                  "result": canonical(result), "seconds": seconds,
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_text_atomic(self.path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        return self.path
