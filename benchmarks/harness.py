"""Shared benchmark harness.

Each benchmark runs its candidate and a baseline in the same session, each in its own subprocess (so
peak RSS is that process's own), prints a rich table, writes JSON to benchmarks/results/<name>.json,
and reports ratios against the baseline, never against a hard-coded number. `update_results_md`
rewrites only the benchmark's own `## <name>` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
RESULTS_MD = os.path.join(HERE, "RESULTS.md")


@dataclass
class Measurement:
    """One subprocess run: wall seconds, peak resident memory, exit code and what it printed."""

    label: str
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str = ""
    stderr: str = ""

    def check(self) -> Measurement:
        if self.returncode != 0:
            raise RuntimeError(f"{self.label} failed with exit code {self.returncode}:\n{self.stderr[-2000:]}")
        return self


def run_measured(label: str, cmd: list[str], *, env: dict | None = None, cwd: str | None = None,
                 nice: int = 10) -> Measurement:
    """Run `cmd`, timing it and reading its peak RSS from the kernel (wait4's ru_maxrss)."""
    full_env = dict(os.environ, **(env or {}))
    start = time.perf_counter()
    if nice:  # `nice` execs the command, so the pid (and its rusage) is the command's own
        cmd = ["nice", "-n", str(nice), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd, text=True)
    # communicate() drains the pipes; wait4 then reaps the child and returns its own rusage.
    out, err = _drain(proc)
    _, status, rusage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measurement(label, round(seconds, 3), round(rusage.ru_maxrss / 1024, 1), proc.returncode, out, err)


def _drain(proc) -> tuple[str, str]:
    import threading

    chunks = {"out": [], "err": []}

    def reader(stream, key):
        for line in stream:
            chunks[key].append(line)

    threads = [threading.Thread(target=reader, args=(proc.stdout, "out")),
               threading.Thread(target=reader, args=(proc.stderr, "err"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return "".join(chunks["out"]), "".join(chunks["err"])


def best_of(repeats: int, label: str, cmd: list[str], **kw) -> Measurement:
    """The fastest of `repeats` runs (peak RSS is the largest seen): less noise on shared machines."""
    runs = [run_measured(label, cmd, **kw).check() for _ in range(repeats)]
    best = min(runs, key=lambda m: m.seconds)
    best.peak_rss_mb = max(m.peak_rss_mb for m in runs)
    return best


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        info["memory_gib"] = round(kb / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for mod in ("torch", "polars", "pandas"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def print_table(title: str, headers: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    Console().print(table)


def write_json(name: str, payload: dict) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(payload, machine=machine(), measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                  f, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    os.replace(tmp, path)
    return path


def machine_header() -> str:
    m = machine()
    lines = ["# Benchmark results", "",
             ("Measured with `python -m benchmarks.<name>` (see each script); every number is compared with a "
              "baseline run in the same session."), "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in m.items() if k not in ("platform",)) + ", no GPU.",
             f"Platform: {m.get('platform')}.", ""]
    return "\n".join(lines) + "\n"


def update_results_md(section: str, body: str) -> str:
    """Replace (or append) the `## <section>` of RESULTS.md, leaving other sections untouched."""
    text = machine_header()
    if os.path.exists(RESULTS_MD):
        with open(RESULTS_MD) as f:
            text = f.read()
    heading = f"## {section}"
    block = f"{heading}\n\n{body.strip()}\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        text = "".join(lines[:start]) + block + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    tmp = RESULTS_MD + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, RESULTS_MD)
    return RESULTS_MD


def python() -> str:
    return sys.executable
