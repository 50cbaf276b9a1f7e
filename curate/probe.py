"""The probe: sample a model k times per problem, verify every answer, store it, and summarise mastery.

    res = probe("gsm8k:test", model="smollm2-135m", store="run.duckdb", num_samples=8, limit=32)
    res.summary["buckets"]   # {"unmastered": ..., "partial": ..., "mastered": ...}

Resumable by construction: the run id is a hash of the settings that decide what is sampled, every
sample has a seed per (run seed, item, sample index), and samples are committed in batches under the
store's primary key. Re-running the same command therefore asks only for the samples not yet stored,
and they are exactly the samples an uninterrupted run would have drawn.

Adaptive probing (curate/adaptive.py) draws in rounds: every item first gets `min_samples`, then only
items still uniform (all correct or all wrong) draw more, one round at a time, up to `k_max`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.curate import adaptive as adaptive_rule

# ray_probe runs this module's sampling loop on each shard: the two import each other as modules.
from stagewise.curate import ray_probe
from stagewise.curate.backends import SAMPLING_ARGS, make_backend
from stagewise.curate.backends.base import Backend, GenerationRequest, SamplingParams, sample_seed
from stagewise.curate.decontaminate import left_out
from stagewise.curate.errors import ConfigError, StagewiseError, storage_error, writing
from stagewise.curate.paths import portable_name
from stagewise.curate.prompts import build_messages, prompting_record
from stagewise.curate.schema import Problem
from stagewise.curate.sources import load_problems
from stagewise.curate.statistics import bucket
from stagewise.curate.store import ProbeStore
from stagewise.curate.verifiers import VerifierPool


@dataclass
class ProbeResult:
    """What a probe did. `store` is the ProbeStore (opened read-only on first use if the probe was given
    a path, since DuckDB allows one writer per file); `summary` is what the CLI prints."""

    run_id: str
    store_path: str
    summary: dict = field(default_factory=dict)
    item_ids: list = field(default_factory=list, repr=False)
    _store: object = None

    @property
    def store(self):
        if self._store is None:
            self._store = ProbeStore(self.store_path, read_only=True)
        return self._store

    def close(self) -> None:
        if self._store is not None and self.store_path != ":memory:":
            self._store.close()
            self._store = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "store": self.store_path, "summary": self.summary}

    @property
    def warnings(self) -> list[str]:
        """Samples the verifier could not judge: stored, but not counted in an item's n."""
        vf = self.summary.get("verifier_failures") or {}
        return [f"{vf[k]:,} samples ended in verifier {k} (stored, not counted in n)"
                for k in ("timeout", "error") if vf.get(k)]


# ------------------------------------------------------------------------------------------ helpers


def parse_shard(shard) -> tuple[int, int] | None:
    """"i/N" (0-based i) -> (i, N); None passes through."""
    if shard is None or shard == "":
        return None
    if isinstance(shard, (tuple, list)):
        i, n = shard
    else:
        try:
            i, n = (int(x) for x in str(shard).split("/"))
        except ValueError:
            raise ConfigError(f"--shard {shard!r} is not i/N; e.g. --shard 0/4 for the first of four shards") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {i}/{n}: need 0 <= i < N (shards are numbered from 0)")
    return int(i), int(n)


def in_shard(problem_id: str, shard: tuple[int, int] | None) -> bool:
    """Stable assignment by id hash: the same item lands in the same shard whatever the input order."""
    if shard is None:
        return True
    digest = hashlib.sha256(problem_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") % shard[1] == shard[0]


def resolve_problems(problems, *, task: str | None = None, limit: int | None = None,
                     source_options: dict | None = None) -> list[Problem]:
    """Spec strings (or a list of them), a ProblemSet or a list of Problem -> a list of Problem.
    `source_options` (prompt_col, answer_col, skip_bad, ...) go to `load_problems` for spec strings."""
    if isinstance(problems, (str, Path)):
        problems = [problems]
    items = list(problems)
    if items and all(isinstance(p, (str, Path)) for p in items):
        items = list(load_problems(*[str(p) for p in items], task=task, **(source_options or {})))
    loaded = []
    for p in items:
        if isinstance(p, dict):
            p = Problem(**{k: p[k] for k in ("prompt", "answer", "id", "solution", "source", "task", "meta")
                           if p.get(k) is not None})
        # The override wins over every source's own task (reasoning-gym specs set rg:<name> themselves).
        if task is not None and p.task != task:
            p = Problem(prompt=p.prompt, answer=p.answer, id=p.id, solution=p.solution, source=p.source,
                        task=task, meta=p.meta, extra=p.extra)
        loaded.append(p)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1 (got {limit})")
        loaded = loaded[:limit]
    if not loaded:
        raise ConfigError("no problems to probe; check the data specs (and --limit / --shard)")
    return loaded


def _open_store(store):
    if isinstance(store, ProbeStore):
        return store, False
    if store is None:
        raise ConfigError("no --store given; pass a .duckdb path where samples are kept (it makes the run resumable)")
    path = Path(store)
    if str(store) != ":memory:" and path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    return ProbeStore(str(store)), True


def _model_identity(backend: Backend, model: str) -> dict:
    try:
        ident = dict(backend.identity())
    except NotImplementedError:
        ident = {}
    # The run id must not depend on where the weights sit on this machine, only on what they are: a local
    # model is its directory's base name plus the weights' sha256; a hub model its id (and revision).
    out = {"name": portable_name(ident.get("name", model)), "weights_sha256": ident.get("weights_sha256")}
    if ident.get("revision"):
        out["revision"] = ident["revision"]
    if out["weights_sha256"] is None and ident.get("model") is not None:
        out["served_model"] = portable_name(ident["model"])
    return out


class _Display:
    """A rich progress bar on stderr (items, samples, tokens/s, running accuracy); silent when disabled."""

    def __init__(self, enabled: bool, label: str):
        self.enabled = enabled
        self.progress = None
        self.label = label
        self.t0 = time.monotonic()

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("samples"), TextColumn("{task.fields[items]}"), TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[acc]}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False)
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=0, items="", rate="", acc="")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def update(self, *, total: int, done: int, items_done: int, items: int, tokens: int, correct: int,
               verified: int, description: str | None = None):
        if self.progress is None:
            return
        dt = max(time.monotonic() - self.t0, 1e-6)
        acc = f"acc {correct / verified:.1%}" if verified else "acc -"
        kwargs = {"description": description} if description else {}
        self.progress.update(self.task, total=total, completed=done, items=f"items {items_done}/{items}",
                             rate=f"{tokens / dt:.0f} tok/s", acc=acc, **kwargs)


# ------------------------------------------------------------------------------------------ the probe


def probe(problems, *, model: str, store, backend="hf", num_samples: int = 8, adaptive: bool = False,
          k_max: int = 16, min_samples: int = 4, temperature: float = 1.0, top_p: float = 1.0,
          max_new_tokens: int = 512, batch_size: int = 32, seed: int = 0, limit: int | None = None,
          task: str | None = None, system_prompt: str | None = None, prompt_template: str | None = None,
          shard=None, base_url: str | None = None, progress: bool = True, round_size: int = 1,
          backend_args: dict | None = None, source_options: dict | None = None,
          verifier_workers: int = 2, verifier_timeout_s: float = 5.0, on_commit=None,
          keep_completions: str = "all", ray=None, ray_shards: int | None = None,
          decontaminate=None, ngram: int = 8) -> ProbeResult:
    """Probe `model` on `problems` and store every sample in `store` (a .duckdb path or a ProbeStore).

    `backend` is "hf", "vllm", "openai" or a ready Backend. Fixed mode draws `num_samples` per item;
    `adaptive` draws `min_samples`, then continues only uniform items up to `k_max` (`round_size` more
    per round). `shard="i/N"` probes the i-th of N disjoint shards (0-based). Re-running with the same
    settings resumes. `on_commit(new_samples, total_committed)` is called after each committed batch.
    `keep_completions` ("all", "failed", "none") says whose text is stored; scores, statuses, extracted
    answers and token counts always are. `ray=True` (a local Ray instance, or $RAY_ADDRESS) or
    `ray="host:port"` runs `ray_shards` shards on a Ray cluster, each holding one backend; their rows come
    back to this process, which commits them to `store` (curate/ray_probe.py).
    With `decontaminate` (benchmark specs), items sharing an `ngram`-word run with those sets are left
    out before sampling and listed in `summary["contamination"]` with their reason.
    Returns a ProbeResult with the run id and a summary.
    """
    errors = []
    if not adaptive and num_samples < 1:
        errors.append(f"--num-samples must be at least 1 (got {num_samples})")
    if temperature < 0:
        errors.append(f"--temperature must be >= 0 (got {temperature})")
    if not 0 < top_p <= 1:
        errors.append(f"--top-p must be in (0, 1] (got {top_p})")
    if max_new_tokens < 1:
        errors.append(f"--max-new-tokens must be at least 1 (got {max_new_tokens})")
    if batch_size < 1:
        errors.append(f"--batch-size must be at least 1 (got {batch_size})")
    if keep_completions not in KEEP_COMPLETIONS:
        errors.append(f"--keep-completions must be one of {', '.join(KEEP_COMPLETIONS)} (got {keep_completions!r})")
    if ray is not None and ray is not False and shard is not None:
        errors.append("--ray and --shard exclude each other: --ray shards the pool itself (--ray-shards N)")
    if errors:
        raise ConfigError("; ".join(errors))
    if adaptive:
        adaptive_rule.check_settings(min_samples, k_max, round_size)
    shard_t = parse_shard(shard)

    items = resolve_problems(problems, task=task, limit=limit, source_options=source_options)
    contamination = None
    if decontaminate:
        items, contamination = left_out(items, decontaminate, ngram=ngram)
        if not items:
            raise ConfigError(f"every one of the {contamination['contaminated']} problems overlaps "
                              f"{', '.join(contamination['against'])}; nothing left to probe")
    data_specs = [str(p) for p in ([problems] if isinstance(problems, (str, Path)) else problems)
                  if isinstance(p, (str, Path))]
    loaded_count = len(items)
    items = [p for p in items if in_shard(p.id, shard_t)]
    if not items:
        raise ConfigError(f"shard {shard} of {loaded_count} problems is empty; use fewer shards")
    # Build the prompts first: a bad --prompt-template fails before the model loads.
    messages = {p.id: build_messages(p, system_prompt=system_prompt, prompt_template=prompt_template) for p in items}
    params = SamplingParams(temperature=float(temperature), top_p=float(top_p), max_new_tokens=int(max_new_tokens))

    by_id = {p.id: p for p in items}
    use_ray = ray is not None and ray is not False
    owned_backend = use_ray or (not isinstance(backend, Backend) and not hasattr(backend, "generate"))
    if use_ray:
        engine = ray_probe.RayShards(ray, shards=ray_shards, backend=backend, model=model,
                           backend_args={"batch_size": batch_size, "base_url": base_url, **(backend_args or {})},
                           problems=by_id, batch_size=batch_size, keep_completions=keep_completions,
                           verifier_workers=verifier_workers, verifier_timeout_s=verifier_timeout_s)
        sampler = engine
    else:
        engine = make_backend(backend, model, batch_size=batch_size, base_url=base_url,
                              **(backend_args or {})) if owned_backend else backend
        sampler = _LocalSampler(engine, by_id, batch_size=batch_size, keep_completions=keep_completions,
                                verifier_workers=verifier_workers, verifier_timeout_s=verifier_timeout_s)
    try:
        with writing(getattr(store, "path", store), option="--store"):
            st, owned_store = _open_store(store)
    except BaseException:
        if owned_backend:
            engine.close()
        raise
    try:
        st.add_problems(items)
        config = {
            "model": _model_identity(engine, model),
            "backend": getattr(engine, "name", str(backend)),
            "backend_args": {"batch_size": batch_size, **(backend_args or {})},
            "base_url": base_url,
            "sampling": params.to_dict(),
            **prompting_record([p.task for p in items], system_prompt, prompt_template),
            "seed": int(seed),
            "task_override": task,
            "data": data_specs,
            "shard": None if shard_t is None else f"{shard_t[0]}/{shard_t[1]}",
            "limit": limit,
            "keep_completions": keep_completions,
        }
        own = sorted((p.id, p.messages) for p in items if p.messages)
        if own:  # items that carry their prompt (an export's rows): the run is keyed on those messages
            config["item_messages_sha256"] = hashlib.sha256(json.dumps(own, sort_keys=True).encode()).hexdigest()
        if use_ray:
            config["ray"] = {"shards": engine.shards}
        asked = {k: v for k, v in (backend_args or {}).items() if k in SAMPLING_ARGS}
        if asked:
            config["request_options"] = asked
        if adaptive:
            config.update({"adaptive": {"min_samples": int(min_samples), "k_max": int(k_max),
                                        "round_size": int(round_size)}, "k_max": int(k_max)})
        else:
            config.update({"num_samples": int(num_samples)})
        run_id = st.start_run(config)
        kept = st.run(run_id).get("keep_completions", "all")
        if kept != keep_completions:
            raise ConfigError(f"run {run_id} in {st.path} was started with --keep-completions {kept}; resume it "
                              f"with the same setting, or probe into another --store")
        with sampler:
            stats = _run_rounds(st, run_id, sampler, items, messages, params, seed=int(seed), adaptive=adaptive,
                                num_samples=num_samples, k_max=k_max, min_samples=min_samples,
                                round_size=round_size, batch_size=batch_size, progress=progress,
                                problems=by_id, on_commit=on_commit)
        summary = probe_summary(st, run_id, list(by_id), stats)
        summary.update({"model": model, "backend": config["backend"], "store": st.path,
                        "shard": config["shard"], "adaptive": adaptive,
                        "k": k_max if adaptive else num_samples, "keep_completions": keep_completions,
                        "contamination": contamination})
        if use_ray:
            summary["ray"] = engine.report()
        summary.update(store_size(st))
    except Exception as exc:
        # A full disk or an unwritable store: one message naming it. What was committed stays (resumable).
        err = None if isinstance(exc, StagewiseError) else storage_error(exc, st.path, option="--store")
        if err is None:
            raise
        raise err from exc
    finally:
        if owned_backend:
            engine.close()
        if owned_store and st.path != ":memory:":
            st.close()
    result = ProbeResult(run_id=run_id, store_path=st.path, summary=summary, item_ids=list(by_id))
    if not owned_store or st.path == ":memory:":
        result._store = st
    return result


def _plan(st, run_id: str, ids: list[str], *, adaptive: bool, num_samples: int, k_max: int, min_samples: int,
          round_size: int) -> dict[str, list[int]]:
    """{item: sample indices to draw now}. Always the lowest indices not stored yet, so an interrupted
    round is completed with exactly the samples it would have drawn."""
    stored = st.sample_indices(run_id)
    if adaptive:
        outcomes = st.outcomes(run_id)
        want = adaptive_rule.next_round({pid: outcomes.get(pid, []) for pid in ids}, ids,
                                        min_samples=min_samples, k_max=k_max, round_size=round_size)
    else:
        want = {pid: max(0, num_samples - len(stored.get(pid, ()))) for pid in ids}
    plan = {}
    for pid, more in want.items():
        if more <= 0:
            continue
        have = stored.get(pid, set())
        idx, i = [], 0
        while len(idx) < more:
            if i not in have:
                idx.append(i)
            i += 1
        plan[pid] = idx
    return plan


KEEP_COMPLETIONS = ("all", "failed", "none")


def sample_rows(engine, pool, requests, problems: dict, *, batch_size: int, keep_completions: str = "all"):
    """Generate `requests` on `engine`, score every sample with the verifier `pool`, and yield the store
    rows in batches of about `batch_size` as samples finish. Scores, statuses, extracted answers and
    token counts are always kept; the text only as `keep_completions` says (all, failed = not correct,
    none). A Ray shard runs exactly this on its own node (curate/ray_probe.py)."""
    stream = getattr(engine, "generate_stream", None)
    results = stream(requests) if stream is not None else iter(engine.generate(requests))
    pending: list = []

    def rows():
        verdicts = pool.score_many([(r.text, problems[r.key]) for r in pending])
        out = []
        for r, v in zip(pending, verdicts):
            keep = keep_completions == "all" or (keep_completions == "failed" and v.status != "correct")
            out.append({"problem_id": r.key, "sample_idx": r.sample_idx, "completion": r.text if keep else None,
                        "extracted": v.extracted, "score": v.score, "status": v.status, "reason": v.reason,
                        "n_tokens": r.n_tokens, "finish_reason": r.finish_reason})
        pending.clear()
        return out

    for r in results:
        pending.append(r)
        if len(pending) >= batch_size:
            yield rows()
    if pending:
        yield rows()


class _LocalSampler:
    """Samples on this process's backend; verification in a local VerifierPool."""

    def __init__(self, engine, problems, *, batch_size, keep_completions, verifier_workers, verifier_timeout_s):
        self.engine, self.problems = engine, problems
        self.batch_size, self.keep_completions = batch_size, keep_completions
        self.pool = VerifierPool(workers=verifier_workers, timeout_s=verifier_timeout_s)

    def __enter__(self):
        self.pool.__enter__()
        return self

    def __exit__(self, *exc):
        return self.pool.__exit__(*exc)

    def __call__(self, requests):
        return sample_rows(self.engine, self.pool, requests, self.problems, batch_size=self.batch_size,
                           keep_completions=self.keep_completions)


def _run_rounds(st, run_id, sampler, items, messages, params, *, seed, adaptive, num_samples, k_max, min_samples,
                round_size, batch_size, progress, problems, on_commit=None) -> dict:
    """Plan what the store lacks, have `sampler` draw and verify it, commit the rows as they arrive."""
    ids = [p.id for p in items]
    stats = {"samples_new": 0, "samples_resumed": sum(len(v) for pid, v in st.sample_indices(run_id).items()
                                                        if pid in problems),
             "tokens_new": 0, "generate_seconds": 0.0, "rounds": 0, "ignored_duplicates": 0,
             "statuses_new": {}, "finish_new": {}}
    cap = k_max if adaptive else num_samples
    correct = verified = 0
    t_start = time.monotonic()
    with _Display(progress, "probe") as display:
        while True:
            plan = _plan(st, run_id, ids, adaptive=adaptive, num_samples=num_samples, k_max=k_max,
                         min_samples=min_samples, round_size=round_size)
            if not plan:
                break
            stats["rounds"] += 1
            requests = [GenerationRequest(key=pid, messages=messages[pid], sample_indices=idx,
                                          seeds=[sample_seed(seed, pid, i) for i in idx], params=params)
                        for pid, idx in plan.items()]
            # Upper bound for the bar: in adaptive mode later rounds are unknown until this one ends.
            done_before = sum(len(v) for pid, v in st.sample_indices(run_id).items() if pid in problems)
            total = done_before + sum(len(i) for i in plan.values())
            remaining = {pid: len(idx) for pid, idx in plan.items()}
            items_done = len(ids) - len(plan)
            label = f"probe round {stats['rounds']}" if adaptive else "probe"
            pending: list = []
            done = done_before

            def commit(pending=pending):
                nonlocal done
                new = st.add_samples(run_id, pending)
                stats["ignored_duplicates"] += len(pending) - new
                stats["samples_new"] += new
                done += len(pending)
                pending.clear()
                if on_commit is not None:
                    on_commit(new, done)

            display.update(total=total, done=done, items_done=items_done, items=len(ids),
                           tokens=stats["tokens_new"], correct=correct, verified=verified, description=label)
            t0 = time.monotonic()
            for rows in sampler(requests):
                for row in rows:
                    if remaining.get(row["problem_id"], 0) <= 0:
                        raise ConfigError(f"backend returned a sample that was not asked for (item "
                                          f"{row['problem_id']!r}, sample {row['sample_idx']})")
                    pending.append(row)
                    stats["tokens_new"] += row["n_tokens"] or 0
                    stats["statuses_new"][row["status"]] = stats["statuses_new"].get(row["status"], 0) + 1
                    fin = row["finish_reason"]
                    stats["finish_new"][fin] = stats["finish_new"].get(fin, 0) + 1
                    if row["status"] in ("correct", "wrong", "no_answer"):
                        verified += 1
                        correct += row["status"] == "correct"
                    remaining[row["problem_id"]] -= 1
                    if remaining[row["problem_id"]] == 0:
                        items_done += 1
                if len(pending) >= batch_size:
                    commit()
                display.update(total=total, done=done + len(pending), items_done=items_done, items=len(ids),
                               tokens=stats["tokens_new"], correct=correct, verified=verified)
            if pending:
                commit()
            stats["generate_seconds"] += time.monotonic() - t0
            display.update(total=total, done=done, items_done=items_done, items=len(ids),
                           tokens=stats["tokens_new"], correct=correct, verified=verified)
            missing = {pid: n for pid, n in remaining.items() if n > 0}
            if missing:
                first = next(iter(missing))
                raise ConfigError(f"backend returned too few samples: "
                                  f"{sum(missing.values())} missing (first: item {first!r}); re-run to resume")
            if not adaptive:
                break  # one round draws everything a fixed run needs
    stats["seconds"] = time.monotonic() - t_start
    stats["cap"] = cap
    return stats


def store_size(st) -> dict:
    """The store file's size on disk and per 1,000 stored samples (all runs): what a pool costs to keep."""
    import os

    if st.path == ":memory:":
        return {}
    st.con.execute("CHECKPOINT")  # fold the write-ahead log in, so the file holds everything committed
    size = sum(os.path.getsize(p) for p in (st.path, st.path + ".wal") if os.path.exists(p))
    samples = st.con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
    return {"store_bytes": size,
            "store_bytes_per_1k_samples": round(size * 1000 / samples) if samples else None}


def probe_summary(st, run_id: str, ids: list[str], stats: dict | None = None) -> dict:
    """Items per bucket, mean pass@1, sample statuses, tokens and throughput of one run (these items)."""
    counts = st.sample_counts(run_id)
    wanted = set(ids)
    buckets = {"unmastered": 0, "partial": 0, "mastered": 0, "unverified": 0}
    bucket_of_id = {}
    p_hats = []
    for pid in ids:
        n, c = counts.get(pid, (0, 0))
        b = bucket(n=n, c=c)
        bucket_of_id[pid] = b or "unverified"
        buckets[b or "unverified"] += 1
        if n:
            p_hats.append(c / n)
    # Samples cut off at max_new_tokens, per bucket: a high share means the token budget, not the
    # skill, put items there (routing warns above 20%).
    truncation = {b: {"samples": 0, "truncated": 0} for b in buckets}
    rows = st.con.execute(
        "SELECT problem_id, status, finish_reason, n_tokens FROM samples WHERE run_id = ?", [run_id]).fetchall()
    statuses: dict[str, int] = {}
    finish: dict[str, int] = {}
    reasons: dict[str, int] = {}
    tokens = samples = 0
    for pid, status, fin, ntok in rows:
        if pid not in wanted:
            continue
        samples += 1
        truncation[bucket_of_id[pid]]["samples"] += 1
        truncation[bucket_of_id[pid]]["truncated"] += fin == "length"
        statuses[status] = statuses.get(status, 0) + 1
        finish[fin or "unknown"] = finish.get(fin or "unknown", 0) + 1
        tokens += ntok or 0
    for status, reason, cnt in st.con.execute(
            "SELECT status, coalesce(reason, ''), count(*) FROM samples WHERE run_id = ? "
            "AND status IN ('timeout', 'error') GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5", [run_id]).fetchall():
        reasons[f"{status}: {reason[:120]}"] = int(cnt)
    out = {"run_id": run_id, "items": len(ids), "samples": samples, "tokens": tokens, "buckets": buckets,
           "mean_pass_at_1": sum(p_hats) / len(p_hats) if p_hats else None, "statuses": statuses,
           "verifier_failures": {k: statuses.get(k, 0) for k in ("no_answer", "timeout", "error")},
           "failure_reasons": reasons, "finish_reasons": finish,
           "truncation_by_bucket": {b: {**t, "rate": round(t["truncated"] / t["samples"], 4) if t["samples"] else 0.0}
                                    for b, t in truncation.items() if t["samples"]}}
    if stats:
        gen_s = stats.get("generate_seconds") or 0.0
        out.update({"samples_new": stats["samples_new"], "samples_resumed": stats["samples_resumed"],
                    "tokens_new": stats["tokens_new"], "seconds": round(stats.get("seconds", 0.0), 2),
                    "tokens_per_s": stats["tokens_new"] / gen_s if gen_s > 0 else None,
                    "rounds": stats["rounds"], "ignored_duplicates": stats["ignored_duplicates"]})
        cap = stats.get("cap")
        if cap:
            out["fixed_generations"] = cap * len(ids)
    return out
