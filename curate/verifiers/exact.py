"""The `exact` verifier: normalised string equality."""

from __future__ import annotations

from stagewise.curate.verifiers.base import Verdict, Verifier
from stagewise.curate.verifiers.extract import marked_answer, normalise_text


class ExactVerifier(Verifier):
    """Answer = the last \\boxed{} / <answer> content if present, else the last non-empty line.

    Compared after NFKC, lower-casing, collapsing spaces and stripping quotes, $ and a trailing period.
    """

    name = "exact"
    isolate = False

    def score(self, completion: str, problem) -> Verdict:
        marked = marked_answer(completion)
        if marked is None:
            lines = [ln for ln in (completion or "").splitlines() if ln.strip()]
            marked = lines[-1] if lines else None
        if marked is None or not normalise_text(marked):
            return Verdict(0.0, None, "no_answer")
        got = normalise_text(marked)
        if got == normalise_text(problem.answer):
            return Verdict(1.0, marked, "correct")
        return Verdict(0.0, marked, "wrong")
