"""Names that say what a thing is, not where it sits on this machine: what run configs, manifests and
reports record instead of absolute paths."""

from __future__ import annotations

import os
import re
from pathlib import Path

# An absolute POSIX or Windows path inside a string, e.g. "/tmp/run.duckdb" or "gsm8k:/data/x.jsonl".
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s:=\"'(]))(?:/(?!/)[^\s:\"']+|[A-Za-z]:\\[^\s\"']+)")


def portable_name(name: str | None) -> str | None:
    """A model or file named by what it is, not where it sits: a local path becomes its base name."""
    if not name:
        return name
    text = str(name)
    if os.path.isabs(text) or text.startswith(("~", "./", "../")) or Path(text).expanduser().exists():
        return Path(text.rstrip("/\\")).name or text
    return text


def portable(value):
    """`value` with every absolute path inside its strings replaced by the path's base name."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, str):
        return _ABSOLUTE.sub(lambda m: Path(m.group(0).rstrip("/\\")).name, value)
    return value


def absolute_paths(value) -> list[str]:
    """Every absolute path found in the strings of `value` (for checks and tests)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in absolute_paths(k) + absolute_paths(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in absolute_paths(v)]
    return _ABSOLUTE.findall(value) if isinstance(value, str) else []
