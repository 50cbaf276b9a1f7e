"""Verifiers: what each task accepts, that nothing raises, and that the pool survives hangs and crashes."""

from __future__ import annotations

import textwrap
import threading
import time

import pytest
from stagewise.curate.errors import ConfigError, InputError
from stagewise.curate.schema import Problem
from stagewise.curate.verifiers import VerifierPool, get_verifier, score


def P(answer, task, **kw):
    return {"answer": answer, "task": task, **kw}


@pytest.mark.parametrize("completion,answer,status,extracted", [
    ("She pays 5 + 3 = 8 dollars. The answer is 8.", "8", "correct", "8"),
    ("Total: $2,125.", "2125", "correct", "2125"),
    ("Total is 2125", "2,125", "correct", "2125"),
    ("It costs $18.50", "18.5", "correct", "18.5"),
    ("so the answer is \\boxed{42} (not 7)", "42", "correct", "42"),
    ("<answer>-3</answer> and then 5", "-3", "correct", "-3"),
    ("\\boxed{\\$1,000}", "1000", "correct", "1000"),
    ("\\boxed{\\frac{3}{4}}", "0.75", "correct", "0.75"),
    ("the rate is 45%", "45", "correct", "45"),
    ("first 1, 2, 3 then 10", "10", "correct", "10"),
    ("The answer is 7.", "8", "wrong", "7"),
    ("I don't know", "8", "no_answer", None),
])
def test_numeric(completion, answer, status, extracted):
    for task in ("gsm8k", "numeric"):
        v = score(completion, P(answer, task))
        assert (v.status, v.extracted) == (status, extracted)
        assert v.score == (1.0 if status == "correct" else 0.0)


def test_numeric_with_a_non_numeric_gold_answer_is_an_error_not_a_wrong():
    v = score("42", P("forty-two", "gsm8k"))
    assert v.status == "error" and "not a number" in v.reason


@pytest.mark.parametrize("completion,answer,status", [
    ("so \\boxed{\\frac{1}{2}}", "0.5", "correct"),
    ("<answer>0.5</answer>", "\\frac{1}{2}", "correct"),
    ("The final answer is $\\sqrt{8}$, i.e. \\boxed{2\\sqrt{2}}", "2\\sqrt{2}", "correct"),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", "correct"),
    ("\\boxed{[1,2)}", "[1,2)", "correct"),
    ("\\boxed{3}", "4", "wrong"),
    ("I cannot solve this.", "4", "no_answer"),
])
def test_math(completion, answer, status):
    assert score(completion, P(answer, "math")).status == status


def test_math_hang_is_a_timeout_not_a_wrong_answer():
    # math-verify's own timeout would return False here (a silent "wrong"); ours says timeout.
    t = time.monotonic()
    v = score("\\boxed{9^{9^{9^{9}}}}", P("5", "math"), timeout_s=1.0)
    assert v.status == "timeout" and "1s" in v.reason
    assert time.monotonic() - t < 3.0


def test_reasoning_gym_uses_the_datasets_own_scorer():
    import reasoning_gym

    entry = reasoning_gym.create_dataset("basic_arithmetic", size=1, seed=3)[0]
    problem = Problem(prompt=entry["question"], answer=entry["answer"], task="rg:basic_arithmetic",
                      meta={"rg_entry": entry})
    assert score(f"thinking...<answer>{entry['answer']}</answer>", problem).status == "correct"
    wrong = score("<answer>definitely not</answer>", problem)
    assert wrong.status == "wrong" and wrong.extracted == "definitely not"
    assert score("no tags here", problem).status == "no_answer"
    missing = score("<answer>1</answer>", P("1", "rg:basic_arithmetic"))
    assert missing.status == "error" and "rg_entry" in missing.reason


def test_exact():
    assert score("The capital is:\nParis.", P("paris", "exact")).status == "correct"
    assert score("<answer> New  York </answer>", P("new york", "exact")).status == "correct"
    assert score("London", P("paris", "exact")).status == "wrong"
    assert score("   ", P("paris", "exact")).status == "no_answer"


def test_unknown_task_is_a_config_error_for_get_verifier_and_a_marked_sample_for_score():
    with pytest.raises(ConfigError, match="unknown task 'nonsense'"):
        get_verifier("nonsense")
    v = score("1", P("1", "nonsense"))
    assert v.status == "error" and "unknown task" in v.reason


@pytest.mark.parametrize("problem", [{"answer": "8"}, {"answer": "8", "task": None}, {"answer": "8", "task": " "},
                                     Problem(prompt="q", answer="8", task="")])
def test_a_problem_without_a_task_is_refused_naming_the_fix(problem):
    # No silent fallback to exact match: the caller learns which column is missing and how to set it.
    with pytest.raises(InputError, match=r"column 'task'.*no task.*--task"):
        score("The answer is 8.", problem)
    with pytest.raises(InputError, match=r"column 'task'"), VerifierPool(workers=1, timeout_s=5.0) as pool:
        pool.score_many([("The answer is 8.", P("8", "gsm8k")), ("The answer is 8.", problem)])


def test_the_prompt_builder_refuses_a_problem_without_a_task_too():
    # The task also picks the prompt family (boxed vs reasoning-gym tags); no guessing there either.
    from stagewise.curate.prompts import build_messages, format_target

    with pytest.raises(InputError, match=r"column 'task'"):
        build_messages({"prompt": "What is 2 + 2?"})
    with pytest.raises(InputError, match=r"column 'task'"):
        format_target("2 + 2 = 4", "4", {"prompt": "What is 2 + 2?", "task": ""})
    assert build_messages({"prompt": "What is 2 + 2?", "task": "rg:basic_arithmetic"})[0]["role"] == "system"


HEAVY = ("polars", "duckdb", "click", "rich", "torch", "transformers", "trl")


def test_importing_and_using_the_verifiers_loads_no_heavy_library():
    # A verl or OpenRLHF reward worker installs stagewise with --no-deps; the verifiers must work there.
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = textwrap.dedent(f"""
        import sys
        import stagewise.curate.verifiers as v
        from stagewise.curate.verifiers import VerifierPool
        verdicts = [v.score("The answer is 8.", {{"answer": "8", "task": task}}).status
                    for task in ("gsm8k", "numeric", "exact", "math")]
        print(" ".join(verdicts))
        print(" ".join(sorted(m for m in {HEAVY!r} if m in sys.modules)) or "none")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                         env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    statuses, loaded = out.stdout.splitlines()[-2:]
    assert statuses == "correct correct wrong correct"  # exact wants the whole answer, "8", not a sentence
    assert loaded == "none"


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    (tmp_path / "my_checks.py").write_text(textwrap.dedent("""
        import os, signal, time

        def first_word(completion, problem):
            word = completion.split()[0] if completion.split() else None
            return (float(word == problem.answer), word)

        def crash(completion, problem):
            raise RuntimeError("boom")

        def spin(completion, problem):  # a hang in Python code: the worker's alarm stops it
            while True:
                pass

        def stuck(completion, problem):  # a hang the alarm cannot stop (like one inside C code)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(60)

        def die(completion, problem):
            os._exit(3)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_checks"


def test_custom_module_function(custom_module):
    assert score("yes it is", P("yes", f"{custom_module}:first_word")).status == "correct"
    v = score("x", P("yes", f"{custom_module}:crash"))
    assert v.status == "error" and "boom" in v.reason
    assert score("x", P("yes", f"{custom_module}:missing")).status == "error"


def test_pool_matches_in_process_scoring_and_survives_hangs_and_crashes(custom_module):
    ok = [(f"so \\boxed{{{i}/4}}", P(str(i / 4), "math")) for i in range(30)]
    ok += [(f"{i} apples", P(str(i), "gsm8k")) for i in range(10)]
    ok += [(f"no {i}", P("no", f"{custom_module}:first_word")) for i in range(5)]
    bad = [("x", P("1", f"{custom_module}:spin")), ("x", P("1", f"{custom_module}:stuck")),
           ("x", P("1", f"{custom_module}:die")), ("x", P("1", f"{custom_module}:crash")),
           ("x", P("1", "nonsense"))]
    items = ok[:20] + bad + ok[20:]
    with VerifierPool(workers=2, timeout_s=2.0) as pool:
        verdicts = pool.score_many(items)
        stats = dict(pool.stats)
        after = pool.score_many(ok[:4])  # the pool still works after kills and deaths
    expected = [score(c, p, timeout_s=None) for c, p in ok]
    got_ok = verdicts[:20] + verdicts[25:]
    assert [(v.status, v.extracted) for v in got_ok] == [(v.status, v.extracted) for v in expected]
    assert [v.status for v in verdicts[20:25]] == ["timeout", "timeout", "error", "error", "error"]
    assert "killed" in verdicts[21].reason and "died" in verdicts[22].reason
    assert stats["restarts"] == 2  # the stuck worker and the dead one
    assert all(v.status == "correct" for v in after)


@pytest.mark.parametrize("hang", ["spin", "stuck"])
def test_a_hung_answer_costs_its_timeout_and_no_more(custom_module, hang):
    with VerifierPool(workers=1, timeout_s=2.0) as pool:
        assert pool.start(wait=True)
        t = time.monotonic()
        v = pool.score("x", P("1", f"{custom_module}:{hang}"))
        elapsed = time.monotonic() - t
        # spin: the worker's own alarm (0.9 x timeout); stuck: the parent kills it at the timeout.
        assert v.status == "timeout"
        assert 2.0 * 0.9 - 0.05 <= elapsed <= 2.0 + 0.5
        assert pool.score("\\boxed{2}", P("2", "math")).status == "correct"


def test_pool_works_from_a_non_main_thread():
    # TRL calls reward functions wherever it likes; signal.alarm would fail in a thread, the pool must not.
    out = {}

    def work():
        with VerifierPool(workers=1, timeout_s=1.5) as pool:
            out["v"] = pool.score_many([("\\boxed{9^{9^{9^{9}}}}", P("5", "math")),
                                        ("\\boxed{2}", P("2", "math"))])

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=120)
    assert [v.status for v in out["v"]] == ["timeout", "correct"]


def test_score_gives_back_a_callers_own_alarm():
    import signal

    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(time.monotonic()))
    try:
        t = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        assert score("\\boxed{2}", P("2", "math")).status == "correct"
        time.sleep(1.5)
        assert len(fired) == 1 and fired[0] - t == pytest.approx(1.0, abs=0.3)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_pool_scores_reasoning_gym_in_workers():
    import reasoning_gym

    entries = list(reasoning_gym.create_dataset("chain_sum", size=6, seed=1))
    items = [(f"<answer>{e['answer']}</answer>" if i % 2 else "<answer>-99999</answer>",
              Problem(prompt=e["question"], answer=e["answer"], task="rg:chain_sum", meta={"rg_entry": e}))
             for i, e in enumerate(entries)]
    with VerifierPool(workers=1, timeout_s=10.0) as pool:
        verdicts = pool.score_many(items)
        assert pool.preload == ("rg:chain_sum",)
    assert [v.status for v in verdicts] == ["wrong", "correct"] * 3
    assert [v.status for v in verdicts] == [score(c, p).status for c, p in items]


def test_pool_never_reruns_an_unguarded_training_script(tmp_path):
    # spawn/forkserver pools re-import __main__ in each worker; a script without a main guard (common in
    # training code) would then start training again inside the verifier workers.
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        print("SCRIPT BODY RAN", flush=True)
        from stagewise.curate.verifiers import VerifierPool
        pool = VerifierPool(workers=2, timeout_s=5.0)
        print(pool.score_many([("\\\\boxed{3}", {"answer": "3", "task": "math"})])[0].status, flush=True)
        pool.close()
    """))
    out = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["SCRIPT", "BODY", "RAN", "correct"], out.stderr[-2000:]
