"""Re-routing after SFT: the items are probed again with the SFT model and decided by the very router the
export used (rebuilt from the manifest's `route` section), so `band`, `relift` and the other policies keep
their meaning between the stages.

What a new decision does to an item (the caller trains the next stage on the result):
- the router says RL (the item is in the policy's RL band now): the item is in RL, whether it was before
  or not;
- the router says SFT (e.g. 0/n under `stage`): the item leaves RL; with a verified demonstration it may go
  to SFT in the next round, without one it is unrouted;
- the router says drop (n/n under `stage`, or outside the band under `band`): the item leaves RL;
- no verified re-probe sample at all: unrouted, with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from stagewise.stages.routing import Item, Router, make_router

UNVERIFIED = "unverified"


def router_from_route_config(route: dict | None) -> Router:
    """The router an export used, from its manifest's `route` section ({policy, low, high, seed, ...})."""
    route = dict(route or {})
    policy = route.get("policy") or "stage"
    band = policy == "band"
    return make_router(policy, low=route.get("low") if band else None, high=route.get("high") if band else None,
                       seed=int(route.get("seed") or 0))


@dataclass(frozen=True)
class Reroute:
    """One item before and after the re-probe."""

    id: str
    before_bucket: str | None
    before_stage: str
    after_bucket: str | None
    after_stage: str
    reason: str
    n: int
    c: int

    @property
    def left_rl(self) -> bool:
        return self.before_stage in ("rl", "both") and self.after_stage not in ("rl", "both")

    @property
    def joined_rl(self) -> bool:
        return self.before_stage not in ("rl", "both") and self.after_stage in ("rl", "both")


def reroute(before: dict[str, tuple[str | None, str]], after: dict[str, tuple[int, int]], router: Router, *,
            has_demo=frozenset()) -> list[Reroute]:
    """Decide every item of `before` ({id: (bucket, stage)}) again from its re-probe counts
    (`after`: {id: (n, c)}; a missing id counts as n = 0) with `router`. `has_demo`: ids with a verified
    demonstration (an item the router sends to SFT goes there only with one)."""
    ids = sorted(before)
    items = [Item(id=i, n=after.get(i, (0, 0))[0], c=after.get(i, (0, 0))[1]) for i in ids]
    probed = [it for it in items if it.n > 0]
    decided = dict(zip((it.id for it in probed), router.decide(probed)))
    out = []
    for it in items:
        b_bucket, b_stage = before[it.id]
        d = decided.get(it.id)
        if d is None:
            out.append(Reroute(it.id, b_bucket, b_stage, None, "unrouted",
                               "re-probe: no verified sample (every sample timed out or errored)", it.n, it.c))
            continue
        stage, why = d.stage, f"re-probe: {d.reason}"
        if stage in ("sft", "both") and it.id not in has_demo:
            stage = "unrouted" if stage == "sft" else "rl"
            why += "; no verified demonstration" + (" → RL only" if stage == "rl" else "")
        if stage in ("rl", "both") and b_stage not in ("rl", "both"):
            why += f"; joins RL (was {b_stage})"
        elif b_stage in ("rl", "both") and stage not in ("rl", "both"):
            why += f"; leaves RL (now {stage})"
        out.append(Reroute(it.id, b_bucket, b_stage, d.bucket, stage, why, it.n, it.c))
    return out


def transition_counts(moves: list[Reroute], round_: int = 1) -> list[dict]:
    """The bucket transition matrix as rows {round, before, after, count} (only non-zero cells), sorted.
    An item without a bucket (nothing verified) is counted as `unverified`."""
    cells: dict[tuple[str, str], int] = {}
    for m in moves:
        key = (m.before_bucket or UNVERIFIED, m.after_bucket or UNVERIFIED)
        cells[key] = cells.get(key, 0) + 1
    order = {"unmastered": 0, "partial": 1, "mastered": 2, UNVERIFIED: 3}
    return [{"round": int(round_), "before": b, "after": a, "count": n}
            for (b, a), n in sorted(cells.items(), key=lambda kv: (order.get(kv[0][0], 9), order.get(kv[0][1], 9)))]
