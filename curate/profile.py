"""`profile`: what a curator wants to know about a dataset before spending GPU hours on it.

Rows, sources and tasks, exact and normalised duplicate prompts, missing answers and solutions,
prompt/solution lengths (characters, and tokens with a tokenizer), answer types, answer parse failures
per preset, and a few sample rows.

JSON Lines and Parquet files are scanned lazily by polars and run through its streaming engine, which
keeps only a few small numbers per row (hashes, lengths, an answer type), so memory does not grow with
the text in the file. Other sources (CSV, JSON, HF datasets, reasoning-gym), and files polars cannot
parse, go through the row-by-row readers of `sources`, which name the bad line; their canonical rows
are spooled to a temporary Parquet file and profiled the same way.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from stagewise.curate.errors import InputError, require
from stagewise.curate.presets import ANSWER_TYPES, RowError, _scalar_text, answer_type_expr
from stagewise.curate.readers import BadRow
from stagewise.curate.schema import stable_id
from stagewise.curate.sources import SKIP_HINT, expand, parse_spec, peek, plan_for, records, write_jsonl

FAST_FORMATS = (".jsonl", ".ndjson", ".parquet")
CANON = ("prompt", "answer", "solution", "id", "task", "parse_fail", "source", "preset")
SPOOL_ROWS = 20_000


@dataclass
class ProfileResult:
    """The profile as a dict (`stats`, see `to_dict`), plus the card and plot paths if written."""

    stats: dict
    card: str | None = None
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.stats, card=self.card, plots=list(self.plots))


def profile(*specs, prompt_col=None, answer_col=None, solution_col=None, id_col=None, task=None,
            skip_bad=False, rejects=None, tokenizer=None, samples=3, card=None) -> ProfileResult:
    """Profile one or more sources (the specs of `load_problems`).

    With `tokenizer` (a local path or hub id) token lengths are added; with `card` a Markdown data card
    and a length histogram PNG beside it are written. Malformed rows raise InputError naming the file
    and line unless `skip_bad` (then they are counted, and written to `rejects` if given). Answers a
    preset cannot parse are counted, not raised: finding them is what a profile is for.
    """
    import polars as pl

    if len(specs) == 1 and isinstance(specs[0], (list, tuple)):
        specs = tuple(specs[0])
    if not specs:
        raise InputError("no data named", fix="pass a file, directory, gsm8k:test, hf:NAME or rg:NAME")
    subs = [sub for s in specs for sub in expand(parse_spec(s))]
    cols = dict(prompt_col=prompt_col, answer_col=answer_col, solution_col=solution_col, id_col=id_col,
                task=task)
    with tempfile.TemporaryDirectory(prefix="stagewise-profile-") as spool:
        bad = {"rows": 0, "rejected": []}
        frames, plans = [], []
        for i, sub in enumerate(subs):
            lf, plan, engine = _fast_frame(sub, cols)
            if lf is None:
                lf, plan = _spooled_frame(sub, cols, os.path.join(spool, f"{i}.parquet"), skip_bad, bad)
            frames.append(lf)
            plans.append(dict(plan.describe(), spec=sub.text, source=sub.label, engine=engine))
        try:
            stats, per_row = _compute(pl.concat(frames, how="vertical"), samples)
        except pl.exceptions.PolarsError:
            # polars could not parse some file (malformed line, BOM, mixed types): redo those files with
            # the row-by-row readers, which either name the bad line or handle it.
            frames, bad = [], {"rows": 0, "rejected": []}
            for i, sub in enumerate(subs):
                lf, plan = _spooled_frame(sub, cols, os.path.join(spool, f"r{i}.parquet"), skip_bad, bad)
                frames.append(lf)
                plans[i].update(engine="python")
            stats, per_row = _compute(pl.concat(frames, how="vertical"), samples)
        lf = pl.concat(frames, how="vertical")
        stats["columns"] = plans
        stats["bad_rows"] = bad["rows"]
        stats["rejects"] = None
        if rejects is not None:
            write_jsonl(rejects, bad["rejected"])
            stats["rejects"] = os.fspath(rejects)
        if stats["rows"] == 0:
            raise InputError("the dataset is empty: no rows to profile", path=", ".join(s.where for s in subs[:3]),
                             fix="name a file that holds rows")
        if tokenizer:
            stats["lengths"].update(_token_lengths(lf, tokenizer))
        result = ProfileResult(stats)
        if card:
            _write_card(result, per_row, card)
    return result


def _fast_frame(sub, cols):
    """A lazy polars scan of a JSONL/Parquet file mapped to canonical columns, or (None, None, ...)."""
    import polars as pl

    if sub.kind != "file" or os.path.splitext(sub.target)[1].lower() not in FAST_FORMATS:
        return None, None, "python"
    try:
        if sub.target.lower().endswith(".parquet"):
            lf = pl.scan_parquet(sub.target)
        else:
            lf = pl.scan_ndjson(sub.target, infer_schema_length=1000)
        schema = lf.collect_schema()
        first_rows = lf.head(1).collect().to_dicts()
    except pl.exceptions.PolarsError:
        return None, None, "python"  # the row readers will name the problem
    first = first_rows[0] if first_rows else None
    plan = plan_for(sub, first, **cols) if first else None
    if plan is None:
        return None, None, "python"
    for role in ("prompt", "answer", "solution"):
        col = getattr(plan, role)
        if col and col in schema and isinstance(schema[col], (pl.List, pl.Array, pl.Struct)):
            raise InputError(f"{role} column holds {schema[col]} values, not one value per row", path=sub.where,
                             column=col, fix=f"pass --{role}-col naming a column with a single value")
    if plan.preset == "reasoning-gym":
        return None, None, "python"  # entries carry nested metadata: the row reader keeps them whole
    lf = lf.select(plan.polars_exprs(schema)).with_columns(
        pl.lit(sub.label).alias("source"), pl.lit(plan.preset or "generic").alias("preset"))
    return lf.select(CANON), plan, "polars-streaming"


def _spooled_frame(sub, cols, path, skip_bad, bad):
    """Canonical rows from the row readers, spooled to Parquet in chunks, as a lazy scan."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    first, rows = peek(records(sub))
    plan = plan_for(sub, first, **cols)
    preset = plan.preset or "generic"
    schema = pa.schema([(c, pa.bool_() if c == "parse_fail" else pa.string()) for c in CANON])
    chunk: list[dict] = []
    with pq.ParquetWriter(path, schema) as writer:
        for line, rec in rows:
            if isinstance(rec, BadRow):
                _bad(sub, line, rec.message, None, "fix or delete that line", rec.raw, skip_bad, bad)
                continue
            try:
                f = plan.convert(rec)
                row = {"prompt": f["prompt"], "answer": f["answer"], "solution": f["solution"],
                       "id": f["id"] or None, "task": f["task"], "parse_fail": False}
            except RowError as exc:
                if exc.kind in ("type", "prompt"):
                    _bad(sub, line, exc.message, exc.column, exc.fix, rec, skip_bad, bad)
                    continue
                # A preset that cannot find the answer is what the profile reports, not an error.
                row = {"prompt": _scalar_text(rec.get(plan.prompt), "prompt", plan.prompt), "answer": None,
                       "solution": None, "id": None, "task": plan.task, "parse_fail": exc.kind == "parse"}
            row.update(source=sub.label, preset=preset)
            chunk.append(row)
            if len(chunk) >= SPOOL_ROWS:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk = []
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    return pl.scan_parquet(path), plan


def _bad(sub, line, message, column, fix, raw, skip_bad, bad):
    if not skip_bad:
        raise InputError(message, path=sub.where, line=line, column=column,
                         fix=(f"{fix}; or {SKIP_HINT}" if fix and "skip-bad" not in fix else fix or SKIP_HINT))
    import json

    bad["rows"] += 1
    bad["rejected"].append({"source": sub.where, "line": line, "column": column, "error": message,
                            "raw": raw if isinstance(raw, str) else json.dumps(raw, default=str)})


def _normalised(expr):
    """polars twin of schema.normalise_text: NFKC, lower case, collapsed whitespace."""
    return expr.str.normalize("NFKC").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def _compute(lf, samples: int):
    import polars as pl

    per_row = lf.select(
        pl.col("source").cast(pl.Categorical),
        pl.col("task").cast(pl.Categorical),
        pl.col("preset").cast(pl.Categorical),
        pl.col("prompt").hash().alias("p_hash"),
        _normalised(pl.col("prompt")).hash().alias("n_hash"),
        pl.col("prompt").str.len_chars().alias("p_len"),
        pl.col("solution").str.len_chars().alias("s_len"),
        answer_type_expr("answer").cast(pl.Enum(ANSWER_TYPES)).alias("a_type"),
        pl.col("parse_fail"),
        (pl.col("answer").is_null() | (pl.col("answer").str.strip_chars() == "")).alias("no_answer"),
        (pl.col("solution").is_null() | (pl.col("solution").str.strip_chars() == "")).alias("no_solution"),
    ).collect(engine="streaming")
    n = per_row.height

    def counts(col) -> dict:
        vc = per_row.group_by(col).len().sort("len", descending=True)
        return {str(k): int(v) for k, v in zip(vc[col].to_list(), vc["len"].to_list())}

    types = counts("a_type")
    fails = per_row.group_by("preset").agg(pl.col("parse_fail").sum()).sort("preset")
    stats = {
        "rows": n,
        "sources": counts("source") if n else {},
        "tasks": counts("task") if n else {},
        "duplicates": {"exact": n - per_row["p_hash"].n_unique() if n else 0,
                       "normalised": n - per_row["n_hash"].n_unique() if n else 0},
        "missing": {"answer": int(per_row["no_answer"].sum()), "solution": int(per_row["no_solution"].sum())},
        "answer_types": {t: types.get(t, 0) for t in ANSWER_TYPES},
        "parse_failures": {str(p): int(c) for p, c in zip(fails["preset"].to_list(), fails["parse_fail"].to_list())},
        "lengths": {"prompt_chars": _describe(per_row["p_len"]), "solution_chars": _describe(per_row["s_len"])},
        "samples": [],
    }
    if samples and n:
        for row in lf.head(samples).collect().to_dicts():
            stats["samples"].append({
                "id": row["id"] or stable_id(row["prompt"] or "", row["answer"] or ""), "source": row["source"],
                "task": row["task"], "prompt": row["prompt"], "answer": row["answer"], "solution": row["solution"]})
    return stats, per_row


def _describe(s) -> dict:
    s = s.drop_nulls()
    if s.len() == 0:
        return {"count": 0}
    q = {f"p{int(p * 100)}": int(s.quantile(p, "nearest")) for p in (0.5, 0.9, 0.99)}
    return {"count": int(s.len()), "min": int(s.min()), **q, "max": int(s.max()), "mean": round(float(s.mean()), 1)}


def _token_lengths(lf, tokenizer) -> dict:
    """Token lengths of prompts and solutions, tokenised in streamed batches."""
    import polars as pl

    transformers = require("transformers", "dev")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load tokenizer: {str(exc).splitlines()[0]}", path=str(tokenizer),
                         fix="pass --tokenizer with a local model directory (or a hub id when online)") from None
    prompt_lens, solution_lens = [], []
    for batch in lf.select("prompt", "solution").collect_batches(chunk_size=5000):
        prompts = batch["prompt"].fill_null("").to_list()
        prompt_lens += [len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]]
        sols = [s for s in batch["solution"].to_list() if s]
        if sols:
            solution_lens += [len(ids) for ids in tok(sols, add_special_tokens=False)["input_ids"]]
    return {"prompt_tokens": _describe(pl.Series(prompt_lens, dtype=pl.Int64)),
            "solution_tokens": _describe(pl.Series(solution_lens, dtype=pl.Int64)),
            "tokenizer": str(tokenizer)}


def _write_card(result: ProfileResult, per_row, card_path) -> None:
    from stagewise.curate.cards import histogram_png, markdown_table, size_category, write_card

    s = result.stats
    card_path = os.fspath(card_path)
    png = os.path.splitext(card_path)[0] + "_lengths.png"
    p_len = per_row["p_len"].drop_nulls().to_numpy()
    s_len = per_row["s_len"].drop_nulls().to_numpy()
    series, labels = [p_len], ["prompt"]
    if len(s_len):
        series.append(s_len)
        labels.append("solution")
    histogram_png(series, png, title="Length distribution", xlabel="characters", bins=40, labels=labels)
    result.plots.append(png)
    front = {
        "pretty_name": ", ".join(s["sources"])[:80] or "stagewise profile",
        "size_categories": [size_category(s["rows"])],
        "task_categories": ["question-answering"],
        "tags": ["stagewise", "reasoning"] + sorted({f"task:{t}" for t in s["tasks"]})[:10],
    }
    lengths = [(name, d.get("count", 0), d.get("min"), d.get("p50"), d.get("p90"), d.get("p99"), d.get("max"),
                d.get("mean")) for name, d in s["lengths"].items() if isinstance(d, dict)]
    sections = [
        ("Summary", markdown_table(["rows", "exact duplicate prompts", "normalised duplicate prompts",
                                    "missing answers", "missing solutions", "bad rows skipped"],
                                   [[s["rows"], s["duplicates"]["exact"], s["duplicates"]["normalised"],
                                     s["missing"]["answer"], s["missing"]["solution"], s["bad_rows"]]])),
        ("Sources and columns", markdown_table(
            ["source", "rows", "preset", "prompt", "answer", "solution", "task"],
            [[c["source"], s["sources"].get(c["source"], 0), c["preset"], c["prompt"], c["answer"],
              c["solution"], c["task"]] for c in s["columns"]])),
        ("Tasks", markdown_table(["task", "rows"], list(s["tasks"].items()))),
        ("Answer types", markdown_table(["type", "rows"], list(s["answer_types"].items()))),
        ("Answer parse failures", markdown_table(["preset", "rows"], list(s["parse_failures"].items()))),
        ("Lengths", markdown_table(["field", "count", "min", "p50", "p90", "p99", "max", "mean"], lengths)
         + f"\n\n![length histogram]({os.path.basename(png)})"),
        ("Sample rows", markdown_table(["id", "prompt", "answer"],
                                       [[r["id"], _clip(r["prompt"], 160), _clip(r["answer"], 40)]
                                        for r in s["samples"]])),
        ("Provenance", "Generated by `stagewise profile`. Duplicates compare prompts exactly and after "
                       "normalisation (NFKC, lower case, collapsed whitespace)."),
    ]
    result.card = write_card(card_path, front_matter=front, title="Data profile", sections=sections)


def _clip(text, n):
    text = "" if text is None else str(text).replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"
