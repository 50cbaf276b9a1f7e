"""Consumer tests run inside a trainer's own venv (benchmarks/consumers_venv.sh); the shared fixtures and
helpers of tests/ are reused from there."""

from __future__ import annotations

import os
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
