"""Scoring from any thread or event loop: a pathological answer costs its time limit, never a hang."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import pytest
from stagewise.curate.verifiers import score
from stagewise.curate.verifiers.safe import close_shared_pools, score_many_safely, score_safely

HANG = "so the answer is \\boxed{9^{9^{9^{9}}}}"
MATH = {"answer": "3", "task": "math"}


@pytest.fixture(scope="module", autouse=True)
def shared_pool_of_this_module():
    # One shared pool for the module, as in a trainer's process; the first test pays its start-up.
    close_shared_pools()
    yield
    close_shared_pools()


def test_four_threads_scoring_a_pathological_answer_all_get_zero_within_30_seconds():
    close_shared_pools()  # the 30 s include starting the workers
    results: dict[int, object] = {}

    def work(n):
        results[n] = score_safely(HANG, MATH)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, 30 - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    assert len(results) == 4, f"only {len(results)} of 4 threads returned within {elapsed:.0f}s"
    assert elapsed < 30
    assert {v.score for v in results.values()} == {0.0}
    assert {v.status for v in results.values()} == {"timeout"}


def test_ordinary_answers_score_right_from_threads_next_to_a_hanging_one():
    cases = [(HANG, MATH, "timeout"), ("\\boxed{\\frac{1}{2}}", {"answer": "0.5", "task": "math"}, "correct"),
             ("\\boxed{3}", {"answer": "4", "task": "math"}, "wrong"),
             ("The answer is 2,125.", {"answer": "2125", "task": "gsm8k"}, "correct"),
             ("no idea", {"answer": "4", "task": "math"}, "no_answer")]
    results = {}

    def work(n, completion, problem):
        results[n] = score_safely(completion, problem)

    threads = [threading.Thread(target=work, args=(n, c, p), daemon=True) for n, (c, p, _) in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [results[n].status for n in range(len(cases))] == [s for *_, s in cases]
    assert [results[n].score for n in range(len(cases))] == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_scoring_through_asyncio_to_thread_returns_zero_within_30_seconds():
    async def main():
        jobs = [asyncio.to_thread(score_safely, HANG, MATH) for _ in range(4)]
        jobs.append(asyncio.to_thread(score_safely, "\\boxed{2}", {"answer": "2", "task": "math"}))
        return await asyncio.wait_for(asyncio.gather(*jobs), timeout=30)

    started = time.monotonic()
    verdicts = asyncio.run(main())
    assert time.monotonic() - started < 30
    assert [v.status for v in verdicts] == ["timeout"] * 4 + ["correct"]


def test_a_batch_keeps_input_order_and_scores_fast_verifiers_inline():
    items = [("\\boxed{7}", {"answer": "7", "task": "math"}), ("7", {"answer": "7", "task": "exact"}),
             ("\\boxed{8}", {"answer": "7", "task": "math"}), ("x", {"answer": "7", "task": "no-such-task"})]
    verdicts = score_many_safely(items)
    assert [v.status for v in verdicts] == ["correct", "correct", "wrong", "error"]


def test_score_off_the_main_thread_is_bounded_by_its_time_limit():
    # score() used to run math-verify without any limit outside the main thread.
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", score(HANG, MATH, timeout_s=2.0)), daemon=True)
    started = time.monotonic()
    t.start()
    t.join(timeout=60)
    assert out["v"].status == "timeout" and time.monotonic() - started < 60


def test_importing_the_safe_scorer_pulls_in_no_heavy_library():
    code = ("import sys, json; import stagewise.curate.verifiers.safe; "
            "print(json.dumps(sorted(m for m in ('polars', 'duckdb', 'click', 'rich', 'torch', "
            "'transformers', 'trl', 'sympy', 'math_verify', 'numpy') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_shared_pool_workers_stop_when_the_process_exits(tmp_path):
    # The pool is started lazily and stopped by atexit: a script that never closes it still exits promptly
    # and leaves no worker behind.
    script = tmp_path / "score.py"
    script.write_text(
        "import os\n"
        "from stagewise.curate.verifiers.safe import score_safely, shared_pool\n"
        "print(score_safely('\\\\boxed{2}', {'answer': '2', 'task': 'math'}).status)\n"
        "print(' '.join(str(w.proc.pid) for w in shared_pool()._workers), flush=True)\n")
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status, pids = out.stdout.split("\n")[:2]
    assert status == "correct" and pids
    assert time.monotonic() - started < 120
    for pid in map(int, pids.split()):
        try:
            with open(f"/proc/{pid}/status") as f:
                state = next(line for line in f if line.startswith("State:"))
            assert "Z" in state, f"verifier worker {pid} outlived its parent: {state}"
        except FileNotFoundError:
            pass
