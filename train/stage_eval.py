"""Stage-aware evaluation around curate.evaluate: before SFT, after SFT, after RL.

For each checkpoint it reports pass@1 / pass@k with Wilson intervals on the held-out problems (when
given), and accuracy per bucket on the export's own items (unmastered = the SFT items, partial = the
RL items, mastered = the replay items, which are never trained on, so a drop there is forgetting).
During RL a callback tracks the held-out SFT loss (SFT and RL do not decouple: RL tends to raise the
SFT loss while it raises the reward); `plot_curves` draws both against the step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from stagewise.train.data import Export, answer_of, read_rows
from transformers import TrainerCallback

BUCKETS = ("unmastered", "partial", "mastered")


# --------------------------------------------------------------------------- held-out SFT loss in RL


def sft_token_batches(rows: list[dict], tokenizer, max_length: int = 1024) -> list[tuple[list[int], int]]:
    """(token ids of prompt + demonstration, index where the demonstration starts) per SFT row."""
    out = []
    for row in rows:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str):
            p_text, full = prompt, prompt + (completion if isinstance(completion, str)
                                             else completion[0]["content"])
        else:
            p_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(prompt + list(completion), tokenize=False)
        p_ids = tokenizer(p_text, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) > len(p_ids):
            out.append((ids, len(p_ids)))
    return out


@torch.no_grad()
def sft_loss(model, batches: list[tuple[list[int], int]]) -> float:
    """Mean NLL per demonstration token (completion-only, like SFT's nll), one sequence at a time."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for ids, start in batches:
        x = torch.tensor([ids], device=device)
        logits = model(input_ids=x).logits[0, :-1].float()  # (T-1, V)
        targets = x[0, 1:]
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")  # (T-1,)
        total += nll[start - 1:].sum().item()
        count += len(ids) - start
    if was_training:
        model.train()
    return total / max(count, 1)


class HeldoutSFTLoss(TrainerCallback):
    """Logs `heldout_sft_loss` at the start of RL, every `every` steps and at the end (to metrics.jsonl
    via `sink`)."""

    def __init__(self, rows: list[dict], tokenizer, every: int = 5, sink=None, stage: str = "rl"):
        self.batches = sft_token_batches(rows, tokenizer)
        self.every, self.sink, self.stage = every, sink, stage
        self.history: list[tuple[int, float]] = []

    def _record(self, step: int, model) -> None:
        value = sft_loss(model, self.batches)
        self.history.append((step, value))
        if self.sink is not None:
            self.sink.write({"stage": self.stage, "step": step, "heldout_sft_loss": value})

    def on_train_begin(self, args, state, control, model=None, **kw):
        if model is not None and self.batches:
            self._record(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kw):
        if model is not None and self.batches and state.global_step % self.every == 0:
            self._record(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kw):
        # The last step too, so a short run still shows where RL left the SFT loss.
        if model is not None and self.batches and (not self.history or self.history[-1][0] != state.global_step):
            self._record(state.global_step, model)


# --------------------------------------------------------------------------- before / after evaluation


@dataclass
class StageEval:
    """One checkpoint's evaluation: `rows` are flat records (checkpoint, set, group, n_items, pass@1, ...)."""

    checkpoint: str
    rows: list[dict] = field(default_factory=list)


def export_problems(export: Export, *, max_per_bucket: int | None = None, seed: int = 0) -> tuple[list, dict]:
    """The export's items as curate Problems, with {id: bucket}. Problems come from the probe store named
    in the manifest (the raw question the probe templated); without a store, they are rebuilt from the
    rows' last user message, to be used with the identity template "{prompt}" and the row's own system
    message, since the exported prompt already carries the template."""
    import random

    from stagewise.curate.schema import Problem

    by_bucket: dict[str, list[dict]] = {b: [] for b in BUCKETS}
    bucket_of = {}
    apath = export.root / "assignments.parquet"
    assigned = {r["id"]: r.get("bucket") for r in read_rows(apath)} if apath.exists() else {}
    for split, default_bucket in (("sft", "unmastered"), ("rl", "partial"), ("replay", "mastered")):
        if not export.has(split):
            continue
        for row in read_rows(export.path(split)):
            bucket = assigned.get(str(row.get("id"))) or row.get("bucket") or default_bucket
            if bucket in by_bucket and answer_of(row, prefer_answer=True) is not None:
                by_bucket[bucket].append(row)
    rng = random.Random(seed)
    chosen = []
    for bucket, rows in by_bucket.items():
        if max_per_bucket is not None and len(rows) > max_per_bucket:
            rows = rng.sample(rows, max_per_bucket)
        chosen.extend(rows)
        for r in rows:
            bucket_of[str(r["id"])] = bucket
    stored = _problems_from_store(export, [str(r["id"]) for r in chosen])
    problems = []
    for r in chosen:
        pid = str(r["id"])
        if pid in stored:
            problems.append(stored[pid])
            continue
        msgs = r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]
        user = [m["content"] for m in msgs if m.get("role") == "user"][-1]
        meta = r.get("meta")
        problems.append(Problem(prompt=user, answer=answer_of(r, prefer_answer=True), id=pid,
                                task=r.get("task") or "exact", meta=meta if meta is not None else "{}",
                                extra={"messages": msgs}))
    return problems, bucket_of


def _problems_from_store(export: Export, ids: list[str]) -> dict:
    store_path = export.manifest.get("store")
    if not store_path or not Path(store_path).exists():
        return {}
    try:
        from stagewise.curate.store import ProbeStore

        store = ProbeStore(store_path, read_only=True)
        try:
            return {p.id: p for p in store.problems(ids)}
        finally:
            store.close()
    except Exception:  # noqa: BLE001 - a store another process holds or an older schema: use the rows
        return {}


def evaluate_checkpoint(model: str, label: str, *, export: Export, heldout=None, num_samples: int = 4,
                        ks=(1, 4), max_new_tokens: int | None = None, max_per_bucket: int | None = 32,
                        seed: int = 0, backend: str = "hf") -> StageEval:
    """Evaluate one checkpoint on the held-out problems (if any) and on the export's items per bucket."""
    from stagewise.curate.evaluate import evaluate

    probe = export.probe
    sampling = export.sampling
    common = dict(num_samples=num_samples, ks=tuple(k for k in ks if k <= num_samples) or (1,), backend=backend,
                  temperature=sampling.get("temperature", 1.0), top_p=sampling.get("top_p", 1.0),
                  max_new_tokens=max_new_tokens or sampling.get("max_new_tokens", 256), seed=seed)
    result = StageEval(label)
    if heldout:
        res = evaluate(model, heldout, system_prompt=probe.get("system_prompt"),
                       prompt_template=probe.get("prompt_template"), **common)
        result.rows += _rows(res, label, "heldout")
    problems, bucket_of = export_problems(export, max_per_bucket=max_per_bucket, seed=seed)
    if problems:
        import polars as pl

        buckets = pl.DataFrame({"id": list(bucket_of), "bucket": list(bucket_of.values())})
        rebuilt = any(p.extra.get("messages") for p in problems)
        # Rows rebuilt from exported prompts already carry the template; stored problems need the probe's.
        templ = dict(system_prompt=probe.get("system_prompt"), prompt_template=probe.get("prompt_template")) \
            if not rebuilt else dict(system_prompt=_system_of(problems[0]) or "", prompt_template="{prompt}")
        res = evaluate(model, problems, buckets=buckets, **templ, **common)
        result.rows += _rows(res, label, "export items")
    return result


def _system_of(problem) -> str | None:
    msgs = problem.extra.get("messages") or []
    return next((m["content"] for m in msgs if m.get("role") == "system"), None)


def _rows(res, label: str, set_name: str) -> list[dict]:
    table = res.table
    records = table.to_dicts() if hasattr(table, "to_dicts") else list(table)
    out = []
    for r in records:
        group = str(r.get("group", ""))
        if group.startswith("bucket="):  # curate.evaluate names bucket groups "bucket=<name>"
            group = group.split("=", 1)[1]
        out.append({"checkpoint": label, "set": set_name, **r, "group": group})
    return out


def forgetting(evals: list[StageEval]) -> dict:
    """pass@1 on the mastered bucket at each checkpoint, and its drop from the first (before SFT)."""
    series = {}
    for ev in evals:
        for r in ev.rows:
            if _is_bucket_row(r, "mastered"):
                series[ev.checkpoint] = r.get("pass@1")
    if not series:
        return {}
    first = next(iter(series.values()))
    return {"mastered_pass@1": series,
            "drop": {k: (None if v is None or first is None else first - v) for k, v in series.items()}}


def _is_bucket_row(r: dict, bucket: str) -> bool:
    return r.get("set") != "heldout" and str(r.get("group", "")) == bucket


def comparison_table(evals: list[StageEval]) -> list[dict]:
    """One row per (set, group) with pass@1 at each checkpoint side by side."""
    keyed: dict[tuple, dict] = {}
    for ev in evals:
        for r in ev.rows:
            key = (r["set"], str(r.get("group")))
            row = keyed.setdefault(key, {"set": key[0], "group": key[1], "n_items": r.get("n_items")})
            row[f"pass@1 {ev.checkpoint}"] = r.get("pass@1")
            lo, hi = r.get("ci_low"), r.get("ci_high")
            if lo is not None and hi is not None:
                row[f"ci {ev.checkpoint}"] = f"[{lo:.2f}, {hi:.2f}]"
    return list(keyed.values())


# --------------------------------------------------------------------------- curves


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_curves(metrics: list[dict], path: str | Path, *, title: str = "training curves") -> str | None:
    """Training loss (SFT), reward and held-out SFT loss (RL) against the step, on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {
        "SFT loss": [(m["step"], m["loss"] if m.get("stage") == "sft" else m["sft/loss"]) for m in metrics
                     if (m.get("stage") == "sft" and "loss" in m) or "sft/loss" in m],
        "RL reward": [(m["step"], m["reward"]) for m in metrics if m.get("stage") != "sft" and "reward" in m],
        "held-out SFT loss (during RL)": [(m["step"], m["heldout_sft_loss"]) for m in metrics
                                          if "heldout_sft_loss" in m],
    }
    series = {k: v for k, v in series.items() if v and all(math.isfinite(y) for _, y in v)}
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for ax, (name, pts) in zip(axes[0], series.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return str(out)
