"""`eval`: pass@1 and unbiased pass@k with 95% intervals, per source, task and (given assignments) bucket.

It runs the probe machinery (same backends, prompts, seeds and verifiers), into a store on disk when
one is given (so an evaluation resumes like a probe) or into an in-memory store otherwise.

pass@1 is the mean over samples of each item, averaged over items; pass@k is Chen et al.'s unbiased
estimator per item, averaged over items. The 95% interval is over items (normal approximation of the
mean of per-item estimates, clipped to [0, 1]): with few items it is wide, as it should be. A group
with a single item falls back to the Wilson interval of its samples (pass@1 only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.probe import probe
from stagewise.curate.statistics import Z_95, pass_at_k, wilson_interval
from stagewise.curate.store import ProbeStore


@dataclass
class EvalResult:
    """`.table`: one row per group ("all", "source=...", "task=...", "bucket=...")."""

    table: object  # polars.DataFrame
    run_id: str
    summary: dict = field(default_factory=dict)
    ks: tuple = (1,)
    notes: list = field(default_factory=list)
    per_item: list = field(default_factory=list)  # {"id", "n", "c", "statuses": {status: count}} per item

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "ks": list(self.ks), "table": self.table.to_dicts(),
                "summary": self.summary, "notes": list(self.notes), "per_item": list(self.per_item)}


def _load_buckets(buckets) -> dict[str, str]:
    import polars as pl

    if buckets is None:
        return {}
    if isinstance(buckets, dict):
        return {str(k): str(v) for k, v in buckets.items()}
    if isinstance(buckets, pl.DataFrame):
        frame, where = buckets, "the buckets frame"
    else:
        where = str(buckets)
        try:
            frame = pl.read_parquet(where)
        except FileNotFoundError:
            raise InputError("assignments file not found", path=where,
                             fix="pass the assignments.parquet written by `stagewise export` or `stagewise route --out`") from None
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise InputError(f"cannot read as parquet ({type(exc).__name__})", path=where,
                             fix="pass an assignments.parquet file with columns id, bucket") from None
    missing = [c for c in ("id", "bucket") if c not in frame.columns]
    if missing:
        raise InputError(f"column '{missing[0]}' not found (columns: {', '.join(frame.columns)})", path=where,
                         column=missing[0], fix="pass an assignments file with columns id, bucket")
    return {str(i): str(b) for i, b in zip(frame["id"].to_list(), frame["bucket"].to_list())}


def _interval(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = Z_95 * math.sqrt(var / n)
    return max(0.0, mean - half), min(1.0, mean + half)


def group_table(per_item: list[dict], ks, groups: dict[str, list[str]]):
    """Rows of (group, n_items, n_samples, pass@1, ci_low, ci_high, pass@k, pass@k_ci_low, pass@k_ci_high)."""
    import polars as pl

    by_id = {r["id"]: r for r in per_item}
    rows = []
    for name, ids in groups.items():
        items = [by_id[i] for i in ids if i in by_id and by_id[i]["n"] > 0]
        row = {"group": name, "n_items": len(items), "n_samples": sum(r["n"] for r in items)}
        for k in ks:
            vals = [pass_at_k(n=r["n"], c=r["c"], k=k) for r in items]
            vals = [v for v in vals if v is not None]
            key = "pass@1" if k == 1 else f"pass@{k}"
            lo_key, hi_key = ("ci_low", "ci_high") if k == 1 else (f"{key}_ci_low", f"{key}_ci_high")
            if not vals:
                row.update({key: None, lo_key: None, hi_key: None})
                continue
            mean = sum(vals) / len(vals)
            if len(vals) == 1 and k == 1:
                lo, hi = wilson_interval(n=items[0]["n"], c=items[0]["c"])
            else:
                lo, hi = _interval(vals)
            row.update({key: mean, lo_key: lo, hi_key: hi})
        rows.append(row)
    return pl.DataFrame(rows)


def evaluate(model, problems, *, buckets=None, num_samples: int = 8, ks=(1, 4, 8), backend="hf",
             temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 512,
             system_prompt: str | None = None, prompt_template: str | None = None, seed: int = 0, store=None,
             batch_size: int = 32, limit: int | None = None, task: str | None = None,
             base_url: str | None = None, progress: bool = False, backend_args: dict | None = None,
             source_options: dict | None = None) -> EvalResult:
    """Sample `model` `num_samples` times per problem and report pass@1 / pass@k with 95% intervals
    per source, task and bucket (`buckets`: an assignments parquet path or a frame with id, bucket)."""
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1 (got {num_samples})")
    ks = tuple(sorted({int(k) for k in (ks or (1,))} | {1}))
    notes = []
    dropped = [k for k in ks if k > num_samples]
    if dropped:
        notes.append(f"pass@{','.join(map(str, dropped))} skipped: needs at least that many samples per item "
                     f"(--num-samples {num_samples})")
    ks = tuple(k for k in ks if k <= num_samples)
    bucket_of = _load_buckets(buckets)
    st = ProbeStore(":memory:") if store is None else store
    res = probe(problems, model=model, store=st, backend=backend, num_samples=num_samples,
                temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size,
                seed=seed, limit=limit, task=task, system_prompt=system_prompt, prompt_template=prompt_template,
                base_url=base_url, progress=progress, backend_args=backend_args,
                source_options=source_options)
    try:
        store_obj = res.store
        counts = store_obj.sample_counts(res.run_id)
        ids = res.item_ids
        problems_by_id = {p.id: p for p in store_obj.problems(ids)}
        statuses = store_obj.status_counts(res.run_id)
    finally:
        if store is None:
            res.store.close()
        elif not hasattr(store, "con"):
            res.close()
    per_item = [{"id": pid, "n": counts.get(pid, (0, 0))[0], "c": counts.get(pid, (0, 0))[1],
                 "statuses": statuses.get(pid, {})} for pid in ids]
    groups: dict[str, list[str]] = {"all": list(ids)}
    for kind, attr in (("source", "source"), ("task", "task")):
        values: dict[str, list[str]] = {}
        for pid in ids:
            p = problems_by_id.get(pid)
            values.setdefault(f"{kind}={getattr(p, attr, '') or '?'}", []).append(pid)
        if len(values) > 1 or kind == "task":
            groups.update(dict(sorted(values.items())))
    if bucket_of:
        values = {}
        for pid in ids:
            values.setdefault(f"bucket={bucket_of.get(pid, 'unassigned')}", []).append(pid)
        order = {"bucket=unmastered": 0, "bucket=partial": 1, "bucket=mastered": 2}
        groups.update(dict(sorted(values.items(), key=lambda kv: (order.get(kv[0], 3), kv[0]))))
        unassigned = len(values.get("bucket=unassigned", []))
        if unassigned:
            notes.append(f"{unassigned} item(s) not in the assignments file are grouped as bucket=unassigned")
    unverified = [r["id"] for r in per_item if r["n"] == 0]
    if unverified:
        notes.append(f"{len(unverified)} item(s) have no verified sample (verifier timeout/error) and are left out")
    table = group_table(per_item, ks, groups)
    return EvalResult(table=table, run_id=res.run_id, summary=res.summary, ks=ks, notes=notes, per_item=per_item)
