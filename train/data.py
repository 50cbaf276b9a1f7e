"""Reading an export (docs/DESIGN.md, "Export directory"; TRL format) for training: the splits and the manifest.

`data` is an export directory (sft.parquet, sft_val.parquet, rl.parquet, replay.parquet, assignments.parquet,
manifest.json) or one parquet file; next to a single file the manifest is looked up in the same folder.
Every problem a trainer cannot use raises an InputError naming the file, the row, the column and the fix,
before any model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stagewise.curate.errors import EmptySplitError, InputError
from stagewise.stages.contract import SPLIT_FILES as _ALL_SPLIT_FILES
from stagewise.stages.contract import ExportManifest, item_problem, read_manifest, read_split, verify_file

# sft_val: the export's held-out demonstrations, read as the held-out SFT rows (train/two_stage.py).
SPLIT_FILES = {s: _ALL_SPLIT_FILES[s] for s in ("sft", "rl", "replay", "sft_val")}


@dataclass
class Export:
    """An export directory (or a lone parquet file) and its manifest (None for a hand-made file)."""

    root: Path
    manifest: ExportManifest | None = None
    single_file: Path | None = None
    verify: bool = True  # check each split read against manifest.json (sha256, rows); --no-verify turns it off

    @property
    def format(self) -> str:
        return self.manifest.format if self.manifest else "trl"

    @property
    def probe(self) -> dict:
        """The probe's run config (sampling, prompting, model); {} without a manifest."""
        return dict(self.manifest.probe) if self.manifest else {}

    @property
    def sampling(self) -> dict:
        return self.manifest.sampling if self.manifest else {}

    def path(self, split: str) -> Path:
        if self.single_file is not None:
            return self.single_file
        return self.root / SPLIT_FILES[split]

    def has(self, split: str) -> bool:
        """Whether the export has this split, possibly empty (an empty split's file is left out)."""
        if self.single_file is not None:
            return _split_of(self.single_file) == split
        return self.path(split).exists() or self._omitted(split) is not None

    def _omitted(self, split: str) -> str | None:
        if self.manifest is None or self.single_file is not None:
            return None
        return (self.manifest.omitted or {}).get(SPLIT_FILES[split])

    def has_file(self, split: str) -> bool:
        """Whether this export directory holds the split's file (never true for a lone parquet file)."""
        return self.single_file is None and self.path(split).exists()

    def raise_if_omitted(self, split: str) -> None:
        """EmptySplitError when the exporter left this split out for having no rows."""
        reason = self._omitted(split)
        if reason is not None:
            raise EmptySplitError(f"the {split} split is empty ({reason})", path=str(self.root),
                                  fix="check the export's counts (manifest.json) or route with other thresholds")

    def rows(self, split: str) -> list[dict]:
        """The split's rows, checked against the export contract (columns, a `task` on every row) and,
        unless `verify` is off, against the manifest's sha256 and row count."""
        if not self.path(split).exists() and self._omitted(split) is not None:
            return []  # an empty split: the exporter wrote no file for it
        if self.verify and self.manifest is not None:
            verify_file(self.path(split).parent, self.path(split).name, self.manifest)
        sft_style = self.manifest.sft_style if self.manifest else None
        return read_split(self.path(split), format=self.format, split=split, sft_style=sft_style)

    def problems(self, split: str) -> list:
        """The split's items as curate Problems carrying the exact prompt messages the probe sent."""
        sft_style = self.manifest.sft_style if self.manifest else None
        return [item_problem(r, format=self.format, split=split, sft_style=sft_style) for r in self.rows(split)]


def _split_of(path: Path) -> str:
    stem = path.stem.lower()
    return stem if stem in SPLIT_FILES else "unknown"


def open_export(data: str | Path, *, verify: bool = True) -> Export:
    """Locate the export and read its manifest (a lone parquet file may have none). With `verify`, each
    split read is checked against the manifest's sha256 and row count (Export.rows)."""
    path = Path(data).expanduser()
    if not path.exists():
        raise InputError("training data not found", path=str(path),
                         fix="pass an export directory written by `stagewise export` or a parquet file")
    if path.is_dir():
        root, single = path, None
        if not any((path / f).exists() for f in SPLIT_FILES.values()):
            raise InputError("no sft.parquet, rl.parquet or replay.parquet in this directory", path=str(path),
                             fix="pass the directory written by `stagewise export --format trl`")
    else:
        if path.suffix != ".parquet":
            raise InputError("training data must be a parquet file or an export directory", path=str(path),
                             fix="convert it with `stagewise export --format trl`")
        root, single = path.parent, path
    manifest = read_manifest(root)
    if manifest is not None and manifest.format != "trl":
        raise InputError(f"this export is in the {manifest.format} format; the bundled trainer reads TRL rows",
                         path=str(root), fix="re-export with `stagewise export --format trl` to train here")
    return Export(root=root, manifest=manifest, single_file=single, verify=verify)


def _check_messages(value, path: Path, row: int, column: str, *, fix: str) -> None:
    if isinstance(value, str):
        return  # a plain-text prompt is valid TRL input too
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) and "content" in m for m in value):
        raise InputError("expected a list of chat messages ({role, content})", path=str(path), line=row + 1,
                         column=column, fix=fix)


def answer_of(row: dict) -> str | None:
    """The gold answer of a TRL row: `answer` in SFT rows, `solution` in RL-layout rows (the column
    GRPOTrainer passes on to reward functions)."""
    for col in ("answer", "solution"):
        if row.get(col) not in (None, ""):
            return str(row[col])
    return None


def load_sft_rows(export: Export, split: str = "sft") -> list[dict]:
    """Rows with `prompt` + `completion` (one assistant message), validated."""
    path = export.path(split)
    if not path.exists():
        export.raise_if_omitted(split)
        raise InputError(f"the export has no {SPLIT_FILES[split]}", path=str(export.root),
                         fix="export with a routing policy that sends items to SFT, or skip the SFT stage")
    rows = export.rows(split)
    if not rows:
        raise EmptySplitError("the SFT split is empty (0 rows): there is nothing to train on", path=str(path),
                         fix="check the export's counts (manifest.json) or lower the routing threshold")
    cols = set(rows[0])
    if "messages" in cols and "completion" not in cols:
        return rows  # TRL's conversational language-modelling format is accepted as is
    for col in ("prompt", "completion"):
        if col not in cols:
            raise InputError("the SFT split has no completions" if col == "completion" else "missing column",
                             path=str(path), column=col,
                             fix=f"SFT needs `prompt` + `completion` columns (columns here: {sorted(cols)}); "
                                 "export with demonstrations (`stagewise export --demos solution`)")
    for i, row in enumerate(rows):
        _check_messages(row["prompt"], path, i, "prompt", fix="re-export in the TRL format")
        comp = row["completion"]
        if comp is None or comp == "" or comp == []:
            raise InputError("empty completion: SFT needs a demonstration for every row", path=str(path),
                             line=i + 1, column="completion",
                             fix="drop the row or export it as unrouted (no verified demonstration)")
        _check_messages(comp, path, i, "completion", fix="re-export in the TRL format")
    return rows


def load_rl_rows(export: Export, split: str = "rl") -> list[dict]:
    """Rows with `prompt` messages and a gold answer in `solution`, plus id/task/meta, validated."""
    path = export.path(split)
    if not path.exists():
        export.raise_if_omitted(split)
        raise InputError(f"the export has no {SPLIT_FILES[split]}", path=str(export.root),
                         fix="export with a routing policy that sends items to RL, or skip the RL stage")
    rows = export.rows(split)
    if not rows:
        raise EmptySplitError("the RL split is empty (0 rows): there is nothing to train on", path=str(path),
                         fix="check the export's counts (manifest.json); RL needs partially mastered items")
    cols = set(rows[0])
    if "prompt" not in cols:
        raise InputError("missing column", path=str(path), column="prompt",
                         fix=f"RL needs `prompt` messages (columns here: {sorted(cols)})")
    for i, row in enumerate(rows):
        _check_messages(row["prompt"], path, i, "prompt", fix="re-export in the TRL format")
        if answer_of(row) is None:
            raise InputError("no gold answer: the verifier cannot score this row", path=str(path), line=i + 1,
                             column="solution", fix="drop the row or fill its answer")
    return rows


def rl_dataset_rows(rows: list[dict]) -> list[dict]:
    """The columns GRPOTrainer passes on to the reward: prompt, solution, task, meta, id."""
    out = []
    for row in rows:
        meta = row.get("meta")
        out.append({
            "prompt": row["prompt"],
            "solution": answer_of(row),
            "task": row["task"],  # read_split refused rows without one
            "meta": meta if isinstance(meta, str) else json.dumps(meta or {}),
            "id": str(row.get("id", "")),
        })
    return out


def sft_dataset_rows(rows: list[dict]) -> list[dict]:
    """Only the columns SFTTrainer reads, so stray statistics columns never reach the collator."""
    if rows and "messages" in rows[0] and "completion" not in rows[0]:
        return [{"messages": r["messages"]} for r in rows]
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]


def split_holdout(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministically hold out `fraction` of rows (at least one when fraction > 0 and len >= 2)."""
    import random

    if fraction <= 0 or len(rows) < 2:
        return rows, []
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    k = min(len(rows) - 1, max(1, round(fraction * len(rows))))
    held = set(idx[:k])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
