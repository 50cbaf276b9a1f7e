"""Atomic file writes: a temporary sibling renamed into place, so a reader never sees half a file."""

from __future__ import annotations

import os


def atomic_target(path) -> tuple[str, str]:
    """The final path and a temporary sibling in the same directory (same filesystem: rename is atomic)."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return path, os.path.join(parent, f".{os.path.basename(path)}.tmp-{os.getpid()}")


def write_text_atomic(path, text: str) -> str:
    path, tmp = atomic_target(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):  # a failed write leaves the old file as it was, and no stray sibling
            os.remove(tmp)
        raise
    return path
