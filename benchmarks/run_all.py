"""Run every benchmark (`benchmarks/bench_*.py`), each with its defaults: `python -m benchmarks.run_all`."""

from __future__ import annotations

import importlib
import os
import sys


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    names = sorted(f[:-3] for f in os.listdir(here) if f.startswith("bench_") and f.endswith(".py"))
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        try:
            if module.main([]) not in (0, None):
                failed.append(name)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others' results
            print(f"{name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
