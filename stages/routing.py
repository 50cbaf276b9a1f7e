"""Routing: decide, per probed item, which stage of post-training it belongs to (docs/DESIGN.md, "Stages and policies").

Each policy is a small class with a common base. `Router.decide(items)` returns one `Decision`
(bucket, stage, reason) per item; the bucket never depends on the policy: it is decided on c against n
(c = 0 unmastered, 0 < c < n partial, c = n mastered). `route()` reads a probe store, applies the
cross-policy options (`require_samples` first, then `keep_mastered`), runs the policy on the rest and
returns the assignments table that `export` writes as assignments.parquet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import NamedTuple

from stagewise.curate import statistics as S
from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.statistics import bucket, mastery_row, pass_at_ks
from stagewise.curate.store import VERIFIED, ProbeStore, canonical_config

BUCKETS = ("unmastered", "partial", "mastered")
STAGES = ("sft", "rl", "both", "replay", "replay-sft", "drop", "unrouted")  # replay-sft: stages/replay.py
# Below this many rows a split trains on too little to mean anything; the summary says so.
TINY_SPLIT = 8
NO_DEMO = "no verified demonstration"  # how export marks SFT items it could not give a target
UNVERIFIED = "unverified"  # the summary's row for items with no verified sample (no bucket)
# What a sample cut off at max_new_tokens (finish = length) counts as: `wrong` (what RL's reward does
# with it) or `exclude` (it leaves n, as DAPO's overlong filtering drops it from the loss).
TRUNCATED = ("wrong", "exclude")
# Above this share of truncated samples in a bucket, the probe's token budget is shaping the buckets.
TRUNCATION_WARN = 0.2


@dataclass(frozen=True, kw_only=True)
class Item:
    """The statistics a router sees for one item: id, n samples drawn, c correct (keyword-only, like
    every count in curate/statistics.py)."""

    id: str
    n: int
    c: int

    @property
    def p_hat(self) -> float:
        return self.c / self.n if self.n else 0.0

    @property
    def bucket(self) -> str:
        return bucket(n=self.n, c=self.c)

    @property
    def tally(self) -> str:
        return f"{self.c}/{self.n} correct"


@dataclass(frozen=True)
class Decision:
    """What a router says about one item: its bucket (policy-independent), stage and reason in words."""

    bucket: str | None
    stage: str
    reason: str


class Router:
    """Base policy. Subclasses set `name`, `rule` (the routing rule in words, used by the data card)
    and implement `decide_one`; policies that need the whole pool (random) override `decide`."""

    name = "base"
    rule = ""
    # True when `decide_one` looks at n and c only (never the id): `decide` then decides each distinct
    # (n, c) once. A pool of a million items with 16 samples has at most 153 of them.
    by_counts = False

    def decide_one(self, item: Item) -> Decision:
        """The bucket, stage and reason of one item (policies that need the whole pool override `decide`)."""
        raise TypeError(f"policy {self.name} routes the whole pool at once; call decide(items)")

    def decide(self, items: list[Item]) -> list[Decision]:
        if not self.by_counts:
            return [self.decide_one(it) for it in items]
        seen: dict[tuple[int, int], Decision] = {}
        out = []
        for it in items:
            d = seen.get((it.n, it.c))
            if d is None:
                d = seen[(it.n, it.c)] = self.decide_one(it)
            out.append(d)
        return out

    def config(self) -> dict:
        return {"policy": self.name}


class StageRouter(Router):
    """The default: c = 0 → SFT, 0 < c < n → RL, c = n → dropped."""

    name = "stage"
    by_counts = True
    rule = ("c = 0 (no sample correct) → SFT, which needs a verified demonstration; 0 < c < n → RL; "
            "c = n (every sample correct) → dropped: an all-0 or all-1 group gives GRPO zero advantage")

    def decide_one(self, item: Item) -> Decision:
        stage = {"unmastered": "sft", "partial": "rl", "mastered": "drop"}[item.bucket]
        why = {"sft": "→ SFT: RL would see only zero rewards",
               "rl": "→ RL: reachable by sampling",
               "drop": "→ dropped: nothing left to learn"}[stage]
        return Decision(item.bucket, stage, f"{item.tally} {why}")


class BandRouter(Router):
    """open-r1's pass-rate filter: p̂ strictly inside (low, high) → RL, everything else dropped."""

    name = "band"
    by_counts = True

    def __init__(self, low: float | None = None, high: float | None = None):
        self.low = 0.0 if low is None else float(low)
        self.high = 1.0 if high is None else float(high)
        problems = []
        if not 0.0 <= self.low <= 1.0:
            problems.append(f"--low {self.low} is outside [0, 1]")
        if not 0.0 <= self.high <= 1.0:
            problems.append(f"--high {self.high} is outside [0, 1]")
        if self.low >= self.high:
            problems.append(f"--low {self.low} ≥ --high {self.high} leaves an empty band")
        if problems:
            raise ConfigError("policy band: " + "; ".join(problems)
                              + "; pass 0 ≤ --low < --high ≤ 1, e.g. --low 0.1 --high 0.9")
        self.rule = (f"p̂ = c/n strictly between low {self.low:g} and high {self.high:g} → RL; "
                     "everything else dropped (open-r1's pass-rate filter)")

    def decide_one(self, item: Item) -> Decision:
        p = item.p_hat
        if p <= self.low:
            return Decision(item.bucket, "drop", f"{item.tally}: p̂ {p:.2f} ≤ low {self.low:g}")
        if p >= self.high:
            return Decision(item.bucket, "drop", f"{item.tally}: p̂ {p:.2f} ≥ high {self.high:g}")
        return Decision(item.bucket, "rl",
                        f"{item.tally}: p̂ {p:.2f} in ({self.low:g}, {self.high:g}) → RL")

    def config(self) -> dict:
        return {"policy": self.name, "low": self.low, "high": self.high}


class AllRouter(Router):
    """The classic pipeline: every item to RL, and to SFT as well where a verified demonstration exists.

    Routing cannot know which demonstrations verify; it marks every item `both` and `export` turns an
    item without a verified demonstration into `rl` (saying so in the reason)."""

    name = "all"
    by_counts = True
    rule = "every item → RL; every item with a verified demonstration → SFT as well (stage both)"

    def decide_one(self, item: Item) -> Decision:
        return Decision(item.bucket, "both", f"{item.tally}: policy all → SFT and RL")


class SftOnlyRouter(Router):
    name = "sft-only"
    by_counts = True
    rule = "every item → SFT (needs a verified demonstration)"

    def decide_one(self, item: Item) -> Decision:
        return Decision(item.bucket, "sft", f"{item.tally}: policy sft-only → SFT")


class RlOnlyRouter(Router):
    name = "rl-only"
    by_counts = True
    rule = "every item → RL"

    def decide_one(self, item: Item) -> Decision:
        return Decision(item.bucket, "rl", f"{item.tally}: policy rl-only → RL")


class RandomRouter(Router):
    """The control: the pool sizes `stage` would produce, filled by a seeded random draw."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.rule = (f"the SFT / RL / dropped pool sizes of policy stage, filled at random "
                     f"(seed {self.seed}): a control that keeps the sizes and removes the mastery signal")

    def decide(self, items: list[Item]) -> list[Decision]:
        stages = [StageRouter().decide_one(it).stage for it in items]
        random.Random(self.seed).shuffle(stages)
        return [Decision(it.bucket, s, f"{it.tally}: random draw (seed {self.seed}) → {s}")
                for it, s in zip(items, stages)]

    def config(self) -> dict:
        return {"policy": self.name, "seed": self.seed}


class ReliftRouter(Router):
    """ReLIFT's buckets on p̂: hardest (0) → SFT, hard/medium (0, 0.75) → RL, easy (≥ 0.75) dropped."""

    name = "relift"
    by_counts = True
    rule = ("ReLIFT's buckets on p̂: hardest (p̂ = 0) → SFT; hard (0 < p̂ ≤ 0.25) and medium "
            "(0.25 < p̂ < 0.75) → RL; easy (p̂ ≥ 0.75) → dropped")

    def decide_one(self, item: Item) -> Decision:
        p = item.p_hat
        if p == 0:
            return Decision(item.bucket, "sft", f"{item.tally}: p̂ 0 (hardest) → SFT")
        if p <= 0.25:
            return Decision(item.bucket, "rl", f"{item.tally}: p̂ {p:.2f} ≤ 0.25 (hard) → RL")
        if p < 0.75:
            return Decision(item.bucket, "rl", f"{item.tally}: p̂ {p:.2f} < 0.75 (medium) → RL")
        return Decision(item.bucket, "drop", f"{item.tally}: p̂ {p:.2f} ≥ 0.75 (easy) → dropped")


POLICIES = {cls.name: cls for cls in
            (StageRouter, BandRouter, AllRouter, SftOnlyRouter, RlOnlyRouter, RandomRouter, ReliftRouter)}


def make_router(policy: str = "stage", *, low: float | None = None, high: float | None = None,
                seed: int = 0) -> Router:
    """Build a policy by name; thresholds only for `band`, the seed only for `random`."""
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    if policy != "band" and (low is not None or high is not None):
        raise ConfigError(f"--low/--high only apply to --policy band (got --policy {policy}); "
                          "drop them or pass --policy band")
    if policy == "band":
        return BandRouter(low, high)
    if policy == "random":
        return RandomRouter(seed)
    return POLICIES[policy]()


def check_options(*, keep_mastered: int = 0, require_samples: int | None = None,
                  truncated: str = "wrong") -> None:
    """ConfigError for a negative --keep-mastered, a --require-samples below 1 or an unknown --truncated."""
    if truncated not in TRUNCATED:
        raise ConfigError(f"--truncated {truncated!r}: choose wrong (a cut-off sample counts as wrong, as in "
                          "RL's reward) or exclude (it leaves n)")
    if keep_mastered < 0:
        raise ConfigError(f"--keep-mastered {keep_mastered} is negative; pass 0 or more")
    if require_samples is not None and require_samples < 1:
        raise ConfigError(f"--require-samples {require_samples} must be at least 1")


def assign(items: list[Item], router: Router, *, keep_mastered: int = 0,
           require_samples: int | None = None, seed: int = 0, too_few: dict | None = None) -> list[Decision]:
    """Route `items` with `router` after the cross-policy options; one Decision per item, in order.

    Items probed fewer than `require_samples` times are unrouted (not guessed); then up to
    `keep_mastered` mastered items, drawn with `seed`, become the replay split (never RL: an
    all-correct group has zero advantage); the policy routes the rest. `too_few` ({id: reason}) unrouts
    items left with too few usable samples once truncated ones are excluded."""
    check_options(keep_mastered=keep_mastered, require_samples=require_samples)
    decisions: dict[int, Decision] = {}
    for i, it in enumerate(items):
        if too_few and it.id in too_few:
            decisions[i] = Decision(it.bucket, "unrouted", too_few[it.id])
        elif it.n == 0:
            decisions[i] = Decision(it.bucket, "unrouted", "no verified sample (every sample timed out or "
                                                           "errored): nothing to route on; re-probe it")
        elif require_samples is not None and it.n < require_samples:
            decisions[i] = Decision(it.bucket, "unrouted", f"probed {it.n} times ({it.tally}), fewer than "
                                                f"--require-samples {require_samples}: probe it more")
    mastered = [i for i, it in enumerate(items) if i not in decisions and it.bucket == "mastered"]
    if keep_mastered and mastered:
        for i in sorted(random.Random(seed).sample(mastered, min(keep_mastered, len(mastered)))):
            decisions[i] = Decision(items[i].bucket, "replay",
                                    f"{items[i].tally}: kept for replay (--keep-mastered {keep_mastered}) "
                                    "to measure forgetting; never RL")
    rest = [i for i in range(len(items)) if i not in decisions]
    for i, d in zip(rest, router.decide([items[i] for i in rest])):
        decisions[i] = d
    return [decisions[i] for i in range(len(items))]


def _too_few_usable(items: list[Item], truncation: dict, require_samples: int | None) -> dict[str, str]:
    """{id: reason} for items with fewer than `require_samples` (default 2) samples left after the
    truncated ones were excluded."""
    need = require_samples or 2
    out = {}
    for it in items:
        total, cut, _, _ = truncation.get(it.id, (0, 0, 0, 0))
        if cut and it.n < need:
            out[it.id] = (f"{cut} of {total} samples cut at max_new_tokens and excluded (--truncated exclude): "
                          f"{it.n} usable, fewer than {need}; probe with a larger --max-new-tokens")
    return out


# --------------------------------------------------------------------------------------- the store side

def open_store(store, read_only: bool = True):
    """A ProbeStore from a path, or the store itself; a missing file is an InputError, not a new store."""
    from pathlib import Path

    if isinstance(store, ProbeStore):
        return store, False
    path = Path(store)
    if not path.exists():
        raise InputError("probe store does not exist", path=str(path),
                         fix="run `stagewise probe ... --store PATH` first, or check --store")
    return ProbeStore(str(path), read_only=read_only), True


def resolve_run(store, run_id: str | None = None) -> str:
    """The run to route: the given one, or the only one. Several runs (for example different models
    merged into one store) are never guessed; the error lists them."""
    # The run ids alone first: `runs()` counts every run's samples, a scan of the whole store, which
    # only the error messages below need.
    ids = [str(r[0]) for r in store.con.execute("SELECT run_id FROM runs ORDER BY created_at, run_id").fetchall()]
    if len(ids) == 1 and (run_id is None or str(run_id) == ids[0]):
        return ids[0]
    runs = store.runs()
    ids = [str(r) for r in runs["run_id"].to_list()] if len(runs) else []
    where = getattr(store, "path", "the store")
    if not ids:
        raise InputError("the store holds no probe run", path=str(where),
                         fix="run `stagewise probe SPEC --store PATH` first")
    if run_id is not None:
        if str(run_id) not in ids:
            raise ConfigError(f"--run-id {run_id!r} is not in {where}; runs: {describe_runs(runs)}")
        return str(run_id)
    if len(ids) > 1:
        models = {str(m) for m in runs["model"].to_list()} if "model" in runs.columns else set()
        what = f"{len(ids)} probe runs" + (f" of {len(models)} different models" if len(models) > 1 else "")
        raise ConfigError(f"{where} holds {what}; pick one with --run-id: {describe_runs(runs)}")
    return ids[0]


def describe_runs(runs) -> str:
    """'ID (model M, N items)' for each run of a store's `runs()` frame."""
    parts = []
    for r in runs.iter_rows(named=True):
        bits = [f"model {r['model']}" if r.get("model") else None,
                f"{r['n_problems']} items" if r.get("n_problems") is not None else None]
        bits = [b for b in bits if b]
        parts.append(f"{r['run_id']} ({', '.join(bits)})" if bits else str(r["run_id"]))
    return "; ".join(parts)


def model_name(cfg: dict) -> str | None:
    """The model's name from a run config (a name, or an identity dict)."""
    model = cfg.get("model")
    if isinstance(model, dict):
        return model.get("name") or model.get("model")
    return model


ORDERS = ("p_hat-asc", "p_hat-desc", "source")
# Keys of a run config that may differ between runs whose samples are pooled: the seed (each run draws
# its own samples) and how many were drawn. Everything else (model, sampling, prompting, verifier
# override) must match, or the pooled c/n would mix two different experiments.
POOLABLE_KEYS = frozenset({"seed", "num_samples", "adaptive", "k_max"})


def route(store, *, run_id: str | None = None, runs=None, policy: str = "stage", low: float | None = None,
          high: float | None = None, keep_mastered: int = 0, require_samples: int | None = None,
          seed: int = 0, truncated: str = "wrong", by_model: bool = False, order: str | None = None, out=None):
    """Route every item of one probe run; return the assignments (polars DataFrame): id, task, source,
    bucket, stage, reason, n, c, p_hat, posterior_mean, difficulty, ci_low, ci_high, pass_at_{k}, run_id.

    `store` is a path or a ProbeStore; `out` optionally writes the table as parquet (atomically).
    `runs` (a list or "ID,ID") pools the samples of several runs of the same model and sampling (two
    seeds, or more samples later) instead of one `run_id`; runs that differ are refused, naming the
    keys. `by_model` adds `p_hat:<model>` and `n:<model>` columns for every model in the store (its
    most recent run; the routed runs for their own model). `order` sorts the rows: p_hat-asc,
    p_hat-desc (ties by id) or source (then id); by default rows are sorted by id.
    `difficulty` = 1 - posterior_mean, a weight samplers can use.
    `truncated`: "wrong" (default) or "exclude" (samples cut at max_new_tokens leave n).
    Example: `sw.route("run.duckdb", policy="band", low=0.1, high=0.9)`.
    """
    router = make_router(policy, low=low, high=high, seed=seed)
    check_options(keep_mastered=keep_mastered, require_samples=require_samples, truncated=truncated)
    check_order(order)
    st, opened = open_store(store)
    try:
        rid, rids, mastery = read_mastery(st, run_id=run_id, runs=runs)
        problems = _task_and_source(st, mastery["problem_id"].to_list()) if len(mastery) else {}
        if truncated == "exclude" and len(rids) > 1:
            raise ConfigError("--truncated exclude reads one run's finish reasons; route pooled --runs with "
                              "--truncated wrong, or route one run at a time")
        truncation = truncation_counts(st, rids[0]) if len(rids) == 1 else None
        per_model = model_columns(st, rids, mastery) if by_model else None
    finally:
        if opened:
            st.close()
    table = assignments_from_mastery(mastery, problems, router, keep_mastered=keep_mastered,
                                     require_samples=require_samples, seed=seed, run_id=rid,
                                     truncation=truncation, truncated=truncated)
    if per_model is not None:
        table = table.join(per_model, on="id", how="left")
    table = order_assignments(table, order)
    if out is not None:
        write_parquet_atomic(table, out)
    return table


class _TaskSource(NamedTuple):
    task: str | None
    source: str | None


def _task_and_source(store, ids) -> dict:
    """{id: (task, source)}: all that routing reads of a problem (not its prompt and solution texts)."""
    cols = store.con.sql("SELECT id, task, source FROM problems WHERE id IN (SELECT unnest(?::VARCHAR[]))",
                         params=[list(ids)]).to_arrow_table().columns
    pids, tasks, sources = (c.to_pylist() for c in cols)
    return dict(zip(pids, map(_TaskSource, tasks, sources)))
@dataclass
class Routed:
    """`route`'s assignments with their summary (buckets x stages, warnings), as `stagewise route` shows them."""

    assignments: object  # polars DataFrame, see `route`
    summary: RouteSummary
    run_id: str | None
    policy: str
    out: str | None = None

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "policy": self.policy, "summary": self.summary.to_dict(),
                "assignments": self.assignments.to_dicts(), "out": self.out, "warnings": self.summary.warnings}


def route_with_summary(store, *, run_id: str | None = None, runs=None, policy: str = "stage",
                       keep_mastered: int = 0, out=None, **options) -> Routed:
    """`route`, plus its summary; the truncation warnings name the probe's --max-new-tokens (one run)."""
    assignments = route(store, run_id=run_id, runs=runs, policy=policy, keep_mastered=keep_mastered, out=out,
                        **options)
    max_new_tokens = probe_max_new_tokens(store, run_id) if not runs else None
    summary = route_summary(assignments, policy, keep_mastered=keep_mastered, max_new_tokens=max_new_tokens)
    rid = assignments["run_id"][0] if len(assignments) and "run_id" in assignments.columns else run_id
    return Routed(assignments, summary, rid, policy, out)


def probe_max_new_tokens(store, run_id: str | None = None) -> int | None:
    """The probe's max_new_tokens (for warnings that name it); None when unknown."""
    st, opened = open_store(store)
    try:
        cfg = st.run(resolve_run(st, run_id))
    finally:
        if opened:
            st.close()
    return (cfg.get("sampling") or {}).get("max_new_tokens")
def read_mastery(st, *, run_id: str | None = None, runs=None):
    """(run label, run ids, mastery frame): one run's view, or the pooled statistics of `runs`."""
    if run_id is not None and runs:
        raise ConfigError("pass --run-id or --runs, not both")
    if runs:
        rids = resolve_runs(st, runs)
        return ",".join(rids), rids, pooled_mastery(st, rids)
    rid = resolve_run(st, run_id)
    return rid, [rid], st.mastery(rid)


def mark_contaminated(assignments, hits: dict, ngram: int):
    """Items sharing an n-gram with a benchmark (`hits`: {id: [Match]}) become unrouted, with the reason
    "contaminated: 8-gram overlap with gsm8k/test#123"; their bucket stays what it was."""
    import polars as pl

    if not hits:
        return assignments
    ids = assignments["id"].to_list()
    stage = [("unrouted" if i in hits else s) for i, s in zip(ids, assignments["stage"].to_list())]
    reason = [(hits[i][0].reason(ngram) if i in hits else r) for i, r in zip(ids, assignments["reason"].to_list())]
    return assignments.with_columns(pl.Series("stage", stage, pl.Utf8), pl.Series("reason", reason, pl.Utf8))


def check_order(order: str | None) -> None:
    if order is not None and order not in ORDERS:
        raise ConfigError(f"--order {order!r} is not one of {', '.join(ORDERS)}")


def order_assignments(table, order: str | None):
    """Rows in curriculum order: by p̂ ascending or descending (ties by id), or by source; else by id."""
    check_order(order)
    if order is None or not len(table):
        return table
    if order == "source":
        return table.sort("source", "id", nulls_last=True)
    return table.sort("p_hat", "id", descending=[order == "p_hat-desc", False], nulls_last=True)


def _parse_runs(runs) -> list[str]:
    if isinstance(runs, str):
        runs = runs.split(",")
    return list(dict.fromkeys(str(r).strip() for r in runs if str(r).strip()))


def resolve_runs(store, runs) -> list[str]:
    """The runs to pool, checked: each in the store, same model and sampling, different seeds."""
    import json

    wanted = _parse_runs(runs)
    table = store.runs()
    known = {str(r) for r in table["run_id"].to_list()} if len(table) else set()
    missing = [r for r in wanted if r not in known]
    if missing:
        raise ConfigError(f"--runs: {', '.join(missing)} not in {getattr(store, 'path', 'the store')}; "
                          f"runs: {describe_runs(table) or 'none'}")
    if not wanted:
        raise ConfigError("--runs names no run; pass run ids separated by commas")
    configs = {r: json.loads(c) for r, c in zip(table["run_id"].to_list(), table["config"].to_list())
               if r in wanted}
    first = wanted[0]
    base = _flat({k: v for k, v in canonical_config(configs[first]).items() if k not in POOLABLE_KEYS})
    for other in wanted[1:]:
        mine = _flat({k: v for k, v in canonical_config(configs[other]).items() if k not in POOLABLE_KEYS})
        differ = sorted(k for k in set(base) | set(mine) if base.get(k) != mine.get(k))
        if differ:
            raise ConfigError(f"cannot pool runs {first} and {other}: they differ in {', '.join(differ)}; "
                              "pool only runs of the same model and sampling (route them one at a time, "
                              "or with --by-model for a column per model)")
        if configs[first].get("seed") == configs[other].get("seed"):
            raise ConfigError(f"cannot pool runs {first} and {other}: both use seed {configs[first].get('seed')}, "
                              "so they drew the same samples; pool runs probed with different --seed")
    return wanted


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def pooled_mastery(store, run_ids: list[str]):
    """The mastery view's columns for the samples of several runs counted together (n and c summed)."""
    import polars as pl

    verified = ", ".join(f"'{s}'" for s in VERIFIED)
    rows = store.con.execute(f"""
        SELECT problem_id, count(*) FILTER (WHERE status IN ({verified})) AS n,
               count(*) FILTER (WHERE status = 'correct') AS c, count(*) AS n_samples,
               count(*) FILTER (WHERE status NOT IN ({verified})) AS n_unverified
        FROM samples WHERE run_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY problem_id ORDER BY problem_id
    """, [list(run_ids)]).fetchall()
    ks = pass_at_ks(n=max((int(r[1]) for r in rows), default=1))
    records = []
    for pid, n, c, n_samples, n_unverified in rows:
        stats = mastery_row(n=int(n), c=int(c), ks=ks)
        if not n:
            stats["p_hat"] = None
        records.append({"run_id": ",".join(run_ids), "problem_id": pid, **stats, "n_samples": int(n_samples),
                        "n_unverified": int(n_unverified)})
    schema = {"run_id": pl.Utf8, "problem_id": pl.Utf8, "n": pl.Int64, "c": pl.Int64, "p_hat": pl.Float64,
              "posterior_mean": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              **{f"pass_at_{k}": pl.Float64 for k in ks}, "n_samples": pl.Int64, "n_unverified": pl.Int64}
    return pl.DataFrame(records, schema=schema)


def model_columns(store, routed: list[str], routed_mastery):
    """`p_hat:<model>` and `n:<model>` per model in the store: the routed runs for their model, the most
    recent run for every other model."""
    import polars as pl

    runs = store.runs().sort("created_at", descending=True)
    latest: dict[str, str] = {}
    for rid, model in zip(runs["run_id"].to_list(), runs["model"].to_list()):
        latest.setdefault(str(model), rid)
    routed_model = {str(m) for r, m in zip(runs["run_id"].to_list(), runs["model"].to_list()) if r in routed}
    out = None
    for model, rid in sorted(latest.items()):
        frame = routed_mastery if model in routed_model else store.mastery(rid)
        cols = frame.select(pl.col("problem_id").alias("id"), pl.col("p_hat").cast(pl.Float64).alias(f"p_hat:{model}"),
                            pl.col("n").cast(pl.Int64).alias(f"n:{model}"))
        out = cols if out is None else out.join(cols, on="id", how="full", coalesce=True)
    return out


def write_parquet_atomic(frame, path) -> None:
    """Write a polars frame to parquet via a temp file + rename: readers never see half a file."""
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def truncation_counts(store, run_id: str) -> dict[str, tuple[int, int, int, int]]:
    """{problem_id: (samples, truncated, truncated and verified, truncated and correct)} of one run;
    truncated = cut off at max_new_tokens (finish_reason = length)."""
    verified = ", ".join(f"'{s}'" for s in VERIFIED)
    # Through Arrow, column by column: a million fetched row tuples cost more than the query.
    cols = store.con.sql(
        "SELECT problem_id::VARCHAR, count(*), count(*) FILTER (WHERE finish_reason = 'length'), "
        f"count(*) FILTER (WHERE finish_reason = 'length' AND status IN ({verified})), "
        "count(*) FILTER (WHERE finish_reason = 'length' AND status = 'correct') "
        "FROM samples WHERE run_id = ? GROUP BY problem_id", params=[run_id]).to_arrow_table().columns
    ids, *counts = (c.to_pylist() for c in cols)
    return dict(zip(ids, zip(*counts)))


def exclude_truncated(mastery, truncation: dict):
    """The mastery frame with samples cut at max_new_tokens taken out of n and c, and every statistic
    (p̂, posterior mean, Wilson interval, pass@k) recomputed on what is left."""
    import polars as pl

    pass_cols = [c for c in mastery.columns if c.startswith("pass_at_")]
    rows = []
    for r in mastery.iter_rows(named=True):
        _, _, t_ver, t_cor = truncation.get(str(r["problem_id"]), (0, 0, 0, 0))
        n, c = int(r["n"]) - t_ver, int(r["c"]) - t_cor
        low, high = S.wilson_interval(n=n, c=c)
        rows.append({**r, "n": n, "c": c, "p_hat": S.p_hat(n=n, c=c), "posterior_mean": S.posterior_mean(n=n, c=c),
                     "ci_low": low, "ci_high": high,
                     **{k: S.pass_at_k(n=n, c=c, k=int(k[8:])) for k in pass_cols}})
    return pl.DataFrame(rows, schema=mastery.schema) if rows else mastery


def assignments_from_mastery(mastery, problems: dict, router: Router, *, keep_mastered: int = 0,
                             require_samples: int | None = None, seed: int = 0, run_id: str | None = None,
                             truncation: dict | None = None, truncated: str = "wrong"):
    """The assignments table from a mastery frame (one row per problem) and the problems by id.

    `truncation` ({id: (samples, truncated, truncated verified, truncated correct)}, from
    `truncation_counts`) adds the columns n_samples and n_truncated; with `truncated="exclude"` the
    truncated samples leave n and c, and an item left with fewer than `require_samples` (default 2: one
    sample cannot show a mix) usable samples is unrouted with that reason."""
    import polars as pl

    mastery = mastery.sort("problem_id")  # a stable order, so seeded draws repeat across runs
    if truncated == "exclude" and truncation:
        mastery = exclude_truncated(mastery, truncation)
    items = [Item(id=str(pid), n=int(n), c=int(c)) for pid, n, c in
             zip(mastery["problem_id"].to_list(), mastery["n"].to_list(), mastery["c"].to_list())]
    decisions = assign(items, router, keep_mastered=keep_mastered, require_samples=require_samples, seed=seed,
                       too_few=_too_few_usable(items, truncation, require_samples)
                       if truncated == "exclude" and truncation else None)
    pass_cols = sorted((c for c in mastery.columns if c.startswith("pass_at_")), key=lambda c: int(c[8:]))
    stats = ["n", "c", "p_hat", "posterior_mean", "ci_low", "ci_high"]
    found = [problems.get(it.id) for it in items]
    out = pl.DataFrame({
        "id": [it.id for it in items],
        "task": [getattr(p, "task", None) for p in found],
        "source": [getattr(p, "source", None) for p in found],
        "bucket": [d.bucket for d in decisions],
        "stage": [d.stage for d in decisions],
        "reason": [d.reason for d in decisions],
    }, schema={"id": pl.Utf8, "task": pl.Utf8, "source": pl.Utf8, "bucket": pl.Utf8, "stage": pl.Utf8,
               "reason": pl.Utf8})
    cols = mastery.select(stats + pass_cols).with_columns(
        pl.col("n").cast(pl.Int64), pl.col("c").cast(pl.Int64),
        *[pl.col(c).cast(pl.Float64) for c in stats[2:] + pass_cols])
    out = pl.concat([out, cols], how="horizontal")
    if truncation is not None:
        counts = [truncation.get(it.id, (0, 0, 0, 0)) for it in items]
        out = out.with_columns(pl.Series("n_samples", [t[0] for t in counts], pl.Int64),
                               pl.Series("n_truncated", [t[1] for t in counts], pl.Int64))
    # Samplers weight by it: 1 - the posterior mean, so an item never probed (n = 0) sits at 0.5.
    out = out.with_columns((1.0 - pl.col("posterior_mean")).alias("difficulty"))
    names = [c for c in out.columns if c != "difficulty"]
    out = out.select(names[: names.index("posterior_mean") + 1] + ["difficulty"]
                     + names[names.index("posterior_mean") + 1:])
    if run_id is not None:
        out = out.with_columns(pl.lit(run_id).alias("run_id"))
    return out


# --------------------------------------------------------------------------------------- the summary

@dataclass
class RouteSummary:
    """Buckets × stages counts and warnings (an empty or tiny split, with what to change)."""

    counts: dict = field(default_factory=dict)  # {bucket: {stage: count}}
    stage_totals: dict = field(default_factory=dict)
    bucket_totals: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    truncation: dict = field(default_factory=dict)  # {bucket: {samples, truncated, rate}}

    def to_dict(self) -> dict:
        return {"counts": self.counts, "stages": self.stage_totals, "buckets": self.bucket_totals,
                "warnings": self.warnings, "truncation": self.truncation}


def truncation_by_bucket(buckets, samples, truncated) -> dict:
    """{bucket: {samples, truncated, rate}}: the share of samples cut at max_new_tokens per bucket."""
    out: dict = {}
    for b, n, t in zip(buckets, samples, truncated):
        row = out.setdefault(b or UNVERIFIED, {"samples": 0, "truncated": 0})
        row["samples"] += int(n or 0)
        row["truncated"] += int(t or 0)
    for row in out.values():
        row["rate"] = round(row["truncated"] / row["samples"], 4) if row["samples"] else 0.0
    return out


def truncation_warnings(truncation: dict, max_new_tokens: int | None = None) -> list[str]:
    """A warning per bucket whose truncation rate exceeds 20%, naming --max-new-tokens."""
    budget = f" (the probe ran with --max-new-tokens {max_new_tokens})" if max_new_tokens else ""
    return [f"{row['rate']:.0%} of the {b} bucket's samples ({row['truncated']} of {row['samples']}) were cut "
            f"off at max_new_tokens{budget}: the token budget, not the skill, shapes this bucket; raise "
            "--max-new-tokens, or route with --truncated exclude"
            for b, row in truncation.items() if row["rate"] > TRUNCATION_WARN]


def route_summary(assignments, policy: str = "stage", *, keep_mastered: int = 0,
                  max_new_tokens: int | None = None) -> RouteSummary:
    """Count buckets × stages and warn about splits a trainer cannot use (and about buckets whose samples
    were often cut off at max_new_tokens, when the assignments carry n_truncated)."""
    counts = {b: {s: 0 for s in STAGES} for b in BUCKETS}
    for b, s in zip(assignments["bucket"].to_list(), assignments["stage"].to_list()):
        # n = 0 (every sample unverifiable) has no bucket; it is counted, not hidden.
        counts.setdefault(b or UNVERIFIED, {s: 0 for s in STAGES})[s] += 1
    stage_totals = {s: sum(row[s] for row in counts.values()) for s in STAGES}
    bucket_totals = {b: sum(row.values()) for b, row in counts.items()}
    total = len(assignments)
    n_max = int(assignments["n"].max()) if total else 0
    warnings = []
    sft = stage_totals["sft"] + stage_totals["both"]
    rl = stage_totals["rl"] + stage_totals["both"]
    expects_sft = policy in ("stage", "relift", "sft-only", "all", "random")
    expects_rl = policy != "sft-only"
    if total == 0:
        warnings.append("no items to route: the run has no samples yet; run `stagewise probe` first")
    if total and expects_rl and rl == 0:
        warnings.append(
            "the RL split is empty: no item has a mix of right and wrong samples. Draw more samples "
            f"(n is {n_max}; try --num-samples 16 or --adaptive), widen the band, or pick a model or "
            "problems closer in difficulty")
    elif total and expects_rl and rl < TINY_SPLIT:
        warnings.append(f"the RL split has only {rl} items: probe more problems or draw more samples "
                        "so more items show a mix of right and wrong answers")
    no_demo = sum(NO_DEMO in r for r in assignments["reason"].to_list())
    if no_demo:
        warnings.append(f"{no_demo} items meant for SFT have no verified demonstration: add reference "
                        "solutions, --demos samples (verified probe samples) or a --teacher MODEL")
    if total and expects_sft and policy not in ("all",) and sft == 0 and not no_demo:
        warnings.append("the SFT split is empty: the model gets at least one sample right on every item; "
                        "fine for RL only, otherwise add harder problems")
    elif total and expects_sft and 0 < sft < TINY_SPLIT:
        warnings.append(f"the SFT split has only {sft} items: add harder problems or route with a "
                        "different policy")
    if keep_mastered and stage_totals["replay"] < keep_mastered:
        kept = stage_totals["replay"]
        warnings.append(f"--keep-mastered {keep_mastered} asked for a replay split, but only {kept} "
                        f"{'item is' if kept == 1 else 'items are'} mastered (n/n correct): forgetting "
                        "cannot be measured on this run; add easier problems")
    if stage_totals["unrouted"]:
        warnings.append(f"{stage_totals['unrouted']} items are unrouted (see their reason)")
    truncation = {}
    if "n_truncated" in assignments.columns:
        truncation = truncation_by_bucket(assignments["bucket"].to_list(), assignments["n_samples"].to_list(),
                                          assignments["n_truncated"].to_list())
        warnings += truncation_warnings(truncation, max_new_tokens)
    return RouteSummary(counts, stage_totals, bucket_totals, warnings, truncation)
