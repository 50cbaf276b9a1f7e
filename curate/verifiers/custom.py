"""Custom verifiers, named explicitly as `module:function` (never evaluated from data).

The function is called as `fn(completion, problem)` and may return a Verdict, a bool or number (the
score; >= 1 is correct), a (score, extracted) pair, or a dict with score / extracted / status.
"""

from __future__ import annotations

import importlib

from stagewise.curate.errors import ConfigError
from stagewise.curate.verifiers.base import STATUSES, Verdict, Verifier


def load_function(spec: str):
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"custom verifier {spec!r}: cannot import module {module_name!r} ({exc}); "
                          "make it importable (PYTHONPATH) or fix the task name") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ConfigError(f"custom verifier {spec!r}: module {module_name!r} has no function {func_name!r}")
    return fn


class CustomVerifier(Verifier):
    isolate = True  # user code may hang: keep it killable

    def __init__(self, spec: str):
        self.name = spec
        self.fn = load_function(spec)

    def score(self, completion: str, problem) -> Verdict:
        return to_verdict(self.fn(completion, problem), self.name)


def to_verdict(value, name: str) -> Verdict:
    if isinstance(value, Verdict):
        return value
    extracted = None
    status = None
    if isinstance(value, dict):
        extracted, status = value.get("extracted"), value.get("status")
        value = value.get("score")
    elif isinstance(value, tuple) and len(value) == 2:
        value, extracted = value
    if isinstance(value, (int, float)):  # bool is an int
        score = float(value)
    else:
        return Verdict(0.0, None, "error", f"custom verifier {name} returned {type(value).__name__}, "
                                           "expected a number, bool, (score, extracted) or Verdict")
    if status not in STATUSES:
        status = "correct" if score >= 1.0 else "wrong"
    return Verdict(score, None if extracted is None else str(extracted), status)
