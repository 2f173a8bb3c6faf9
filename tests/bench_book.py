"""Benchmark: how long the book takes to build, from scratch and again unchanged.

Run ``make book-bench`` (or ``.venv/bin/python tests/bench_book.py``). It builds the book
three times into a temporary folder, side by side in one run:

1. from scratch, every notebook executed (``jupyter-book build --all -W --keep-going``);
2. the same command again on unchanged sources: every output comes from the execution cache;
3. the incremental build ``make book`` runs (``jupyter-book build -W --keep-going``), unchanged.

It prints the wall time and the CPU time (user and system, of jupyter-book and the kernels
it starts) of each, the rebuilds' ratios to the full build, and the slowest notebooks. The
goals: the full build at most 5 minutes on the course's 2-core machine, an unchanged rebuild
at most 10 % of it. This is a benchmark, not a test: machine-speed numbers vary with the
machine and its load, so nothing here fails on a time. The student notebooks must have been
released first (``python -m autograder release``; ``make`` does it).
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"
FULL_BUILD_GOAL_S = 300.0
REBUILD_GOAL = 0.10


def build(output: Path, *, all_pages: bool) -> dict:
    """One build into ``output``; returns wall and CPU seconds, and the log."""
    command = [str(JUPYTER_BOOK), "build", "-W", "--keep-going", "--path-output", str(output), "."]
    if all_pages:
        command.insert(2, "--all")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"jupyter-book build failed ({' '.join(command)}):\n{log[-5000:]}")
    return {
        "wall": wall,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
        "log": log,
    }


def executed_notebooks(log: str) -> list[tuple[float, str]]:
    """``(seconds, page)`` for every notebook the build executed, slowest first."""
    found = re.findall(r"book/([\w-]+)\.md: Executed notebook in ([\d.]+) seconds", log)
    return sorted(((float(s), page) for page, s in found), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the build folder and print its path")
    args = parser.parse_args()
    if not (REPO / "_build" / "release").is_dir():
        sys.exit("the student notebooks are not released: run `python -m autograder release` first")
    folder = Path(tempfile.mkdtemp(prefix="bench-book-"))
    try:
        full = build(folder, all_pages=True)
        again = build(folder, all_pages=True)
        incremental = build(folder, all_pages=False)
        if "Executing notebook" in again["log"] + incremental["log"]:
            print("warning: an unchanged rebuild executed a notebook again: the cache missed", file=sys.stderr)
        print(f"{'build':44s} {'wall s':>8s} {'user s':>8s} {'sys s':>7s} {'wall ratio':>11s}")
        for name, run in [
            ("full, from scratch (--all)", full),
            ("unchanged rebuild, same command (--all)", again),
            ("unchanged rebuild, incremental (make book)", incremental),
        ]:
            print(f"{name:44s} {run['wall']:8.1f} {run['user']:8.1f} {run['sys']:7.1f} "
                  f"{run['wall'] / full['wall']:11.3f}")
        def verdict(ok: bool) -> str:
            return "met" if ok else "MISSED"

        print(f"\ngoal, full build <= {FULL_BUILD_GOAL_S:.0f} s: {verdict(full['wall'] <= FULL_BUILD_GOAL_S)}")
        print(f"goal, unchanged rebuild <= {REBUILD_GOAL:.0%} of it: "
              f"{verdict(again['wall'] <= REBUILD_GOAL * full['wall'])} (--all), "
              f"{verdict(incremental['wall'] <= REBUILD_GOAL * full['wall'])} (incremental)")
        print("\nslowest notebooks in the full build (wall s):")
        for seconds, page in executed_notebooks(full["log"])[:8]:
            print(f"  {seconds:6.1f}  {page}")
    finally:
        if args.keep:
            print(f"\nbuild kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
