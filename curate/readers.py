"""Readers: records (plain dicts) with their line or row number, from files, HF datasets and reasoning-gym.

A reader raises InputError for problems with a whole source (missing file, unknown format, a
non-UTF-8 file). A problem with one row is yielded as a `BadRow`, so the caller decides to stop or
to count, skip and (optionally) write it to a rejects file.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from stagewise.curate.errors import InputError, require

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv",
           ".tsv": "tsv"}
SUPPORTED = "JSONL (.jsonl/.ndjson), JSON (.json), Parquet (.parquet), CSV (.csv/.tsv), a directory of " \
            "them, or a datasets save_to_disk directory"


@dataclass
class BadRow:
    line: int
    message: str
    raw: str
    fix: str = "fix or delete that line"
    reason: str = "malformed"


def file_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise InputError(f"unknown format '{ext or '(no extension)'}'", path=path,
                         fix=f"supported: {SUPPORTED}; rename the file or convert it")
    return FORMATS[ext]


def is_hf_disk_dir(path: str) -> bool:
    return os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, "dataset_dict.json"))
        or (os.path.isfile(os.path.join(path, "state.json"))
            and os.path.isfile(os.path.join(path, "dataset_info.json"))))


def data_files(directory: str) -> list[str]:
    """The data files under a directory (recursive, sorted); hidden files and others are ignored."""
    found = []
    for root, dirs, files in os.walk(directory):
        if root != directory and is_hf_disk_dir(root):
            found.append(root)  # a save_to_disk dataset inside: one source, not its metadata files
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in FORMATS:
                found.append(os.path.join(root, name))
    if not found:
        raise InputError("no data files in this directory", path=directory,
                         fix=f"put {SUPPORTED} files in it, or name a file")
    return sorted(found)


def check_file(path: str) -> None:
    if not os.path.exists(path):
        hint = ""
        parent = os.path.dirname(path) or "."
        if os.path.isdir(parent):
            close = difflib.get_close_matches(os.path.basename(path), os.listdir(parent), n=3)
            if close:
                hint = f" (did you mean: {', '.join(close)}?)"
        raise InputError(f"file not found{hint}", path=path,
                         fix="check the path; shipped GSM8K data is named gsm8k:test or gsm8k:train")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise InputError("the file is empty (0 bytes)", path=path, fix="name a file that holds rows")


def iter_file(path: str) -> Iterator[tuple[int, dict | BadRow]]:
    """(line or row number, record) pairs from one data file."""
    check_file(path)
    fmt = file_format(path)
    if fmt == "jsonl":
        yield from _iter_jsonl(path)
    elif fmt == "json":
        yield from _iter_json(path)
    elif fmt == "parquet":
        yield from _iter_parquet(path)
    else:
        yield from _iter_csv(path, delimiter="\t" if fmt == "tsv" else ",")


def _decode(raw: bytes, path: str, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start} of the line)",
                         path=path, line=line,
                         fix=ICONV_FIX) from None


ICONV_FIX = "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT"


def _iter_jsonl(path: str):
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark (Windows editors write one) is harmless
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                # One bad line: skippable with --skip-bad, like a malformed one.
                yield line_no, BadRow(line_no, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                                      f"{exc.start} of the line)", raw.decode("utf-8", "replace"),
                                      fix=ICONV_FIX, reason="encoding")
                continue
            if not text:
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_no, BadRow(line_no, f"malformed JSON ({exc.msg} at character {exc.pos + 1})", text)
                continue
            if not isinstance(rec, dict):
                yield line_no, BadRow(line_no, f"expected a JSON object, got {type(rec).__name__}", text)
                continue
            yield line_no, rec


def _iter_json(path: str):
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        _decode(raw.splitlines()[line - 1], path, line)
        raise  # pragma: no cover - _decode raised already
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n{" in text:
            fix = "this looks like JSON Lines: rename it to .jsonl"
        else:
            fix = "fix the JSON (python -m json.tool FILE shows the spot)"
        raise InputError(f"malformed JSON ({exc.msg}, column {exc.colno})", path=path, line=exc.lineno,
                         fix=fix) from None
    if isinstance(data, dict):
        # {"data": [...]} / {"rows": [...]}: take the single list of records inside.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError("expected a list of objects (or an object holding one list)", path=path,
                             fix="store the rows as a JSON list or as JSON Lines")
        data = lists[0]
    if not isinstance(data, list):
        raise InputError(f"expected a list of objects, got {type(data).__name__}", path=path,
                         fix="store the rows as a JSON list or as JSON Lines")
    for i, rec in enumerate(data, 1):
        if isinstance(rec, dict):
            yield i, rec
        else:
            yield i, BadRow(i, f"row {i} is a {type(rec).__name__}, not an object", json.dumps(rec)[:200])


def _iter_parquet(path: str):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise InputError(f"cannot read Parquet ({exc})", path=path,
                         fix="check the file is a complete Parquet file") from None
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            row += 1
            yield row, rec


def _iter_csv(path: str, delimiter: str):
    import csv

    with open(path, "rb") as fb:
        head = fb.read(1 << 20)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte char cut at the buffer's end
            line = head[:exc.start].count(b"\n") + 1
            _decode(head.splitlines()[line - 1], path, line)
    with open(path, "r", encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            for rec in reader:
                # line_num is the physical line the record ended on (header is line 1).
                yield reader.line_num, {k: (v if v != "" else None) for k, v in rec.items()}
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text near line {reader.line_num + 1} ({exc.reason})", path=path,
                             fix="re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT") from None


def csv_columns(path: str) -> list[str]:
    import csv

    with open(path, "r", encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f, delimiter="\t" if path.lower().endswith(".tsv") else ","), [])


# -- Hugging Face datasets -----------------------------------------------------------------------

def iter_hf_dataset(ds, where: str):
    yield from enumerate(ds, 1)


def load_hf_disk(path: str, split: str | None):
    datasets = require("datasets", "dev")
    ds = datasets.load_from_disk(path)
    return _pick_split(ds, split, path)


def load_hf_hub(name: str, config: str | None, split: str | None):
    datasets = require("datasets", "dev")
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types: missing, offline, bad config
        raise InputError(f"datasets.load_dataset failed: {str(exc).splitlines()[0][:300]}",
                         path=f"hf:{name}", fix="check the name, config and split "
                         "(hf:NAME[:CONFIG][@SPLIT]) and that the hub or a local cache is reachable") from None
    return _pick_split(ds, split, f"hf:{name}")


def _pick_split(ds, split, where):
    if isinstance(getattr(ds, "column_names", None), dict):  # a DatasetDict: one entry per split
        splits = list(ds.keys())
        if split is None:
            if len(splits) == 1:
                return ds[splits[0]], splits[0]
            raise InputError(f"several splits ({', '.join(splits)})", path=where,
                             fix=f"name one with @SPLIT, e.g. {where}@{splits[0]}")
        if split not in splits:
            raise InputError(f"no split '{split}' (splits: {', '.join(splits)})", path=where,
                             fix="name one of these after @")
        return ds[split], split
    return ds, split


# -- reasoning-gym -------------------------------------------------------------------------------

def parse_value(text: str):
    """A query-string value as int, float, bool, JSON list/dict, or the string itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def rg_names() -> list[str]:
    require("reasoning_gym", "dev")
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def rg_dataset(name: str, params: dict):
    """reasoning_gym.create_dataset(name, **params), with clear errors for names and knobs."""
    rg = require("reasoning_gym", "dev")
    names = rg_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}? " if close else ""
        raise InputError(f"unknown reasoning-gym dataset '{name}'", path=f"rg:{name}",
                         fix=f"{hint}list them with: python -c \"from reasoning_gym.factory import "
                             "DATASETS; print(sorted(DATASETS))\"")
    try:
        return rg.create_dataset(name, **params)
    except (TypeError, ValueError, AssertionError) as exc:
        import dataclasses

        from reasoning_gym.factory import DATASETS

        cfg = DATASETS[name][1]
        knobs = [f.name for f in dataclasses.fields(cfg)] if dataclasses.is_dataclass(cfg) else []
        raise InputError(f"bad reasoning-gym config: {exc}", path=f"rg:{name}",
                         fix=f"valid knobs: {', '.join(knobs)}") from None


def iter_rg(name: str, params: dict):
    ds = rg_dataset(name, params)
    for i in range(len(ds)):
        entry = dict(ds[i])
        entry["_rg_name"] = name
        yield i + 1, entry


def sniff_columns(path: str) -> list[str]:
    """Column names of a file without reading it all (for error messages)."""
    fmt = file_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).schema_arrow.names
    if fmt in ("csv", "tsv"):
        return csv_columns(path)
    cols: list[str] = []
    for _, rec in iter_file(path):
        if isinstance(rec, dict):
            cols = list(rec)
            break
    return cols


__all__ = [
    "FORMATS",
    "BadRow",
    "check_file",
    "data_files",
    "file_format",
    "is_hf_disk_dir",
    "iter_file",
    "iter_hf_dataset",
    "iter_rg",
    "load_hf_disk",
    "load_hf_hub",
    "parse_value",
    "rg_dataset",
]
