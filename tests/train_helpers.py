"""Builders of small TRL-format export directories for the trainer tests.

They write exactly the agreed export layout (stages/contract.py): sft.parquet with
conversational `prompt` + one-message `completion`, rl.parquet with `prompt` + `solution` + id/task/meta,
replay.parquet, assignments.parquet and manifest.json["probe"]. The manifest is a real
`ExportManifest` (stages/contract.py).
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
    return {"id": f"s{i}", "task": task, "question": question, "answer_format": "tags", "meta": "{}",
            "answer": answer, "prompt": _messages(question), "completion": [{"role": "assistant", "content": answer}]}


def rl_row(i: int, question: str, answer: str, task: str = "exact", p_hat: float = 0.5) -> dict:
    return {"id": f"r{i}", "task": task, "question": question, "answer_format": "tags", "meta": "{}",
            "solution": answer, "prompt": _messages(question), "n": 4, "c": 2, "p_hat": p_hat}


def make_export(out, sft=(), rl=(), replay=(), probe=None, write_empty=True) -> str:
    """sft/rl/replay: iterables of (question, answer). Returns the export directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sft_rows = [sft_row(i, q, a) for i, (q, a) in enumerate(sft)]
    rl_rows = [rl_row(i, q, a) for i, (q, a) in enumerate(rl)]
    replay_rows = [dict(rl_row(i, q, a), id=f"m{i}") for i, (q, a) in enumerate(replay)]
    if sft_rows or write_empty:
        _write_parquet(sft_rows, out / "sft.parquet", dict.fromkeys(("prompt", "completion", "id", "task", "answer")))
    if rl_rows or write_empty:
        _write_parquet(rl_rows, out / "rl.parquet", dict.fromkeys(("prompt", "solution", "id", "task")))
    if replay_rows:
        _write_parquet(replay_rows, out / "replay.parquet")
    assignments = ([{"id": r["id"], "task": r["task"], "bucket": "unmastered", "stage": "sft"} for r in sft_rows]
                   + [{"id": r["id"], "task": r["task"], "bucket": "partial", "stage": "rl"} for r in rl_rows]
                   + [{"id": r["id"], "task": r["task"], "bucket": "mastered", "stage": "replay"}
                      for r in replay_rows])
    _write_parquet(assignments, out / "assignments.parquet")
    write_manifest(out, probe or PROBE, splits={"sft": len(sft_rows), "rl": len(rl_rows), "replay": len(replay_rows)})
    return str(out)


def write_manifest(out, probe: dict, splits: dict | None = None) -> None:
    """A manifest.json of the export contract (stages/contract.py) for a hand-built export."""
    from stagewise.stages.contract import ExportManifest

    manifest = ExportManifest(format="trl", sft_style="prompt-completion", run_id="hand-made", probe=probe,
                              model={"name": probe.get("model")}, route={"policy": "stage"}, demonstrations={},
                              counts={"splits": splits or {}})
    (Path(out) / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))


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
        sft.append({"id": p.id, "task": p.task, "question": p.prompt, "answer_format": "boxed", "answer": p.answer,
                    "meta": p.meta, "prompt": msgs,
                    "completion": [{"role": "assistant", "content": format_target(p.solution, p.answer, p)}]})
        rl.append({"id": p.id, "task": p.task, "question": p.prompt, "answer_format": "boxed", "solution": p.answer,
                   "meta": p.meta, "prompt": msgs})
    _write_parquet(sft, out / "sft.parquet")
    _write_parquet(rl, out / "rl.parquet")
    probe = {"sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64}, "system_prompt": None,
             "prompt_template": None, "model": "smollm2-135m"}
    write_manifest(out, probe, splits={"sft": len(sft), "rl": len(rl)})
    return str(out)
