"""The synthetic skill ladder: multi-digit addition, where the number of digits is the skill level.

Every item is a canonical `Problem` (task "gsm8k": the stagewise numeric verifier scores the final
number) with a programmatic worked solution, the column-by-column algorithm a child learns:

    prompt    "4718+395"
    solution  "8+5+0=13\\n1+9+1=11\\n7+3+1=11\\n4+0+1=5\\n"      (ones column first, carry in last)
    answer    "5113"

The solution is the SFT target (`format_target` appends the answer the way the prompt asks for it).
A character-level model has to learn to walk the columns, carry, and read the digits back in order;
it learns short numbers quickly and does not extrapolate to longer ones, which is what gives the
ladder its mastered, partial and unmastered rungs.

Items are drawn from disjoint pools by a hash of the operands, so held-out items are never in the
probe pool or in pretraining, whatever the sizes asked for.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from stagewise.curate.schema import Problem

TASK = "gsm8k"  # the numeric verifier: the final number of the completion against the gold answer
SOURCE = "stagewise-experiment:addition"

# Pool membership by operand hash: pretraining, probe (the routed candidate pool) and held-out
# evaluation never share an item.
POOLS = ("pretrain", "probe", "heldout")
_POOL_SHARES = {"pretrain": (0, 70), "probe": (70, 85), "heldout": (85, 100)}


@dataclass(frozen=True)
class Item:
    a: int
    b: int

    @property
    def level(self) -> int:
        return len(str(max(self.a, self.b)))

    @property
    def prompt(self) -> str:
        return f"{self.a}+{self.b}"

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def solution(self) -> str:
        return worked_solution(self.a, self.b)


def worked_solution(a: int, b: int) -> str:
    """The column algorithm, ones column first: one line `x+y+carry=sum` per column."""
    da, db = str(a)[::-1], str(b)[::-1]
    carry, lines = 0, []
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        lines.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return "\n".join(lines) + "\n"


def pool_of(a: int, b: int) -> str:
    """Which pool an operand pair belongs to (stable across runs and machines)."""
    h = int.from_bytes(hashlib.sha256(f"{a}+{b}".encode()).digest()[:4], "little") % 100
    for name, (lo, hi) in _POOL_SHARES.items():
        if lo <= h < hi:
            return name
    raise AssertionError(h)  # pragma: no cover - the shares cover 0..99


def sample_items(level: int, n: int, pool: str, seed: int) -> list[Item]:
    """`n` distinct items of `level` digits (both operands have exactly `level` digits) from `pool`."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    rng = random.Random(f"{seed}:{level}:{pool}")
    lo, hi = 10 ** (level - 1), 10 ** level - 1
    seen: set[tuple[int, int]] = set()
    out: list[Item] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"level {level} has too few '{pool}' items for n={n}")
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if (a, b) in seen or pool_of(a, b) != pool:
            continue
        seen.add((a, b))
        out.append(Item(a, b))
    return out


def to_problem(item: Item, split: str) -> Problem:
    """A canonical row: task gsm8k (numeric verifier), worked solution, level and split in meta."""
    return Problem(prompt=item.prompt, answer=item.answer, solution=item.solution, source=SOURCE,
                   task=TASK, meta=json.dumps({"level": item.level, "split": split}, sort_keys=True))


def ladder(levels: list[int], per_level: int, pool: str, seed: int) -> list[Problem]:
    """`per_level` problems for each level from one pool, as canonical rows."""
    return [to_problem(it, pool) for lvl in levels for it in sample_items(lvl, per_level, pool, seed)]


def level_of(problem: Problem) -> int:
    return int(problem.meta_dict["level"])
