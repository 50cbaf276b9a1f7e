"""`stagewise run`: profile -> probe -> route + export -> train (SFT -> optional re-probe -> RL, with
evaluation before and after) -> report, in one run directory.

    import stagewise as sw
    result = sw.run()                                      # the embedded default (smoke scale, CPU)
    result = sw.run("my.yaml", out="runs/mine", overrides={"probe": {"num_samples": 8}})

Each stage is the public API call of its own command; this module only wires them together, keeps
the run directory resumable, and writes the report. A re-run of the same command resumes: finished
stages are skipped (their completion markers, RUN/steps/<stage>.done.json), probing resumes from its
store, training from its checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

import stagewise as sw
from stagewise.curate.atomic import write_text_atomic
from stagewise.curate.backends import check_backend_args
from stagewise.curate.config import merge
from stagewise.curate.errors import ConfigError, StagewiseError
from stagewise.curate.sources import ProblemSet
from stagewise.curate.steps import OtherOptionsError, Step, differences as config_differences
from stagewise.gain import paired_gain, status_split
from stagewise.run_report import write_run_report
from stagewise.runconfig import resolve_config
from stagewise.train import config as train_config
from stagewise.train.stage_eval import StageEval, value_of

# Throughputs measured on the 2-core reference machine (benchmarks/RESULTS.md), used only for the
# up-front estimate; the report records the real wall time of every stage.
# Calibrated on an idle 2-core machine: the default config's estimate equals its measured `stagewise run`
# (564 s; generation and evaluation at ~49 useful tok/s including model loads).
_CPU_TOKENS_PER_S = 49.0
_CPU_SECONDS_PER_SFT_STEP = 6.0
_CPU_SECONDS_PER_RL_STEP = 35.0


@dataclass
class RunResult:
    out: str
    report: str
    summary: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)  # what the run says about itself (an empty bucket, items left out)

    def to_dict(self) -> dict:
        return {"out": self.out, "report": self.report, "summary": self.summary, "seconds": self.seconds,
                "notes": self.notes}


def run(config: str | os.PathLike | dict | None = None, *, out: str | os.PathLike | None = None,
        scale: str | None = None, overrides: dict | None = None, fresh: bool = False,
        progress: bool = True, echo=print) -> RunResult:
    """Run the whole pipeline; return the run directory, the report path and the headline numbers."""
    if isinstance(config, dict):
        cfg = resolve_config(scale=scale, overrides=merge(config, overrides), check=_section_problems).data
    else:
        cfg = resolve_config(config, scale=scale, overrides=overrides, check=_section_problems).data
    run_dir = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    _open_run_dir(run_dir, cfg, fresh)
    seconds: dict[str, float] = {}

    echo(f"stagewise run -> {run_dir}")
    echo(f"  estimated wall time on a 2-core CPU: ~{estimate_minutes(cfg):.0f} min (hf backend; GPUs are faster)")
    data = cfg["data"]
    pool, heldout = _load_data(cfg)
    echo(f"  {len(pool)} candidate items, {len(heldout)} held-out evaluation items")

    def stage(name, fn):
        # config.yaml already refuses another config, so every stage is keyed by the whole resolved config.
        step = Step(run_dir / "steps", name, cfg)
        if step.done():
            seconds[name] = float(step.record().get("seconds") or 0.0)
            echo(f"  [{name}] done earlier ({seconds[name]:.0f} s), skipped")
            return step.result()
        t0 = time.time()
        value = fn()
        seconds[name] = time.time() - t0
        step.mark(value, seconds=seconds[name])
        echo(f"  [{name}] {seconds[name]:.0f} s")
        return value

    def do_profile():
        prof = sw.profile(*data["sources"], card=str(run_dir / "profile" / "README.md"))
        return prof.to_dict()

    profile = stage("profile", do_profile)

    store = run_dir / "probe.duckdb"

    def do_probe():
        probe_cfg = dict(cfg["probe"])
        # The held-out sets are always decontaminated against: a pool item overlapping one is left out.
        against = list(dict.fromkeys([*(data.get("eval_sources") or []), *(data.get("decontaminate") or []),
                                      *(probe_cfg.pop("decontaminate", None) or [])]))
        res = sw.probe(pool, model=cfg["model"], store=str(store), backend=cfg["backend"], seed=cfg["seed"],
                       base_url=cfg.get("base_url"), progress=progress, decontaminate=against or None,
                       **probe_cfg)
        res.close()  # the report reads the samples from the store afterwards
        left = (res.summary.get("contamination") or {}).get("contaminated")
        if left:
            echo(f"  left out {left} pool items overlapping {', '.join(against)} (probe summary lists them)")
        return {"run_id": res.run_id, "summary": res.summary}

    probed = stage("probe", do_probe)

    def do_export():
        # An export finished before an interruption (its own marker, same options) is reused.
        try:
            res = sw.export(str(store), str(run_dir / "export"), seed=cfg["seed"],
                            heldout=[p.id for p in heldout], **cfg["route"], **cfg["export"])
        except OtherOptionsError as exc:
            raise ConfigError(f"{exc.made}; pass --fresh to start the run over, or choose another --out") from None
        if res.reused:
            echo(f"  reused {res.out}/: exported earlier with the same options")
        return {"counts": res.manifest.get("counts", {})}

    exported = stage("export", do_export)
    notes = _bucket_notes(exported["counts"])
    for note in notes:
        echo(f"  note: {note}")

    def do_train():
        res = sw.train_pipeline(str(run_dir / "export"), cfg["model"], str(run_dir / "train"), eval_data=heldout,
                       sft=cfg["sft"], rl=cfg["rl"], eval={"backend": cfg["backend"], **cfg["eval"]},
                       seed=cfg["seed"], resume=True, progress=progress, **(cfg.get("train") or {}))
        return res.to_dict()

    trained = stage("train", do_train)

    summary = run_summary(trained, seconds, probed=probed, exported=exported, heldout_items=len(heldout),
                          seed=cfg["seed"])
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    report_md = write_run_report(run_dir, cfg, profile=profile, probed=probed, exported=exported,
                                 trained=trained, notes=notes, seconds=seconds, summary=summary)
    Step(run_dir / "steps", "report", cfg).mark(str(report_md), seconds=0.0)
    left = (probed.get("summary", {}).get("contamination") or {}).get("contaminated")
    notes = notes + ([f"left out {left} pool items overlapping a benchmark set"] if left else [])
    return RunResult(str(run_dir), str(report_md), headline(trained, summary), seconds, notes)


def _open_run_dir(run_dir: Path, cfg: dict, fresh: bool) -> None:
    """Create or resume a run directory; refuse to mix configs."""
    resolved = run_dir / "config.yaml"
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if resolved.exists():
        old = yaml.safe_load(resolved.read_text()) or {}
        differences = [f"{key}: {a!r} -> {b!r}" for key, a, b in config_differences(old, cfg)]
        if differences:
            raise ConfigError(
                f"run directory {run_dir} was made by a different config ({'; '.join(differences)}); "
                "re-run with the same options to resume, pass --fresh to start over there, "
                "or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resolved.exists():
        write_text_atomic(resolved, yaml.safe_dump(cfg, sort_keys=False))


TRAIN_KEYS = ("reprobe", "reprobe_sample", "rounds")  # the `train` section: options of the loop itself


def _section_problems(cfg: dict) -> list[tuple[str, str]]:
    """Every stage section against its API's keyword names, before any work: (dotted key, problem)."""
    import inspect

    def section(name) -> dict:  # a section that is not a mapping is already reported as such
        return cfg[name] if isinstance(cfg.get(name), dict) else {}

    problems = []
    for name, fn, reserved in (("probe", sw.probe, {"problems", "model", "store", "backend", "seed",
                                                        "base_url", "progress"}),
                                  ("route", sw.route, {"store", "out", "seed"}),
                                  ("export", sw.export, {"store", "out", "seed", "overwrite", "policy", "low",
                                                         "high", "keep_mastered", "require_samples", "truncated",
                                                         "heldout"})):
        params = set(inspect.signature(fn).parameters) - reserved
        for key in section(name):
            if key not in params:
                problems.append((f"{name}.{key}", (f"{name}.{key} is not an option of `stagewise {name}` "
                                                   f"(options: {', '.join(sorted(params))})")))
    args = section("probe").get("backend_args")
    if args is not None and not isinstance(args, dict):
        problems.append(("probe.backend_args", ("probe.backend_args must be a mapping of backend settings, e.g. "
                                                f"{{tensor_parallel_size: 4}} (got {args!r})")))
    elif args and cfg.get("backend") != "vllm":  # vLLM's keys are checked against the installed vLLM at load
        try:
            check_backend_args(cfg.get("backend"), {k: v for k, v in args.items() if k not in ("batch_size", "base_url")})
        except StagewiseError as exc:
            problems.append(("probe.backend_args", f"probe.backend_args: {exc}"))
    for key in section("train"):
        if key not in TRAIN_KEYS:
            problems.append((f"train.{key}",
                             f"train.{key} is not an option of `stagewise train` (options: {', '.join(TRAIN_KEYS)})"))
    for kind in ("sft", "rl", "eval"):
        problems += train_config.check(kind, section(kind), prefix=f"{kind}.")
    return problems


def _load_data(cfg: dict):
    """The candidate pool and the held-out set, made disjoint (held-out items seen in the pool are removed)."""
    data = cfg["data"]

    def load(specs, limit):
        seen, rows = set(), []
        for spec in specs:
            for p in sw.load_problems(spec, limit=limit):
                if p.id not in seen:
                    seen.add(p.id)
                    rows.append(p)
        return ProblemSet(rows)

    pool = load(data["sources"], data.get("limit_per_source"))
    heldout = load(data.get("eval_sources") or [], data.get("eval_limit_per_source"))
    task = (cfg.get("probe") or {}).get("task")
    if task:  # the held-out items are scored by the verifier the probe used (probe.task overrides every source)
        for p in heldout:
            p.task = task
    pool_ids = {p.id for p in pool}
    heldout = ProblemSet([p for p in heldout if p.id not in pool_ids],
                         {"removed_overlap": len(heldout) - sum(p.id not in pool_ids for p in heldout)})
    return pool, heldout


def estimate_minutes(cfg: dict) -> float:
    """A rough CPU estimate from the config (items x samples x tokens, steps), printed before starting."""
    data = cfg["data"]
    items = len(data["sources"]) * (data.get("limit_per_source") or 12)
    heldout = len(data.get("eval_sources") or []) * (data.get("eval_limit_per_source") or 8)
    probe, ev = cfg["probe"], cfg["eval"]
    gen_tokens = 0.5 * items * probe["num_samples"] * probe["max_new_tokens"]  # half the budget on average
    eval_items = heldout + min(items, 3 * (ev.get("max_items_per_bucket") or items))
    eval_tokens = 3 * 0.5 * eval_items * ev.get("num_samples", 2) * (ev.get("max_new_tokens") or probe["max_new_tokens"])
    seconds = (gen_tokens + eval_tokens) / _CPU_TOKENS_PER_S
    seconds += cfg["sft"].get("max_steps", 0) * _CPU_SECONDS_PER_SFT_STEP
    seconds += cfg["rl"].get("max_steps", 0) * _CPU_SECONDS_PER_RL_STEP
    return seconds / 60


def _bucket_notes(counts: dict) -> list[str]:
    notes = []
    buckets = counts.get("buckets") or counts.get("bucket") or {}
    for bucket, consequence in (("unmastered", "SFT"), ("partial", "RL"), ("mastered", "the replay split")):
        if buckets and not buckets.get(bucket):
            notes.append(f"no {bucket} items: {consequence} gets nothing from this pool "
                         "(more samples, other data or another model would change that)")
    return notes


def run_summary(trained: dict, seconds: dict, *, probed: dict | None = None, exported: dict | None = None,
                heldout_items: int | None = None, seed: int = 0) -> dict:
    """RUN/summary.json: the run's numbers for machines (the report shows the same ones).

    `heldout.before` / `heldout.after`: pass@1 with its 95% interval over items, the verifier status
    counts (samples per status: correct, wrong, no_answer, timeout, error) and their `split` into
    correct / wrong / no_answer / other (stagewise.gain.status_split: no_answer is the format part of a
    change, wrong -> correct the answer part) at the first and the last checkpoint. `heldout.gain`: after
    minus before as a paired difference over held-out items, with a seeded paired bootstrap interval over
    items (stagewise.gain.paired_gain), not an interval built from two independent means.
    `wall_seconds`: per stage and the total."""
    evals = [StageEval.from_dict(e) for e in (trained or {}).get("evaluation") or []]
    evals = [ev for ev in evals if any(i.set == "heldout" for i in ev.items)]
    heldout: dict = {"items": heldout_items, "before": None, "after": None, "gain": None}

    def items(ev):
        return [i for i in ev.items if i.set == "heldout"]

    def point(ev) -> dict:
        row = value_of([ev], checkpoint=ev.checkpoint, set="heldout", group="all")
        statuses: dict[str, int] = {}
        for item in items(ev):
            for status, count in item.statuses.items():
                statuses[status] = statuses.get(status, 0) + int(count)
        return {"checkpoint": ev.checkpoint, "pass@1": row.value if row else None,
                "ci_low": row.ci_low if row else None, "ci_high": row.ci_high if row else None,
                "statuses": statuses, "split": status_split(items(ev))}

    if evals:
        first, last = evals[0], evals[-1]
        heldout["items"] = len(items(first))
        heldout["before"] = point(first)
        if last is not first:
            heldout["after"] = point(last)
            heldout["gain"] = paired_gain(items(first), items(last), seed)
    probe = (probed or {}).get("summary") or {}
    counts = (exported or {}).get("counts") or {}
    wall = {k: round(float(v), 2) for k, v in seconds.items()}
    wall["total"] = round(sum(wall.values()), 2)
    return {"heldout": heldout, "buckets": counts.get("buckets") or probe.get("buckets"),
            "splits": counts.get("splits"), "probe": {"items": probe.get("items"), "samples": probe.get("samples"),
                                                      "statuses": probe.get("statuses")},
            "moved_to_rl_by_reprobe": len((trained or {}).get("moved") or []),
            "skipped": (trained or {}).get("skipped") or {}, "wall_seconds": wall}


def headline(trained: dict, summary: dict | None = None) -> dict:
    """The numbers that matter: held-out pass@1 before and after, the paired gain with its interval,
    and the bucket that moved most."""
    evals = [StageEval.from_dict(e) for e in (trained or {}).get("evaluation") or []]
    if not evals:
        return {}
    first, last = evals[0].checkpoint, evals[-1].checkpoint
    out = {}
    before = value_of(evals, checkpoint=first, set="heldout", group="all")
    after = value_of(evals, checkpoint=last, set="heldout", group="all")
    if before is not None and after is not None:
        out["held-out pass@1 before"], out["held-out pass@1 after"] = before.value, after.value
    gain = ((summary or {}).get("heldout") or {}).get("gain") or {}
    if gain.get("mean") is not None:
        interval = (f"[{gain['ci_low']:+.3f}, {gain['ci_high']:+.3f}]" if gain.get("ci_low") is not None
                    else "(too few items for an interval)")
        out["held-out gain (paired, 95% CI)"] = f"{gain['mean']:+.3f} {interval} over {gain['n_items']} items"
    moves = []
    for group in ("unmastered", "partial", "mastered"):
        b = value_of(evals, checkpoint=first, set="export items", group=group)
        a = value_of(evals, checkpoint=last, set="export items", group=group)
        if b is not None and a is not None and b.value is not None and a.value is not None:
            moves.append((abs(a.value - b.value), group, b.value, a.value))
    if moves:
        _, group, b, a = max(moves)
        out["bucket that moved most"] = f"{group}: pass@1 {b:.3f} -> {a:.3f}"
    return out
