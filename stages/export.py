"""Export: route a probe run, source verified SFT demonstrations, and write one directory of parquet
splits a trainer loads unchanged (TRL, verl or OpenRLHF), with manifest.json and a dataset card.

The directory is built in a temporary sibling and renamed into place, so an interrupted export leaves
nothing half-written, and an existing directory is replaced only with `overwrite=True`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from stagewise.curate.errors import ConfigError, InputError, writing
from stagewise.stages import demonstrations as demo_mod
from stagewise.stages.contract import SPLITS, ExportManifest, portable, portable_name, sha256_file
from stagewise.stages.formats import ExportItem, make_format, to_table
from stagewise.stages.routing import (
    NO_DEMO,
    assignments_from_mastery,
    check_options,
    make_router,
    model_name,
    open_store,
    resolve_run,
    route_summary,
)

_LIBRARIES = ("stagewise", "polars", "pyarrow", "duckdb", "datasets", "transformers", "trl", "torch",
              "math-verify", "reasoning-gym")


@dataclass
class ExportResult:
    out: Path
    manifest: dict
    assignments: object = None  # polars DataFrame, after demonstrations were resolved
    summary: object = None  # routing.RouteSummary
    demos: dict = field(default_factory=dict)  # demonstration report per source


def export(store, out, *, format: str = "trl", run_id: str | None = None, policy: str = "stage",
           low: float | None = None, high: float | None = None, keep_mastered: int = 0,
           require_samples: int | None = None, seed: int = 0, demos=("solution",), teacher: str | None = None,
           teacher_backend: str = "hf", teacher_budget: int = 8, teacher_options: dict | None = None,
           sft_style: str = "prompt-completion", overwrite: bool = False, card: bool = True,
           progress=False) -> ExportResult:
    """Route one probe run and write the export directory `out`; return ExportResult(out, manifest, ...).

    Example: `sw.export("run.duckdb", "export/", format="verl", policy="band", low=0.1, high=0.9)`.
    `demos` lists demonstration sources in order of preference ("solution", "samples", "teacher");
    `teacher` names a model sampled (through `teacher_backend`) up to `teacher_budget` times per item;
    `progress` (True or a callable(solved, total)) reports the teacher's rounds.
    """
    # Validate every option before any heavy work, and report all problems at once.
    problems_found = []
    for check in (lambda: make_format(format, sft_style=sft_style),
                  lambda: make_router(policy, low=low, high=high, seed=seed),
                  lambda: check_options(keep_mastered=keep_mastered, require_samples=require_samples),
                  lambda: demo_mod.validate_sources(demos, teacher=teacher, budget=teacher_budget)):
        try:
            check()
        except ConfigError as exc:
            problems_found.append(str(exc))
    out = Path(out)
    if out.exists() and not overwrite:
        problems_found.append(f"output directory {out} already exists; pass --overwrite to replace it, "
                              "or choose another --out")
    elif out.exists() and not out.is_dir():
        problems_found.append(f"--out {out} is a file, not a directory; choose another --out")
    if problems_found:
        raise ConfigError("; ".join(problems_found))
    demos = demo_mod.validate_sources(demos, teacher=teacher, budget=teacher_budget)
    fmt = make_format(format, sft_style=sft_style)
    router = make_router(policy, low=low, high=high, seed=seed)

    run = _read_run(store, run_id, with_samples="samples" in demos)
    rid, run_cfg, mastery, problems = run.run_id, run.config, run.mastery, run.problems
    assignments = assignments_from_mastery(mastery, problems, router, keep_mastered=keep_mastered,
                                           require_samples=require_samples, seed=seed, run_id=rid)
    system_prompt, prompt_template = run_cfg.get("system_prompt"), run_cfg.get("prompt_template")
    probed_model = model_name(run_cfg)
    sampling = dict(run_cfg.get("sampling") or {})
    teacher_opts = {"backend": teacher_backend, "budget": teacher_budget, "seed": seed,
                    "temperature": sampling.get("temperature", 1.0), "top_p": sampling.get("top_p", 1.0),
                    "max_new_tokens": sampling.get("max_new_tokens", 512), "progress": _progress(progress),
                    **(teacher_options or {})}
    sources = demo_mod.make_sources(demos, store_samples=run.samples, run_id=rid, probe_model=probed_model,
                                    teacher=teacher, prompt_template=prompt_template,
                                    system_prompt=system_prompt, **teacher_opts)
    need = [r["id"] for r in assignments.iter_rows(named=True)
            if r["stage"] in ("sft", "both") and r["id"] in problems]
    found = demo_mod.find_demonstrations([problems[i] for i in need], sources)
    assignments = _apply_demonstrations(assignments, problems, found)
    summary = route_summary(assignments, router.name, keep_mastered=keep_mastered)

    splits = _rows_by_split(fmt, assignments, problems, found.demos, system_prompt=system_prompt,
                            prompt_template=prompt_template, model=probed_model)
    config = {
        "run_id": rid, "format": fmt.name, "sft_style": fmt.sft_style,
        "route": {**router.config(), "rule": router.rule, "keep_mastered": keep_mastered,
                  "require_samples": require_samples, "seed": seed},
        "demonstrations": {"sources": [s.name for s in sources], "teacher": teacher,
                           "teacher_backend": (getattr(teacher_backend, "name", teacher_backend)
                                               if teacher else None),
                           "teacher_budget": teacher_budget if teacher else None, "report": found.report},
    }
    parent = out.resolve().parent
    tmp = parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    with writing(out, option="--out"):
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    try:
        with writing(out, option="--out"):  # a full disk or an unwritable folder: one message naming --out
            manifest = _write_export(tmp, fmt, splits, assignments, run_cfg, config, summary, card, out.name)
            _move_into_place(tmp, out.resolve(), overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing partial is left behind
        raise
    return ExportResult(out, manifest, assignments, summary, found.report)


@dataclass
class _Run:
    run_id: str
    config: dict
    mastery: object
    problems: dict
    samples: object
    store_name: str  # for messages only: the export never records where the store sits


def _read_run(store, run_id, *, with_samples: bool) -> _Run:
    """Everything export needs from the store, read in one short read-only visit."""
    st, opened = open_store(store)
    try:
        rid = resolve_run(st, run_id)
        mastery = st.mastery(rid)
        problems = {p.id: p for p in st.problems(mastery["problem_id"].to_list())} if len(mastery) else {}
        run = _Run(rid, st.run(rid), mastery, problems, st.samples(rid) if with_samples else None,
                   str(getattr(st, "path", store)))
    finally:
        if opened:
            st.close()
    if not len(run.mastery):
        raise InputError(f"probe run {rid} has no samples", path=run.store_name,
                         fix="run (or resume) `stagewise probe` into this store first")
    return run


def _rows_by_split(fmt, assignments, problems: dict, demos: dict, *, system_prompt, prompt_template,
                   model) -> dict[str, list]:
    """Format each routed item for its split(s); prompts rebuilt exactly as the probe built them."""
    from stagewise.curate.prompts import answer_format, build_messages

    targets = {"sft": ["sft"], "rl": ["rl"], "both": ["sft", "rl"], "replay": ["replay"],
               "unrouted": ["unrouted"]}
    splits: dict[str, list] = {s: [] for s in SPLITS}
    for a in assignments.iter_rows(named=True):
        p = problems.get(a["id"])
        if p is None:
            continue  # unrouted by _apply_demonstrations: without its problem row there is no prompt
        msgs = build_messages(p, system_prompt=system_prompt, prompt_template=prompt_template)
        asked = answer_format(p.task, system_prompt=system_prompt, prompt_template=prompt_template)
        for split in targets.get(a["stage"], []):
            item = ExportItem(a, p, msgs, model, demos.get(p.id) if split == "sft" else None,
                              index=len(splits[split]), answer_format=asked)
            splits[split].append(fmt.row(split, item))
    return splits


def _progress(progress):
    """A callback(solved, total) for the teacher loop: the given callable, a rich status line, or None."""
    if callable(progress) or not progress:
        return progress or None
    from rich.console import Console

    console = Console(stderr=True)
    return lambda solved, total: console.print(f"teacher: {solved}/{total} items have a verified answer")


def _apply_demonstrations(assignments, problems: dict, found):
    """SFT items without a verified demonstration become unrouted (never an unverified target);
    `both` items without one go to RL only. The reason says why."""
    import polars as pl

    stages, reasons = [], []
    for a in assignments.iter_rows(named=True):
        stage, reason = a["stage"], a["reason"]
        if a["id"] not in problems:
            stage, reason = "unrouted", reason + "; the problem row is missing from the store"
        elif stage in ("sft", "both") and a["id"] not in found.demos:
            why = found.missing.get(a["id"], NO_DEMO)
            if stage == "sft":
                stage, reason = "unrouted", f"{reason}; {why}"
            else:
                stage, reason = "rl", f"{reason}; {why} → RL only"
        stages.append(stage)
        reasons.append(reason)
    return assignments.with_columns(pl.Series("stage", stages, pl.Utf8),
                                    pl.Series("reason", reasons, pl.Utf8))


def _write_export(tmp: Path, fmt, splits, assignments, run_cfg, config, summary, card: bool,
                  name: str) -> dict:
    import pyarrow.parquet as pq

    rows, counts, omitted = {}, {}, {}
    for split, split_rows in splits.items():
        counts[split] = len(split_rows)
        if not split_rows:  # `datasets` and verl cannot read a 0-row parquet file: leave it out, say why
            omitted[f"{split}.parquet"] = (f"0 rows: no item went to {split}; the file is left out because "
                                           "`datasets` and verl cannot read a 0-row parquet file")
            continue
        table = to_table(fmt, split, split_rows)
        pq.write_table(table, tmp / f"{split}.parquet")
        rows[f"{split}.parquet"] = table.num_rows
    assignments.write_parquet(tmp / "assignments.parquet")
    rows["assignments.parquet"] = len(assignments)
    reward_file = {"verl": "reward.py", "openrlhf": "reward_func.py"}.get(fmt.name)
    if reward_file:
        shutil.copyfile(Path(__file__).parent / "templates" / reward_file, tmp / reward_file)

    # Portable by construction: the probe run is kept by id, the model by name and weights hash, and
    # any path a user gave (data specs, a local model) by its base name.
    probe = portable(run_cfg)
    model = dict(probe.get("model") or {}) if isinstance(probe.get("model"), dict) else {"name": probe.get("model")}
    model["name"] = portable_name(model.get("name"))
    probe["model"] = model
    manifest = ExportManifest(
        format=config["format"], sft_style=config["sft_style"], run_id=config["run_id"], probe=probe,
        model=model, route=config["route"], demonstrations=portable(config["demonstrations"]),
        counts={"items": len(assignments), "buckets": summary.bucket_totals, "stages": summary.stage_totals,
                "buckets_by_stage": summary.counts, "splits": {s: counts[s] for s in SPLITS}},
        warnings=portable(summary.warnings), versions=library_versions(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), omitted=omitted,
    ).to_dict()

    def file_table():
        table = {f.name: {"rows": rows.get(f.name), "bytes": f.stat().st_size, "sha256": sha256_file(f)}
                 for f in sorted(tmp.iterdir()) if f.is_file()}
        for fname in rows:  # the in-memory (Arrow) size, which dataset cards report as a split's num_bytes
            table[fname]["arrow_bytes"] = pq.read_table(tmp / fname).nbytes
        return table

    if card:
        from stagewise.stages.datacard import write_export_card

        manifest["files"] = file_table()  # the card lists the data files' sizes
        write_export_card(tmp, manifest=manifest, assignments=assignments, name=name)
    manifest["files"] = file_table()
    text = json.dumps(manifest, indent=2, sort_keys=False, default=str, ensure_ascii=False)
    (tmp / "manifest.json").write_text(text + "\n", encoding="utf-8")
    return manifest


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished directory into place; an old one is moved aside first and removed after."""
    if out.exists():
        if not overwrite:  # it appeared while we worked
            raise ConfigError(f"output directory {out} already exists; pass --overwrite to replace it")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)  # put the previous export back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def library_versions() -> dict:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
