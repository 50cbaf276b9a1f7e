"""The rounds of the two-stage trainer: SFT -> (full re-probe) -> RL, repeated `rounds` times.

Each round trains SFT on the pool's SFT set, re-probes every SFT and RL item with the SFT model and
re-routes it with the export's own router (train/reprobe.py), trains RL on the items now in RL while
recording each prompt's groups (train/loop.py GroupLedger), and hands RL's all-wrong prompts to the next
round's SFT set (train/loop.py ItemPool). The step settings (`max_steps`, ...) apply per stage per round.

Layout: with one round OUT/sft, OUT/reprobe, OUT/rl (as before); with several, OUT/round-<r>/{sft,
reprobe,rl}. OUT/transitions.parquet (round, before, after, count) and OUT/rounds.parquet (id, round,
bucket, stage, reason) are written after every round; in rounds.parquet `stage` is the stages the item
trained in that round ("sft", "rl", "sft+rl"), or, when it trained in none, where the re-probe put it. Every stage resumes: a finished stage is reused,
the re-probe resumes from its store, and RL's per-prompt groups are kept in OUT/.../rl/groups.parquet so
a resumed loop builds the same next SFT set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.errors import ConfigError
from stagewise.stages.contract import item_problem
from stagewise.train.loop import GroupLedger, ItemPool, PromptGroups
from stagewise.train.reprobe import full_reprobe


@dataclass
class RoundsResult:
    sft: list = field(default_factory=list)  # TrainResult per round that ran SFT
    rl: list = field(default_factory=list)  # TrainResult per round that ran RL
    reprobes: list = field(default_factory=list)  # train/reprobe.py ReprobeResult per round
    transitions: list = field(default_factory=list)  # {round, before, after, count}
    rounds: list = field(default_factory=list)  # {id, round, bucket, stage, reason}
    groups: list = field(default_factory=list)  # per round: the RL ledger's totals
    moved: list = field(default_factory=list)  # ids that joined RL at a re-probe (any round)
    skipped: list = field(default_factory=list)  # "round r: stage skipped: why" per stage that had no items
    model_dir: str | None = None


def stage_dir(out: Path, rounds: int, round_: int, stage: str) -> Path:
    return out / stage if rounds == 1 else out / f"round-{round_}" / stage


def run_rounds(export, model, out, *, sft_rows: list[dict], rl_rows: list[dict], rounds: int = 1,
               reprobe: bool = False, reprobe_sample: int | None = None, train_sft_stage, train_rl_stage,
               evaluate=None, dry_run: bool = False, progress: bool = True) -> RoundsResult:
    """Run the rounds. `train_sft_stage(model, out, rows)` and `train_rl_stage(model, out, rows, ledger)`
    train one stage and return its TrainResult; `evaluate(model_dir, label)` (optional) evaluates a
    checkpoint. `sft_rows` / `rl_rows`: the export's SFT rows (held-out ones already removed) and RL rows."""
    if rounds < 1:
        raise ConfigError(f"--rounds {rounds} must be at least 1")
    out = Path(out)
    manifest = export.manifest
    probe_cfg = dict(manifest.probe) if manifest is not None else {}
    route = dict(manifest.route) if manifest is not None else {"policy": "stage"}
    buckets = _assigned_buckets(export)
    pool = ItemPool(sft_rows, rl_rows, buckets, prompting={k: probe_cfg.get(k) for k in
                                                           ("system_prompt", "prompt_template")})
    result = RoundsResult()
    current = model
    for r in range(1, rounds + 1):
        pool.start_round()
        label = "" if rounds == 1 else f"round {r} "
        sft_set = pool.sft_rows()
        if not sft_set and r > 1:
            result.skipped.append(f"round {r}: SFT skipped, no item for SFT (none all wrong in RL or "
                                  "unmastered at the re-probe)")
        if sft_set:
            res = train_sft_stage(current, stage_dir(out, rounds, r, "sft"), sft_set)
            result.sft.append(res)
            if not dry_run:
                current = res.model_dir
                if evaluate is not None:
                    evaluate(current, f"{label}after SFT")
        if reprobe and not dry_run:
            problems = _problems(pool)
            rep = full_reprobe(problems, pool.before(), current, stage_dir(out, rounds, r, "reprobe"),
                               route=route, probe_cfg=probe_cfg, sampling=export.sampling, round_=r,
                               sample=reprobe_sample, has_demo=pool.demo_check(), progress=progress)
            pool.apply_reprobe(rep.moves)
            result.reprobes.append(rep)
            result.transitions += rep.transitions
            result.moved += [m.id for m in rep.moves if m.joined_rl]
        rl_set = pool.rl_rows()
        if not rl_set and (rl_rows or result.moved or reprobe):
            result.skipped.append(f"round {r}: RL skipped, no item in the RL band"
                                  + (" after the re-probe" if reprobe and not dry_run else ""))
        ledger = GroupLedger()
        if rl_set:
            rl_out = stage_dir(out, rounds, r, "rl")
            res = train_rl_stage(current, rl_out, rl_set, ledger)
            result.rl.append(res)
            if not dry_run:
                _keep_groups(ledger, rl_out, r)
                current = res.model_dir
                if evaluate is not None:
                    evaluate(current, f"{label}after RL")
        if dry_run:
            break
        result.groups.append({"round": r, **ledger.totals()})
        result.rounds += pool.finish_round(r, ledger)
        write_rows(result.transitions, out / "transitions.parquet", TRANSITION_COLUMNS)
        write_rows(result.rounds, out / "rounds.parquet", ROUND_COLUMNS)
    result.model_dir = None if dry_run else current
    return result


TRANSITION_COLUMNS = {"round": "int64", "before": "string", "after": "string", "count": "int64"}
ROUND_COLUMNS = {"id": "string", "round": "int64", "bucket": "string", "stage": "string", "reason": "string"}
GROUP_COLUMNS = {"id": "string", "round": "int64", "groups": "int64", "zero_variance": "int64",
                 "all_wrong": "int64", "all_right": "int64"}


def write_rows(rows: list[dict], path: Path, columns: dict) -> None:
    """Rows as parquet with a fixed schema (an empty table keeps its columns), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns.items()])
    table = pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows], schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _keep_groups(ledger, rl_out: Path, round_: int) -> None:
    """Write the ledger beside the RL stage, or read it back when the stage was reused from an earlier
    run (a finished stage does not train again, so it records nothing this time)."""
    path = rl_out / "groups.parquet"
    if ledger.by_id:
        write_rows(ledger.rows(round_), path, GROUP_COLUMNS)
    elif path.exists():
        import pyarrow.parquet as pq

        for row in pq.read_table(path).to_pylist():
            ledger.by_id[row["id"]] = PromptGroups(row["groups"], row["zero_variance"], row["all_wrong"],
                                                   row["all_right"])


def _problems(pool) -> dict:
    """{id: Problem} for every pool item, each carrying its row's exact prompt messages."""
    return {i: item_problem(it.rl_row, format="trl", split="rl") for i, it in pool.items.items()}


def _assigned_buckets(export) -> dict:
    path = export.root / "assignments.parquet"
    if export.single_file is not None or not path.exists():
        return {}
    import pyarrow.parquet as pq

    return {str(r["id"]): r.get("bucket") for r in pq.read_table(path, columns=["id", "bucket"]).to_pylist()}
