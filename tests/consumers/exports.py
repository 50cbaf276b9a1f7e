"""A real stagewise export for the consumer tests: a probe store with chosen outcomes, exported."""

from __future__ import annotations

import json
from pathlib import Path


def handoff_items():
    """40 unmastered, 40 partial and 8 mastered items (n = 4): enough for the export to hold a validation
    slice out of both SFT and RL (sft_val.parquet, rl_val.parquet; stages/validation.py)."""
    from stages_helpers import item

    return ([item(i, "wwww") for i in range(40)] + [item(i, "cwcw") for i in range(40, 80)]
            + [item(i, "cccc") for i in range(80, 88)])


def make_export(tmp_path: Path, fmt: str, items=None) -> Path:
    from stages_helpers import build_store

    import stagewise as sw

    store = tmp_path / f"{fmt}.duckdb"
    build_store(store, items if items is not None else handoff_items())
    out = tmp_path / f"export-{fmt}"
    sw.export(str(store), str(out), format=fmt, policy="stage", keep_mastered=4)
    return out


def manifest(export_dir: Path) -> dict:
    return json.loads((Path(export_dir) / "manifest.json").read_text())
