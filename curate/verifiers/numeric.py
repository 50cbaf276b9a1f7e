"""The `gsm8k` / `numeric` verifier: the final number, compared exactly (2,125 == 2125 == 2125.0)."""

from __future__ import annotations

from stagewise.curate.verifiers.base import Verdict, Verifier
from stagewise.curate.verifiers.extract import format_number, last_number, marked_answer, to_fraction


class NumericVerifier(Verifier):
    """Answer = the number in the last \\boxed{} / <answer> tag if present, else the last number in the text.

    Commas, currency signs, percent signs and a trailing period are ignored; values compare as exact
    fractions, so "18.50" matches "18.5" and "3/4" matches "0.75".
    """

    name = "numeric"
    isolate = False  # regexes and Fractions: cannot hang, so no worker process needed

    def score(self, completion: str, problem) -> Verdict:
        gold = to_fraction(problem.answer)
        if gold is None:
            return Verdict(0.0, None, "error", f"gold answer {problem.answer!r} is not a number; "
                                               "use task 'exact' or 'math' for this problem")
        marked = marked_answer(completion)
        candidate = None
        if marked is not None:
            candidate = to_fraction(marked)
            if candidate is None:
                candidate = to_fraction(last_number(marked))
        if candidate is None:
            candidate = to_fraction(last_number(completion))
        if candidate is None:
            return Verdict(0.0, None, "no_answer")
        extracted = format_number(candidate)
        return Verdict(1.0, extracted, "correct") if candidate == gold else Verdict(0.0, extracted, "wrong")
