"""The documents match the tree: the README's layout names every module, docs/DESIGN.md names only
files that exist, and every reference to the design document points at docs/DESIGN.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("curate", "stages", "train", "stagewise")


def _layout_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def _layout_entries() -> dict[str, str]:
    """{top-level entry: its text in the layout block} (continuation lines join their entry)."""
    entries: dict[str, str] = {}
    current = None
    for line in _layout_block().splitlines():
        if not line.strip():
            continue
        if line[0] != " ":
            current = line.split()[0]
            entries[current] = line
        elif current is not None:
            entries[current] += " " + line.strip()
    return entries


def test_the_readme_layout_lists_every_top_level_entry_of_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    top = {path.split("/")[0] + ("/" if "/" in path else "") for path in tracked.split()}
    top = {t for t in top if not t.startswith(".") and t not in ("README.md", ".gitignore")}
    assert set(_layout_entries()) == top


def test_the_readme_layout_names_every_module_of_every_package():
    entries = _layout_entries()
    for package in PACKAGES:
        text = entries[f"{package}/"]
        folder = ROOT / package
        modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        modules |= {p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
        missing = sorted(m for m in modules if not re.search(rf"\b{re.escape(m)}\b", text))
        assert not missing, f"README layout misses {package}/: {missing}"


def test_every_file_the_design_document_names_exists():
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    named = set(re.findall(r"`((?:curate|stages|train|stagewise|benchmarks|tests)/[\w/.*-]+)`", design))
    assert named, "the design document names no files"
    missing = sorted(p for p in named if not any(ROOT.glob(p.rstrip("/"))))
    assert not missing, f"docs/DESIGN.md names files that do not exist: {missing}"


def test_every_reference_to_the_design_document_points_at_docs():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    stray = []
    for path in tracked.split():
        if not path.endswith((".py", ".md", ".yaml", ".toml")) or path == "tests/test_docs.py":
            continue
        for number, line in enumerate((ROOT / path).read_text(errors="replace").splitlines(), start=1):
            if re.search(r"(?<!docs/)DESIGN\.md", line):
                stray.append(f"{path}:{number}")
    assert not stray, f"references to DESIGN.md outside docs/: {stray}"
