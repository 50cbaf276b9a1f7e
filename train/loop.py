"""The loop's bookkeeping: what RL failed on, per prompt, and what the next round's SFT set is.

GRPO learns nothing from a group whose rewards are all equal (every advantage is zero). The RL stage
records, per prompt, how many groups it sampled and how many of them were all wrong (no completion
correct) or all right (every completion correct); for the verifier's 0/1 reward these two make up the
zero-variance groups. A prompt whose every group in a round was all wrong is one RL cannot teach: it
goes, with a verified demonstration, into the next round's SFT set, together with the items the
re-probe found unmastered. These rules are pure functions; train/two_stage.py runs the rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

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
