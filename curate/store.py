"""The probe store: one embedded DuckDB file holding problems, runs, samples and the `mastery` view.

Table and column names are a contract (docs/DESIGN.md, "Probe store"); later stages and users query them directly:

    duckdb RUN.duckdb "SELECT problem_id, n, c, p_hat, ci_low, ci_high FROM mastery"

Reliability: samples are written in batches, one transaction per batch, with `INSERT OR IGNORE` on the
primary key (run_id, problem_id, sample_idx). A `kill -9` loses at most the batch in flight (DuckDB's
write-ahead log replays committed transactions on the next open), and re-inserting a sample that is
already stored changes nothing, so a resumed probe can never count a sample twice.

One writer per store file: DuckDB locks the file for the process that opens it for writing. Sharded
runs (`--shard i/N`) each write their own store; `merge` (or `stagewise merge`) combines them.

n counts *verified* samples (status correct, wrong or no_answer); a sample whose verifier timed out or
crashed is stored with its reason but is evidence of nothing, so it is counted in `n_unverified`
instead. c counts status = 'correct' (score >= 1).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from stagewise.curate.errors import ConfigError, InputError, StagewiseError, storage_error
from stagewise.curate.schema import Problem
from stagewise.curate.statistics import Z_95

SCHEMA_VERSION = "1"
STORAGE_COMPATIBILITY = "v1.4.0"  # the oldest DuckDB that reads a new store (and runs the mastery view)
STATUSES = ("correct", "wrong", "no_answer", "timeout", "error")
VERIFIED = ("correct", "wrong", "no_answer")

# Keys of a run config that do not change what is sampled: two commands differing only in these
# resume the same run (and shards of one run share its run_id, so their stores merge).
NON_IDENTITY_KEYS = frozenset({
    "versions", "backend", "backend_options", "backend_args", "base_url", "batch_size", "shard", "limit", "progress",
    "store", "data", "created_at", "run_id", "keep_completions", "ray",
})

_PROBLEM_COLUMNS = ("id", "prompt", "answer", "solution", "source", "task", "meta")
SAMPLE_COLUMNS = ("completion", "extracted", "score", "status", "reason", "n_tokens", "finish_reason")

_TABLES = """
CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS problems (
    id VARCHAR PRIMARY KEY, prompt VARCHAR, answer VARCHAR, solution VARCHAR,
    source VARCHAR, task VARCHAR, meta VARCHAR
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, model VARCHAR, config VARCHAR, versions VARCHAR
);
CREATE TABLE IF NOT EXISTS samples (
    run_id VARCHAR NOT NULL, problem_id VARCHAR NOT NULL, sample_idx INTEGER NOT NULL,
    completion VARCHAR, extracted VARCHAR, score DOUBLE, status VARCHAR NOT NULL, reason VARCHAR,
    n_tokens INTEGER, finish_reason VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (run_id, problem_id, sample_idx)
);
"""

# The statistics of curate/statistics.py in SQL (tests check they agree). Stored in the file, so the
# `mastery` view also works from the duckdb CLI. Counts in the store's column order (n, c), like the
# Python functions; z is statistics.Z_95 written as its exact decimal (95%).
SQL_MACROS = f"""
CREATE OR REPLACE MACRO sw_wilson(n, c, z, sign) AS
    (c::DOUBLE / n + z * z / (2 * n)) / (1 + z * z / n)
    + sign * z / (1 + z * z / n) * sqrt((c::DOUBLE / n) * (1 - c::DOUBLE / n) / n + z * z / (4 * n * n));
CREATE OR REPLACE MACRO sw_wilson_low(n, c) AS
    CASE WHEN c = 0 THEN 0.0 ELSE greatest(0.0, sw_wilson(n, c, {Z_95!r}::DOUBLE, -1)) END;
CREATE OR REPLACE MACRO sw_wilson_high(n, c) AS
    CASE WHEN c = n THEN 1.0 ELSE least(1.0, sw_wilson(n, c, {Z_95!r}::DOUBLE, 1)) END;
CREATE OR REPLACE MACRO sw_pass_at_k(n, c, k) AS CASE
    WHEN n < k THEN NULL
    WHEN n - c < k THEN 1.0
    WHEN c = 0 THEN 0.0
    ELSE 1.0 - list_product(list_transform(range(n - c + 1, n + 1), lambda i: 1.0 - k / i))
    END;
"""


def _view_sql(max_k: int) -> str:
    ks, k = [], 1
    while k <= max(1, max_k):
        ks.append(k)
        k *= 2
    pass_cols = ",\n    ".join(f"sw_pass_at_k(n, c, {k}) AS pass_at_{k}" for k in ks)
    verified = ", ".join(f"'{s}'" for s in VERIFIED)
    return f"""
CREATE OR REPLACE VIEW mastery AS
WITH agg AS (
    SELECT run_id, problem_id,
        count(*) FILTER (WHERE status IN ({verified})) AS n,
        count(*) FILTER (WHERE status = 'correct') AS c,
        count(*) AS n_samples,
        count(*) FILTER (WHERE status NOT IN ({verified})) AS n_unverified
    FROM samples GROUP BY run_id, problem_id
)
SELECT run_id, problem_id, n, c,
    CASE WHEN n > 0 THEN c::DOUBLE / n END AS p_hat,
    (c + 1)::DOUBLE / (n + 2) AS posterior_mean,
    sw_wilson_low(n, c) AS ci_low,
    sw_wilson_high(n, c) AS ci_high,
    {pass_cols},
    n_samples, n_unverified
FROM agg
"""


class StoreBusyError(StagewiseError):
    """Another process has the store open for writing (DuckDB allows one writer per file)."""


class StoreOpenInProcessError(ConfigError):
    """This process already has the store open in the other mode (read-only vs writable)."""


def _locked_by_another_process(path: str, *, write: bool) -> bool:
    """Whether another process holds a lock on `path` that conflicts with opening it (DuckDB locks the
    whole file with fcntl: shared for a reader, exclusive for the writer). False where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return False
    try:
        fd = os.open(path, os.O_RDWR if write else os.O_RDONLY)
    except OSError:
        return False
    try:
        # Our own test lock is released by the close below; this process holds no other lock on the file
        # (DuckDB would have reported a ConnectionException, or shared its instance, instead).
        fcntl.lockf(fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EACCES, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


def canonical_config(config: dict) -> dict:
    """The part of a run config that defines what is sampled, normalised (1 == 1.0, sorted keys)."""
    return _normalise({k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS})


def run_id_for(config: dict) -> str:
    """16 hex chars of sha256 over the canonical config: same settings, same run, so a re-run resumes."""
    text = json.dumps(canonical_config(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _normalise(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return str(value)


def library_versions() -> dict:
    """Versions of the libraries that shape samples and scores, recorded with every run."""
    from importlib import metadata

    out = {}
    for dist in ("stagewise", "torch", "transformers", "vllm", "duckdb", "math-verify", "reasoning-gym",
                 "sympy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


class ProbeStore:
    """A DuckDB probe store. Use as a context manager, or call `close()`.

    `read_only=True` opens an existing store without taking the writer lock from other readers.
    """

    def __init__(self, path: str | os.PathLike, read_only: bool = False):
        import duckdb

        self.path = str(path)
        self.read_only = read_only
        if read_only and not os.path.exists(self.path):
            raise InputError("probe store not found", path=self.path,
                             fix="pass the --store file written by `stagewise probe`")
        try:
            # A new file is written in DuckDB 1.4's storage format, so the released DuckDB CLI (and its UI)
            # opens it too: the Python package may be a major version ahead of the CLI a user has.
            fresh = not read_only and self.path != ":memory:" and not os.path.exists(self.path)
            config = {"storage_compatibility_version": STORAGE_COMPATIBILITY} if fresh else {}
            self.con = duckdb.connect(self.path, read_only=read_only, config=config)
        except duckdb.ConnectionException:
            # DuckDB keeps one database instance per file and process; a second connection with another
            # mode (read-only vs writable) is refused.
            raise StoreOpenInProcessError(
                f"{self.path} is already open {'for writing' if read_only else 'read-only'} in this process "
                "(e.g. an earlier ProbeResult's `.store`); close it (result.close()) before opening it "
                f"{'read-only' if read_only else 'for writing'}") from None
        except duckdb.IOException as exc:
            err = storage_error(exc, self.path, option="--store")
            if err is not None:
                raise err from None
            # DuckDB gives one IOException for a lock conflict, a missing directory and a bad file; ask
            # the file's lock rather than parse the message.
            if _locked_by_another_process(self.path, write=not read_only):
                raise StoreBusyError(
                    f"{self.path} is open in another process (DuckDB allows one writer, or any number of "
                    "readers, per file); wait for it to finish, or give each shard its own --store and "
                    "combine them with `stagewise merge`") from None
            raise InputError(f"cannot open as a DuckDB store: {exc}", path=self.path,
                             fix="check the path; a store is a .duckdb file written by stagewise") from None
        except duckdb.Error as exc:
            raise InputError(f"cannot open as a DuckDB store: {exc}", path=self.path,
                             fix="check the path; a store is a .duckdb file written by stagewise") from None
        if read_only:
            self._check_schema()
        else:
            self._init_schema()

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if getattr(self, "con", None) is not None:
            self.con.close()
            self.con = None

    def _init_schema(self) -> None:
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute(_TABLES)
            row = _first(self.con, "SELECT value FROM store_meta WHERE key = 'schema_version'")
            if row is None:
                self.con.execute("INSERT INTO store_meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
                self.con.execute("INSERT INTO store_meta VALUES ('view_max_k', '1')")
            elif row[0] != SCHEMA_VERSION:
                raise InputError(f"store schema version {row[0]}, this stagewise writes {SCHEMA_VERSION}",
                                 path=self.path, fix="probe into a new --store file")
            self.con.execute(SQL_MACROS)
            self.con.execute(_view_sql(self._view_max_k()))
            self.con.execute("COMMIT")
        except BaseException:
            try:
                self.con.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - a failed COMMIT (e.g. a full disk) already ended it
                pass
            raise

    def _check_schema(self) -> None:
        tables = {r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        missing = {"problems", "runs", "samples", "mastery"} - tables
        if missing:
            raise InputError(f"not a stagewise probe store (missing {', '.join(sorted(missing))})",
                             path=self.path, fix="pass the --store file written by `stagewise probe`")

    def _view_max_k(self) -> int:
        row = _first(self.con, "SELECT value FROM store_meta WHERE key = 'view_max_k'")
        return int(row[0]) if row else 1

    def _widen_view(self, max_samples: int) -> None:
        """Add pass_at_k columns once some item has k samples (k <= n, docs/DESIGN.md). In the caller's txn."""
        if max_samples <= self._view_max_k():
            return
        self.con.execute(_view_sql(max_samples))
        self.con.execute("UPDATE store_meta SET value = ? WHERE key = 'view_max_k'", [str(max_samples)])

    # -- problems --------------------------------------------------------------------------------

    def add_problems(self, problems) -> int:
        """Store problems (Problem objects or dicts with the canonical columns); returns how many were new.

        A problem whose id is already stored is kept as it was (ids are content hashes or source ids).
        """
        by_id: dict[str, dict] = {}
        for p in problems:
            if not isinstance(p, Problem):
                p = Problem(**{k: p[k] for k in ("prompt", "answer", "id", "solution", "source", "task", "meta")
                               if p.get(k) is not None})
            if p.id not in by_id:  # first wins, as for ids already stored; getattr: asdict is slow
                by_id[p.id] = {c: getattr(p, c) for c in _PROBLEM_COLUMNS}
        rows = list(by_id.values())
        if not rows:
            return 0
        import pyarrow as pa

        table = pa.table({**{c: [r[c] for r in rows] for c in ("id", "prompt", "answer", "solution", "source",
                                                              "task", "meta")}, "pos": list(range(len(rows)))})
        # An anti-join, not INSERT OR IGNORE: the latter reorders rows, and problems keep their order.
        return self._insert("problems", table, "id, prompt, answer, solution, source, task, meta",
                            "SELECT id, prompt, answer, solution, source, task, meta FROM _batch b "
                            "WHERE NOT EXISTS (SELECT 1 FROM problems p WHERE p.id = b.id) ORDER BY pos",
                            or_ignore=False)

    def problems(self, ids=None) -> list[Problem]:
        """Stored problems, in insertion order; only those in `ids` if given."""
        sql = "SELECT id, prompt, answer, solution, source, task, meta FROM problems"
        params = []
        if ids is not None:
            sql += " WHERE id IN (SELECT unnest(?::VARCHAR[]))"  # a hash semi-join, not a scan per id
            params = [list(ids)]
        # Column-wise through Arrow, a batch at a time: fetching a million row tuples costs more than
        # building the Problems, and one batch of texts is held twice at most.
        out = []
        for batch in self.con.sql(sql + " ORDER BY rowid", params=params or None).to_arrow_reader(100_000):
            out += [Problem(id=i, prompt=q, answer=a, solution=s, source=src, task=t, meta=m)
                    for i, q, a, s, src, t, m in zip(*(c.to_pylist() for c in batch.columns))]
        return out

    # -- runs ------------------------------------------------------------------------------------

    def start_run(self, config: dict) -> str:
        """Register a run and return its run_id; the same config returns the same id (resume)."""
        run_id = run_id_for(config)
        if _first(self.con, "SELECT 1 FROM runs WHERE run_id = ?", [run_id]):
            return run_id
        versions = dict(config.get("versions") or library_versions())
        model = config.get("model")
        model_name = model.get("name") if isinstance(model, dict) else model
        stored = dict(config, versions=versions)
        self.con.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?)", [
            run_id, datetime.now(timezone.utc).replace(tzinfo=None), None if model_name is None else str(model_name),
            json.dumps(stored, sort_keys=True, default=str), json.dumps(versions, sort_keys=True)])
        return run_id

    def run(self, run_id: str) -> dict:
        """The config a run was started with (plus `run_id`, `created_at` and `versions`)."""
        row = _first(self.con, "SELECT config, created_at FROM runs WHERE run_id = ?", [run_id])
        if row is None:
            known = [r[0] for r in self.con.execute("SELECT run_id FROM runs ORDER BY created_at").fetchall()]
            raise ConfigError(f"run {run_id!r} not in {self.path} (runs: {', '.join(known) or 'none'}); "
                              "pass one of these as --run-id")
        config = json.loads(row[0])
        config["run_id"] = run_id
        config["created_at"] = row[1].isoformat() if row[1] is not None else None
        return config

    def runs(self):
        """One row per run: run_id, created_at, model, n_problems, n_samples, config (JSON)."""
        return _frame(self.con, """
            SELECT r.run_id, r.created_at, r.model,
                   count(DISTINCT s.problem_id) AS n_problems, count(s.problem_id) AS n_samples, r.config
            FROM runs r LEFT JOIN samples s USING (run_id)
            GROUP BY r.run_id, r.created_at, r.model, r.config ORDER BY r.created_at, r.run_id
        """)

    def latest_run_id(self) -> str:
        """The most recently started run; ConfigError if the store has none."""
        row = _first(self.con, "SELECT run_id FROM runs ORDER BY created_at DESC, run_id LIMIT 1")
        if row is None:
            raise ConfigError(f"{self.path} has no runs yet; run `stagewise probe ... --store {self.path}` first")
        return row[0]

    # -- samples ---------------------------------------------------------------------------------

    def add_samples(self, run_id: str, rows) -> int:
        """Commit a batch of samples in one transaction; returns how many were new.

        Each row is a dict with `problem_id`, `sample_idx`, `status` and optionally completion, extracted,
        score, reason, n_tokens, finish_reason. Rows whose key is already stored are ignored, never
        counted twice (the return value tells how many were ignored: len(rows) - new).
        """
        # A key repeated inside one batch is one sample (the first), like a repeat across batches.
        unique: dict[tuple[str, int], dict] = {}
        for r in rows:
            unique.setdefault((str(r["problem_id"]), int(r["sample_idx"])), r)
        rows = list(unique.values())
        if not rows:
            return 0
        if not _first(self.con, "SELECT 1 FROM runs WHERE run_id = ?", [run_id]):
            raise ConfigError(f"run {run_id!r} is not registered in {self.path}; call start_run(config) first")
        import pyarrow as pa

        for r in rows:
            if r.get("status") not in STATUSES:
                raise ValueError(f"sample status must be one of {STATUSES}, got {r.get('status')!r} "
                                 f"(problem {r.get('problem_id')!r}, sample {r.get('sample_idx')!r})")
        table = pa.table({
            "problem_id": pa.array([str(r["problem_id"]) for r in rows], pa.string()),
            "sample_idx": pa.array([int(r["sample_idx"]) for r in rows], pa.int32()),
            "completion": pa.array([r.get("completion") for r in rows], pa.string()),
            "extracted": pa.array([r.get("extracted") for r in rows], pa.string()),
            "score": pa.array([None if r.get("score") is None else float(r["score"]) for r in rows], pa.float64()),
            "status": pa.array([r["status"] for r in rows], pa.string()),
            "reason": pa.array([r.get("reason") for r in rows], pa.string()),
            "n_tokens": pa.array([r.get("n_tokens") for r in rows], pa.int32()),
            "finish_reason": pa.array([r.get("finish_reason") for r in rows], pa.string()),
        })
        cols = "problem_id, sample_idx, " + ", ".join(SAMPLE_COLUMNS)
        max_samples = max(int(r["sample_idx"]) for r in rows) + 1
        return self._insert(
            "samples", table, "run_id, " + cols, f"SELECT ?, {cols} FROM _batch", [run_id],
            before_commit=lambda: self._widen_view(max_samples))

    def _insert(self, table_name, batch, cols, select, params=(), *, or_ignore=True, before_commit=None) -> int:
        """Insert `select` (reading the registered `_batch`) in one transaction; returns rows inserted."""
        if self.read_only:
            raise ConfigError(f"{self.path} was opened read-only")
        self.con.register("_batch", batch)
        self.con.execute("BEGIN TRANSACTION")
        try:
            verb = "INSERT OR IGNORE INTO" if or_ignore else "INSERT INTO"
            new = self.con.execute(f"{verb} {table_name} ({cols}) {select}",
                                   list(params)).fetchall()[0][0]
            if before_commit is not None:
                before_commit()
            self.con.execute("COMMIT")
        except BaseException:
            try:
                self.con.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - a failed COMMIT (e.g. a full disk) already ended it
                pass
            raise
        finally:
            self.con.unregister("_batch")
        return int(new)

    def samples(self, run_id: str | None = None):
        """The stored samples (all runs if run_id is None), ordered by run, problem and sample index."""
        where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        return _frame(self.con, f"SELECT * FROM samples {where} ORDER BY run_id, problem_id, sample_idx", params)

    def sample_counts(self, run_id: str) -> dict[str, tuple[int, int]]:
        """{problem_id: (n, c)} as in the mastery view (n = verified samples, c = correct)."""
        return {pid: (int(n), int(c)) for pid, n, c in self.con.execute(
            "SELECT problem_id, n, c FROM mastery WHERE run_id = ?", [run_id]).fetchall()}

    def status_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """{problem_id: {status: number of samples}}, every stored sample counted."""
        out: dict[str, dict[str, int]] = {}
        for pid, status, count in self.con.execute(
                "SELECT problem_id, status, count(*) FROM samples WHERE run_id = ? GROUP BY ALL", [run_id]).fetchall():
            out.setdefault(str(pid), {})[str(status)] = int(count)
        return out

    def sample_indices(self, run_id: str) -> dict[str, set[int]]:
        """{problem_id: set of stored sample indices}, whatever their status: what a resume skips."""
        out: dict[str, set[int]] = {}
        for pid, idx in self.con.execute(
                "SELECT problem_id, sample_idx FROM samples WHERE run_id = ?", [run_id]).fetchall():
            out.setdefault(pid, set()).add(int(idx))
        return out

    def outcomes(self, run_id: str) -> dict[str, list[bool | None]]:
        """{problem_id: outcomes by sample index}: True correct, False wrong/no answer, None unverified.

        This is what the adaptive rule (curate/adaptive.py) reads.
        """
        out: dict[str, list[bool | None]] = {}
        for pid, status in self.con.execute(
                "SELECT problem_id, status FROM samples WHERE run_id = ? ORDER BY problem_id, sample_idx",
                [run_id]).fetchall():
            out.setdefault(pid, []).append(None if status not in VERIFIED else status == "correct")
        return out

    def mastery(self, run_id: str | None = None):
        """The mastery view as a polars DataFrame (one row per run and problem)."""
        where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        return _frame(self.con, f"SELECT * FROM mastery {where} ORDER BY run_id, problem_id", params)


# -- merge -----------------------------------------------------------------------------------------


@dataclass
class MergeResult:
    out: str
    report: dict = field(default_factory=dict)


def merge(stores, out, *, overwrite: bool = False) -> MergeResult:
    """Merge probe stores (e.g. the shards of one run) into a new store `out`, written atomically.

    Refuses (ConfigError, nothing written) when two stores disagree: the same run_id with different
    run configs, the same problem id with different content, or the same sample key with a different
    completion, score or status. Samples stored identically in several inputs are kept once and counted
    in the report's `duplicate_samples`.
    """

    paths = [str(Path(s)) for s in stores]
    out = str(Path(out))
    if not paths:
        raise ConfigError("merge needs at least one input store")
    for p in paths:
        if not os.path.exists(p):
            raise InputError("probe store not found", path=p, fix="check the path of each input store")
    if any(os.path.abspath(p) == os.path.abspath(out) for p in paths):
        raise ConfigError(f"--out {out} is also an input; write the merge to a new file")
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")

    for p in paths:  # validate each input (schema, not locked by a writer) before doing any work
        ProbeStore(p, read_only=True).close()

    out_dir = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix=".merge-", suffix=".duckdb", dir=out_dir)
    os.close(fd)
    os.unlink(tmp)  # DuckDB must create the file itself
    report = {"inputs": [], "runs": 0, "problems": 0, "samples": 0, "duplicate_samples": 0,
              "duplicate_problems": 0}
    try:
        with ProbeStore(tmp) as dst:
            con = dst.con
            max_samples = 1
            for i, p in enumerate(paths):
                alias = f"in{i}"
                con.execute(f"ATTACH '{_sql_str(p)}' AS {alias} (READ_ONLY)")
                try:
                    _check_merge_conflicts(con, alias, p)
                    counts = {name: con.execute(f"SELECT count(*) FROM {alias}.{name}").fetchall()[0][0]
                              for name in ("runs", "problems", "samples")}
                    con.execute("BEGIN TRANSACTION")
                    con.execute(f"INSERT OR IGNORE INTO runs SELECT run_id, created_at, model, config, versions "
                                f"FROM {alias}.runs")
                    new_p = con.execute(f"INSERT INTO problems SELECT id, prompt, answer, solution, source, task, "
                                        f"meta FROM {alias}.problems b WHERE NOT EXISTS (SELECT 1 FROM problems p "
                                        f"WHERE p.id = b.id) ORDER BY b.rowid").fetchall()[0][0]
                    cols = "run_id, problem_id, sample_idx, " + ", ".join(SAMPLE_COLUMNS) + ", created_at"
                    new_s = con.execute(f"INSERT OR IGNORE INTO samples ({cols}) SELECT {cols} "
                                        f"FROM {alias}.samples").fetchall()[0][0]
                    con.execute("COMMIT")
                    top = con.execute(f"SELECT max(sample_idx) + 1 FROM {alias}.samples").fetchall()[0][0]
                    max_samples = max(max_samples, int(top or 1))
                    report["duplicate_samples"] += counts["samples"] - new_s
                    report["duplicate_problems"] += counts["problems"] - new_p
                    report["inputs"].append({"path": p, **counts})
                finally:
                    con.execute(f"DETACH {alias}")
            con.execute("BEGIN TRANSACTION")
            dst._widen_view(max_samples)
            con.execute("COMMIT")
            for name in ("runs", "problems", "samples"):
                report[name] = con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
            con.execute("CHECKPOINT")
        os.replace(tmp, out)
        if os.path.exists(out + ".wal"):  # a stale log from a replaced store would be replayed into ours
            os.unlink(out + ".wal")
    finally:
        for leftover in (tmp, tmp + ".wal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return MergeResult(out=out, report=report)


def _check_merge_conflicts(con, alias: str, path: str) -> None:
    """Raise ConfigError if input `alias` disagrees with what is already merged."""
    for run_id, mine, theirs in con.execute(
            f"SELECT a.run_id, a.config, b.config FROM runs a JOIN {alias}.runs b USING (run_id)").fetchall():
        if canonical_config(json.loads(mine)) != canonical_config(json.loads(theirs)):
            raise ConfigError(f"cannot merge {path}: run {run_id} has a different config there than in an "
                              "earlier input; these stores come from different runs")
    bad = con.execute(f"""
        SELECT a.id FROM problems a JOIN {alias}.problems b USING (id)
        WHERE a.prompt IS DISTINCT FROM b.prompt OR a.answer IS DISTINCT FROM b.answer
           OR a.task IS DISTINCT FROM b.task
    """).fetchall()
    if bad:
        raise ConfigError(f"cannot merge {path}: {len(bad)} problem id(s) have different content than in an "
                          f"earlier input (first: {bad[0][0]!r})")
    bad = con.execute(f"""
        SELECT a.run_id, a.problem_id, a.sample_idx FROM samples a
        JOIN {alias}.samples b USING (run_id, problem_id, sample_idx)
        WHERE a.completion IS DISTINCT FROM b.completion OR a.score IS DISTINCT FROM b.score
           OR a.status IS DISTINCT FROM b.status
    """).fetchall()
    if bad:
        r, pid, idx = bad[0]
        raise ConfigError(f"cannot merge {path}: {len(bad)} sample(s) conflict with an earlier input "
                          f"(first: run {r}, problem {pid!r}, sample {idx}); the same sample key holds "
                          "different results, so these stores were not produced by one run")


def _frame(con, sql: str, params=()):
    """A query's result as a polars DataFrame (through Arrow, keeping column types)."""
    import polars as pl

    return pl.from_arrow(con.sql(sql, params=list(params) or None).to_arrow_table())


def _first(con, sql: str, params=()):
    """The first row or None. Always drains the result: DuckDB refuses new work on a half-read one."""
    rows = con.execute(sql, list(params)).fetchall()
    return rows[0] if rows else None


def _sql_str(text: str) -> str:
    return text.replace("'", "''")
