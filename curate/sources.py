"""Load candidate problems from files, Hugging Face datasets and reasoning-gym into canonical rows.

    load_problems("gsm8k:test")                                  # shipped GSM8K test split (1319 rows)
    load_problems("data/train.jsonl", answer_col="target")       # generic columns, auto-detected
    load_problems("hf:openai/gsm8k:main@test")                   # datasets.load_dataset
    load_problems("rg:basic_arithmetic?size=200&seed=1")         # reasoning_gym.create_dataset

Spec grammar: `[PRESET:]SOURCE` where PRESET is gsm8k, math or reasoning-gym and SOURCE is a file,
a directory, a datasets `save_to_disk` directory (`DIR@SPLIT` picks a split), or `hf:NAME[:CONFIG][@SPLIT]`;
or `rg:NAME?size=N&seed=S&<knob>=<value>`. `gsm8k:test` and `gsm8k:train` name the GSM8K files shipped
with stagewise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from urllib.parse import parse_qsl

from stagewise.curate.errors import InputError
from stagewise.curate.presets import PRESETS, RowError, choose_columns
from stagewise.curate.readers import (
    BadRow,
    check_file,
    data_files,
    file_format,
    is_hf_disk_dir,
    iter_file,
    iter_hf_dataset,
    iter_rg,
    load_hf_disk,
    load_hf_hub,
    parse_value,
    sniff_columns,
)
from stagewise.curate.schema import Problem, normalise_text

SHIPPED = {"gsm8k": {"test": "gsm8k/test.jsonl", "train": "gsm8k/train_head500.jsonl"}}
PREFIXES = ("gsm8k:", "math:", "reasoning-gym:", "hf:", "rg:")
SKIP_HINT = "pass --skip-bad to skip bad rows (and --rejects PATH to keep them)"


def shipped_path(preset: str, name: str) -> str | None:
    """The path of a data file shipped inside the stagewise package (e.g. gsm8k:test)."""
    rel = SHIPPED.get(preset, {}).get(name)
    if rel is None:
        return None
    from importlib import resources

    return str(resources.files("stagewise").joinpath("data", *rel.split("/")))


@dataclass
class SourceSpec:
    """One parsed source. kind: file, dir, hf_disk, hf or rg."""

    text: str
    kind: str
    target: str
    preset: str | None = None
    config: str | None = None
    split: str | None = None
    params: dict = field(default_factory=dict)
    label: str = ""

    @property
    def where(self) -> str:
        return self.target if self.kind in ("file", "dir", "hf_disk") else self.text


def _file_label(path: str) -> str:
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{parent}/{stem}" if parent else stem


def parse_spec(text: str) -> SourceSpec:
    """Parse one source spec (see the module docstring); raises InputError with the fix."""
    text = str(text)
    if os.path.exists(text):
        return _path_spec(text, text, None)
    if text.startswith("rg:") or (text.startswith("reasoning-gym:") and not os.path.exists(text[14:])):
        body = text.split(":", 1)[1]
        name, _, query = body.partition("?")
        if not name:
            raise InputError("no reasoning-gym dataset named", path=text, fix="write rg:NAME?size=N&seed=S")
        params = {k: parse_value(v) for k, v in parse_qsl(query, keep_blank_values=True)}
        return SourceSpec(text, "rg", name, "reasoning-gym", params=params, label=f"rg:{name}")
    head, sep, rest = text.partition(":")
    if sep and head in PRESETS:
        if head == "reasoning-gym":
            return _path_spec(text, rest, head)
        if rest.startswith("hf:"):
            spec = _hf_spec(text, rest)
            spec.preset = head
            return spec
        if shipped_path(head, rest):
            # A bare shipped name wins over a same-named folder (the repo has a train/ package);
            # write gsm8k:./train for a local folder.
            return _path_spec(text, shipped_path(head, rest), head)
        return _path_spec(text, rest, head)
    if sep and head == "hf":
        return _hf_spec(text, text)
    if sep and len(head) > 1 and not os.path.exists(head) and os.path.sep not in head and "@" not in text:
        raise InputError(f"unknown source prefix '{head}:'", path=text,
                         fix=f"use one of {', '.join(PREFIXES)} or a file path")
    return _path_spec(text, text, None)


def _path_spec(text: str, path: str, preset: str | None) -> SourceSpec:
    if is_hf_disk_dir(path):
        return SourceSpec(text, "hf_disk", path, preset, label=_file_label(path))
    base, at, split = path.rpartition("@")  # DIR@SPLIT picks a split of a save_to_disk DatasetDict
    if at and not os.path.exists(path) and is_hf_disk_dir(base):
        return SourceSpec(text, "hf_disk", base, preset, split=split, label=_file_label(base) + f"@{split}")
    check_file(path)
    if os.path.isdir(path):
        return SourceSpec(text, "dir", path, preset, label=os.path.basename(os.path.normpath(path)))
    file_format(path)
    return SourceSpec(text, "file", path, preset, label=_file_label(path))


def _hf_spec(text: str, body: str) -> SourceSpec:
    rest = body[3:]
    rest, _, split = rest.partition("@")
    # NAME may be a local path or owner/name; CONFIG follows the last ':'.
    name, sep, config = rest.rpartition(":")
    if not sep:
        name, config = rest, None
    if not name:
        raise InputError("no dataset named", path=text, fix="write hf:NAME[:CONFIG][@SPLIT]")
    label = name + (f":{config}" if config else "") + (f"@{split}" if split else "")
    return SourceSpec(text, "hf", name, None, config or None, split or None, label=label)


def expand(spec: SourceSpec) -> list[SourceSpec]:
    """A directory becomes one spec per data file (or a save_to_disk dataset)."""
    if spec.kind != "dir":
        return [spec]
    root = os.path.normpath(spec.target)
    out = []
    for path in data_files(root):
        rel = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
        kind = "hf_disk" if is_hf_disk_dir(path) else "file"
        out.append(SourceSpec(spec.text, kind, path, spec.preset, label=f"{os.path.basename(root)}/{rel}"))
    return out


def records(spec: SourceSpec) -> Iterator[tuple[int, dict | BadRow]]:
    """(line/row number, record or BadRow) for one expanded spec."""
    if spec.kind == "file":
        return iter_file(spec.target)
    if spec.kind == "rg":
        return iter_rg(spec.target, spec.params)
    if spec.kind == "hf_disk":
        ds, split = load_hf_disk(spec.target, spec.split)
        if split and "@" not in spec.label:
            spec.label += f"@{split}"
        return iter_hf_dataset(ds, spec.where)
    ds, split = load_hf_hub(spec.target, spec.config, spec.split)
    if split and "@" not in spec.label:
        spec.label += f"@{split}"
    return iter_hf_dataset(ds, spec.where)


def peek(rows: Iterator, n: int = 100) -> tuple[dict | None, list[str], Iterator]:
    """The first good record, the columns of the first `n` good records (a column may be absent from
    the first rows of a JSON Lines file), and an iterator that still yields everything."""
    buffered, columns, good, first = [], {}, 0, None
    for item in rows:
        buffered.append(item)
        if isinstance(item[1], dict):
            first = first if first is not None else item[1]
            columns.update(dict.fromkeys(item[1]))
            good += 1
            if good >= n:
                break
        elif len(buffered) > 1000 and first is None:
            break
    return first, list(columns), chain(buffered, rows)


def plan_for(spec: SourceSpec, first: dict | None, *, columns=None, prompt_col=None, answer_col=None,
             solution_col=None, id_col=None, task=None):
    columns = list(columns or (first or []))
    if first is None and spec.kind == "file":
        columns = sniff_columns(spec.target)
    if first is None and not columns:
        return None  # no usable record at all: the caller reports the bad rows, or an empty dataset
    return choose_columns([c for c in columns if not c.startswith("_rg")], first, where=spec.where,
                          preset=spec.preset, prompt_col=prompt_col, answer_col=answer_col,
                          solution_col=solution_col, id_col=id_col, task=task)


class ProblemSet(list):
    """A list of Problem with `.report`: counts, the columns chosen per source, what was skipped."""

    def __init__(self, problems=(), report: dict | None = None):
        super().__init__(problems)
        self.report = report or {}

    def summary(self) -> str:
        r = self.report
        parts = [f"{len(self)} problems from {r.get('rows_read', 0)} rows"]
        if r.get("bad_rows"):
            parts.append(f"{r['bad_rows']} bad rows skipped")
        if r.get("duplicates"):
            verb = "dropped" if r.get("dedupe", True) else "kept"
            parts.append(f"{r['duplicates']} duplicate prompts {verb}")
        if r.get("ids_renamed"):
            parts.append(f"{r['ids_renamed']} repeated ids made unique")
        return ", ".join(parts)


def load_problems(*specs, prompt_col=None, answer_col=None, solution_col=None, id_col=None, task=None,
                  skip_bad=False, rejects=None, dedupe=True, limit=None) -> ProblemSet:
    """Load problems from one or more specs into canonical rows (see the module docstring).

    Bad rows raise InputError naming the file, line and column, unless `skip_bad`: then they are
    counted in `.report["bad_rows"]` and, with `rejects=PATH`, written there as JSON Lines.
    Duplicate prompts (after normalising case and spacing) are counted and, with `dedupe`, dropped.
    """
    if len(specs) == 1 and isinstance(specs[0], (list, tuple)):
        specs = tuple(specs[0])
    if not specs:
        raise InputError("no data named", fix="pass a file, directory, gsm8k:test, hf:NAME or rg:NAME")
    parsed = [sub for s in specs for sub in expand(parse_spec(s))]
    problems: list[Problem] = []
    report = {"sources": [], "rows_read": 0, "bad_rows": 0, "bad_by_reason": {}, "duplicates": 0,
              "exact_duplicates": 0, "ids_renamed": 0, "dedupe": dedupe, "rejects": None}
    seen_norm: set[str] = set()
    seen_exact: set[str] = set()
    seen_ids: dict[str, int] = {}
    rejected: list[dict] = []

    def bad(spec, line, message, column=None, fix=None, raw=None, reason="bad"):
        if not skip_bad:
            raise InputError(message, path=spec.where, line=line, column=column,
                             fix=(fix + "; or " + SKIP_HINT) if fix and "skip-bad" not in fix else (fix or SKIP_HINT))
        report["bad_rows"] += 1
        report["bad_by_reason"][reason] = report["bad_by_reason"].get(reason, 0) + 1
        src["bad_rows"] += 1
        rejected.append({"source": spec.where, "line": line, "column": column, "error": message,
                         "raw": raw if isinstance(raw, str) else json.dumps(raw, default=str)})

    done = False
    for spec in parsed:
        if done:
            break
        first, columns, rows = peek(records(spec))
        plan = plan_for(spec, first, columns=columns, prompt_col=prompt_col, answer_col=answer_col,
                        solution_col=solution_col, id_col=id_col, task=task)
        src = {"spec": spec.text, "source": spec.label, "kind": spec.kind, "rows": 0, "bad_rows": 0,
               "columns": plan.describe() if plan else None}
        report["sources"].append(src)
        for line, rec in rows:
            src["rows"] += 1
            report["rows_read"] += 1
            if isinstance(rec, BadRow):
                bad(spec, line, rec.message, fix=rec.fix, raw=rec.raw, reason=rec.reason)
                continue
            assert plan is not None  # a good record exists, so peek() found it
            try:
                fields = plan.convert(rec)
            except RowError as exc:
                bad(spec, line, exc.message, exc.column, exc.fix, raw=rec, reason=exc.kind)
                continue
            norm = normalise_text(fields["prompt"])
            if fields["prompt"] in seen_exact:
                report["exact_duplicates"] += 1
            if norm in seen_norm:
                report["duplicates"] += 1
                if dedupe:
                    continue
            seen_exact.add(fields["prompt"])
            seen_norm.add(norm)
            problem = Problem(prompt=fields["prompt"], answer=fields["answer"], id=fields["id"],
                              solution=fields["solution"], source=spec.label, task=fields["task"],
                              meta=fields["meta"])
            if problem.id in seen_ids:
                # Two different prompts under one id would collide in the store: keep both, renamed.
                seen_ids[problem.id] += 1
                problem.id = f"{problem.id}-{seen_ids[problem.id]}"
                report["ids_renamed"] += 1
            seen_ids.setdefault(problem.id, 1)
            problems.append(problem)
            if limit is not None and len(problems) >= limit:
                done = True
                break
    if rejects is not None:
        write_jsonl(rejects, rejected)
        report["rejects"] = str(rejects)
    report["problems"] = len(problems)
    if not problems:
        why = f"read {report['rows_read']} rows"
        if report["bad_rows"]:
            why += f", {report['bad_rows']} bad"
        if report["duplicates"] and dedupe:
            why += f", {report['duplicates']} duplicates"
        raise InputError(f"the dataset is empty: no usable problems ({why})",
                         path=", ".join(s.where for s in parsed[:3]),
                         fix="name a file with rows, or check --skip-bad/--limit")
    return ProblemSet(problems, report)


def write_jsonl(path, rows) -> None:
    """Write rows as JSON Lines atomically (temp file + os.replace)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    os.replace(tmp, path)
