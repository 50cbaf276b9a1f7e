"""Probing on a Ray cluster: one pool, many nodes, one store.

    sw.probe("pool.jsonl", model="Qwen/Qwen3-8B", backend="vllm", store="pool.duckdb",
             ray="10.0.0.1:6379", ray_shards=16)

Ray does the scheduling; this module only splits the work and moves rows. Shard i holds the items
that `--shard i/N` would hold (a stable hash of the item id) and runs as a Ray actor that loads one
backend on the resources it asks for (one GPU per tensor-parallel group for vllm, CPUs otherwise).
Each round the driver sends every shard the (item, sample index, seed) triples the store lacks; the
shard generates, verifies with the item's own verifier, and streams rows back as they finish. The
driver is the store's only writer: it commits the rows as they arrive, so no shared filesystem is
needed and an interrupted run resumes like a local one. Every sample keeps its own seed, so the
samples are the ones a single process would draw (up to rare token flips from batched float
arithmetic, which tests/test_ray_probe.py measures).

Every node needs stagewise installed (`pip install 'stagewise[ray]'`) and the model reachable by the
same name (a hub id, the embedded default, or a path that exists on every node).
"""

from __future__ import annotations

import os
import queue
import threading
import time

# probe.py starts the shards and they run its sampling loop: the two import each other as modules.
from stagewise.curate import probe as probing
from stagewise.curate.backends import BACKENDS, check_backend_args, make_backend
from stagewise.curate.errors import ConfigError, StagewiseError, require
from stagewise.curate.verifiers import VerifierPool


class _ProbeShard:
    """One shard on a Ray worker: a backend, a verifier pool, and the shard's problems."""

    def __init__(self, index, backend, model, backend_args, problems, batch_size, keep_completions,
                 verifier_workers, verifier_timeout_s):
        t0 = time.monotonic()
        self.index, self.model = index, model
        self.problems = problems
        self.batch_size, self.keep_completions = batch_size, keep_completions
        self.engine = make_backend(backend, model, **backend_args)
        self.pool = VerifierPool(workers=verifier_workers, timeout_s=verifier_timeout_s)
        self.pool.__enter__()
        self.load_seconds = time.monotonic() - t0
        self.samples = 0

    def describe(self) -> dict:
        import socket

        return {"shard": self.index, "node": socket.gethostname(), "pid": os.getpid(),
                "backend": getattr(self.engine, "name", "?"), "model": probing._model_identity(self.engine, self.model),
                "items": len(self.problems), "load_seconds": round(self.load_seconds, 2)}

    def run(self, requests):
        """A Ray streaming generator: one list of store rows per verified batch."""
        for rows in probing.sample_rows(self.engine, self.pool, requests, self.problems, batch_size=self.batch_size,
                                keep_completions=self.keep_completions):
            self.samples += len(rows)
            yield rows

    def close(self) -> int:
        self.pool.__exit__(None, None, None)
        self.engine.close()
        return self.samples


def _connect(ray, address):
    """Join `address`, else $RAY_ADDRESS, else start a local instance. Returns True if we started Ray."""
    if ray.is_initialized():
        return False
    if address is True or address in ("", "auto", None):
        # "local" forces a fresh instance: without it Ray would join whatever cluster this machine ran last.
        address = os.environ.get("RAY_ADDRESS") or "local"
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address!r} ({exc}); start it with "
                          "`ray start --head` and pass its address (host:6379) to --ray") from None
    return True


class RayShards:
    """The shards of one probe on Ray; callable like the local sampler (requests -> row batches)."""

    def __init__(self, address, *, shards: int | None, backend: str, model: str, backend_args: dict,
                 problems: dict, batch_size: int, keep_completions: str, verifier_workers: int,
                 verifier_timeout_s: float):
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ConfigError(f"--ray needs a backend name ({', '.join(BACKENDS)}), not {backend!r}")
        args = {k: v for k, v in backend_args.items() if v is not None}
        if backend != "vllm":  # fail before any node loads a model; vLLM's keys are checked where it runs
            check_backend_args(backend, {k: v for k, v in args.items() if k not in ("batch_size", "base_url")})
        if shards is not None and int(shards) < 1:
            raise ConfigError(f"--ray-shards must be at least 1 (got {shards})")
        ray = require("ray", "ray")
        self._ray = ray
        self.name = backend
        self.actors: list = []
        t0 = time.monotonic()
        self._own_ray = _connect(ray, address)
        try:
            resources = ray.cluster_resources()
            self.address = ray.get_runtime_context().gcs_address
            if backend == "vllm":
                per_gpu = int(args.get("tensor_parallel_size", 1)) * int(args.get("pipeline_parallel_size", 1))
                gpus = int(resources.get("GPU", 0))
                if gpus < per_gpu:
                    raise ConfigError(f"the Ray cluster at {self.address} has {gpus} GPU(s); --backend vllm needs "
                                      f"{per_gpu} per shard (tensor x pipeline parallel size)")
                n = int(shards or gpus // per_gpu)
                options = {"num_gpus": per_gpu, "num_cpus": 1}
            else:
                cpus = max(1, int(resources.get("CPU", 1)))
                n = int(shards or cpus)
                per_cpu = max(1, cpus // n)
                options = {"num_cpus": per_cpu}
                if backend == "hf":
                    args.setdefault("threads", per_cpu)  # torch's intra-op threads = the CPUs Ray reserved
            self.shards = n
            groups = [{} for _ in range(n)]
            for pid, p in problems.items():
                for i in range(n):
                    if probing.in_shard(pid, (i, n)):
                        groups[i][pid] = p
                        break
            self.shard_of = {pid: i for i, g in enumerate(groups) for pid in g}
            remote = ray.remote(_ProbeShard).options(**options)
            self.actors = [remote.remote(i, backend, model, args, g, batch_size, keep_completions,
                                         verifier_workers, verifier_timeout_s) if g else None
                           for i, g in enumerate(groups)]
            self.described = self._get([a.describe.remote() for a in self.actors if a is not None])
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - t0
        models = {str(d["model"]) for d in self.described}
        if len(models) > 1:
            self.close()
            raise ConfigError("the shards loaded different models (" + "; ".join(
                f"shard {d['shard']} on {d['node']}: {d['model']}" for d in self.described)
                + "); the model name must mean the same weights on every node")
        self._identity = self.described[0]["model"]
        self.samples = [0] * n
        self.seconds = [0.0] * n

    def _get(self, refs):
        try:
            return self._ray.get(refs)
        except self._ray.exceptions.RayError as exc:
            raise _unwrap(exc) from None

    # -- what probe() needs from a backend -------------------------------------------------------

    def identity(self) -> dict:
        return dict(self._identity, backend=self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self, requests):
        """Send each shard its requests; yield row batches in arrival order, whichever shard sent them."""
        per_shard: dict[int, list] = {}
        for r in requests:
            if r.key not in self.shard_of:
                raise ConfigError(f"item {r.key!r} was not part of this Ray probe's pool")
            per_shard.setdefault(self.shard_of[r.key], []).append(r)
        inbox: queue.Queue = queue.Queue()

        def pump(i: int, reqs: list) -> None:
            t0 = time.monotonic()
            try:
                for ref in self.actors[i].run.remote(reqs):
                    inbox.put(("rows", i, self._ray.get(ref)))
            except BaseException as exc:  # noqa: BLE001 - handed to the driver thread
                inbox.put(("error", i, exc))
            finally:
                self.seconds[i] += time.monotonic() - t0
                inbox.put(("done", i, None))

        threads = [threading.Thread(target=pump, args=(i, reqs), daemon=True, name=f"stagewise-ray-{i}")
                   for i, reqs in per_shard.items()]
        for t in threads:
            t.start()
        active = len(threads)
        while active:
            kind, i, value = inbox.get()
            if kind == "done":
                active -= 1
            elif kind == "error":
                raise _unwrap(value) if isinstance(value, self._ray.exceptions.RayError) else value
            else:
                self.samples[i] += len(value)
                yield value

    def report(self) -> dict:
        """Where the shards ran and what each did: for the probe summary and the benchmark."""
        return {"address": self.address, "shards": self.shards, "startup_seconds": round(self.startup_seconds, 2),
                "nodes": sorted({d["node"] for d in self.described}),
                "per_shard": [dict(d, samples=self.samples[d["shard"]],
                                   generate_seconds=round(self.seconds[d["shard"]], 2)) for d in self.described]}

    def close(self) -> None:
        ray = self._ray
        for actor in self.actors:
            if actor is None:
                continue
            try:
                ray.get(actor.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead actor has nothing left to close
                pass
            ray.kill(actor)
        self.actors = []
        if self._own_ray and ray.is_initialized():
            ray.shutdown()
            self._own_ray = False


class ShardError(StagewiseError):
    """A shard stopped on an error a user can fix (its message is the shard's own)."""


def _unwrap(exc) -> BaseException:
    """A shard's StagewiseError (bad backend argument, unreachable server) as itself, not a Ray wrapper.
    An actor that died in its constructor reaches the driver only as text: its error line is kept."""
    import re

    cause = getattr(exc, "cause", None)
    if isinstance(cause, StagewiseError):
        return cause
    found = re.findall(r"\b(?:ConfigError|InputError|MissingDependencyError|BackendError|StagewiseError): (.+)",
                       str(exc))
    if found:
        return ShardError(f"a Ray shard failed: {found[-1].strip()}")
    return exc
