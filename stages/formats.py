"""Row layouts for the trainers people already use: TRL, verl and OpenRLHF.

Each format is a small class that turns one exported item into a row and declares an explicit pyarrow
schema per split, so an empty split still has the columns a trainer expects and verl rows have exactly
verl's types. Every row carries the item's id, task, gold answer and meta (the reasoning-gym entry as
JSON), directly or (verl) inside `extra_info`, because the verifier needs them to score.
"""

from __future__ import annotations

from dataclasses import dataclass

from stagewise.curate.errors import ConfigError
from stagewise.curate.verifiers.safe import label_json, problem_from_label

# contract.py reads splits through make_format and this module names splits through contract's
# layout_of: each imports the other as a module.
from stagewise.stages import contract

# Column types as plain data: a type name, a list of (name, type) for a struct, or ("list", type).
# `arrow_type` builds the pyarrow type when a schema is needed, so importing this module does not load
# pyarrow (the exported reward files import stagewise where only the verifiers are installed).
S, I, F = "string", "int64", "float64"
MESSAGES = ("list", [("role", S), ("content", S)])
STATS = [("n", I), ("c", I), ("p_hat", F), ("posterior_mean", F),
         ("ci_low", F), ("ci_high", F)]
ROUTING = [("bucket", S), ("stage", S), ("reason", S)]
DEMO = [("demo_source", S), ("demo_provenance", S)]
IDENT = [("id", S), ("task", S)]
# The raw question and the answer format the prompt asked for (stages/contract.py ITEM_FIELDS).
ASKED = [("question", S), ("answer_format", S)]


@dataclass
class ExportItem:
    """Everything a format needs for one row."""

    assignment: dict  # the assignments row (id, task, bucket, stage, reason, n, c, p_hat, ...)
    problem: object  # curate.schema.Problem
    messages: list  # the prompt exactly as the probe sent it
    model: str | None = None  # the probed model's name
    demo: object = None  # stages.demonstrations.Demonstration for SFT rows
    index: int = 0  # position in its split
    answer_format: str = "boxed"  # what the prompt asked for: "boxed" or "tags"

    def asked(self) -> dict:
        return {"question": self.problem.prompt, "answer_format": self.answer_format}


def _stats(a: dict) -> dict:
    return {k: a.get(k) for k, _ in STATS}


def _routing(a: dict) -> dict:
    return {k: a.get(k) for k, _ in ROUTING}


def _demo(item: ExportItem) -> dict:
    return {"demo_source": item.demo.source, "demo_provenance": item.demo.provenance_json()}


def _as_messages(value) -> list:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value or [])


def _prompt_part(messages) -> list:
    """The prompt of a full conversation: everything before the final assistant turn."""
    messages = list(messages or [])
    return messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages


def _assistant(text: str) -> list:
    return [{"role": "assistant", "content": text}]


class ExportFormat:
    """Base class: `row(split, item)` and `schema(split)` for split in ALL_SPLITS (a validation file has
    its training split's layout)."""

    name = "base"
    sft_style = "prompt-completion"
    sft_head = 2  # how many leading SFT fields hold the conversation

    def row(self, split: str, item: ExportItem) -> dict:
        layout = contract.layout_of(split)
        if layout == "sft":
            return self.sft_row(item)
        row = self.rl_row(item, split)
        if layout == "unrouted":
            row.update(self.unrouted_extra(item))
        return row

    def schema(self, split: str):
        """The split's pyarrow schema."""
        layout = contract.layout_of(split)
        if layout == "sft":
            return arrow_schema(self.sft_fields())
        fields = self.rl_fields()
        if layout == "unrouted":
            have = {name for name, _ in fields}
            fields = fields + [f for f in self.unrouted_fields() if f[0] not in have]
        return arrow_schema(fields)

    def unrouted_fields(self):
        return ROUTING

    def required_columns(self, split: str) -> list[str]:
        """What a reader cannot do without: the prompt (and SFT target), the gold answer, `id` and
        `task`. The other declared columns (question, answer_format, meta, statistics) are written by
        every export, and read as None from a hand-made file, never guessed."""
        if split == "sft":
            return [f for f, _ in self.sft_fields()[:self.sft_head]] + ["id", "task", "answer"]
        return [f for f, _ in self.rl_fields()[:2]] + ["id", "task"]

    def item_fields(self, row: dict, split: str) -> dict:
        """The contract's fields of one row of this format: id, task, question, answer, answer_format,
        meta and the prompt `messages` (stages/contract.py). Missing values are None, never guessed."""
        if split == "sft":
            messages, answer = self.sft_messages(row), row.get("answer")
        else:
            messages, answer = row.get("prompt"), row.get("solution")
        return {"id": row.get("id"), "task": row.get("task"), "question": row.get("question"),
                "answer": answer, "answer_format": row.get("answer_format"), "meta": row.get("meta"),
                "messages": _as_messages(messages)}

    def sft_messages(self, row: dict):
        return row.get("prompt")

    def unrouted_extra(self, item):
        return _routing(item.assignment)


class TRLFormat(ExportFormat):
    """SFT: conversational `prompt`/`completion` (or `messages`); RL: `prompt` + `solution` (the gold
    answer: GRPOTrainer passes extra columns to reward functions) + id, task, meta and the statistics."""

    name = "trl"

    def __init__(self, sft_style: str = "prompt-completion"):
        self.sft_style = sft_style
        self.sft_head = 1 if sft_style == "messages" else 2

    def sft_fields(self):
        head = ([("messages", MESSAGES)] if self.sft_style == "messages"
                else [("prompt", MESSAGES), ("completion", MESSAGES)])
        return head + IDENT + ASKED + [("answer", S), ("meta", S)] + DEMO + ROUTING

    def sft_row(self, item):
        p, a = item.problem, item.assignment
        if self.sft_style == "messages":
            head = {"messages": item.messages + _assistant(item.demo.target)}
        else:
            head = {"prompt": item.messages, "completion": _assistant(item.demo.target)}
        return {**head, "id": p.id, "task": p.task, **item.asked(), "answer": p.answer, "meta": p.meta,
                **_demo(item), **_routing(a)}

    def sft_messages(self, row):
        return _prompt_part(row.get("messages")) if self.sft_style == "messages" else row.get("prompt")

    def rl_fields(self):
        return [("prompt", MESSAGES), ("solution", S)] + IDENT + ASKED + [("meta", S)] + \
            ROUTING + STATS

    def rl_row(self, item, split):
        p, a = item.problem, item.assignment
        return {"prompt": item.messages, "solution": p.answer, "id": p.id, "task": p.task, **item.asked(),
                "meta": p.meta, **_routing(a), **_stats(a)}


VERL_EXTRA_INFO = [
    ("split", S), ("index", I), ("id", S), ("task", S),
    ("p_hat", F), ("n", I), ("c", I), ("model", S),
    ("meta", S), ("question", S), ("answer_format", S),
]
VERL_RL_FIELDS = [
    ("data_source", S),
    ("prompt", MESSAGES),
    ("ability", S),
    ("reward_model", [("style", S), ("ground_truth", S)]),
    ("extra_info", VERL_EXTRA_INFO),
]


def verl_ability(task: str) -> str:
    """verl's coarse `ability` label: math for math-like tasks, else the task family."""
    if task in ("gsm8k", "math"):
        return "math"
    if task.startswith("rg:"):
        return "reasoning"
    return task.split(":")[0]


class VerlFormat(ExportFormat):
    """RL rows in verl's RLHFDataset layout (data_source `stagewise/<task>`, scored by the shipped
    reward.py); SFT rows with `messages` for verl's multi-turn SFT dataset."""

    name = "verl"
    sft_head = 1

    def required_columns(self, split):
        return super().required_columns(split) if split == "sft" else [f for f, _ in VERL_RL_FIELDS]

    def sft_fields(self):
        return [("messages", MESSAGES)] + IDENT + ASKED + [("answer", S), ("meta", S)] + DEMO

    def sft_row(self, item):
        p = item.problem
        return {"messages": item.messages + _assistant(item.demo.target), "id": p.id, "task": p.task,
                **item.asked(), "answer": p.answer, "meta": p.meta, **_demo(item)}

    def sft_messages(self, row):
        return _prompt_part(row.get("messages"))

    def item_fields(self, row, split):
        if split == "sft":
            return super().item_fields(row, split)
        info = row.get("extra_info") or {}
        return {"id": info.get("id"), "task": info.get("task"), "question": info.get("question"),
                "answer": (row.get("reward_model") or {}).get("ground_truth"),
                "answer_format": info.get("answer_format"), "meta": info.get("meta"),
                "messages": _as_messages(row.get("prompt"))}

    def rl_fields(self):
        return list(VERL_RL_FIELDS)

    def rl_row(self, item, split):
        p, a = item.problem, item.assignment
        return {
            "data_source": f"stagewise/{p.task}",
            "prompt": item.messages,
            "ability": verl_ability(p.task),
            "reward_model": {"style": "rule", "ground_truth": p.answer},
            "extra_info": {"split": split, "index": item.index, "id": p.id, "task": p.task,
                           "p_hat": a.get("p_hat"), "n": a.get("n"), "c": a.get("c"), "model": item.model,
                           "meta": p.meta, **item.asked()},
        }


class OpenRLHFFormat(ExportFormat):
    """RL: `input` (messages, use --apply_chat_template) and `label`, a JSON string {answer, task, meta}
    (OpenRLHF hands reward functions the label alone; the shipped reward_func.py decodes it); SFT:
    `input` and `output` (a one-message assistant list, which OpenRLHF concatenates to the input)."""

    name = "openrlhf"

    def sft_fields(self):
        return [("input", MESSAGES), ("output", MESSAGES)] + IDENT + ASKED + [("answer", S),
                                                                              ("meta", S)] + DEMO

    def sft_row(self, item):
        p = item.problem
        return {"input": item.messages, "output": _assistant(item.demo.target), "id": p.id, "task": p.task,
                **item.asked(), "answer": p.answer, "meta": p.meta, **_demo(item)}

    def sft_messages(self, row):
        return row.get("input")

    def rl_fields(self):
        return [("input", MESSAGES), ("label", S)] + IDENT + ASKED + [("meta", S)] + STATS

    def rl_row(self, item, split):
        p, a = item.problem, item.assignment
        return {"input": item.messages, "label": label_json(p.answer, p.task, p.meta), "id": p.id,
                "task": p.task, **item.asked(), "meta": p.meta, **_stats(a)}

    def item_fields(self, row, split):
        if split == "sft":
            return super().item_fields(row, split)
        label = row.get("label")
        return {"id": row.get("id"), "task": row.get("task"), "question": row.get("question"),
                "answer": None if label is None else problem_from_label(label)["answer"],
                "answer_format": row.get("answer_format"), "meta": row.get("meta"),
                "messages": _as_messages(row.get("input"))}


FORMATS = {"trl": TRLFormat, "verl": VerlFormat, "openrlhf": OpenRLHFFormat}
SFT_STYLES = ("prompt-completion", "messages")


def make_format(name: str, *, sft_style: str = "prompt-completion") -> ExportFormat:
    if name not in FORMATS:
        raise ConfigError(f"unknown --format {name!r}; choose one of: {', '.join(FORMATS)}")
    if sft_style not in SFT_STYLES:
        raise ConfigError(f"unknown --sft-style {sft_style!r}; choose one of: {', '.join(SFT_STYLES)}")
    if name != "trl" and sft_style != "prompt-completion":
        raise ConfigError(f"--sft-style applies to --format trl only ({name} has one SFT layout)")
    return TRLFormat(sft_style) if name == "trl" else FORMATS[name]()


def arrow_type(spec):
    """A column type of this module as a pyarrow type."""
    import pyarrow as pa

    if isinstance(spec, str):
        return getattr(pa, spec)()
    if isinstance(spec, tuple) and spec[0] == "list":
        return pa.list_(arrow_type(spec[1]))
    return pa.struct([(name, arrow_type(t)) for name, t in spec])


def arrow_schema(fields):
    import pyarrow as pa

    return pa.schema([(name, arrow_type(t)) for name, t in fields])


def to_table(fmt: ExportFormat, split: str, rows: list[dict]):
    """Rows as a pyarrow table with the format's explicit schema (an empty split keeps its columns)."""
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=fmt.schema(split))
