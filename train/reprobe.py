"""The full re-probe between SFT and RL: every SFT and RL item is probed again with the SFT model, with
the probe's own sampling settings, each row's own prompt messages and the item's verifier, and decided
again by the export's own router (stages/reroute.py), so the RL stage trains on what is partial *now*.

At scale this is a second full probe. It is adaptive when the export's probe was, and `sample` re-probes a
seeded random subset instead and reports the bucket shares it estimates for the whole set (the items left
out keep their stage).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate.probe import probe
from stagewise.stages.reroute import reroute, router_from_route_config, transition_counts
from stagewise.stages.routing import truncation_counts


@dataclass
class ReprobeResult:
    round: int
    moves: list = field(default_factory=list)  # stages.reroute.Reroute per re-probed item
    transitions: list = field(default_factory=list)  # {round, before, after, count}
    items: int = 0  # items eligible for the re-probe
    probed: int = 0  # items re-probed (all of them unless `sample`)
    estimate: dict | None = None  # with `sample`: {bucket: estimated share of all items}
    run_id: str | None = None
    adaptive: bool = False

    def to_dict(self) -> dict:
        return {"round": self.round, "items": self.items, "probed": self.probed, "estimate": self.estimate,
                "run_id": self.run_id, "adaptive": self.adaptive, "transitions": self.transitions,
                "left_rl": sorted(m.id for m in self.moves if m.left_rl),
                "joined_rl": sorted(m.id for m in self.moves if m.joined_rl)}


def probe_settings(probe_cfg: dict, sampling: dict) -> dict:
    """The probe() options that repeat the export's probe: sampling, seed, and fixed k or the adaptive
    rule (min_samples, k_max, round_size)."""
    opts = {"temperature": sampling.get("temperature", 1.0), "top_p": sampling.get("top_p", 1.0),
            "max_new_tokens": sampling.get("max_new_tokens", 256), "seed": int(probe_cfg.get("seed") or 0)}
    adaptive = probe_cfg.get("adaptive")
    if isinstance(adaptive, dict):
        opts.update(adaptive=True, min_samples=int(adaptive.get("min_samples", 4)),
                    k_max=int(adaptive.get("k_max", probe_cfg.get("k_max") or 16)),
                    round_size=int(adaptive.get("round_size", 1)))
    else:
        opts["num_samples"] = int(probe_cfg.get("num_samples") or probe_cfg.get("k_max") or 4)
    # The generation batch too: it changes speed, not the samples' distribution, and a small model on CPU
    # re-probed at the default batch of 32 took about 1.5x the CPU per sample of the probe it repeats (batch 256).
    backend = probe_cfg.get("backend_options") or probe_cfg.get("backend_args") or {}
    if isinstance(backend, dict) and backend.get("batch_size"):
        opts["batch_size"] = int(backend["batch_size"])
    return opts


def sample_ids(ids: list[str], sample: int | None, seed: int = 0) -> list[str]:
    """All ids, or a seeded random subset of `sample` of them (sorted)."""
    ids = sorted(ids)
    if sample is None or sample >= len(ids):
        return ids
    return sorted(random.Random(seed).sample(ids, max(0, int(sample))))


def bucket_estimate(moves, total: int) -> dict:
    """{bucket: share} among the re-probed items: the estimate for all `total` items."""
    if not moves:
        return {}
    counts: dict[str, int] = {}
    for m in moves:
        counts[m.after_bucket or "unverified"] = counts.get(m.after_bucket or "unverified", 0) + 1
    return {b: {"share": round(n / len(moves), 4), "of_all_items_about": round(n / len(moves) * total)}
            for b, n in sorted(counts.items())}


def full_reprobe(problems: dict, before: dict, model_dir: str, out: Path, *, route: dict, probe_cfg: dict,
                 sampling: dict, round_: int = 1, sample: int | None = None, has_demo=frozenset(),
                 progress: bool = False) -> ReprobeResult:
    """Re-probe `problems` ({id: Problem carrying its exact prompt messages}) with `model_dir` and decide
    each again with the export's router (`route`: the manifest's route section).

    `before`: {id: (bucket, stage)} for every item; `has_demo`: ids with a verified demonstration (an
    item the router now sends to SFT needs one). The probe store is OUT/reprobe.duckdb: an interrupted
    re-probe resumes. The export's `--truncated exclude` applies here too."""
    router = router_from_route_config(route)
    ids = sample_ids([i for i in before if i in problems], sample, seed=int(probe_cfg.get("seed") or 0) + round_)
    result = ReprobeResult(round_, items=len(before), probed=len(ids))
    if not ids:
        return result
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    opts = probe_settings(probe_cfg, sampling)
    result.adaptive = bool(opts.get("adaptive"))
    res = probe([problems[i] for i in ids], model=model_dir, store=str(out / "reprobe.duckdb"), progress=progress,
                **opts)
    with res:
        counts = res.store.sample_counts(res.run_id)
        if route.get("truncated") == "exclude":
            cut = truncation_counts(res.store, res.run_id)
            counts = {i: (n - cut.get(i, (0, 0, 0, 0))[2], c - cut.get(i, (0, 0, 0, 0))[3])
                      for i, (n, c) in counts.items()}
    result.run_id = res.run_id
    result.moves = reroute({i: before[i] for i in ids}, counts, router, has_demo=has_demo)
    result.transitions = transition_counts(result.moves, round_)
    if sample is not None and len(ids) < len(before):
        result.estimate = bucket_estimate(result.moves, len(before))
    return result
