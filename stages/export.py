"""Export: route a probe run, source verified SFT demonstrations, and write one directory of parquet
splits a trainer loads unchanged (TRL, verl or OpenRLHF), with manifest.json and a dataset card.

The directory is built in a temporary sibling and renamed into place, so an interrupted export leaves
nothing half-written. Its completion marker (`export.done.json`, curate/steps.py) records the options and
the probe run it was made from: exporting again with the same options reuses the directory, with other
options is refused (naming the keys that differ), and `overwrite=True` replaces it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from stagewise.curate.backends import check_backend_args
from stagewise.curate.decontaminate import NgramIndex
from stagewise.curate.errors import ConfigError, InputError, writing
from stagewise.curate.prompts import answer_format, build_messages
from stagewise.curate.steps import OtherOptionsError, Step
from stagewise.stages import demonstrations as demo_mod
from stagewise.stages import replay as replay_mod
from stagewise.stages import validation as val_mod
from stagewise.stages.browse import EXPORT_SAMPLE_COLUMNS, samples_of_runs
from stagewise.stages.contract import (
    ALL_SPLITS,
    ExportManifest,
    layout_of,
    portable,
    portable_name,
    read_manifest,
    sha256_file,
)
from stagewise.stages.datacard import write_export_card
from stagewise.stages.formats import ExportItem, make_format, to_table
from stagewise.stages.routing import (
    NO_DEMO,
    assignments_from_mastery,
    check_options,
    check_order,
    make_router,
    mark_contaminated,
    model_columns,
    model_name,
    open_store,
    order_assignments,
    read_mastery,
    resolve_run,
    resolve_runs,
    route_summary,
    truncation_counts,
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
    reused: bool = False  # True: `out` already held an export made with the same options
    decontaminated: list = field(default_factory=list)  # the benchmark specs overlapping items were checked against

    def to_dict(self) -> dict:
        m = self.manifest
        return {"out": str(self.out), "format": m.get("format"), "counts": m.get("counts"), "files": m.get("files"),
                "summary": self.summary.to_dict(), "demos": self.demos, "reused": self.reused,
                "warnings": list(self.summary.warnings)}


def export(store, out, *, format: str = "trl", run_id: str | None = None, policy: str = "stage",
           low: float | None = None, high: float | None = None, keep_mastered: int = 0,
           require_samples: int | None = None, seed: int = 0, demos=("solution",), teacher: str | None = None,
           teacher_backend: str = "hf", teacher_budget: int = 8, teacher_options: dict | None = None,
           sft_style: str = "prompt-completion", overwrite: bool = False, card: bool = True,
           progress=False, truncated: str = "wrong", sft_replay: float = 0.0, sft_replay_from="mastered",
           heldout=(), rationalize_model: str | None = None, runs=None, by_model: bool = False,
           order: str | None = None, with_samples: bool = False, decontaminate=None, ngram: int = 8,
           validation: bool = True) -> ExportResult:
    """Route one probe run and write the export directory `out`; return ExportResult(out, manifest, ...).

    Example: `sw.export("run.duckdb", "export/", format="verl", policy="band", low=0.1, high=0.9)`.
    `demos` lists demonstration sources in order of preference ("solution", "samples", "teacher");
    `teacher` names a model sampled (through `teacher_backend`) up to `teacher_budget` times per item;
    `progress` (True or a callable(solved, total)) reports the teacher's rounds.
    `truncated`: "wrong" (default) or "exclude" (samples cut at max_new_tokens leave n; routing.py).
    `sft_replay` F: replay rows (verified demonstrations of mastered items, or of `sft_replay_from`
    buckets) make up the fraction F of sft.parquet, marked stage = replay-sft (stages/replay.py); never
    items in `heldout` (ids), the `keep_mastered` forgetting split nor a validation file.
    `validation`: sft_val.parquet and rl_val.parquet hold a seeded slice (one item in twenty, `seed`) of
    the items routed to SFT or RL alone, left out of sft.parquet / rl.parquet (stages/validation.py);
    False keeps every item in its training file (for callers that hold their own items out).
    `rationalize_model`: the model the `rationalize` source samples (default: the probed model's name).
    `runs`, `by_model` and `order` are route's (pooled runs, per-model p̂ columns, row order of every
    split); `with_samples` also writes samples.parquet (every sample of the run, whatever the item's
    stage); `decontaminate` (benchmark specs) sends items sharing an `ngram`-word run with them to
    unrouted.parquet with the reason, counted in the manifest (`counts.contaminated`) and the card.
    An `out` that holds an export made with the same options (and the same probe run) is reused: the
    result is read back from it, with `reused=True`. One made with other options is refused, naming the
    keys that differ; `overwrite=True` replaces it (atomically).
    """
    # Validate every option before any heavy work, and report all problems at once.
    problems_found = []
    for check in (lambda: make_format(format, sft_style=sft_style),
                  lambda: make_router(policy, low=low, high=high, seed=seed),
                  lambda: check_options(keep_mastered=keep_mastered, require_samples=require_samples,
                                        truncated=truncated),
                  lambda: replay_mod.check_fraction(sft_replay),
                  lambda: replay_mod.parse_replay_from(sft_replay_from),
                  lambda: demo_mod.validate_sources(demos, teacher=teacher, budget=teacher_budget),
                  lambda: check_order(order),
                  lambda: _check_teacher_args(teacher_backend, teacher_options)):
        try:
            check()
        except ConfigError as exc:
            problems_found.append(str(exc))
    out = Path(out)
    if out.exists() and not out.is_dir():
        problems_found.append(f"--out {out} is a file, not a directory; choose another --out")
    if problems_found:
        raise ConfigError("; ".join(problems_found))
    # Everything the directory's content depends on: the options and the probe run(s) it reads.
    options = {"store": _store_identity(store, run_id, runs), "format": format, "run_id": run_id,
               "policy": policy, "low": low, "high": high, "keep_mastered": keep_mastered,
               "require_samples": require_samples, "seed": seed, "demos": list(demos), "teacher": teacher,
               "teacher_backend": getattr(teacher_backend, "name", teacher_backend),
               "teacher_budget": teacher_budget, "teacher_options": teacher_options, "sft_style": sft_style,
               "card": card, "truncated": truncated, "sft_replay": sft_replay, "sft_replay_from": sft_replay_from,
               "heldout": _ids_digest(heldout), "rationalize_model": rationalize_model, "runs": runs,
               "by_model": by_model, "order": order, "with_samples": with_samples,
               "decontaminate": list(decontaminate) if decontaminate else None, "ngram": ngram,
               "validation": validation}
    step = Step(out, "export", portable(options))  # the marker may be shared with the directory: no paths
    if out.exists() and not overwrite:
        if step.done():
            return _reuse(out, policy, keep_mastered, decontaminate)
        step.refuse_other_options(f"{out}/ was exported", "pass --overwrite to replace it")
        raise OtherOptionsError(f"output directory {out} already exists and has no export.done.json (it was not "
                                "made by `stagewise export`, or by an older version)",
                                "pass --overwrite to replace it, or choose another --out")
    demos = demo_mod.validate_sources(demos, teacher=teacher, budget=teacher_budget)
    fmt = make_format(format, sft_style=sft_style)
    router = make_router(policy, low=low, high=high, seed=seed)
    sft_replay = replay_mod.check_fraction(sft_replay)
    replay_from = replay_mod.parse_replay_from(sft_replay_from)
    heldout_ids = {str(getattr(h, "id", h)) for h in (heldout or ())}
    index = None
    if decontaminate:  # a bad benchmark spec fails here, before anything is written
        index = NgramIndex.build(decontaminate, ngram=ngram)

    need_text = bool({"samples", "critique"} & set(demos)) or sft_replay > 0 or with_samples
    run = _read_run(store, run_id, runs=runs, with_samples=need_text, by_model=by_model)
    rid, run_cfg, mastery, problems = run.run_id, run.config, run.mastery, run.problems
    if truncated == "exclude" and len(run.run_ids) > 1:
        raise ConfigError("--truncated exclude reads one run's finish reasons; export pooled --runs with "
                          "--truncated wrong, or one run at a time")
    assignments = assignments_from_mastery(mastery, problems, router, keep_mastered=keep_mastered,
                                           require_samples=require_samples, seed=seed, run_id=rid,
                                           truncation=run.truncation, truncated=truncated)
    if run.per_model is not None:
        assignments = assignments.join(run.per_model, on="id", how="left")
    contaminated = index.match_problems(problems.values()) if index is not None else {}
    # Before demonstrations: no teacher budget is spent on an item that will not be trained on.
    assignments = mark_contaminated(assignments, contaminated, ngram)
    system_prompt, prompt_template = run_cfg.get("system_prompt"), run_cfg.get("prompt_template")
    probed_model = model_name(run_cfg)
    sampling = dict(run_cfg.get("sampling") or {})
    teacher_opts = {"backend": teacher_backend, "budget": teacher_budget, "seed": seed,
                    "temperature": sampling.get("temperature", 1.0), "top_p": sampling.get("top_p", 1.0),
                    "max_new_tokens": sampling.get("max_new_tokens", 512), "progress": _progress(progress),
                    **(teacher_options or {})}
    sources = demo_mod.make_sources(demos, store_samples=run.samples, run_id=rid, probe_model=probed_model,
                                    teacher=teacher, prompt_template=prompt_template,
                                    system_prompt=system_prompt,
                                    rationalize_model=rationalize_model or probed_model, **teacher_opts)
    need = [i for i, stage in zip(assignments["id"].to_list(), assignments["stage"].to_list())
            if stage in ("sft", "both") and i in problems]
    found = demo_mod.find_demonstrations([problems[i] for i in need], sources)
    assignments = _apply_demonstrations(assignments, problems, found)
    # Validation slices are drawn among items with a verified demonstration, before replay, which then
    # sizes its share against the rows left in sft.parquet and never replays a held-out item.
    held_out, val_omitted = val_mod.draw_validation(assignments.to_dicts(), seed=seed, enabled=validation)
    assignments = val_mod.mark_validation(assignments, held_out)
    replay_demos, sizing, replay_report = {}, None, {}
    if sft_replay > 0:
        n_sft = sum(s in ("sft", "both") for s in assignments["stage"].to_list()) - \
            sum(v == "sft_val" for v in held_out.values())
        replay_sources = demo_mod.make_sources(replay_mod.replay_source_names(run.samples),
                                               store_samples=run.samples, run_id=rid,
                                               probe_model=probed_model, prompt_template=prompt_template,
                                               system_prompt=system_prompt)
        replay_demos, sizing, replay_report = replay_mod.draw_replay(
            assignments.to_dicts(), problems, replay_sources, fraction=sft_replay, n_sft=n_sft,
            replay_from=replay_from, heldout=heldout_ids | set(held_out), seed=seed)
        assignments = _mark_replay(assignments, replay_demos, sft_replay)
    assignments = order_assignments(assignments, order)
    summary = route_summary(assignments, router.name, keep_mastered=keep_mastered,
                            max_new_tokens=(run_cfg.get("sampling") or {}).get("max_new_tokens"))
    if sizing is not None and sizing.warning:
        summary.warnings.append(sizing.warning)

    config = {
        "run_id": rid, "format": fmt.name, "sft_style": fmt.sft_style,
        "route": {**router.config(), "rule": router.rule, "keep_mastered": keep_mastered,
                  "require_samples": require_samples, "seed": seed, "truncated": truncated,
                  "runs": run.run_ids, "order": order,
                  # benchmark specs by base name: the manifest holds no path of this machine
                  "decontaminate": (portable({"against": list(dict.fromkeys(x["spec"] for x in index.describe())),
                                              "ngram": index.ngram, "sets": index.describe()})
                                    if index is not None else None)},
        "contaminated": len(contaminated),
        "demonstrations": {"sources": [s.name for s in sources], "teacher": teacher,
                           "teacher_backend": (getattr(teacher_backend, "name", teacher_backend)
                                               if teacher else None),
                           "teacher_budget": teacher_budget if teacher else None, "report": found.report},
    }
    config["demonstrations"]["sft_replay"] = ({**sizing.to_dict(), "report": replay_report}
                                              if sizing is not None else {"fraction": 0.0, "taken": 0})
    parent = out.resolve().parent
    tmp = parent / f".{out.name}.tmp-{os.urandom(4).hex()}"
    with writing(out, option="--out"):
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    try:
        with writing(out, option="--out"):  # a full disk or an unwritable folder: one message naming --out
            if with_samples:
                run.samples.rename({"problem_id": "id"}).select(EXPORT_SAMPLE_COLUMNS).write_parquet(
                    tmp / "samples.parquet")
            splits = _rows_by_split(fmt, assignments, problems, {**found.demos, **replay_demos},
                                    system_prompt=system_prompt, prompt_template=prompt_template,
                                    model=probed_model, replayed=set(replay_demos), replay_fraction=sft_replay,
                                    validation=held_out, out_dir=tmp)
            extra_rows = {"samples.parquet": len(run.samples)} if with_samples else None
            manifest = _write_export(tmp, fmt, splits, assignments, run_cfg, config, summary, card, out.name,
                                     extra_rows=extra_rows, omitted=val_omitted)
            # Written last, inside the directory: it moves into place with the files it vouches for.
            Step(tmp, step.name, step.config).mark({"run_id": rid, "counts": manifest["counts"]})
            _move_into_place(tmp, out.resolve(), overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing partial is left behind
        raise
    return ExportResult(out, manifest, assignments, summary, found.report,
                        decontaminated=list(decontaminate or ()))


def _check_teacher_args(backend: str, teacher_options: dict | None) -> None:
    """The teacher's backend arguments are checked now: the teacher may only load late, or never. vLLM's
    are checked when it loads (they include every field of the installed vLLM's EngineArgs)."""
    args = {k: v for k, v in ((teacher_options or {}).get("backend_options") or {}).items() if k != "base_url"}
    if args and backend != "vllm":
        check_backend_args(backend, args)


def _store_identity(store, run_id, runs) -> dict:
    """The probe run(s) an export reads, named by what they are: the store's file name, the run ids and
    how many samples they hold (a probe resumed into the same run adds samples, and changes the export)."""
    st, opened = open_store(store)
    try:
        rids = resolve_runs(st, runs) if runs else [resolve_run(st, run_id)]
        # A plain count: `runs()` also counts distinct problems, which a million-item store pays for.
        samples = st.con.execute("SELECT count(*) FROM samples WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                                 [list(rids)]).fetchone()[0]
        name = portable_name(str(getattr(st, "path", store)))
    finally:
        if opened:
            st.close()
    return {"name": name, "runs": rids, "samples": int(samples)}


def _ids_digest(ids) -> str | None:
    """Held-out ids as a count and a short hash: the marker says whether they changed, not which."""
    import hashlib

    ids = sorted(str(getattr(h, "id", h)) for h in (ids or ()))
    if not ids:
        return None
    return f"{len(ids)} ids, sha256 {hashlib.sha256(chr(10).join(ids).encode()).hexdigest()[:12]}"


def _reuse(out: Path, policy: str, keep_mastered: int, decontaminate) -> ExportResult:
    """The ExportResult of an export already in `out` (made with the same options), read back from it."""
    import polars as pl

    found = read_manifest(out)
    if found is None:
        raise InputError("the export's manifest.json is missing", path=str(out),
                         fix="pass --overwrite to export again")
    manifest = found.to_dict()
    assignments = pl.read_parquet(out / "assignments.parquet")
    max_new_tokens = ((manifest.get("probe") or {}).get("sampling") or {}).get("max_new_tokens")
    summary = route_summary(assignments, policy, keep_mastered=keep_mastered, max_new_tokens=max_new_tokens)
    summary.warnings = list(manifest.get("warnings") or [])  # as written then (replay sizing included)
    demos = (manifest.get("demonstrations") or {}).get("report") or {}
    return ExportResult(out, manifest, assignments, summary, demos, reused=True,
                        decontaminated=list(decontaminate or ()))


@dataclass
class _Run:
    run_id: str  # one run's id, or "ID,ID" for pooled runs
    config: dict
    mastery: object
    problems: dict
    samples: object
    truncation: dict  # {id: (samples, truncated, truncated verified, truncated correct)}
    store_name: str  # for messages only: the export never records where the store sits
    run_ids: list = field(default_factory=list)
    per_model: object = None  # p_hat:<model>, n:<model> columns (by_model)


def _read_run(store, run_id, *, runs=None, with_samples: bool, by_model: bool = False) -> _Run:
    """Everything export needs from the store, read in one short read-only visit."""
    st, opened = open_store(store)
    try:
        rid, rids, mastery = read_mastery(st, run_id=run_id, runs=runs)
        problems = {p.id: p for p in st.problems(mastery["problem_id"].to_list())} if len(mastery) else {}
        # Pooled runs share every setting but the seed (checked): the first run's config stands for them.
        samples = samples_of_runs(st, rids).rename({"id": "problem_id"}) if with_samples else None
        run = _Run(run_id=rid, config=st.run(rids[0]), mastery=mastery, problems=problems, samples=samples,
                   truncation=truncation_counts(st, rids[0]) if len(rids) == 1 else None,
                   store_name=str(getattr(st, "path", store)), run_ids=rids,
                   per_model=model_columns(st, rids, mastery) if by_model else None)
    finally:
        if opened:
            st.close()
    if not len(run.mastery):
        raise InputError(f"probe run {rid} has no samples", path=run.store_name,
                         fix="run (or resume) `stagewise probe` into this store first")
    return run


def _rows_by_split(fmt, assignments, problems: dict, demos: dict, *, system_prompt, prompt_template,
                   model, replayed=frozenset(), replay_fraction: float = 0.0,
                   validation: dict | None = None, out_dir: Path | None = None) -> dict[str, list]:
    """Format each routed item for its split(s); prompts rebuilt exactly as the probe built them.
    `validation` ({id: "sft_val" | "rl_val"}) sends an item's row to that file instead of the training one.
    With `out_dir`, each split streams into `<split>.parquet` there (a _SplitWriter per split, which
    holds one chunk of rows at a time); without it, the rows come back as lists."""
    targets = {"sft": ["sft"], "rl": ["rl"], "both": ["sft", "rl"], "replay": ["replay"],
               "unrouted": ["unrouted"], replay_mod.REPLAY_STAGE: ["sft"]}
    held = {(i, layout_of(v)): v for i, v in (validation or {}).items()}
    splits: dict[str, list] = {s: (_SplitWriter(out_dir / f"{s}.parquet", fmt, s) if out_dir is not None else [])
                               for s in ALL_SPLITS}
    asked_by_task: dict = {}
    for a in _row_dicts(assignments):
        p = problems.get(a["id"])
        if p is None:
            continue  # unrouted by _apply_demonstrations: without its problem row there is no prompt
        msgs = build_messages(p, system_prompt=system_prompt, prompt_template=prompt_template)
        asked = asked_by_task.get(p.task)
        if asked is None:
            asked = asked_by_task[p.task] = answer_format(p.task, system_prompt=system_prompt,
                                                          prompt_template=prompt_template)
        for split in targets.get(a["stage"], []) + (["sft"] if a["stage"] == "rl" and p.id in replayed else []):
            row_a = a if split != "sft" or a["stage"] != "rl" else {
                **a, "stage": replay_mod.REPLAY_STAGE, "reason": replay_mod.replay_reason(a, replay_fraction)}
            split = held.get((p.id, split), split)
            item = ExportItem(row_a, p, msgs, model, demos.get(p.id) if layout_of(split) == "sft" else None,
                              index=len(splits[split]), answer_format=asked)
            splits[split].append(fmt.row(split, item))
    return splits


_CHUNK_ROWS = 25_000  # rows per parquet write (and row group): bounds the memory of a million-item export


def _row_dicts(frame, chunk: int | None = None):
    """The frame's rows as dicts, like `iter_rows(named=True)`, read column-wise a chunk at a time
    (several times faster, and never every column of a million rows as Python objects at once)."""
    names = frame.columns
    for part in frame.iter_slices(chunk or _CHUNK_ROWS):
        for values in zip(*(col.to_list() for col in part.get_columns())):
            yield dict(zip(names, values))


class _SplitWriter:
    """A split's rows written to parquet a chunk at a time; the file exists only once a row arrives
    (a 0-row split gets no file, see `_write_export`). `len()` counts the rows so far, as for a list."""

    def __init__(self, path: Path, fmt, split: str, chunk: int | None = None):
        self.path, self.fmt, self.split, self.chunk = path, fmt, split, chunk or _CHUNK_ROWS
        self.buffer: list[dict] = []
        self.written = 0
        self.writer = None

    def __len__(self) -> int:
        return self.written + len(self.buffer)

    def append(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        import pyarrow.parquet as pq

        if not self.buffer:
            return
        table = to_table(self.fmt, self.split, self.buffer)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)
        self.written += len(self.buffer)
        self.buffer = []

    def close(self) -> int:
        """Write what is left and close the file; the number of rows."""
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        return self.written


def _progress(progress):
    """A callback(solved, total) for the teacher loop: the given callable, a rich status line, or None."""
    if callable(progress) or not progress:
        return progress or None
    from rich.console import Console

    console = Console(stderr=True)
    return lambda solved, total: console.print(f"teacher: {solved}/{total} items have a verified answer")


def _mark_replay(assignments, replay_demos: dict, fraction: float):
    """Replayed mastered (dropped) items become stage replay-sft; replayed partial items stay in RL and
    say they are replayed in SFT as well."""
    import polars as pl

    stages, reasons = [], []
    for a in assignments.iter_rows(named=True):
        stage, reason = a["stage"], a["reason"]
        if a["id"] in replay_demos:
            if stage == "rl":
                reason = f"{reason}; also replayed in SFT (--sft-replay {fraction:g})"
            else:
                stage, reason = replay_mod.REPLAY_STAGE, replay_mod.replay_reason(a, fraction)
        stages.append(stage)
        reasons.append(reason)
    return assignments.with_columns(pl.Series("stage", stages, pl.Utf8), pl.Series("reason", reasons, pl.Utf8))


def _apply_demonstrations(assignments, problems: dict, found):
    """SFT items without a verified demonstration become unrouted (never an unverified target);
    `both` items without one go to RL only. The reason says why."""
    import polars as pl

    stages, reasons = [], []
    for pid, stage, reason in zip(assignments["id"].to_list(), assignments["stage"].to_list(),
                                  assignments["reason"].to_list()):
        if pid not in problems:
            stage, reason = "unrouted", reason + "; the problem row is missing from the store"
        elif stage in ("sft", "both") and pid not in found.demos:
            why = found.missing.get(pid, NO_DEMO)
            if stage == "sft":
                stage, reason = "unrouted", f"{reason}; {why}"
            else:
                stage, reason = "rl", f"{reason}; {why} → RL only"
        stages.append(stage)
        reasons.append(reason)
    return assignments.with_columns(pl.Series("stage", stages, pl.Utf8),
                                    pl.Series("reason", reasons, pl.Utf8))


def _write_export(tmp: Path, fmt, splits, assignments, run_cfg, config, summary, card: bool,
                  name: str, extra_rows: dict | None = None, omitted: dict | None = None) -> dict:
    """`omitted`: files left out on purpose (a validation slice too small to draw), with the reason."""
    import pyarrow.parquet as pq

    rows, counts, omitted = dict(extra_rows or {}), {}, dict(omitted or {})
    for split, split_rows in splits.items():
        if isinstance(split_rows, _SplitWriter):  # streamed into tmp already
            counts[split] = split_rows.close()
        else:
            counts[split] = len(split_rows)
            if split_rows:
                pq.write_table(to_table(fmt, split, split_rows), tmp / f"{split}.parquet")
        if not counts[split]:  # `datasets` and verl cannot read a 0-row parquet file: leave it out, say why
            omitted.setdefault(f"{split}.parquet",
                               f"0 rows: no item went to {split}; the file is left out because `datasets` "
                               "and verl cannot read a 0-row parquet file")
            continue
        rows[f"{split}.parquet"] = counts[split]
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
                "buckets_by_stage": summary.counts, "splits": {s: counts[s] for s in ALL_SPLITS},
                "sft_replay": int(config["demonstrations"]["sft_replay"].get("taken") or 0),
                "truncation": summary.truncation, "contaminated": config["contaminated"],
                **({"samples": rows["samples.parquet"]} if "samples.parquet" in rows else {})},
        warnings=portable(summary.warnings), versions=library_versions(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), omitted=omitted,
    ).to_dict()

    known: dict = {}  # (name, size, mtime) -> sha256, arrow bytes: the card's table reuses them, not rereads

    def file_table():
        table = {}
        for f in sorted(tmp.iterdir()):
            if not f.is_file():
                continue
            stat = f.stat()
            key = (f.name, stat.st_size, stat.st_mtime_ns)
            if key not in known:
                # the in-memory (Arrow) size, which dataset cards report as a split's num_bytes
                known[key] = (sha256_file(f), _arrow_bytes(f) if f.name in rows else None)
            table[f.name] = {"rows": rows.get(f.name), "bytes": stat.st_size, "sha256": known[key][0]}
            if f.name in rows:
                table[f.name]["arrow_bytes"] = known[key][1]
        return table

    if card:
        manifest["files"] = file_table()  # the card lists the data files' sizes
        write_export_card(tmp, manifest=manifest, assignments=assignments, name=name)
    manifest["files"] = file_table()
    text = json.dumps(manifest, indent=2, sort_keys=False, default=str, ensure_ascii=False)
    (tmp / "manifest.json").write_text(text + "\n", encoding="utf-8")
    return manifest


def _arrow_bytes(path: Path) -> int:
    """`pq.read_table(path).nbytes`, read one row group at a time (a million rows need not fit at once)."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    try:
        return sum(f.read_row_group(i).nbytes for i in range(f.num_row_groups))
    finally:
        f.close()


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished directory into place; an old one is moved aside first and removed after."""
    if out.exists():
        if not overwrite:  # it appeared while we worked
            raise ConfigError(f"output directory {out} already exists; pass --overwrite to replace it")
        old = out.parent / f".{out.name}.old-{os.urandom(4).hex()}"
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
