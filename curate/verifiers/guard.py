"""A main-thread time limit (SIGALRM) that raises an exception nothing in sympy/math-verify catches."""

from __future__ import annotations

import contextlib
import signal
import threading
import time


class VerifierTimeout(BaseException):
    """Raised by the alarm. A BaseException on purpose: libraries' `except Exception` must not swallow it
    (math-verify's own timeout is swallowed and scored as a wrong answer)."""


def can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise VerifierTimeout after `seconds` (main thread only; elsewhere, or with None, no limit)."""
    if not seconds or seconds <= 0 or not can_alarm():
        yield
        return

    def _raise(signum, frame):
        raise VerifierTimeout()

    previous = signal.signal(signal.SIGALRM, _raise)
    started = time.monotonic()
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay > 0:  # the caller had its own timer running: give back what is left of it
            left = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer_interval)
