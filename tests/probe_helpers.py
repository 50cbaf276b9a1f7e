"""A custom verifier for probe tests: with a random tiny model about half the answers pass, so items
land in every bucket. Importable as `probe_helpers:parity` (tests/ is on sys.path under pytest; the
verifier pool passes sys.path on to its workers)."""


def parity(completion, problem):
    """Correct when the completion's first character has an even code point; no answer when empty."""
    if not completion:
        return {"score": 0.0, "status": "no_answer"}
    return float(ord(completion[0]) % 2 == 0), completion[0]
