"""`profile`: what a curator wants to know about a dataset before spending GPU hours on it.

Rows, sources and tasks, exact and normalised duplicate prompts, missing answers and solutions,
prompt/solution lengths (characters, and tokens with a tokenizer), answer types, answer parse failures
per preset, and a few sample rows.

Memory must not grow with the file, so every source is streamed in bounded chunks and only a few
numbers per row are kept (two 64-bit hashes and two lengths: 24 bytes). JSON Lines files are cut into
byte blocks on line boundaries and each block is parsed by polars (`pl.read_ndjson` on the block:
polars' own `scan_ndjson` memory-maps the whole file, so its resident memory grows with file size);
Parquet files are read a record batch at a time. Other sources (CSV, JSON, HF datasets,
reasoning-gym), and files polars cannot parse, go through the row-by-row readers of `sources`, which
name the bad line, in chunks of rows. Each chunk becomes canonical columns through the preset's
polars expressions, and the statistics are computed with vectorised polars expressions.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field

# decontaminate streams its pool through this module's reader: each imports the other as a module.
from stagewise.curate import decontaminate as decontamination
from stagewise.curate.cards import histogram_png, markdown_table, size_category, write_card
from stagewise.curate.errors import InputError, require
from stagewise.curate.models import resolve_model
from stagewise.curate.presets import ANSWER_TYPES, RowError, _scalar_text, answer_type_expr
from stagewise.curate.readers import BadRow
from stagewise.curate.schema import stable_id
from stagewise.curate.sources import SKIP_HINT, expand, parse_spec, peek, plan_for, records, write_jsonl

CANON = ("prompt", "answer", "solution", "id", "task", "parse_fail")
BLOCK_BYTES = 32 << 20  # JSONL bytes parsed at once
BATCH_ROWS = 50_000  # rows per Parquet batch or per chunk of the row-by-row readers
# Whitespace runs (and single non-space whitespace) collapse to one space. Matching only runs is about
# 5x faster than `\s+`, which also rewrites every single space.
_WS_RUN = r"\s\s+|[\t\n\r\f\v\x{85}\x{2028}\x{2029}]"


@dataclass
class ProfileResult:
    """The profile as a dict (`stats`, see `to_dict`), plus the card and plot paths if written."""

    stats: dict
    card: str | None = None
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.stats, card=self.card, plots=list(self.plots))

    @property
    def warnings(self) -> list[str]:
        bad = self.stats.get("bad_rows")
        return [f"skipped {bad:,} bad rows"] if bad else []



def profile(*specs, prompt_col=None, answer_col=None, solution_col=None, id_col=None, task=None,
            skip_bad=False, rejects=None, tokenizer=None, samples=3, card=None, progress=None,
            decontaminate=None, ngram: int = 8) -> ProfileResult:
    """Profile one or more sources (the specs of `load_problems`).

    With `tokenizer` (a local path or hub id) token lengths are added; with `card` a Markdown data card
    and a length histogram PNG beside it are written. Malformed rows raise InputError naming the file
    and line unless `skip_bad` (then they are counted, and written to `rejects` if given). Answers a
    preset cannot parse are counted, not raised: finding them is what a profile is for.
    `progress(rows_so_far)` is called after each chunk (the CLI shows it). With `decontaminate` (benchmark
    specs), `stats["contamination"]` counts the rows sharing an `ngram`-word run with those sets
    (curate/decontaminate.py); otherwise it is None.
    """
    if len(specs) == 1 and isinstance(specs[0], (list, tuple)):
        specs = tuple(specs[0])
    if not specs:
        raise InputError("no data named", fix="pass a file, directory, gsm8k:test, hf:NAME or rg:NAME")
    subs = [sub for s in specs for sub in expand(parse_spec(s))]
    cols = {"prompt_col": prompt_col, "answer_col": answer_col, "solution_col": solution_col, "id_col": id_col,
            "task": task}
    tok = _load_tokenizer(tokenizer) if tokenizer else None
    index = None
    if decontaminate:  # a bad benchmark spec fails before the pool is read
        index = decontamination.NgramIndex.build(decontaminate, ngram=ngram)
    total = _Accumulator(samples, tok)
    columns, rejected = [], []
    for sub in subs:
        done = sum(total.counts["sources"].values())
        report = (lambda n, done=done: progress(done + n)) if progress else None
        acc, desc = _profile_source(sub, cols, samples, tok, skip_bad, report)
        total.merge(acc)
        rejected += acc.rejected
        columns.append(dict(desc, spec=sub.text, source=sub.label))
    stats, per_row = total.finish()
    if stats["rows"] == 0:
        raise InputError("the dataset is empty: no rows to profile", path=", ".join(s.where for s in subs[:3]),
                         fix="name a file that holds rows")
    stats["columns"] = columns
    stats["bad_rows"] = len(rejected)
    stats["rejects"] = None
    if rejects is not None:
        write_jsonl(rejects, rejected)
        stats["rejects"] = os.fspath(rejects)
    if tok is not None:
        stats["lengths"]["tokenizer"] = str(tokenizer)
    stats["contamination"] = None
    if index is not None:
        found = decontamination.decontaminate(*specs, against=index, **cols, skip_bad=skip_bad)
        stats["contamination"] = found.to_dict(max_matches=samples)
    result = ProfileResult(stats)
    if card:
        _write_card(result, per_row, card)
    return result


class _Accumulator:
    """Statistics gathered chunk by chunk: counters, and 24 bytes per row (two hashes, two lengths)."""

    def __init__(self, samples: int, tok=None, progress=None):
        self.n_samples, self.tok, self.progress = samples, tok, progress
        self.rows = 0
        self.counts = {k: Counter() for k in ("sources", "tasks", "answer_types", "parse_failures", "missing")}
        self.per_row, self.samples, self.rejected = [], [], []
        self.tokens = {"prompt_tokens": [], "solution_tokens": []}

    def add(self, canon, source: str, preset: str) -> None:
        import polars as pl

        if canon.height == 0:
            return
        prompt = pl.col("prompt")
        rows = canon.select(
            prompt.hash().alias("p_hash"),
            _fast_key(prompt).alias("key"),
            # non-ASCII text has more bytes than characters: far cheaper than a regex
            (prompt.str.len_bytes() != prompt.str.len_chars()).fill_null(False).alias("non_ascii"),
            prompt.str.len_chars().cast(pl.UInt32).alias("p_len"),
            pl.col("solution").str.len_chars().cast(pl.UInt32).alias("s_len"),
            answer_type_expr("answer").alias("a_type"),
            pl.col("parse_fail").fill_null(False),
            (prompt.is_null() | (prompt.str.strip_chars() == "")).alias("no_prompt"),
            (pl.col("answer").is_null() | (pl.col("answer").str.strip_chars() == "")).alias("no_answer"),
            (pl.col("solution").is_null() | (pl.col("solution").str.strip_chars() == "")).alias("no_solution"),
        )
        key = rows["key"]
        if rows["non_ascii"].any():
            # NFKC is the slow step and the identity on ASCII: apply it only where it can change something.
            idx = rows["non_ascii"].arg_true()
            key = key.scatter(idx, canon["prompt"].gather(idx).to_frame().select(
                _fast_key(prompt.str.normalize("NFKC"))).to_series())
        self.per_row.append(rows.select("p_hash", "p_len", "s_len").with_columns(key.hash().alias("n_hash")))
        c = self.counts
        c["sources"][source] += canon.height
        self.rows += canon.height
        if self.progress:
            self.progress(self.rows)
        c["parse_failures"][preset] += int(rows["parse_fail"].sum())
        c["missing"]["prompt"] += int(rows["no_prompt"].sum())
        c["missing"]["answer"] += int(rows["no_answer"].sum())
        c["missing"]["solution"] += int(rows["no_solution"].sum())
        for col, counter in (("a_type", c["answer_types"]),):
            for value, n in rows[col].value_counts().iter_rows():
                counter[value] += n
        for value, n in canon["task"].value_counts().iter_rows():
            c["tasks"][value] += n
        if len(self.samples) < self.n_samples:
            for r in canon.head(self.n_samples - len(self.samples)).iter_rows(named=True):
                self.samples.append({"id": r["id"] or stable_id(r["prompt"] or "", r["answer"] or ""),
                                     "source": source, "task": r["task"], "prompt": r["prompt"],
                                     "answer": r["answer"], "solution": r["solution"]})
        if self.tok is not None:
            self.tokens["prompt_tokens"] += _count_tokens(self.tok, canon["prompt"].fill_null("").to_list())
            self.tokens["solution_tokens"] += _count_tokens(self.tok, canon["solution"].drop_nulls().to_list())

    def merge(self, other: _Accumulator) -> None:
        for k, counter in other.counts.items():
            self.counts[k].update(counter)
            for key in counter:  # keep zero counts (e.g. "gsm8k: 0 parse failures")
                self.counts[k].setdefault(key, 0)
        self.per_row += other.per_row
        self.samples += other.samples[: max(0, self.n_samples - len(self.samples))]
        for k in self.tokens:
            self.tokens[k] += other.tokens[k]

    def finish(self):
        import polars as pl

        c = self.counts
        per_row = pl.concat(self.per_row) if self.per_row else pl.DataFrame(
            schema={"p_hash": pl.UInt64, "p_len": pl.UInt32, "s_len": pl.UInt32, "n_hash": pl.UInt64})
        n = per_row.height
        stats = {
            "rows": n,
            "sources": dict(c["sources"].most_common()),
            "tasks": dict(c["tasks"].most_common()),
            "duplicates": {"exact": n - per_row["p_hash"].n_unique() if n else 0,
                           "normalised": n - per_row["n_hash"].n_unique() if n else 0},
            "missing": {k: c["missing"][k] for k in ("prompt", "answer", "solution")},
            "answer_types": {t: c["answer_types"].get(t, 0) for t in ANSWER_TYPES},
            "parse_failures": dict(sorted(c["parse_failures"].items())),
            "lengths": {"prompt_chars": _describe(per_row["p_len"]), "solution_chars": _describe(per_row["s_len"])},
            "samples": self.samples,
        }
        if self.tok is not None:
            for k, values in self.tokens.items():
                stats["lengths"][k] = _describe(pl.Series(values, dtype=pl.Int64))
        return stats, per_row


def _fast_key(expr):
    """polars twin of schema.normalise_text, minus NFKC (applied to non-ASCII rows only, see add)."""
    return expr.str.to_lowercase().str.replace_all(_WS_RUN, " ").str.strip_chars()


def _profile_source(sub, cols, samples, tok, skip_bad, progress=None, make_acc=None):
    """Profile one expanded source: the polars fast path if it applies, else the row-by-row readers.

    `make_acc()` replaces the accumulator (anything with add(canon, source, preset), `rejected` and
    `counts`): decontamination streams the same canonical chunks through its own.
    """
    import polars as pl

    make_acc = make_acc or (lambda: _Accumulator(samples, tok, progress))

    ext = os.path.splitext(sub.target)[1].lower() if sub.kind == "file" else ""
    if ext in (".jsonl", ".ndjson", ".parquet"):
        acc = make_acc()
        try:
            blocks = _jsonl_frames(sub.target) if ext != ".parquet" else _parquet_frames(sub.target)
            plan = _stream(sub, cols, blocks, acc)
            if plan is not None:
                return acc, dict(plan.describe(), engine="polars")
        except (pl.exceptions.PolarsError, OSError, ValueError, _NeedRowReader):
            pass  # malformed line, mixed types...: the row readers name the line or cope with it
    acc = make_acc()
    plan = _rows(sub, cols, acc, skip_bad)
    return acc, dict(plan.describe() if plan else {"preset": None}, engine="rows")


class _NeedRowReader(Exception):
    """The fast path met something only the row readers can name (and count) properly."""


# polars turns a list or object into its JSON text when the rest of a column is strings; such an
# answer starts with `["` or `{"` (an interval answer such as "[0, 1]" has no quotes).
_JSON_IN_TEXT = r'^\s*[\[{]\s*"'


def _stream(sub, cols, frames, acc):
    """Feed polars frames of a file through its column plan; None if the row readers must take over."""
    import polars as pl

    plan = None
    for df in frames:
        if plan is None:
            if df.height == 0:
                continue
            plan = plan_for(sub, df.row(0, named=True), columns=df.columns, **cols)
            if plan.preset == "reasoning-gym":
                return None  # entries carry nested metadata: the row reader keeps them whole
        schema = df.schema
        for role in ("prompt", "answer", "solution"):
            col = getattr(plan, role)
            if col and col in schema and isinstance(schema[col], (pl.List, pl.Array, pl.Struct)):
                raise InputError(f"the {role} column holds {schema[col]} values, not one value per row",
                                 path=sub.where, column=col,
                                 fix=f"pass --{role}-col naming a column with a single value")
        if plan.answer in schema and schema[plan.answer] == pl.String and \
                df[plan.answer].str.contains(_JSON_IN_TEXT).any():
            raise _NeedRowReader
        acc.add(df.select(plan.polars_exprs(schema)), sub.label, plan.preset or "generic")
    return plan


def _jsonl_frames(path):
    """A JSONL file as polars frames of at most BLOCK_BYTES of text each, cut at line ends."""
    import polars as pl

    with open(path, "rb") as f:
        rest, first = b"", True
        while True:
            buf = f.read(BLOCK_BYTES)
            if first and buf.startswith(b"\xef\xbb\xbf"):
                buf = buf[3:]  # a UTF-8 byte-order mark is harmless
            first = False
            if not buf:
                if rest.strip():
                    yield pl.read_ndjson(io.BytesIO(rest))
                return
            buf = rest + buf
            cut = buf.rfind(b"\n")
            if cut == -1:
                rest = buf
                continue
            rest = buf[cut + 1:]
            if buf[:cut].strip():
                yield pl.read_ndjson(io.BytesIO(buf[: cut + 1]))


def _parquet_frames(path):
    import polars as pl
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        yield pl.from_arrow(batch)


def _rows(sub, cols, acc, skip_bad):
    """The row-by-row readers, in chunks: they name bad lines, and count (skip_bad) what they skip."""
    import polars as pl

    first, columns, rows = peek(records(sub))
    plan = plan_for(sub, first, columns=columns, **cols)
    if plan is None:  # no usable record: report the bad ones (or nothing: an empty source)
        for line, rec in rows:
            _bad(sub, line, rec.message, None, rec.fix, rec.raw, skip_bad, acc)
        return None
    preset = plan.preset or "generic"
    schema = {c: (pl.Boolean if c == "parse_fail" else pl.String) for c in CANON}
    chunk: list[dict] = []
    for line, rec in rows:
        if isinstance(rec, BadRow):
            _bad(sub, line, rec.message, None, rec.fix, rec.raw, skip_bad, acc)
            continue
        try:
            f = plan.convert(rec, require_prompt=False)
            row = {"prompt": f["prompt"], "answer": f["answer"], "solution": f["solution"], "id": f["id"] or None,
                   "task": f["task"], "parse_fail": False}
        except RowError as exc:
            if exc.kind == "type":
                _bad(sub, line, exc.message, exc.column, exc.fix, rec, skip_bad, acc)
                continue
            # A preset that cannot find the answer is what the profile reports, not an error.
            row = {"prompt": _scalar_text(rec.get(plan.prompt), "prompt", plan.prompt), "answer": None,
                   "solution": None, "id": None, "task": plan.task, "parse_fail": exc.kind == "parse"}
        chunk.append(row)
        if len(chunk) >= BATCH_ROWS:
            acc.add(pl.DataFrame(chunk, schema=schema), sub.label, preset)
            chunk = []
    acc.add(pl.DataFrame(chunk, schema=schema), sub.label, preset)
    if not acc.counts["sources"]:
        acc.counts["parse_failures"].setdefault(preset, 0)
    return plan


def _bad(sub, line, message, column, fix, raw, skip_bad, acc):
    if not skip_bad:
        raise InputError(message, path=sub.where, line=line, column=column,
                         fix=(f"{fix}; or {SKIP_HINT}" if fix and "skip-bad" not in fix else fix or SKIP_HINT))
    acc.rejected.append({"source": sub.where, "line": line, "column": column, "error": message,
                         "raw": raw if isinstance(raw, str) else json.dumps(raw, default=str)})


def _describe(s) -> dict:
    s = s.drop_nulls()
    if s.len() == 0:
        return {"count": 0}
    q = {f"p{int(p * 100)}": int(s.quantile(p, "nearest")) for p in (0.5, 0.9, 0.99)}
    return {"count": int(s.len()), "min": int(s.min()), **q, "max": int(s.max()), "mean": round(float(s.mean()), 1)}


def _load_tokenizer(path):
    transformers = require("transformers", "dev")
    name = os.path.expanduser(str(path))
    if not os.path.exists(name) and "/" not in name:
        name = resolve_model(name)  # the embedded default, e.g. smollm2-135m
    try:
        return transformers.AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load tokenizer: {str(exc).splitlines()[0]}", path=str(path),
                         fix="pass --tokenizer with a local model directory (or a hub id when online)") from None


def _count_tokens(tok, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def _write_card(result: ProfileResult, per_row, card_path) -> None:
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
                                    "missing prompts", "missing answers", "missing solutions", "bad rows skipped"],
                                   [[s["rows"], s["duplicates"]["exact"], s["duplicates"]["normalised"],
                                     s["missing"]["prompt"], s["missing"]["answer"], s["missing"]["solution"],
                                     s["bad_rows"]]])),
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
        *([("Contamination", _contamination_md(s["contamination"]))] if s.get("contamination") else []),
        ("Provenance", ("Generated by `stagewise profile`. Duplicates compare prompts exactly and after "
                        "normalisation (NFKC, lower case, collapsed whitespace).")),
    ]
    result.card = write_card(card_path, front_matter=front, title="Data profile", sections=sections)


def _contamination_md(c: dict) -> str:
    sets = [x["set"] for x in c["sets"]]
    table = markdown_table(["source", "rows", "contaminated", *(f"vs {n}" for n in sets)],
                           [[src, e["rows"], e["contaminated"], *(e["by_set"].get(n, 0) for n in sets)]
                            for src, e in c["sources"].items()])
    return (f"{c['contaminated']} of {c['rows']} rows share a {c['ngram']}-word run with a benchmark item "
            f"(prompts normalised as for duplicates).\n\n{table}")


def _clip(text, n):
    text = "" if text is None else str(text).replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"
