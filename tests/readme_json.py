"""The JSON shapes the README documents (its "Machine-readable output" table), for the tests to check."""

from __future__ import annotations

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def documented_keys() -> dict[str, set[str]]:
    """{"route": {...}, "train sft/rl/joint": {...}, ...}: the top-level keys listed per command."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Machine-readable output", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.match(r"^\| `stagewise ([\w /]+?) --json` \| (.+) \|$", line)
        if m:
            out[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2)))
    return out


def assert_documented(command: str, payload: dict) -> None:
    keys = documented_keys()[command]
    assert set(payload) == keys, (f"`stagewise {command} --json` printed {sorted(payload)}, the README documents "
                                  f"{sorted(keys)}")
