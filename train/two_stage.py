"""The bundled trainer: evaluate -> SFT on the SFT split -> (re-probe) -> evaluate -> RL on the RL split ->
evaluate, with a report (table per bucket, forgetting on the mastered bucket, curves).

    train("export/", "smollm2-135m", "runs/t", reprobe=True, eval_data=["rg:chain_sum?size=20&seed=9"])

Layout of OUT: sft/ and rl/ (each: config.yaml, metrics.jsonl, checkpoints/, model/), eval.json,
curves.png, report.md, moved.parquet (with --reprobe), summary.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.atomic import write_text_atomic
from stagewise.curate.errors import EmptySplitError, InputError
from stagewise.train import config as C
from stagewise.train.common import TrainResult
from stagewise.train.data import answer_of, load_rl_rows, load_sft_rows, open_export, split_holdout


@dataclass
class PipelineResult:
    out: str
    sft: TrainResult | None = None
    rl: TrainResult | None = None
    joint: TrainResult | None = None
    evals: list = field(default_factory=list)  # stage_eval.StageEval per checkpoint (typed rows)
    forgetting: dict = field(default_factory=dict)
    moved: list = field(default_factory=list)  # ids moved SFT -> RL by the re-probe
    skipped: dict = field(default_factory=dict)  # stage -> reason
    model_dir: str | None = None  # the final model

    def to_dict(self) -> dict:
        return {"out": self.out, "model_dir": self.model_dir,
                "sft": self.sft.to_dict() if self.sft else None, "rl": self.rl.to_dict() if self.rl else None,
                "joint": self.joint.to_dict() if self.joint else None,
                "evaluation": [e.to_dict() for e in self.evals], "forgetting": self.forgetting, "moved": self.moved,
                "skipped": self.skipped}


def _split_rows(export, split, loader):
    """Rows of a split, or (None, reason) when the split is absent or empty: the pipeline skips that stage
    and says so; a single-stage command would raise instead."""
    if not export.has(split):
        return None, f"no {split}.parquet in the export"
    try:
        return loader(export), None
    except EmptySplitError:
        return None, f"{split} split is empty"


def train(data, model, out, *, reprobe: bool = False, eval_data=None, config=None, sft: dict | None = None,
          rl: dict | None = None, eval: dict | None = None, stages=("sft", "rl"), joint: str | None = None,
          joint_options: dict | None = None, max_steps: int | None = None,
          learning_rate: float | None = None, batch_size: int | None = None, seed: int | None = None,
          resume: bool = False, dry_run: bool = False, progress: bool = True, verify: bool = True) -> PipelineResult:
    """SFT on the SFT split, then RL on the RL split, with stage-aware evaluation before and after each.

    `config`: a YAML path (or dict) with `sft:`, `rl:` and `eval:` sections (a `stagewise run` config
    works); `sft`/`rl`/`eval` dicts override single keys; the common flags apply to both stages.
    `eval_data`: held-out problems (load_problems specs or Problems) evaluated at every checkpoint.
    `reprobe`: re-probe the SFT model on the SFT and RL items; SFT items that became partial join RL.
    `joint`: weighted | relift | bridge replaces the two stages by one cooperative stage (train/joint.py),
    evaluated the same way; `joint_options` (or a `joint:` config section) holds its options.
    `verify`: check each split read against the export's manifest (sha256, rows); False for --no-verify."""
    from stagewise.train.stage_eval import forgetting, plot_curves, read_metrics
    from stagewise.train.rl import train_rl
    from stagewise.train.sft import train_sft

    out = Path(out)
    export = open_export(data, verify=verify)
    common = {k: v for k, v in dict(max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                                    seed=seed).items() if v is not None}
    sections = _sections(config)
    ecfg = C.build_config("eval", sections.get("eval"), **(eval or {}))
    sft_over = {**common, **(sft or {})}
    rl_over = {**common, **(rl or {})}
    # Validate both stages' options before any training starts (all problems at once).
    C.build_config("sft", sections.get("sft"), **sft_over)
    C.build_config("rl", sections.get("rl"), **rl_over)
    if joint:
        C.build_config("joint", sections.get("joint"), mode=joint, **{**common, **(joint_options or {})})

    result = PipelineResult(str(out))
    sft_rows, why = _split_rows(export, "sft", load_sft_rows) if "sft" in stages else (None, "not requested")
    if why:
        result.skipped["sft"] = why
    rl_rows, why = _split_rows(export, "rl", load_rl_rows) if "rl" in stages else (None, "not requested")
    if why:
        result.skipped["rl"] = why
    if sft_rows is None and rl_rows is None and not reprobe:
        raise InputError("neither an SFT nor an RL split to train on", path=str(export.root),
                         fix="check the export's counts (manifest.json): " + "; ".join(result.skipped.values()))
    heldout_sft = []
    if sft_rows:
        sft_rows, heldout_sft = split_holdout(sft_rows, ecfg["sft_holdout"], ecfg["seed"])

    heldout = _heldout_problems(eval_data)
    do_eval = ecfg["enabled"] and not dry_run
    eval_kw = dict(export=export, heldout=heldout, num_samples=ecfg["num_samples"], ks=tuple(ecfg["ks"]),
                   max_new_tokens=ecfg["max_new_tokens"], max_per_bucket=ecfg["max_items_per_bucket"],
                   seed=ecfg["seed"], backend=ecfg["backend"])
    current = model
    if do_eval:
        from stagewise.curate.models import resolve_model

        result.evals.append(_cached_eval(out, resolve_model(model), "before", eval_kw))

    if joint:
        from stagewise.train.joint import train_joint

        if rl_rows is None:
            raise InputError("joint training needs an RL split", path=str(export.root),
                             fix="; ".join(result.skipped.values()))
        result.skipped.pop("sft", None)
        result.joint = train_joint(data, current, out / f"joint-{joint}", mode=joint, config=sections.get("joint"),
                                   sft_rows=sft_rows or [], rl_rows=rl_rows, sft_eval_rows=heldout_sft or None,
                                   resume=resume, dry_run=dry_run, progress=progress, verify=verify,
                                   **{**common, **(joint_options or {})})
        if not dry_run:
            current = result.joint.model_dir
            if do_eval:
                result.evals.append(_cached_eval(out, current, f"after joint-{joint}", eval_kw))
        sft_rows = rl_rows = None  # the joint stage replaces both

    if sft_rows:
        result.sft = train_sft(data, current, out / "sft", config=sections.get("sft"), rows=sft_rows,
                               eval_rows=heldout_sft or None, resume=resume, dry_run=dry_run, progress=progress,
                               verify=verify, **sft_over)
        if not dry_run:
            current = result.sft.model_dir
            if do_eval:
                result.evals.append(_cached_eval(out, current, "after SFT", eval_kw))

    if reprobe and not dry_run:
        moved_rows = reprobe_moves(export, current, out / "reprobe", sft_rows or [], seed=ecfg["seed"])
        result.moved = [r["id"] for r in moved_rows]
        if moved_rows:
            rl_rows = (rl_rows or []) + moved_rows
            result.skipped.pop("rl", None)

    if rl_rows:
        result.rl = train_rl(data, current, out / "rl", config=sections.get("rl"), rows=rl_rows,
                             sft_eval_rows=heldout_sft or None, resume=resume, dry_run=dry_run,
                             progress=progress, verify=verify, **rl_over)
        if not dry_run:
            current = result.rl.model_dir
            if do_eval:
                result.evals.append(_cached_eval(out, current, "after RL", eval_kw))

    result.model_dir = current if not dry_run else None
    if result.evals:
        result.forgetting = forgetting(result.evals)
    metrics = read_metrics(out / "sft" / "metrics.jsonl") + read_metrics(out / "rl" / "metrics.jsonl")
    if joint:
        metrics += read_metrics(out / f"joint-{joint}" / "metrics.jsonl")
    curves = plot_curves(_offset_rl(metrics), out / "curves.png", title=f"stagewise train: {Path(str(model)).name}")
    if not dry_run:
        _write_report(result, out, curves)
    return result


def _cached_eval(out: Path, model_dir: str, label: str, kw: dict):
    """Evaluate one checkpoint, or reuse OUT/eval/<label>.json when the same model (weights hash) was
    evaluated with the same settings: a resumed run does not pay for its evaluations twice."""
    import hashlib

    from stagewise.curate.models import model_identity
    from stagewise.train.stage_eval import StageEval, evaluate_checkpoint

    settings = {k: v for k, v in kw.items() if k not in ("export", "heldout")}
    settings["heldout"] = sorted(p.id for p in kw.get("heldout") or [])
    settings["export"] = str(kw["export"].root)
    key = hashlib.sha256(json.dumps([model_identity(model_dir), settings], sort_keys=True, default=str)
                         .encode()).hexdigest()
    path = out / "eval" / (label.replace(" ", "_") + ".json")
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key and "evaluation" in cached:
            return StageEval.from_dict(cached["evaluation"])
    res = evaluate_checkpoint(model_dir, label, **kw)
    write_text_atomic(path, json.dumps({"key": key, "evaluation": res.to_dict()}, default=str))
    return res


def _sections(config) -> dict:
    if config is None:
        return {}
    if isinstance(config, dict):
        raw = config
    else:
        import yaml

        p = Path(config)
        if not p.exists():
            from stagewise.curate.errors import ConfigError

            raise ConfigError(f"config file not found: {p}; pass an existing YAML file to --config")
        raw = yaml.safe_load(p.read_text()) or {}
    return {k: raw[k] for k in ("sft", "rl", "eval", "joint") if isinstance(raw.get(k), dict)}


def _heldout_problems(eval_data):
    if not eval_data:
        return None
    if isinstance(eval_data, (str, os.PathLike)):
        eval_data = [str(eval_data)]
    if all(isinstance(x, str) for x in eval_data):
        from stagewise.curate.sources import load_problems

        return list(load_problems(*eval_data))
    return list(eval_data)


def _offset_rl(metrics: list[dict]) -> list[dict]:
    """Put RL steps after the SFT steps on one step axis for the curves."""
    last_sft = max((m.get("step", 0) for m in metrics if m.get("stage") == "sft"), default=0)
    return [dict(m, step=m.get("step", 0) + (last_sft if m.get("stage") == "rl" else 0)) for m in metrics]


def reprobe_moves(export, model_dir: str, out: Path, sft_rows: list[dict], *, seed: int = 0,
                  num_samples: int | None = None) -> list[dict]:
    """Probe the SFT model on the SFT items with the probe's settings and each row's own prompt messages;
    items now partial (0 < c < n) are returned as RL rows (prompt, solution, id, task, meta) and listed in
    OUT/moved.parquet."""
    from stagewise.curate.probe import probe
    from stagewise.train.stage_eval import export_problems

    if not sft_rows:
        return []
    problems, _ = export_problems(export, max_per_bucket=None, seed=seed)
    sft_ids = {str(r["id"]) for r in sft_rows}
    problems = [p for p in problems if p.id in sft_ids]
    cfg = export.probe
    sampling = export.sampling
    n = num_samples or cfg.get("num_samples") or cfg.get("k_max") or 4
    out.mkdir(parents=True, exist_ok=True)
    res = probe(problems, model=model_dir, store=str(out / "reprobe.duckdb"), num_samples=int(n),
                temperature=sampling.get("temperature", 1.0), top_p=sampling.get("top_p", 1.0),
                max_new_tokens=sampling.get("max_new_tokens", 256), seed=seed, progress=False)
    counts = res.store.sample_counts(res.run_id)
    by_id = {str(r["id"]): r for r in sft_rows}
    moved = []
    for pid, (n_i, c_i) in counts.items():
        if pid in by_id and 0 < c_i < n_i:
            row = by_id[pid]
            moved.append({"prompt": row["prompt"], "solution": answer_of(row), "id": pid,
                          "task": row["task"], "meta": row.get("meta") or "{}",
                          "n": n_i, "c": c_i})
    _write_parquet(moved, out.parent / "moved.parquet")
    return moved


def _write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    table = pa.Table.from_pylist(rows) if rows else pa.table({"id": pa.array([], pa.string())})
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _write_report(result: PipelineResult, out: Path, curves: str | None) -> None:
    """report.md (table per bucket, forgetting, curves) and summary.json, written atomically."""
    from stagewise.train.stage_eval import display_table

    lines = ["# stagewise train", ""]
    for name, res in (("SFT", result.sft), ("RL", result.rl), ("joint", result.joint)):
        if res is not None:
            m = res.metrics
            lines.append(f"- {name}: {res.global_step} steps, model `{res.model_dir}`, "
                         f"train loss {_fmt(m.get('train_loss'))}"
                         + (f", last reward {_fmt(m.get('reward'))}" if 'reward' in m else "")
                         + (f", mean step {res.step_time_s:.2f} s" if res.step_time_s else ""))
    for stage, why in result.skipped.items():
        lines.append(f"- {stage.upper()} skipped: {why}")
    if result.moved:
        lines.append(f"- re-probe moved {len(result.moved)} SFT items into RL (moved.parquet)")
    table = display_table(result.evals)
    if table:
        cols = list(table[0])
        lines += ["", "## Evaluation (pass@1 [95% CI] per checkpoint)", "", "| " + " | ".join(cols) + " |",
                  "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in table]
    if result.forgetting:
        lines += ["", "## Forgetting (mastered bucket, never trained on)", ""]
        for ck, v in result.forgetting["mastered_pass@1"].items():
            lines.append(f"- {ck}: pass@1 {_fmt(v)} (drop {_fmt(result.forgetting['drop'][ck])})")
    if curves:
        lines += ["", "## Curves", "", ("SFT loss, RL reward and the held-out SFT loss during RL: SFT and RL do "
                  "not decouple, RL can raise the SFT loss while it raises the reward."), "",
                  f"![curves]({Path(curves).name})"]
    for name, text in (("report.md", "\n".join(lines) + "\n"),
                       ("summary.json", json.dumps(result.to_dict(), indent=2, default=str))):
        write_text_atomic(out / name, text)
    write_text_atomic(out / "eval.json", json.dumps([e.to_dict() for e in result.evals], indent=2, default=str))
