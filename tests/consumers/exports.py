"""A real stagewise export for the consumer tests: a probe store with chosen outcomes, exported."""

from __future__ import annotations

import json
from pathlib import Path


def make_export(tmp_path: Path, fmt: str, items=None) -> Path:
    from stages_helpers import build_store, mixed_items

    import stagewise as sw

    store = tmp_path / f"{fmt}.duckdb"
    build_store(store, items if items is not None else mixed_items())
    out = tmp_path / f"export-{fmt}"
    sw.export(str(store), str(out), format=fmt, policy="stage", keep_mastered=4)
    return out


def manifest(export_dir: Path) -> dict:
    return json.loads((Path(export_dir) / "manifest.json").read_text())
