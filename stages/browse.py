"""Looking at what the model wrote: one item with its samples (`show`), or samples by filter (`samples`).

    sw.show("run.duckdb", "0738c9")            # {"item": {...}, "samples": [...]}; an id prefix is enough
    sw.samples("run.duckdb", bucket="unmastered", status="no_answer", limit=20)   # a polars DataFrame

A routing decision is only as good as the verifier: a false negative, a format failure (the model
ignored the answer format) or a truncation (finish reason "length") is visible only in the samples.
Both read the store (read-only) with plain SQL; the bucket and reason are the default `stage`
policy's, computed from the same n and c as `route`.
"""

from __future__ import annotations

from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.store import STATUSES
from stagewise.stages.routing import BUCKETS, Item, StageRouter, open_store, resolve_run

SAMPLE_FIELDS = ("sample_idx", "status", "score", "extracted", "finish_reason", "n_tokens", "reason",
                 "completion")
# The listing of `samples`: item and sample keys first, the long texts last.
LIST_FIELDS = ("problem_id", "sample_idx", "bucket", "status", "score", "extracted", "answer",
               "finish_reason", "n_tokens", "reason", "source", "task", "prompt", "completion")


def show(store, item_id: str, *, run_id: str | None = None) -> dict:
    """One probed item and every stored sample of it: `{"item": {...}, "samples": [...]}`.

    `item_id` may be a unique prefix of the id. The item holds id, run_id, model, source, task, prompt,
    answer (gold), solution, bucket, reason, n, c, p_hat, posterior_mean, ci_low, ci_high, n_unverified;
    each sample holds sample_idx, status, score, extracted, finish_reason, n_tokens, reason (the
    verifier's) and completion. Unknown or ambiguous ids and unknown runs raise with the fix.
    """
    st, opened = open_store(store)
    try:
        rid = resolve_run(st, run_id)
        pid = _resolve_id(st, rid, str(item_id))
        problem = st.problems([pid])[0]
        row = st.con.execute("SELECT n, c, p_hat, posterior_mean, ci_low, ci_high, n_unverified FROM mastery "
                             "WHERE run_id = ? AND problem_id = ?", [rid, pid]).fetchall()
        model = st.con.execute("SELECT model FROM runs WHERE run_id = ?", [rid]).fetchall()[0][0]
        samples = st.con.execute(f"SELECT {', '.join(SAMPLE_FIELDS)} FROM samples WHERE run_id = ? AND "
                                 "problem_id = ? ORDER BY sample_idx", [rid, pid]).fetchall()
    finally:
        if opened:
            st.close()
    n, c, p_hat, mean, low, high, unverified = row[0]
    decision = StageRouter().decide_one(Item(id=pid, n=int(n), c=int(c))) if n else None
    item = {"id": pid, "run_id": rid, "model": model, "source": problem.source, "task": problem.task,
            "prompt": problem.prompt, "answer": problem.answer, "solution": problem.solution,
            "bucket": decision.bucket if decision else None,
            "reason": decision.reason if decision else f"no verified sample ({unverified} unverifiable)",
            "n": int(n), "c": int(c), "p_hat": p_hat, "posterior_mean": mean, "ci_low": low, "ci_high": high,
            "n_unverified": int(unverified)}
    return {"item": item, "samples": [dict(zip(SAMPLE_FIELDS, s)) for s in samples]}


def samples(store, *, run_id: str | None = None, bucket: str | None = None, status: str | None = None,
            item_id: str | None = None, limit: int | None = None):
    """The stored samples of one run, filtered (a polars DataFrame with the LIST_FIELDS columns).

    `bucket` is unmastered / partial / mastered (the item's, on all its verified samples), `status` a
    verifier status (correct, wrong, no_answer, timeout, error), `item_id` an id or unique prefix.
    Rows are ordered by item and sample index.
    """
    import polars as pl

    problems = []
    if bucket is not None and bucket not in BUCKETS:
        problems.append(f"--bucket {bucket!r} is not one of {', '.join(BUCKETS)}")
    if status is not None and status not in STATUSES:
        problems.append(f"--status {status!r} is not one of {', '.join(STATUSES)}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        problems.append(f"--limit {limit!r} must be a positive whole number")
    if problems:
        raise ConfigError("; ".join(problems))
    st, opened = open_store(store)
    try:
        rid = resolve_run(st, run_id)
        where, params = ["s.run_id = ?"], [rid]
        if item_id is not None:
            where.append("s.problem_id = ?")
            params.append(_resolve_id(st, rid, str(item_id)))
        if status is not None:
            where.append("s.status = ?")
            params.append(status)
        if bucket is not None:
            where.append(f"({_BUCKET_SQL}) = ?")
            params.append(bucket)
        sql = (f"SELECT s.problem_id, s.sample_idx, {_BUCKET_SQL} AS bucket, s.status, s.score, s.extracted, "
               "p.answer, s.finish_reason, s.n_tokens, s.reason, p.source, p.task, p.prompt, s.completion "
               "FROM samples s JOIN mastery m USING (run_id, problem_id) JOIN problems p ON p.id = s.problem_id "
               f"WHERE {' AND '.join(where)} ORDER BY s.problem_id, s.sample_idx"
               + (f" LIMIT {int(limit)}" if limit is not None else ""))
        frame = pl.from_arrow(st.con.sql(sql, params=params).to_arrow_table())
    finally:
        if opened:
            st.close()
    return frame.with_columns(pl.lit(rid).alias("run_id"))


_BUCKET_SQL = ("CASE WHEN m.n = 0 THEN NULL WHEN m.c = 0 THEN 'unmastered' WHEN m.c = m.n THEN 'mastered' "
               "ELSE 'partial' END")


def _resolve_id(st, run_id: str, prefix: str) -> str:
    """The one item id of the run starting with `prefix`; InputError for none, ConfigError for several."""
    if not prefix:
        raise ConfigError("an empty item id; pass an id (or its first characters) from `stagewise route`")
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = st.con.execute("SELECT DISTINCT problem_id FROM samples WHERE run_id = ? AND problem_id LIKE ? "
                          "ESCAPE '\\' ORDER BY problem_id LIMIT 6", [run_id, like]).fetchall()
    ids = [r[0] for r in rows]
    if prefix in ids:
        return prefix
    if not ids:
        known = [r[0] for r in st.con.execute("SELECT DISTINCT problem_id FROM samples WHERE run_id = ? "
                                              "ORDER BY problem_id LIMIT 3", [run_id]).fetchall()]
        raise InputError(f"no item with id {prefix!r} in run {run_id}", path=st.path,
                         fix="pass an id (or its first characters) listed by `stagewise samples` or "
                             f"`stagewise route`, e.g. {', '.join(known) or '(the run has no samples)'}")
    if len(ids) > 1:
        raise ConfigError(f"id prefix {prefix!r} matches {'more than 5' if len(ids) > 5 else len(ids)} items "
                          f"({', '.join(ids[:5])}); give more characters")
    return ids[0]


EXPORT_SAMPLE_COLUMNS = ("id", "run_id", "sample_idx", "completion", "extracted", "score", "status",
                         "finish_reason")


def samples_of_runs(st, run_ids: list[str]):
    """Every stored sample of `run_ids`, whatever its item's stage: the rows of an export's samples.parquet
    (id, run_id, sample_idx, completion, extracted, score, status, finish_reason), ordered by item,
    run and sample index."""
    import polars as pl

    frame = pl.from_arrow(st.con.sql(
        "SELECT problem_id AS id, run_id, sample_idx, completion, extracted, score, status, finish_reason "
        "FROM samples WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY problem_id, run_id, sample_idx",
        params=[list(run_ids)]).to_arrow_table())
    return frame.select(EXPORT_SAMPLE_COLUMNS)
