"""The loop's bookkeeping: what RL failed on, per prompt, and what the next round's SFT set is.

GRPO learns nothing from a group whose rewards are all equal (every advantage is zero). The RL stage
records, per prompt, how many groups it sampled and how many of them were all wrong (no completion
correct) or all right (every completion correct); for the verifier's 0/1 reward these two make up the
zero-variance groups. A prompt whose every group in a round was all wrong is one RL cannot teach: it
goes, with a verified demonstration, into the next round's SFT set, together with the items the
re-probe found unmastered. These rules are pure functions; train/two_stage.py runs the rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stagewise.curate.prompts import format_target
from stagewise.curate.verifiers import score
from stagewise.train.data import answer_of

CORRECT = 1.0  # a completion is right when the verifier scores it 1 (its score for "correct")


def split_groups(ids: list[str], scores: list[float], group_size: int) -> list[tuple[str, list[float]]]:
    """Cut one reward call into GRPO groups: TRL lays out each prompt's `group_size` completions next to
    each other, so consecutive chunks are groups (the same prompt twice in a batch is two groups)."""
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    if len(ids) != len(scores) or len(ids) % group_size:
        raise ValueError(f"{len(scores)} scores for {len(ids)} ids do not split into groups of {group_size}")
    out = []
    for start in range(0, len(ids), group_size):
        chunk = ids[start:start + group_size]
        if len(set(chunk)) != 1:
            raise ValueError(f"completions {start}..{start + group_size - 1} mix prompts {sorted(set(chunk))}")
        out.append((str(chunk[0]), [float(s) for s in scores[start:start + group_size]]))
    return out


@dataclass
class PromptGroups:
    """One prompt's groups in one round."""

    groups: int = 0
    zero_variance: int = 0
    all_wrong: int = 0
    all_right: int = 0

    def add(self, scores: list[float]) -> None:
        self.groups += 1
        self.zero_variance += max(scores) == min(scores)
        self.all_wrong += all(s < CORRECT for s in scores)
        self.all_right += all(s >= CORRECT for s in scores)


class GroupLedger:
    """Per prompt: groups, zero-variance groups, all-wrong and all-right groups, over one round."""

    def __init__(self):
        self.by_id: dict[str, PromptGroups] = {}

    def record(self, ids: list[str], scores: list[float], group_size: int) -> None:
        for pid, group in split_groups(ids, scores, group_size):
            self.by_id.setdefault(pid, PromptGroups()).add(group)

    def all_wrong_prompts(self) -> list[str]:
        """Prompts every one of whose groups this round was all wrong (sorted)."""
        return sorted(pid for pid, g in self.by_id.items() if g.groups and g.all_wrong == g.groups)

    def totals(self) -> dict:
        t = PromptGroups()
        for g in self.by_id.values():
            t.groups += g.groups
            t.zero_variance += g.zero_variance
            t.all_wrong += g.all_wrong
            t.all_right += g.all_right
        return {"prompts": len(self.by_id), "groups": t.groups, "zero_variance": t.zero_variance,
                "all_wrong": t.all_wrong, "all_right": t.all_right,
                "all_wrong_prompts": len(self.all_wrong_prompts())}

    def rows(self, round_: int) -> list[dict]:
        return [{"id": pid, "round": int(round_), "groups": g.groups, "zero_variance": g.zero_variance,
                 "all_wrong": g.all_wrong, "all_right": g.all_right} for pid, g in sorted(self.by_id.items())]


def next_sft_set(all_wrong: list[str], unmastered: list[str], has_demo) -> tuple[list[str], dict[str, str]]:
    """The next round's SFT ids: RL's all-wrong prompts plus the re-probe's unmastered items, each only
    with a verified demonstration. Returns (ids, {id: reason} for those left out)."""
    wanted = list(dict.fromkeys([*all_wrong, *unmastered]))
    ids = [i for i in wanted if i in has_demo]
    left = {i: "no verified demonstration: cannot go to SFT" for i in wanted if i not in has_demo}
    return ids, left


def answer_demonstration(row: dict, prompting: dict | None = None) -> dict | None:
    """An SFT row written from an RL row's gold answer, in the answer format the probe's prompt asked for
    (curate/prompts.py `format_target` with the manifest's system prompt and template, as the exporter
    writes demonstrations), kept only if the item's verifier accepts it; None otherwise."""
    prompting = prompting or {}
    answer = answer_of(row)
    problem = {"answer": answer, "task": row["task"], "meta": row.get("meta") or "{}"}
    target = format_target(None, answer, problem, prompting.get("prompt_template"),
                           system_prompt=prompting.get("system_prompt"))
    if not score(target, problem).correct:
        return None
    return {"id": str(row.get("id")), "prompt": row["prompt"], "task": problem["task"], "answer": answer,
            "meta": problem["meta"], "question": row.get("question"), "answer_format": row.get("answer_format"),
            "completion": [{"role": "assistant", "content": target}], "demo_source": "answer",
            "demo_provenance": '{"source": "answer", "written_from": "the gold answer, verified"}'}


def rl_row_from_sft(row: dict) -> dict:
    """An RL row (prompt, solution, id, task, meta) for an item known from its SFT row."""
    return {"prompt": row["prompt"], "solution": answer_of(row), "id": str(row["id"]),
            "task": row["task"], "meta": row.get("meta") or "{}",
            "question": row.get("question"), "answer_format": row.get("answer_format")}


@dataclass
class PoolItem:
    """One item of the loop: where it is now, and the rows it trains with."""

    id: str
    bucket: str | None
    stage: str  # sft | replay-sft | rl | drop | unrouted
    reason: str
    sft_row: dict | None = None  # a verified demonstration, when there is one
    rl_row: dict | None = None
    trained: list = field(default_factory=list)  # the stages it trained in this round


class ItemPool:
    """The SFT and RL items across the rounds of the loop.

    A round trains SFT on the items at stage sft/replay-sft, then (after the re-probe moved items)
    RL on the items at stage rl. `next_round` applies RL's all-wrong prompts: with a verified
    demonstration they go to SFT; replay rows stay in SFT every round (they anchor what the model knows)."""

    def __init__(self, sft_rows: list[dict], rl_rows: list[dict], buckets: dict | None = None,
                 prompting: dict | None = None):
        buckets = buckets or {}
        self.prompting = prompting or {}
        self.items: dict[str, PoolItem] = {}
        for row in sft_rows:
            pid = str(row["id"])
            stage = "replay-sft" if row.get("stage") == "replay-sft" else "sft"
            self.items[pid] = PoolItem(pid, buckets.get(pid, row.get("bucket")), stage,
                                       row.get("reason") or "in the export's SFT split", sft_row=row,
                                       rl_row=rl_row_from_sft(row))
        for row in rl_rows:
            pid = str(row["id"])
            item = self.items.get(pid)
            if item is None:  # an item in both splits (policy all) trains in both
                self.items[pid] = PoolItem(pid, buckets.get(pid, row.get("bucket")), "rl",
                                           row.get("reason") or "in the export's RL split", rl_row=row)
            else:
                item.rl_row, item.stage = row, "rl"
                item.trained.append("sft")
        self._both = {i for i, it in self.items.items() if it.sft_row is not None and it.stage == "rl"}

    def has_demo(self) -> set[str]:
        return {i for i, it in self.items.items() if it.sft_row is not None}

    def ensure_demo(self, pid: str) -> bool:
        """Whether the item has a verified demonstration, writing one from its gold answer (verified)
        for an RL item that has none. Called only for items about to go to SFT, so the verifier runs
        only where it matters."""
        it = self.items.get(pid)
        if it is None:
            return False
        if it.sft_row is None and it.rl_row is not None:
            it.sft_row = answer_demonstration(it.rl_row, self.prompting)
        return it.sft_row is not None

    def demo_check(self):
        """`id in demo_check()` asks `ensure_demo` (what stages/reroute.py's `has_demo` takes)."""
        pool = self

        class _Check:
            def __contains__(self, pid) -> bool:
                return pool.ensure_demo(str(pid))

        return _Check()

    def sft_rows(self) -> list[dict]:
        return [it.sft_row for it in self._sorted() if it.stage in ("sft", "replay-sft") or it.id in self._both]

    def rl_rows(self) -> list[dict]:
        return [it.rl_row for it in self._sorted() if it.stage == "rl"]

    def before(self) -> dict[str, tuple]:
        """{id: (bucket, stage)} of every item, for the re-probe (replay-sft counts as SFT)."""
        return {i: (it.bucket, "sft" if it.stage == "replay-sft" else it.stage) for i, it in self.items.items()}

    def start_round(self) -> None:
        for it in self.items.values():
            it.trained = ["sft"] if it.stage in ("sft", "replay-sft") or it.id in self._both else []

    def apply_reprobe(self, moves) -> None:
        """Take the re-probe's decisions: bucket, stage and reason (replay rows the router would drop
        stay replay rows)."""
        for m in moves:
            it = self.items[m.id]
            it.bucket, it.reason = m.after_bucket, m.reason
            if it.stage == "replay-sft" and m.after_stage in ("drop", "sft"):
                continue
            it.stage = {"both": "rl"}.get(m.after_stage, m.after_stage)
            if it.stage == "sft" and it.sft_row is None:
                it.stage = "unrouted"

    def finish_round(self, round_: int, ledger: GroupLedger | None = None) -> list[dict]:
        """The round's rows {id, round, bucket, stage, reason} (stage: the stages it trained in, joined by
        '+', or where it sits), then the next round's SFT set: RL's all-wrong prompts with a verified
        demonstration (one written from the gold answer when the export had none)."""
        for it in self.items.values():
            if it.stage == "rl":
                it.trained.append("rl")
        rows = [{"id": it.id, "round": int(round_), "bucket": it.bucket,
                 "stage": "+".join(it.trained) or it.stage, "reason": it.reason} for it in self._sorted()]
        groups = ledger.by_id if ledger is not None else {}
        for pid in (ledger.all_wrong_prompts() if ledger is not None else []):
            it = self.items.get(pid)
            if it is None:
                continue
            g = groups[pid]
            why = f"all {g.groups} RL group{'s' if g.groups != 1 else ''} of round {round_} wrong"
            if not self.ensure_demo(pid):
                it.stage, it.reason = "unrouted", f"{why}; no verified demonstration: cannot go to SFT"
            else:
                it.stage, it.reason = "sft", f"{why} → SFT next round"
        for row in rows:
            if row["id"] in groups:
                g = groups[row["id"]]
                row["reason"] += (f"; RL groups {g.groups}, all wrong {g.all_wrong}, all right {g.all_right}")
        return rows

    def _sorted(self):
        return [self.items[i] for i in sorted(self.items)]
