"""A verifier worker process: reads JSON requests on stdin, writes JSON verdicts on a private stdout.

Started by VerifierPool as `python -m stagewise.curate.verifiers.worker` (a fresh interpreter, not a
fork: safe from a process that holds threads, CUDA or a training loop, and it never re-runs the
parent's `__main__`). Each request runs under a SIGALRM limit in this process's main thread, which
works here, unlike in the threads of the parent; the pool kills the worker if even that fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from stagewise.curate.verifiers.base import Verdict
from stagewise.curate.verifiers.registry import ProblemView, get_verifier, run_verifier
from stagewise.curate.verifiers.rg import _scorer

# One answer of each common shape: the first parse of each shape builds parsers and caches (~0.2 s),
# which belongs to start-up, not to the first real answer's time limit.
_WARMUP = {"math": [
    ("so \\boxed{\\frac{1}{2}}", "0.5"), ("<answer>3\\sqrt{2}</answer>", "\\sqrt{18}"),
    ("\\boxed{x^2 + 2x + 1}", "(x+1)^2"), ("\\boxed{[1, 3)}", "[1,3)"), ("The answer is 7.", "7"),
    ("$\\frac{3\\pi}{4}$", "\\frac{3}{4}\\pi"), ("\\boxed{\\{1, 2\\}}", "\\{1,2\\}"), ("no idea", "1"),
    ("\\boxed{2^{10}}", "1024"), ("\\boxed{0.25}", "\\dfrac{1}{4}"), ("\\boxed{(1, -2)}", "(1,-2)"),
]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preload", action="append", default=[])
    parser.add_argument("--memory-limit-mb", type=int, default=0)
    args = parser.parse_args(argv)

    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    if args.memory_limit_mb > 0:
        try:
            import resource

            limit = args.memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        except (ImportError, ValueError, OSError):  # pragma: no cover - platform dependent
            pass

    def warm(tasks):
        # The heavy imports, done before saying "ready", so no answer's time limit is spent on them.
        for task in tasks:
            try:
                verifier = get_verifier(task)
                for completion, answer in _WARMUP.get(task, ()):
                    run_verifier(verifier, completion, ProblemView(answer=answer, task=task), None)
                if task.startswith("rg:"):
                    _scorer(task[3:], "{}")  # imports reasoning-gym and builds the dataset's scorer
            except Exception as exc:  # noqa: BLE001 - reported per request later
                print(f"verifier worker: preloading {task!r} failed: {exc}", file=sys.stderr)
        channel.write('{"ready": true}\n')

    warm(args.preload)
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if "warm" in req:  # the pool met a task this worker has not loaded yet
                warm(req["warm"])
                continue
            rid = req["id"]
        except (ValueError, KeyError, TypeError):
            continue
        try:
            view = ProblemView(**req["problem"])
            verdict = run_verifier(get_verifier(view.task), req["completion"], view, req.get("timeout_s"))
        except Exception as exc:  # noqa: BLE001 - e.g. an unknown task: the verdict says so
            verdict = Verdict(0.0, None, "error", f"{type(exc).__name__}: {exc}"[:500])
        channel.write(json.dumps([rid, verdict.score, verdict.extracted, verdict.status, verdict.reason]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
