"""The second design's testbed: three arithmetic tasks x four difficulty levels (digits per operand).

A cell is one (task, level) pair; every cell is seen in pretraining, the harder ones less often, so a
probe finds unmastered items in several cells rather than in one never-seen level. Every item is a
canonical `Problem` (task "gsm8k": the numeric verifier scores the final number) whose worked
solution walks the columns, ones column first:

    add   "4718+395"      "8+5+0=13\\n1+9+1=11\\n7+3+1=11\\n4+0+1=5\\n"          -> 5113
    sub   "4718-395"      "8-5-0=3\\n11-9-0=2\\n7-3-1=3\\n4-0-0=4\\n"            -> 4323
    add3  "471+395+128"   "1+5+8+0=14\\n7+9+2+1=19\\n4+3+1+1=9\\n"              -> 994

In `sub` a line that starts with a 1 before the column's digit ("11-9-0=2") borrowed: the next column
subtracts 1. All operands of an item have exactly `level` digits; in `sub` the first is the larger, so
the answer is never negative. The answer is read back from the lines' last digits (and the final carry).

An item's difficulty also grows with its carries (`Item.carries`): `random_item(..., carry_decay=)`
draws pretraining items in which carrying columns are rare, while the pool, validation and test items
are drawn uniformly. The default design uses 2-4 digits (`ExperimentV2Config.levels`).

A pretraining item can also carry a systematic slip, the same rule on every item: at its slip sites (a
boundary column, or every carrying column) the carry is dropped with some probability and the rest of its
lines and its answer follow (`worked_solution(slip=)`, `PretrainV2Config.slip_rate`). The pool, validation
and test items are always correct.

Items are assigned to disjoint splits by a hash of the prompt: pretraining, the probe pool (what is
routed and trained on), validation (used only to choose learning rates) and test (evaluation).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass

from stagewise.curate.schema import Problem

TASK = "gsm8k"  # the numeric verifier: the final number of the completion against the gold answer
SOURCE = "stagewise-experiment:arithmetic-v2"
TASKS = ("add", "sub", "add3")
LEVELS = (2, 3, 4, 5)
SPLITS = ("pretrain", "pool", "val", "test")
_SPLIT_SHARES = {"pretrain": (0, 64), "pool": (64, 80), "val": (80, 86), "test": (86, 100)}


def cell_name(task: str, level: int) -> str:
    return f"{task}-{level}"


def all_cells(tasks=TASKS, levels=LEVELS) -> list[str]:
    return [cell_name(t, lvl) for t in tasks for lvl in levels]


def parse_cell(cell: str) -> tuple[str, int]:
    task, _, level = cell.rpartition("-")
    if task not in TASKS or not level.isdigit():
        raise ValueError(f"not a cell name: {cell!r} (expected TASK-LEVEL with TASK in {TASKS})")
    return task, int(level)


@dataclass(frozen=True)
class Item:
    task: str
    operands: tuple

    @property
    def level(self) -> int:
        return len(str(self.operands[0]))

    @property
    def cell(self) -> str:
        return cell_name(self.task, self.level)

    @property
    def prompt(self) -> str:
        return ("-" if self.task == "sub" else "+").join(map(str, self.operands))

    @property
    def answer(self) -> str:
        if self.task == "sub":
            return str(self.operands[0] - self.operands[1])
        return str(sum(self.operands))

    @property
    def solution(self) -> str:
        return worked_solution(self.task, self.operands)

    @property
    def carries(self) -> int:
        """Columns that carry (add, add3) or borrow (sub) into the next one."""
        return column_carries(self.task, self.operands)


SLIP_COLUMNS = ("boundary", "carry")  # which columns a pretraining slip can hit (`PretrainV2Config.slip_columns`)


def is_slip_site(task: str, value: int, columns: str = "boundary") -> bool:
    """Whether a column whose sum (add, add3) or difference (sub) is `value` is a slip site: a *boundary*
    column (a sum of exactly 10, a difference of exactly -1) or, with columns="carry", any column that
    carries or borrows. The top column is never one (nothing follows it); callers leave it out."""
    if columns not in SLIP_COLUMNS:
        raise ValueError(f"slip columns must be one of {SLIP_COLUMNS}, got {columns!r}")
    if task == "sub":
        return value == -1 if columns == "boundary" else value < 0
    return value == 10 if columns == "boundary" else value >= 10


def worked_solution(task: str, operands, slip=None, columns: str = "boundary") -> str:
    """The column algorithm, ones column first, one line per column.

    `slip`: a callable asked once at each slip site (`is_slip_site`, the top column excepted); when it
    returns True that column passes no carry (no borrow) to the next one and the rest of the solution
    follows from the slip. That is a pretraining item's systematic error, the same rule on every item
    (`PretrainV2Config.slip_rate`)."""
    digits = [str(x)[::-1] for x in operands]
    width = max(map(len, digits))
    col = [[int(d[i]) if i < len(d) else 0 for d in digits] for i in range(width)]
    lines, carry = [], 0
    for i, xs in enumerate(col):
        if task == "sub":
            x, y = xs
            value = x - y - carry
            top = f"1{x}" if value < 0 else str(x)
            lines.append(f"{top}-{y}-{carry}={value % 10}")
            carry = 1 if value < 0 else 0
        else:
            value = sum(xs) + carry
            lines.append("+".join(map(str, xs)) + f"+{carry}={value}")
            carry = value // 10
        if slip is not None and i < width - 1 and is_slip_site(task, value, columns) and slip():
            carry = 0
    return "\n".join(lines) + "\n"


def answer_of(task: str, solution: str) -> str:
    """The number a worked solution's lines spell: each line's last digit, ones first, and in add/add3 the
    top line's whole sum (its final carry)."""
    results = [line.rpartition("=")[2] for line in solution.splitlines()]
    head = results[-1] if task != "sub" else results[-1][-1]
    return str(int(head + "".join(r[-1] for r in reversed(results[:-1]))))


def column_carries(task: str, operands) -> int:
    """How many columns of the worked solution pass a carry (or a borrow) to the next column."""
    lines = worked_solution(task, operands).splitlines()
    if task == "sub":
        return sum(1 for line in lines if len(line.split("-")[0]) > 1)
    return sum(1 for line in lines if int(line.rpartition("=")[2]) >= 10)


def slip_sites(task: str, operands, columns: str = "boundary") -> int:
    """How many columns of the worked solution are slip sites (`is_slip_site`)."""
    found: list[int] = []
    worked_solution(task, operands, lambda: found.append(1) or False, columns)
    return len(found)


def slips_in(task: str, completion: str, columns: str = "boundary") -> tuple[int, int]:
    """(slip sites, carries dropped after them) in a completion's own worked lines: how often a model
    slips, read from what it wrote, whatever it got right or wrong before a site."""
    lines = [line for line in completion.splitlines() if "=" in line]
    sites = slipped = 0
    for line, following in itertools.pairwise(lines):
        left, _, result = line.rpartition("=")
        if not result.isdigit():
            continue
        borrowed = task == "sub" and len(left.split("-")[0]) > 1
        if is_slip_site(task, int(result) - 10 * borrowed, columns):
            sites += 1
            slipped += following.rpartition("=")[0].split("-" if task == "sub" else "+")[-1] == "0"
    return sites, slipped


def split_of(prompt: str) -> str:
    """Which split an item belongs to (stable across runs and machines)."""
    h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "little") % 100
    for name, (lo, hi) in _SPLIT_SHARES.items():
        if lo <= h < hi:
            return name
    raise AssertionError(h)  # pragma: no cover - the shares cover 0..99


def random_item(task: str, level: int, rng: random.Random, carry_decay: float = 1.0) -> Item:
    """A uniformly random item of the cell, or (carry_decay < 1) one drawn column by column where a
    column that carries (or borrows) is kept only with probability `carry_decay`, else redrawn: the
    pretraining data of a model that has seen long carry chains rarely."""
    if carry_decay < 1.0:
        return _carry_scarce_item(task, level, rng, carry_decay)
    lo, hi = 10 ** (level - 1), 10 ** level - 1
    n = 3 if task == "add3" else 2
    ops = [rng.randint(lo, hi) for _ in range(n)]
    if task == "sub":
        ops.sort(reverse=True)
    return Item(task, tuple(ops))


def _carry_scarce_item(task: str, level: int, rng: random.Random, carry_decay: float) -> Item:
    n = 3 if task == "add3" else 2
    digits = [[] for _ in range(n)]  # ones first
    carry = 0
    for i in range(level):
        lo = 1 if i == level - 1 else 0
        for _ in range(100):
            ds = [rng.randint(lo, 9) for _ in range(n)]
            if task == "sub":
                out = 1 if ds[0] - ds[1] - carry < 0 else 0
                if out and i == level - 1:
                    continue  # the first operand stays the larger: never a borrow out of the top column
            else:
                out = (sum(ds) + carry) // 10
            if not out or rng.random() < carry_decay:
                break
        for op, d in zip(digits, ds):
            op.append(str(d))
        carry = out
    return Item(task, tuple(int("".join(reversed(op))) for op in digits))


def sample_items(cell: str, n: int, split: str, seed: int, carry_decay: float = 1.0) -> list[Item]:
    """`n` distinct items of one cell from one split (`carry_decay`: see `random_item`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    task, level = parse_cell(cell)
    rng = random.Random(f"{seed}:{cell}:{split}")
    seen: set[str] = set()
    out: list[Item] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"cell {cell} has too few '{split}' items for n={n}")
        it = random_item(task, level, rng, carry_decay)
        if it.prompt in seen or split_of(it.prompt) != split:
            continue
        seen.add(it.prompt)
        out.append(it)
    return out


def to_problem(item: Item, split: str, slip=None, columns: str = "boundary") -> Problem:
    """A canonical row: task gsm8k (numeric verifier), worked solution, cell/task/level/split in meta.
    `slip`, `columns` (pretraining only): see `worked_solution`; the answer is then the one the slipped
    lines spell."""
    meta = {"cell": item.cell, "task": item.task, "level": item.level, "split": split}
    solution, answer = item.solution, item.answer
    if slip is not None:
        solution = worked_solution(item.task, item.operands, slip, columns)
        answer = answer_of(item.task, solution)
    return Problem(prompt=item.prompt, answer=answer, solution=solution, source=SOURCE,
                   task=TASK, meta=json.dumps(meta, sort_keys=True))


def items_for(cells, per_cell: int, split: str, seed: int = 0) -> list[Problem]:
    """`per_cell` problems of each cell from one split, as canonical rows."""
    return [to_problem(it, split) for c in cells for it in sample_items(c, per_cell, split, seed)]


def item_of(problem: Problem) -> Item:
    """The item a canonical row was made from (its task from meta, its operands from the prompt)."""
    task = str(problem.meta_dict["task"])
    return Item(task, tuple(int(x) for x in problem.prompt.split("-" if task == "sub" else "+")))


def cell_of(problem: Problem) -> str:
    return str(problem.meta_dict["cell"])
