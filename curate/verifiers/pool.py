"""VerifierPool: run the verifiers that can hang (math-verify, reasoning-gym, custom) in worker processes
with a per-answer time limit; a worker that overruns is killed and replaced, and the run goes on.

Why not `concurrent.futures.ProcessPoolExecutor`: killing one of its workers marks the whole pool
broken (every pending future fails), and its spawn/forkserver children re-import the parent's
`__main__`, which re-runs an unguarded training script. Here each worker is a fresh interpreter
(`python -m stagewise.curate.verifiers.worker`) talking JSON lines over pipes, so:

- one worker can be killed without touching the others;
- it is safe inside a trainer's process (threads, CUDA, accelerate/torchrun launchers, daemonic
  processes that may not have multiprocessing children);
- the time limit inside a worker is a SIGALRM in its main thread (math-verify's own alarm fails in
  threads and, on timeout, scores "wrong"); the parent's deadline is the backstop for hangs in C code.

Budget per answer: the worker's alarm fires at 0.9 x timeout_s and the parent kills the worker at
timeout_s, so no answer costs a worker more than timeout_s. The replacement starts in the background.

Many threads may call one pool at once (verl scores rollouts from a thread pool, OpenRLHF through
`asyncio.to_thread`): their requests share one queue, and whichever caller holds the pool's lock runs
the event loop for everyone until its own answers are in; the others wait on their own event and take
over the loop when it is free. So concurrent callers keep every worker busy instead of queueing behind
each other's whole batch.
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
import weakref
import zlib

from stagewise.curate.verifiers.base import Verdict
from stagewise.curate.verifiers.registry import ProblemView, as_problem, get_verifier, run_verifier

_SOFT_FRACTION = 0.9  # worker-side alarm, as a fraction of timeout_s
_STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded 2-core machine can take a while
_MAX_START_FAILURES = 3


class _Worker:
    def __init__(self, preload, memory_limit_mb):
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker; kill() closes it
        env = dict(os.environ)
        # The parent's import path, so `module:function` verifiers and a source checkout resolve alike.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = "1"
        cmd = [sys.executable, "-m", "stagewise.curate.verifiers.worker",
               "--memory-limit-mb", str(memory_limit_mb)]
        for task in preload:
            cmd += ["--preload", task]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=env, close_fds=True)
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.ready = False
        self.loaded = set(preload)  # tasks it imports before saying ready
        self.awaiting = 1  # "ready" lines still to come: one for start-up, one per later warm request
        self.broken = False  # a write failed: it died, and its end of file is on the way
        self.started = time.monotonic()
        self.inflight: collections.deque[int] = collections.deque()  # request ids, oldest first
        self.head_since = 0.0  # when the oldest in-flight request started running

    def send(self, payload: dict, now: float) -> None:
        if not self.inflight:
            self.head_since = now
        self.inflight.append(payload["id"])
        self.proc.stdin.write((json.dumps(payload) + "\n").encode("utf-8"))
        self.proc.stdin.flush()

    def read_lines(self) -> list[bytes] | None:
        """Complete lines available now; None at end of file (the worker died)."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        if not data:
            return None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return lines

    def stderr_tail(self, limit: int = 800) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read().decode("utf-8", "replace")[-limit:].strip()
        except (OSError, ValueError):
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError, BrokenPipeError):
                pass
        # No wait(): the caller should not pay for reaping. SIGKILL cannot be ignored, and subprocess
        # reaps an abandoned Popen on its next process start (or poll() at close) without blocking.
        self.proc.poll()
        self.stderr.close()

    def stop(self, grace_s: float = 2.0) -> None:
        """Close stdin (the worker exits at end of input); kill it if it does not."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=grace_s)
        except (OSError, ValueError, BrokenPipeError, subprocess.TimeoutExpired):
            pass
        self.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
            pass


class _Call:
    """One score_many call: its results, and an event set when the last of them lands."""

    def __init__(self, n: int, on_result):
        self.results: list[Verdict | None] = [None] * n
        self.left = n
        self.on_result = on_result
        self.done = threading.Event()
        if n == 0:
            self.done.set()

    def set(self, i: int, verdict: Verdict) -> None:
        self.results[i] = verdict
        if self.on_result is not None:
            self.on_result(i, verdict)
        self.left -= 1
        if self.left == 0:
            self.done.set()


class VerifierPool:
    """Score many (completion, problem) pairs; hang-prone verifiers run in `workers` processes.

    `timeout_s` bounds the time one answer may cost. Fast verifiers (gsm8k/numeric, exact) run inline.
    Workers start on first use and are reused across `score_many` calls; `close()` (or the context
    manager) stops them. `stats` counts timeouts, worker restarts and errors. `max_in_flight` requests
    wait in one worker's pipe: 2 (one running, one next) keeps a worker from idling on a round trip,
    and more would only queue behind an answer that runs to its time limit.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, *, max_in_flight: int = 2,
                 memory_limit_mb: int = 4096, preload: tuple[str, ...] | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.n_workers = workers
        self.timeout_s = float(timeout_s)
        self.max_in_flight = max(1, max_in_flight)
        self.memory_limit_mb = memory_limit_mb
        # Tasks whose imports a worker does before saying ready; None: those of the first batch it serves.
        self.preload = None if preload is None else tuple(preload)
        self.stats = {"scored": 0, "in_workers": 0, "timeouts": 0, "errors": 0, "restarts": 0}
        self._workers: list[_Worker] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()  # held by the caller that runs the event loop
        self._state = threading.Lock()  # guards the shared queue and the request table
        self._queue: collections.deque[int] = collections.deque()  # request ids waiting for a worker
        self._requests: dict[int, tuple[_Call, int, dict]] = {}  # request id -> (call, index, payload)
        self._next_id = 0
        self._wake_r, self._wake_w = os.pipe()  # a new request wakes the loop's select()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._start_failures = 0
        self._killed: list[subprocess.Popen] = []
        self._finalizer = weakref.finalize(self, VerifierPool._stop_all, self._workers, self._killed,
                                           (self._wake_r, self._wake_w))

    # -- public ----------------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout_s: float = _STARTUP_TIMEOUT_S) -> bool:
        """Start the workers now (they otherwise start on first use); with `wait`, until all are ready.

        Returns whether every worker is ready. A worker that dies while starting is replaced, as in use.
        """
        with self._lock:
            self._ensure_workers()
            end = time.monotonic() + timeout_s
            while wait and self._workers and not all(w.ready for w in self._workers):
                for w in list(self._workers):
                    if w.ready:
                        continue
                    lines = w.read_lines()
                    if lines is None:
                        self._start_failures += 1
                        self._give_up_reason = (f"verifier worker failed to start (exit code {w.proc.poll()}): "
                                                f"{w.stderr_tail()}")
                        self._replace(w)
                        continue
                    for line in lines:
                        self._on_line(w, line)
                if time.monotonic() > end:
                    break
                time.sleep(0.02)
            return bool(self._workers) and all(w.ready for w in self._workers)

    def score(self, completion: str, problem) -> Verdict:
        return self.score_many([(completion, problem)])[0]

    def score_many(self, items, on_result=None) -> list[Verdict]:
        """Verdicts in input order. Never raises for a bad answer; `on_result(i, verdict)` as each lands.
        A problem without a task raises InputError before anything is scored.

        Safe to call from several threads at once (see the module doc); `on_result` then runs in
        whichever caller's thread is running the event loop."""
        items = list(items)
        views = [as_problem(problem) for _, problem in items]
        call = _Call(len(items), on_result)
        payloads: list[dict] = []
        for i, ((completion, _), view) in enumerate(zip(items, views)):
            try:
                verifier = get_verifier(view.task)
            except Exception as exc:  # noqa: BLE001 - an unknown task marks the sample
                self._deliver(call, i, Verdict(0.0, None, "error", f"{type(exc).__name__}: {exc}"))
                continue
            if getattr(verifier, "isolate", True):
                payloads.append({"index": i, "completion": "" if completion is None else str(completion),
                                 "problem": view.__dict__, "timeout_s": self.timeout_s * _SOFT_FRACTION})
            else:
                self._deliver(call, i, run_verifier(verifier, completion, view, self.timeout_s))
        if payloads:
            self._submit(call, payloads)
            while not call.done.is_set():
                if self._lock.acquire(timeout=0.05):
                    try:
                        self._run(call)
                    finally:
                        self._lock.release()
        return call.results  # type: ignore[return-value]

    def close(self) -> None:
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the event loop --------------------------------------------------------------------------

    def _submit(self, call: _Call, payloads: list[dict]) -> None:
        with self._state:
            self.stats["in_workers"] += len(payloads)
            tasks = sorted({p["problem"]["task"] for p in payloads})
            if self.preload is None:
                self.preload = tuple(tasks)[:8]
            elif len(self.preload) < 8 and any(t not in self.preload for t in tasks):
                # A task the running workers have not loaded: they load it before taking more requests,
                # so its first answer's time limit is not spent importing (reasoning-gym takes seconds).
                new = [t for t in tasks if t not in self.preload][:8 - len(self.preload)]
                self.preload = self.preload + tuple(new)
            for p in payloads:
                rid = self._next_id
                self._next_id += 1
                self._requests[rid] = (call, p.pop("index"), p)
                p["id"] = rid
                self._queue.append(rid)
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):  # the pipe is full: the loop is awake anyway
            pass

    def _deliver(self, call: _Call, i: int, verdict: Verdict) -> None:
        with self._state:
            self.stats["scored"] += 1
            if verdict.status == "timeout":
                self.stats["timeouts"] += 1
            elif verdict.status == "error":
                self.stats["errors"] += 1
        call.set(i, verdict)

    def _finish(self, rid: int, verdict: Verdict) -> None:
        with self._state:
            entry = self._requests.pop(rid, None)
        if entry is not None:
            self._deliver(entry[0], entry[1], verdict)

    def _ensure_workers(self) -> None:
        if os.getpid() != self._pid:  # used in a forked child: the parent's workers are not ours
            self._workers.clear()
            self._pid = os.getpid()
        while len(self._workers) < self.n_workers:
            self._workers.append(_Worker(self.preload or ("math",), self.memory_limit_mb))

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._killed.append(worker.proc)  # reaped at close(), so no zombie outlives the pool
        self._workers.remove(worker)
        self.stats["restarts"] += 1
        if self._start_failures < _MAX_START_FAILURES:
            self._workers.append(_Worker(self.preload or ("math",), self.memory_limit_mb))

    def _warm_workers(self) -> None:
        """Ask each worker to load the tasks added to `preload` since it started (see `_submit`)."""
        wanted = set(self.preload or ())
        for w in self._workers:
            missing = sorted(wanted - w.loaded)
            if not missing or w.broken:
                continue
            try:
                w.proc.stdin.write((json.dumps({"warm": missing}) + "\n").encode("utf-8"))
                w.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                w.broken = True
                continue
            w.loaded.update(missing)
            w.awaiting += 1
            w.ready = False
            w.started = time.monotonic()  # the start-up limit covers the loading

    def _run(self, call: _Call) -> None:
        """The event loop, run by the caller holding the lock until its own answers are in."""
        self._ensure_workers()
        queued = self._queue
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        registered: set[int] = set()
        try:
            while not call.done.is_set():
                if not self._workers:  # workers cannot start: fail what is left, with the reason
                    with self._state:
                        left = list(queued)
                        queued.clear()
                    for rid in left:
                        self._finish(rid, Verdict(0.0, None, "error", self._give_up_reason))
                    break
                now = time.monotonic()
                for w in self._workers:
                    if id(w) not in registered:
                        sel.register(w.fd, selectors.EVENT_READ, w)
                        registered.add(id(w))
                self._warm_workers()
                self._dispatch(queued, now)
                deadline = min([w.head_since + self.timeout_s for w in self._workers if w.inflight]
                               + [w.started + _STARTUP_TIMEOUT_S for w in self._workers if not w.ready],
                               default=now + 1.0)
                events = sel.select(timeout=max(0.0, deadline - now))
                dead: list[_Worker] = []
                for key, _ in events:
                    w = key.data
                    if w is None:  # another caller queued requests
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        continue
                    lines = w.read_lines()
                    if lines is None:
                        dead.append(w)
                        continue
                    for line in lines:
                        self._on_line(w, line)
                now = time.monotonic()
                for w in list(self._workers):
                    if w in dead:
                        self._on_death(w, queued, sel, registered)
                    elif w.inflight and now >= w.head_since + self.timeout_s:
                        rid = w.inflight.popleft()
                        with self._state:
                            queued.extendleft(reversed(w.inflight))  # innocent bystanders go back first
                        w.inflight.clear()
                        self._detach(w, sel, registered)
                        self._replace(w)
                        self._finish(rid, Verdict(0.0, None, "timeout", f"verifier exceeded {self.timeout_s:g}s; "
                                                                         "worker killed and replaced"))
                    elif not w.ready and now >= w.started + _STARTUP_TIMEOUT_S:
                        self._start_failures += 1
                        self._give_up_reason = f"verifier worker did not start in {_STARTUP_TIMEOUT_S:g}s"
                        self._detach(w, sel, registered)
                        self._replace(w)
        finally:
            sel.close()

    def _dispatch(self, queued, now) -> None:
        """Send queued requests to the least busy workers with room. Among equally busy ones, a request
        goes to the worker its gold answer hashes to: the k samples of a problem then hit the same
        worker's parse caches when that costs no waiting (an idle worker beats a warm cache, since the
        request ahead of it may run until its time limit)."""
        # While a worker is still starting, a ready one takes no second request: the starting one will
        # want it soon, and a request queued behind a hang would wait out the hang's whole time limit.
        cap = self.max_in_flight if all(w.ready for w in self._workers) else 1
        while True:
            free = [w for w in self._workers if w.ready and not w.broken and len(w.inflight) < cap]
            if not free:
                return
            with self._state:
                if not queued:
                    return
                rid = queued.popleft()
                payload = self._requests[rid][2]
            home = self._workers[zlib.crc32(payload["problem"]["answer"].encode()) % len(self._workers)]
            least = min(len(x.inflight) for x in free)
            w = home if home in free and len(home.inflight) == least else \
                next(x for x in free if len(x.inflight) == least)
            try:
                w.send(payload, now)
            except (BrokenPipeError, OSError):
                w.inflight.remove(rid)
                with self._state:
                    queued.appendleft(rid)  # the worker died; its end-of-file is handled by the loop
                w.broken = True

    def _on_line(self, w: _Worker, line: bytes) -> None:
        if not line.strip():
            return
        msg = json.loads(line)
        if isinstance(msg, dict) and msg.get("ready"):
            w.awaiting -= 1
            if w.awaiting <= 0:
                w.ready = True
                self._start_failures = 0
            return
        rid, score, extracted, status, reason = msg
        if rid in w.inflight:
            w.inflight.remove(rid)
            w.head_since = time.monotonic()
            if status == "timeout":
                reason = f"verifier exceeded {self.timeout_s:g}s"
            self._finish(rid, Verdict(float(score), extracted, status, reason))

    def _on_death(self, w: _Worker, queued, sel, registered) -> None:
        code = w.proc.poll()
        tail = w.stderr_tail()
        if not w.ready:
            self._start_failures += 1
            self._give_up_reason = f"verifier worker failed to start (exit code {code}): {tail}"
        if w.inflight:
            rid = w.inflight.popleft()
            with self._state:
                queued.extendleft(reversed(w.inflight))
            w.inflight.clear()
            self._finish(rid, Verdict(0.0, None, "error", f"verifier worker died (exit code {code}): {tail[-300:]}"))
        self._detach(w, sel, registered)
        self._replace(w)

    @staticmethod
    def _detach(w: _Worker, sel, registered) -> None:
        if id(w) in registered:
            sel.unregister(w.fd)
            registered.discard(id(w))

    _give_up_reason = "verifier workers cannot start"

    @staticmethod
    def _stop_all(workers: list[_Worker], killed: list, wake_fds: tuple[int, int] = ()) -> None:
        for fd in wake_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        for w in workers:
            w.stop()
        workers.clear()
        for proc in killed:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
                pass
        killed.clear()


__all__ = ["ProblemView", "VerifierPool"]
