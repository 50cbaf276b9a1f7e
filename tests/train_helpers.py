"""Builders of small TRL-format export directories for the trainer tests.

They write exactly the agreed export layout (stages/export.py, DESIGN.md "Exports"): sft.parquet with
conversational `prompt` + one-message `completion`, rl.parquet with `prompt` + `solution` + id/task/meta,
replay.parquet, assignments.parquet and manifest.json["probe"]. When the real exporter is in place,
`make_export` can be swapped for a probe -> route -> export of the same items without changing a test.
"""

from __future__ import annotations

import json
from pathlib import Path

SYSTEM = "Reply with the answer only."
PROBE = {
    "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4},
    "system_prompt": SYSTEM,
    "prompt_template": "{prompt}",
    "model": "tiny",
}


def _messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def _write_parquet(rows: list[dict], path: Path, schema_row: dict | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows:
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:  # an empty split still has its columns
        cols = {k: pa.array([], type=pa.string()) for k in (schema_row or {"prompt": 1})}
        pq.write_table(pa.table(cols), path)


def sft_row(i: int, question: str, answer: str, task: str = "exact") -> dict:
    return {"id": f"s{i}", "task": task, "meta": "{}", "answer": answer, "prompt": _messages(question),
            "completion": [{"role": "assistant", "content": answer}]}


def rl_row(i: int, question: str, answer: str, task: str = "exact", p_hat: float = 0.5) -> dict:
    return {"id": f"r{i}", "task": task, "meta": "{}", "solution": answer, "prompt": _messages(question),
            "n": 4, "c": 2, "p_hat": p_hat}


def make_export(out, sft=(), rl=(), replay=(), probe=None, write_empty=True) -> str:
    """sft/rl/replay: iterables of (question, answer). Returns the export directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sft_rows = [sft_row(i, q, a) for i, (q, a) in enumerate(sft)]
    rl_rows = [rl_row(i, q, a) for i, (q, a) in enumerate(rl)]
    replay_rows = [dict(rl_row(i, q, a), id=f"m{i}") for i, (q, a) in enumerate(replay)]
    if sft_rows or write_empty:
        _write_parquet(sft_rows, out / "sft.parquet", {"prompt": 1, "completion": 1})
    if rl_rows or write_empty:
        _write_parquet(rl_rows, out / "rl.parquet", {"prompt": 1, "solution": 1})
    if replay_rows:
        _write_parquet(replay_rows, out / "replay.parquet")
    assignments = ([{"id": r["id"], "task": r["task"], "bucket": "unmastered", "stage": "sft"} for r in sft_rows]
                   + [{"id": r["id"], "task": r["task"], "bucket": "partial", "stage": "rl"} for r in rl_rows]
                   + [{"id": r["id"], "task": r["task"], "bucket": "mastered", "stage": "replay"}
                      for r in replay_rows])
    _write_parquet(assignments, out / "assignments.parquet")
    manifest = {"format": "trl", "probe": probe or PROBE,
                "counts": {"sft": len(sft_rows), "rl": len(rl_rows), "replay": len(replay_rows)}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return str(out)


# A memorisable SFT set: short questions each with a fixed one-word answer.
MEMO = [("a?", "cat"), ("b?", "dog"), ("c?", "owl"), ("d?", "fox"), ("e?", "elk"), ("f?", "yak"),
        ("g?", "emu"), ("h?", "bee")]


def make_gsm8k_export(out, n: int = 16) -> str:
    """A TRL export of the shipped GSM8K rows with the default prompts and worked-solution targets."""
    import os

    import stagewise
    from stagewise.curate.prompts import build_messages, format_target
    from stagewise.curate.sources import load_problems

    data = os.path.join(os.path.dirname(stagewise.__file__), "data", "gsm8k", "train_head500.jsonl")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sft, rl = [], []
    for p in load_problems(f"gsm8k:{data}", limit=n):
        msgs = build_messages(p)
        sft.append({"id": p.id, "task": p.task, "answer": p.answer, "meta": p.meta, "prompt": msgs,
                    "completion": [{"role": "assistant", "content": format_target(p.solution, p.answer, p)}]})
        rl.append({"id": p.id, "task": p.task, "solution": p.answer, "meta": p.meta, "prompt": msgs})
    _write_parquet(sft, out / "sft.parquet")
    _write_parquet(rl, out / "rl.parquet")
    probe = {"sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64}, "system_prompt": None,
             "prompt_template": None, "model": "smollm2-135m"}
    (out / "manifest.json").write_text(json.dumps({"format": "trl", "probe": probe}))
    return str(out)
