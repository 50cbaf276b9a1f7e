"""The bundled trainer: evaluate -> SFT on the SFT split -> (re-probe) -> evaluate -> RL on the RL split ->
evaluate, with a report (table per bucket, forgetting on the mastered bucket, curves).

    train("export/", "smollm2-135m", "runs/t", reprobe=True, eval_data=["rg:chain_sum?size=20&seed=9"])

Layout of OUT: sft/ and rl/ (each: config.yaml, metrics.jsonl, checkpoints/, model/), reprobe/ (with
--reprobe), eval.json, curves.png, report.md, summary.json, transitions.parquet (bucket transitions at each
re-probe) and rounds.parquet (every item's bucket, stage and reason per round). With --rounds N > 1 the
stage directories are OUT/round-<r>/{sft,reprobe,rl} (train/rounds.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.atomic import write_text_atomic
from stagewise.curate.config import read_yaml
from stagewise.curate.errors import ConfigError, EmptySplitError, InputError
from stagewise.curate.models import model_identity, resolve_model
from stagewise.curate.sources import load_problems
from stagewise.curate.steps import Step
from stagewise.train import config as C
from stagewise.train import train_joint, train_rl, train_sft
from stagewise.train.data import load_rl_rows, load_sft_rows, open_export, split_holdout
from stagewise.train.result import TrainResult
from stagewise.train.rounds import run_rounds
from stagewise.train.stage_eval import (
    StageEval,
    display_table,
    evaluate_checkpoint,
    forgetting,
    plot_curves,
    read_metrics,
    show_value,
)


@dataclass
class PipelineResult:
    out: str
    sft: TrainResult | None = None
    rl: TrainResult | None = None
    joint: TrainResult | None = None
    evals: list = field(default_factory=list)  # stage_eval.StageEval per checkpoint (typed rows)
    forgetting: dict = field(default_factory=dict)
    moved: list = field(default_factory=list)  # ids that joined RL at a re-probe
    loop: object = None  # train/rounds.py RoundsResult (rounds, re-probes, transitions, RL groups)
    skipped: dict = field(default_factory=dict)  # stage -> reason
    model_dir: str | None = None  # the final model

    def to_dict(self) -> dict:
        return {"out": self.out, "model_dir": self.model_dir,
                "sft": self.sft.to_dict() if self.sft else None, "rl": self.rl.to_dict() if self.rl else None,
                "joint": self.joint.to_dict() if self.joint else None,
                "evaluation": [e.to_dict() for e in self.evals], "forgetting": self.forgetting, "moved": self.moved,
                "skipped": self.skipped, **(_loop_dict(self.loop) if self.loop is not None else {})}


def _loop_dict(loop) -> dict:
    return {"rounds": len(loop.groups) or (1 if loop.sft or loop.rl else 0),
            "reprobes": [r.to_dict() for r in loop.reprobes], "transitions": loop.transitions,
            "rl_groups": loop.groups}


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
          resume: bool = False, dry_run: bool = False, progress: bool = True, rounds: int = 1,
          reprobe_sample: int | None = None, verify: bool = True) -> PipelineResult:
    """SFT on the SFT split, then RL on the RL split, with stage-aware evaluation before and after each.

    `config`: a YAML path (or dict) with `sft:`, `rl:` and `eval:` sections (a `stagewise run` config
    works); `sft`/`rl`/`eval` dicts override single keys; the common flags apply to both stages.
    `eval_data`: held-out problems (load_problems specs or Problems) evaluated at every checkpoint.
    `reprobe`: after SFT, re-probe every SFT and RL item with the SFT model (the probe's sampling, each
    row's prompt, the item's verifier; adaptive if the probe was) and re-route it with the export's own
    router: items that left the RL band leave RL, newly partial items join it (train/reprobe.py).
    `reprobe_sample`: re-probe a random N items instead, and report the estimated bucket shares.
    `rounds`: repeat SFT -> re-probe -> RL; RL's all-wrong prompts and the re-probe's unmastered items
    form the next round's SFT set (train/rounds.py). Step settings apply per stage per round.
    `joint`: weighted | relift | bridge replaces the two stages by one cooperative stage (train/joint/),
    evaluated the same way; `joint_options` (or a `joint:` config section) holds its options.
    `verify`: check each split read against the export's manifest (sha256, rows); False for --no-verify."""

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

    problems = []
    if int(rounds) < 1:
        problems.append(f"--rounds {rounds} must be at least 1")
    if reprobe_sample is not None and int(reprobe_sample) < 1:
        problems.append(f"--reprobe-sample {reprobe_sample} must be at least 1 (or leave it out to re-probe every item)")
    if reprobe_sample is not None and not reprobe:
        problems.append("--reprobe-sample needs --reprobe")
    if joint and int(rounds) > 1:
        problems.append("--rounds applies to SFT -> RL; a --joint mode is one cooperative stage")
    if problems:
        raise ConfigError("; ".join(problems))
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
    if sft_rows and ecfg["sft_holdout"] > 0:
        # The export's own held-out demonstrations (sft_val.parquet) when it has them, else a seeded share
        # of sft.parquet: no row is held out twice.
        heldout_sft = load_sft_rows(export, "sft_val") if export.has_file("sft_val") else []
        if not heldout_sft:
            sft_rows, heldout_sft = split_holdout(sft_rows, ecfg["sft_holdout"], ecfg["seed"])

    heldout = _heldout_problems(eval_data)
    do_eval = ecfg["enabled"] and not dry_run
    eval_kw = dict(export=export, heldout=heldout, num_samples=ecfg["num_samples"], ks=tuple(ecfg["ks"]),
                   max_new_tokens=ecfg["max_new_tokens"], max_per_bucket=ecfg["max_items_per_bucket"],
                   seed=ecfg["seed"], backend=ecfg["backend"])
    current = model
    if do_eval:
        result.evals.append(_cached_eval(out, resolve_model(model), "before", eval_kw))

    if joint:
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

    if sft_rows or rl_rows:
        def sft_stage(model_in, stage_out, rows):
            return train_sft(data, model_in, stage_out, config=sections.get("sft"), rows=rows,
                             sft_eval_rows=heldout_sft or None, resume=resume, dry_run=dry_run,
                             progress=progress, verify=verify, **sft_over)

        def rl_stage(model_in, stage_out, rows, ledger):
            return train_rl(data, model_in, stage_out, config=sections.get("rl"), rows=rows,
                            sft_eval_rows=heldout_sft or None, resume=resume, dry_run=dry_run,
                            progress=progress, ledger=ledger, verify=verify, **rl_over)

        def evaluate(model_dir, label):
            if do_eval:
                result.evals.append(_cached_eval(out, model_dir, label, eval_kw))

        # Held-out SFT rows stay out of the loop: never re-probed, never moved into RL.
        loop = run_rounds(export, current, out, sft_rows=sft_rows or [], rl_rows=rl_rows or [],
                          rounds=int(rounds), reprobe=reprobe, reprobe_sample=reprobe_sample,
                          train_sft_stage=sft_stage, train_rl_stage=rl_stage, evaluate=evaluate,
                          dry_run=dry_run, progress=progress)
        result.loop = loop
        result.sft = loop.sft[-1] if loop.sft else None
        result.rl = loop.rl[-1] if loop.rl else None
        result.moved = sorted(set(loop.moved))
        for stage, res in (("sft", result.sft), ("rl", result.rl)):
            if res is not None:
                result.skipped.pop(stage, None)
        if result.rl is None and rl_rows and not dry_run:
            result.skipped["rl"] = "no item in the RL band after the re-probe (every round)"
        if not dry_run and loop.model_dir:
            current = loop.model_dir

    result.model_dir = current if not dry_run else None
    if result.evals:
        result.forgetting = forgetting(result.evals)
    if result.loop is not None and int(rounds) > 1:
        metrics = _in_sequence([read_metrics(Path(r.out) / "metrics.jsonl") for r in _in_order(result.loop)])
    else:
        metrics = _offset_rl(read_metrics(out / "sft" / "metrics.jsonl") + read_metrics(out / "rl" / "metrics.jsonl"))
    if joint:
        metrics += read_metrics(out / f"joint-{joint}" / "metrics.jsonl")
    curves = plot_curves(metrics, out / "curves.png", title=f"stagewise train: {Path(str(model)).name}")
    if not dry_run:
        _write_report(result, out, curves)
    return result


def _cached_eval(out: Path, model_dir: str, label: str, kw: dict):
    """Evaluate one checkpoint, or reuse its completion marker OUT/eval/<label>.done.json when the same
    model (weights hash) was evaluated with the same settings: a resumed run does not pay twice."""
    settings = {k: v for k, v in kw.items() if k not in ("export", "heldout")}
    settings["heldout"] = sorted(p.id for p in kw.get("heldout") or [])
    settings["export"] = str(kw["export"].root)
    step = Step(out / "eval", label.replace(" ", "_"), {"model": model_identity(model_dir), **settings})
    if step.done():
        return StageEval.from_dict(step.result())
    res = evaluate_checkpoint(model_dir, label, **kw)
    step.mark(res.to_dict())
    return res


def _sections(config) -> dict:
    """Stage -> its config: the section of a dict, or the file itself for each section it has (build_config
    reads that section from it, so a bad key is reported at its line and column)."""
    if config is None:
        return {}
    raw = config if isinstance(config, dict) else read_yaml(config)[0]
    return {k: raw[k] if isinstance(config, dict) else config
            for k in ("sft", "rl", "eval", "joint") if isinstance(raw.get(k), dict)}


def _heldout_problems(eval_data):
    if not eval_data:
        return None
    if isinstance(eval_data, (str, os.PathLike)):
        eval_data = [str(eval_data)]
    if all(isinstance(x, str) for x in eval_data):
        return list(load_problems(*eval_data))
    return list(eval_data)


def _offset_rl(metrics: list[dict]) -> list[dict]:
    """Put RL steps after the SFT steps on one step axis for the curves."""
    last_sft = max((m.get("step", 0) for m in metrics if m.get("stage") == "sft"), default=0)
    return [dict(m, step=m.get("step", 0) + (last_sft if m.get("stage") == "rl" else 0)) for m in metrics]


def _in_order(loop) -> list:
    """The stage results of the rounds in the order they ran (SFT then RL in each round)."""
    by_round: dict = {}
    for res in loop.sft + loop.rl:
        parts = Path(res.out).parts
        rnd = next((int(p.split("-")[1]) for p in parts if p.startswith("round-")), 1)
        by_round.setdefault(rnd, []).append(res)
    return [r for rnd in sorted(by_round) for r in sorted(by_round[rnd], key=lambda x: x.stage != "sft")]


def _in_sequence(logs: list[list[dict]]) -> list[dict]:
    """Several stages' metrics on one step axis, each stage after the one before."""
    out, offset = [], 0
    for log in logs:
        out += [dict(m, step=m.get("step", 0) + offset) for m in log]
        offset += max((m.get("step", 0) for m in log), default=0)
    return out


def _loop_lines(loop) -> list[str]:
    """The report's account of the re-probes and rounds: bucket transitions, how many items left or
    joined RL, the RL groups with zero reward variance, and the stages per round."""
    lines = [f"- {why}" for why in loop.skipped]
    for rep in loop.reprobes:
        info = rep.to_dict()
        what = f"{rep.probed} of {rep.items} items" + (" (adaptive)" if rep.adaptive else "")
        lines.append(f"- re-probe, round {rep.round}: {what}; {len(info['left_rl'])} left RL, "
                     f"{len(info['joined_rl'])} joined RL")
        if rep.estimate:
            lines.append("  - estimated bucket shares of all items (random sample): " + ", ".join(
                f"{b} {v['share']:.0%} (~{v['of_all_items_about']})" for b, v in rep.estimate.items()))
    for g in loop.groups:
        if g.get("groups"):
            lines.append(f"- RL, round {g['round']}: {g['groups']} groups over {g['prompts']} prompts, "
                         f"{g['zero_variance']} with zero reward variance ({g['all_wrong']} all wrong, "
                         f"{g['all_right']} all right); {g['all_wrong_prompts']} prompts all wrong in every group")
    if loop.transitions:
        lines += ["", "## Bucket transitions at the re-probe (transitions.parquet)", "",
                  "| round | before | after | items |", "|---|---|---|---|"]
        lines += [f"| {t['round']} | {t['before']} | {t['after']} | {t['count']} |" for t in loop.transitions]
    if loop.rounds:
        counts: dict = {}
        for r in loop.rounds:
            counts[(r["round"], r["stage"])] = counts.get((r["round"], r["stage"]), 0) + 1
        lines += ["", "## Items per round and stage (rounds.parquet)", "", "| round | stage | items |",
                  "|---|---|---|"]
        lines += [f"| {rnd} | {stage} | {n} |" for (rnd, stage), n in sorted(counts.items())]
    return lines + ([""] if lines else [])


def _write_report(result: PipelineResult, out: Path, curves: str | None) -> None:
    """report.md (table per bucket, forgetting, curves) and summary.json, written atomically."""
    lines = ["# stagewise train", ""]
    for name, res in (("SFT", result.sft), ("RL", result.rl), ("joint", result.joint)):
        if res is not None:
            m = res.metrics
            lines.append(f"- {name}: {res.global_step} steps, model `{res.model_dir}`, "
                         f"train loss {show_value(m.get('train_loss'))}"
                         + (f", last reward {show_value(m.get('reward'))}" if 'reward' in m else "")
                         + (f", mean step {res.step_time_s:.2f} s" if res.step_time_s else ""))
    for stage, why in result.skipped.items():
        lines.append(f"- {stage.upper()} skipped: {why}")
    if result.loop is not None:
        lines += _loop_lines(result.loop)
    table = display_table(result.evals)
    if table:
        cols = list(table[0])
        lines += ["", "## Evaluation (pass@1 [95% CI] per checkpoint)", "", "| " + " | ".join(cols) + " |",
                  "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in table]
    if result.forgetting:
        lines += ["", "## Forgetting (mastered bucket, never trained on)", ""]
        for ck, v in result.forgetting["mastered_pass@1"].items():
            lines.append(f"- {ck}: pass@1 {show_value(v)} (drop {show_value(result.forgetting['drop'][ck])})")
    if curves:
        lines += ["", "## Curves", "", ("SFT loss, RL reward and the held-out SFT loss during RL: SFT and RL do "
                  "not decouple, RL can raise the SFT loss while it raises the reward."), "",
                  f"![curves]({Path(curves).name})"]
    for name, text in (("report.md", "\n".join(lines) + "\n"),
                       ("summary.json", json.dumps(result.to_dict(), indent=2, default=str))):
        write_text_atomic(out / name, text)
    write_text_atomic(out / "eval.json", json.dumps([e.to_dict() for e in result.evals], indent=2, default=str))
