"""The export contract, defined once: what an export directory holds, and how every reader checks it.

An export directory is self-contained. Each row carries what is needed to use it anywhere (the raw
question, the exact prompt messages the probe sent, the answer format, the verifier's `task`, the gold
answer and `meta`), and `manifest.json` records the probe run by its id, the model by name and weights
hash, and every file's sha256, with no absolute path of any kind. The exporter (stages/export.py) writes
it; the trainer, evaluation and the re-probe (train/) read it through `read_split` and `item_problem`,
and never reopen the probe store.

Where each field lives in a row depends on the format (verl keeps them in `extra_info`); the format
classes in stages/formats.py own that mapping (`ExportFormat.item_fields`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from stagewise.curate.errors import InputError
from stagewise.curate.paths import absolute_paths, portable, portable_name  # noqa: F401 - re-exported
from stagewise.curate.schema import Problem

# formats.py names splits through this module's layout_of: each imports the other as a module.
from stagewise.stages import formats

EXPORT_VERSION = 2
SPLITS = ("sft", "rl", "replay", "unrouted")
# Validation files, each written beside the training split whose row layout it shares: a seeded slice of
# that split's items, held out of its training file (stages/validation.py sizes and draws it).
VALIDATION_SPLITS = {"sft_val": "sft", "rl_val": "rl"}
ALL_SPLITS = ("sft", "sft_val", "rl", "rl_val", "replay", "unrouted")
SPLIT_FILES = {s: f"{s}.parquet" for s in ALL_SPLITS}
# What every exported row carries, whatever the format (verl: inside extra_info).
ITEM_FIELDS = ("id", "task", "question", "answer", "answer_format", "meta")
ANSWER_FORMATS = ("boxed", "tags")


def layout_of(split: str) -> str:
    """The split whose row layout a file has: a validation file's training split, else the split itself."""
    return VALIDATION_SPLITS.get(split, split)


@dataclass
class ExportManifest:
    """manifest.json, typed. `probe` is the probe run's config (sampling, prompting, model identity),
    kept by `run_id`; `files` maps each file to {rows, bytes, sha256, arrow_bytes}."""

    format: str
    sft_style: str
    run_id: str
    probe: dict
    model: dict
    route: dict
    demonstrations: dict
    counts: dict
    warnings: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    # Splits with no rows are not written (`datasets` and verl cannot read a 0-row parquet file), nor a
    # validation file for a split too small to spare one: file name -> why it is absent.
    omitted: dict = field(default_factory=dict)
    created_at: str = ""
    stagewise_export: int = EXPORT_VERSION

    @property
    def sampling(self) -> dict:
        return dict(self.probe.get("sampling") or {})

    @property
    def num_samples(self) -> int | None:
        return self.probe.get("num_samples") or self.probe.get("k_max")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"stagewise_export": d.pop("stagewise_export"), "created_at": d.pop("created_at"), **d}

    @classmethod
    def from_dict(cls, data: dict, *, path: str = "manifest.json") -> ExportManifest:
        version = data.get("stagewise_export")
        if version != EXPORT_VERSION:
            raise InputError(f"export format version {version!r}; this stagewise reads version {EXPORT_VERSION}",
                             path=path, fix="re-export with this version of stagewise (`stagewise export`)")
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names if n not in data and n not in ("warnings", "versions", "files",
                                                                        "omitted", "created_at"))
        if missing:
            raise InputError(f"manifest is missing {', '.join(missing)}", path=path,
                             fix="re-export with `stagewise export`")
        return cls(**{k: v for k, v in data.items() if k in names})


def read_manifest(root: str | Path) -> ExportManifest | None:
    """The manifest of an export directory, or None when there is none (a hand-made directory)."""
    path = Path(root) / "manifest.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"manifest is not valid JSON ({exc.msg})", path=str(path), line=exc.lineno,
                         column=exc.colno, fix="re-run `stagewise export`") from None
    return ExportManifest.from_dict(data, path=str(path))


def read_split(path: str | Path, *, format: str = "trl", split: str | None = None,
               sft_style: str | None = None) -> list[dict]:
    """The rows of one split file, checked against the contract: the columns a reader needs must be
    there, and every row must name its verifier (`task`). Nothing is filled in."""
    import pyarrow.parquet as pq

    path = Path(path)
    split = layout_of(split or path.stem)  # sft_val.parquet is read as SFT rows
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise InputError(f"cannot read parquet ({type(exc).__name__}: {exc})", path=str(path),
                         fix="re-run `stagewise export`") from None
    fmt = formats.make_format(format, sft_style=sft_style or _sft_style_of(table.column_names, format))
    if split in SPLITS:
        expected = fmt.required_columns(split)
        missing = [c for c in expected if c not in table.column_names]
        if missing:
            raise InputError(f"missing column '{missing[0]}' (a {format} {split} split needs at least: "
                             f"{', '.join(expected)}; found: {', '.join(table.column_names)})",
                             path=str(path), column=missing[0],
                             fix=f"re-export with `stagewise export --format {format}`, or add the column")
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        item = fmt.item_fields(row, split)
        if not item.get("task"):
            raise InputError("no `task`: stagewise cannot tell which verifier scores this row", path=str(path),
                             line=i + 1, column="task",
                             fix="set `task` to a verifier name (gsm8k, math, exact, rg:<name> or "
                                 "module:function), or re-export with `stagewise export`")
    return rows


def _sft_style_of(columns: list[str], format: str) -> str:
    return "messages" if format == "trl" and "messages" in columns and "completion" not in columns \
        else "prompt-completion"


def item_problem(row: dict, *, format: str = "trl", split: str = "rl", sft_style: str | None = None):
    """The curate Problem of an exported row, carrying the exact prompt messages the probe sent
    (so evaluation and the re-probe ask exactly what the probe asked, item by item)."""
    fmt = formats.make_format(format, sft_style=sft_style or _sft_style_of(list(row), format))
    item = fmt.item_fields(row, layout_of(split))
    return Problem(prompt=item["question"] or "", answer=str(item["answer"]), id=str(item["id"]),
                   task=item["task"], meta=item["meta"] if item["meta"] is not None else "{}",
                   messages=[dict(m) for m in item["messages"]])


def sha256_file(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(root: str | Path, name: str, manifest: ExportManifest) -> None:
    """Check one exported file against manifest.json (its sha256 and row count). A file modified after
    export (cut, edited, replaced) is an InputError naming what differs; `--no-verify` skips this."""
    info = (manifest.files or {}).get(name)
    if not info:
        return  # a file the manifest does not list (e.g. added by hand) has nothing to be checked against
    path = Path(root) / name
    differ = []
    if info.get("sha256") and sha256_file(path) != info["sha256"]:
        differ.append("sha256")
    if info.get("rows") is not None:
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - a cut file is not readable parquet: its row count differs too
            rows = None
        if rows != info["rows"]:
            differ.append("rows")
    if differ:
        raise InputError(f"{path} was modified after export ({' and '.join(differ)} "
                         f"{'differ' if len(differ) > 1 else 'differs'} from manifest.json)",
                         fix="re-export, or pass --no-verify")
