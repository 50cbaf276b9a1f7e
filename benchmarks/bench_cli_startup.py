"""Start-up cost of the command line and of the light import path, against an earlier commit.

    python -m benchmarks.bench_cli_startup                        # against the commit named by --baseline
    python -m benchmarks.bench_cli_startup --baseline main~5 --runs 30

Both trees (this checkout's and `git archive BASELINE`) are byte-compiled first, as an installed
package is, and each command runs from each tree in turn (A B A B ...), so a change in the machine's
load hits both. Measured per run in its own process: wall time and CPU time (user + system, from
wait4). Commands: `stagewise --help`, `python -c "import stagewise"` and
`python -c "import stagewise.curate.verifiers"` (what a reward worker imports). Reported: the median
of each and the ratio this tree / baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks import harness  # noqa: E402

NAME = "cli_startup"
PACKAGES = ("stagewise", "curate", "stages", "train")
COMMANDS = {
    "stagewise --help": ["-m", "stagewise.cli", "--help"],
    "import stagewise": ["-c", "import stagewise"],
    "import stagewise.curate.verifiers": ["-c", "import stagewise.curate.verifiers"],
}


def _tree(ref: str, into: str) -> str:
    archive = subprocess.run(["git", "archive", ref, *PACKAGES], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def _compile(tree: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", *PACKAGES], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def _once(tree: str, args: list[str]) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed in {tree}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="9c4357c", help="git ref to compare with (default: before the "
                                                              "imports moved to the top of the modules)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rows, payload = [], {"baseline": args.baseline, "runs": args.runs, "commands": {}}
    with tempfile.TemporaryDirectory() as tmp:
        base, here = _tree(args.baseline, tmp), ROOT
        for tree in (base, here):
            _compile(tree)
        load_before = os.getloadavg()[0]
        for label, cmd in COMMANDS.items():
            _once(here, cmd), _once(base, cmd)  # warm the file cache
            samples = {"this tree": [], "baseline": []}
            for _ in range(args.runs):
                samples["this tree"].append(_once(here, cmd))
                samples["baseline"].append(_once(base, cmd))
            med = {side: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
                   for side, s in samples.items()}
            ratio = med["this tree"][1] / med["baseline"][1]
            payload["commands"][label] = {side: {"wall_s": w, "cpu_s": c} for side, (w, c) in med.items()}
            rows.append([label, f"{med['baseline'][1]:.3f}", f"{med['this tree'][1]:.3f}", f"{ratio:.2f}x",
                         f"{med['baseline'][0]:.3f}", f"{med['this tree'][0]:.3f}"])
        payload["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    headers = ["command", "baseline cpu s", "this tree cpu s", "cpu ratio", "baseline wall s", "this tree wall s"]
    harness.print_table(f"start-up, median of {args.runs} runs each (baseline {args.baseline})", headers, rows)
    harness.write_json(NAME, payload)


if __name__ == "__main__":
    main()
