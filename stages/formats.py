"""Row layouts for the trainers people already use: TRL, verl and OpenRLHF.

Each format is a small class that turns one exported item into a row and declares an explicit pyarrow
schema per split, so an empty split still has the columns a trainer expects and verl rows have exactly
verl's types. Every row carries the item's id, task, gold answer and meta (the reasoning-gym entry as
JSON), directly or (verl) inside `extra_info`, because the verifier needs them to score.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
STATS = [("n", pa.int64()), ("c", pa.int64()), ("p_hat", pa.float64()), ("posterior_mean", pa.float64()),
         ("ci_low", pa.float64()), ("ci_high", pa.float64())]
ROUTING = [("bucket", pa.string()), ("stage", pa.string()), ("reason", pa.string())]
DEMO = [("demo_source", pa.string()), ("demo_provenance", pa.string())]
IDENT = [("id", pa.string()), ("task", pa.string())]
SPLITS = ("sft", "rl", "replay", "unrouted")


@dataclass
class ExportItem:
    """Everything a format needs for one row."""

    assignment: dict  # the assignments row (id, task, bucket, stage, reason, n, c, p_hat, ...)
    problem: object  # curate.schema.Problem
    messages: list  # the prompt exactly as the probe sent it
    model: str | None = None  # the probed model's name
    demo: object = None  # stages.demonstrations.Demonstration for SFT rows
    index: int = 0  # position in its split


def _stats(a: dict) -> dict:
    return {k: a.get(k) for k, _ in STATS}


def _routing(a: dict) -> dict:
    return {k: a.get(k) for k, _ in ROUTING}


def _demo(item: ExportItem) -> dict:
    return {"demo_source": item.demo.source, "demo_provenance": item.demo.provenance_json()}


def _assistant(text: str) -> list:
    return [{"role": "assistant", "content": text}]


class ExportFormat:
    """Base class: `row(split, item)` and `schema(split)` for split in SPLITS."""

    name = "base"
    sft_style = "prompt-completion"

    def row(self, split: str, item: ExportItem) -> dict:
        if split == "sft":
            return self.sft_row(item)
        row = self.rl_row(item, split)
        if split == "unrouted":
            row.update(self.unrouted_extra(item))
        return row

    def schema(self, split: str) -> pa.Schema:
        if split == "sft":
            return pa.schema(self.sft_fields())
        fields = self.rl_fields()
        if split == "unrouted":
            have = {name for name, _ in fields}
            fields = fields + [f for f in self.unrouted_fields() if f[0] not in have]
        return pa.schema(fields)

    def unrouted_fields(self):
        return ROUTING

    def unrouted_extra(self, item):
        return _routing(item.assignment)


class TRLFormat(ExportFormat):
    """SFT: conversational `prompt`/`completion` (or `messages`); RL: `prompt` + `solution` (the gold
    answer: GRPOTrainer passes extra columns to reward functions) + id, task, meta and the statistics."""

    name = "trl"

    def __init__(self, sft_style: str = "prompt-completion"):
        self.sft_style = sft_style

    def sft_fields(self):
        head = ([("messages", MESSAGES)] if self.sft_style == "messages"
                else [("prompt", MESSAGES), ("completion", MESSAGES)])
        return head + IDENT + [("answer", pa.string()), ("meta", pa.string())] + DEMO + ROUTING

    def sft_row(self, item):
        p, a = item.problem, item.assignment
        if self.sft_style == "messages":
            head = {"messages": item.messages + _assistant(item.demo.target)}
        else:
            head = {"prompt": item.messages, "completion": _assistant(item.demo.target)}
        return {**head, "id": p.id, "task": p.task, "answer": p.answer, "meta": p.meta, **_demo(item),
                **_routing(a)}

    def rl_fields(self):
        return [("prompt", MESSAGES), ("solution", pa.string())] + IDENT + [("meta", pa.string())] + \
            ROUTING + STATS

    def rl_row(self, item, split):
        p, a = item.problem, item.assignment
        return {"prompt": item.messages, "solution": p.answer, "id": p.id, "task": p.task, "meta": p.meta,
                **_routing(a), **_stats(a)}


VERL_EXTRA_INFO = pa.struct([
    ("split", pa.string()), ("index", pa.int64()), ("id", pa.string()), ("task", pa.string()),
    ("p_hat", pa.float64()), ("n", pa.int64()), ("c", pa.int64()), ("model", pa.string()),
    ("meta", pa.string()),
])
VERL_RL_FIELDS = [
    ("data_source", pa.string()),
    ("prompt", MESSAGES),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
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

    def sft_fields(self):
        return [("messages", MESSAGES)] + IDENT + [("answer", pa.string()), ("meta", pa.string())] + DEMO

    def sft_row(self, item):
        p = item.problem
        return {"messages": item.messages + _assistant(item.demo.target), "id": p.id, "task": p.task,
                "answer": p.answer, "meta": p.meta, **_demo(item)}

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
                           "meta": p.meta},
        }


class OpenRLHFFormat(ExportFormat):
    """RL: `input` (messages, use --apply_chat_template) and `label`; SFT: `input` and `output` (a
    one-message assistant list, which OpenRLHF concatenates to the input messages)."""

    name = "openrlhf"

    def sft_fields(self):
        return [("input", MESSAGES), ("output", MESSAGES)] + IDENT + [("answer", pa.string()),
                                                                      ("meta", pa.string())] + DEMO

    def sft_row(self, item):
        p = item.problem
        return {"input": item.messages, "output": _assistant(item.demo.target), "id": p.id, "task": p.task,
                "answer": p.answer, "meta": p.meta, **_demo(item)}

    def rl_fields(self):
        return [("input", MESSAGES), ("label", pa.string())] + IDENT + [("meta", pa.string())] + STATS

    def rl_row(self, item, split):
        p, a = item.problem, item.assignment
        return {"input": item.messages, "label": p.answer, "id": p.id, "task": p.task, "meta": p.meta,
                **_stats(a)}


FORMATS = {"trl": TRLFormat, "verl": VerlFormat, "openrlhf": OpenRLHFFormat}
SFT_STYLES = ("prompt-completion", "messages")


def make_format(name: str, *, sft_style: str = "prompt-completion") -> ExportFormat:
    from stagewise.curate.errors import ConfigError

    if name not in FORMATS:
        raise ConfigError(f"unknown --format {name!r}; choose one of: {', '.join(FORMATS)}")
    if sft_style not in SFT_STYLES:
        raise ConfigError(f"unknown --sft-style {sft_style!r}; choose one of: {', '.join(SFT_STYLES)}")
    if name != "trl" and sft_style != "prompt-completion":
        raise ConfigError(f"--sft-style applies to --format trl only ({name} has one SFT layout)")
    return TRLFormat(sft_style) if name == "trl" else FORMATS[name]()


def to_table(fmt: ExportFormat, split: str, rows: list[dict]) -> pa.Table:
    """Rows as a table with the format's explicit schema (an empty split keeps its columns)."""
    schema = fmt.schema(split)
    return pa.Table.from_pylist(rows, schema=schema)
