"""The `math` verifier: math-verify's parse + verify (symbolic equivalence: 0.5 == \\frac{1}{2}).

math-verify's own timeouts use `signal.alarm`, which fails outside the main thread and, on timeout,
silently returns "not equal" (a wrong answer where the truth is "unknown"). So they are switched off
here, and the caller bounds the time: `VerifierPool` runs this in worker processes that are killed
when they overrun, and `score()` uses a main-thread alarm that reports status "timeout".
"""

from __future__ import annotations

import functools
import logging

from stagewise.curate.errors import require
from stagewise.curate.verifiers.base import Verdict, Verifier
from stagewise.curate.verifiers.extract import marked_answer


class _DropTimeoutDisabledWarning(logging.Filter):
    # math-verify warns once that timeouts are off "so you must handle them yourself": we do.
    def filter(self, record):
        return "Timeout is disabled" not in record.getMessage()


@functools.cache
def _math_verify():
    mv = require("math_verify", "math")
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
    return mv


@functools.lru_cache(maxsize=4096)
def _parse_gold(answer: str):
    mv = _math_verify()
    for text in (f"\\boxed{{{answer}}}", f"${answer}$", answer):
        gold = mv.parse(text, parsing_timeout=None)
        if gold:
            return gold
    return []


def _as_text(parsed) -> str | None:
    if not parsed:
        return None
    return parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0])


class MathVerifier(Verifier):
    """Answer = the last \\boxed{} / <answer> content if present, else math-verify's own extraction."""

    name = "math"
    isolate = True  # sympy can hang on adversarial answers: run in a killable worker process

    def score(self, completion: str, problem) -> Verdict:
        mv = _math_verify()
        gold = _parse_gold(str(problem.answer))
        if not gold:
            return Verdict(0.0, None, "error", f"math-verify cannot parse the gold answer {problem.answer!r}")
        marked = marked_answer(completion)
        pred = mv.parse(f"\\boxed{{{marked}}}" if marked else (completion or ""), parsing_timeout=None)
        if not pred:
            return Verdict(0.0, None, "no_answer")
        extracted = _as_text(pred)
        ok = mv.verify(gold, pred, timeout_seconds=None)
        return Verdict(1.0, extracted, "correct") if ok else Verdict(0.0, extracted, "wrong")
