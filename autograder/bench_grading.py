"""Throughput: ``python -m autograder grade`` against plain ``nbgrader autograde``, side by side.

    python -m autograder.bench_grading [--copies 1] [--workers N] [--timeout 10]

Builds one synthetic class (:mod:`autograder.synthetic`) of at least 40 notebooks across the
four assignments (correct ones, every catalogued mistake, blank ones, and the hostile cases
that are safe to run *without* a sandbox: an infinite loop, ``os._exit``, ``sys.exit()``, a
segfault, a socket, reading the solutions, deleted, duplicated and edited graded cells,
stripped metadata, monkeypatched helpers, forged records, a file that is not JSON), and the
students of the synthetic Canvas zip (:func:`autograder.synthetic.make_lms_zips`: names in
several scripts, the file a resubmission rule picks, a notebook with 21 MB of saved outputs,
each as handed in), then grades it twice on this machine, one after the other:

1. ``python -m autograder grade`` into a fresh folder (timed from the command's start, so it
   includes making that folder a course directory, starting the workers and writing the
   report);
2. plain ``nbgrader autograde <assignment>`` for each assignment, with the course's nbgrader
   configuration (its assignment generated beforehand, untimed, as at release time) and the
   same cell timeout: one Jupyter kernel per notebook, one notebook at a time.

It prints notebooks per minute for each and their ratio, with the machine's core count and
load (the other work on the machine slows both runs; compare ratios, not rates, across runs).
The fork bomb, the memory bomb and the gigabyte of output are left out: without a sandbox they
would endanger the machine rather than measure anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from autograder.grading.store import known_assignments
from autograder.grading.submissions import collect
from autograder.nbgrader_ext.release import tools_on_path
from autograder.paths import NBGRADER_CONFIG, REPO_DIR, SOLUTIONS
from autograder.sandbox import is_root, warm_available
from autograder.synthetic import LMS_ASSIGNMENT, make_class, make_lms_zips

#: Hostile cases that plain nbgrader survives without a sandbox.
SAFE_HOSTILE = ("infinite_loop", "os_exit", "sys_exit", "segfault", "socket", "read_solutions",
                "monkeypatch_helpers", "forge_records", "delete_cells", "duplicate_cells", "edit_tests",
                "strip_metadata", "strip_definitions", "malformed-json")


def build_class(root: Path, copies: int) -> list[tuple[str, str]]:
    """The benchmark's class in root/submitted; returns its (student, assignment) notebooks."""
    expected = make_class(root, copies=copies, grading_dir=root / "nowhere")
    keep = []
    for e in expected:
        path = root / "submitted" / e.student / e.assignment / f"{e.assignment}.ipynb"
        if not path.exists():
            continue
        kind = e.student.split("-", 1)
        if e.student.startswith("hostile-") and kind[1] not in SAFE_HOSTILE:
            shutil.rmtree(root / "submitted" / e.student)
        elif e.student.startswith("malformed-") and e.student not in SAFE_HOSTILE:
            shutil.rmtree(root / "submitted" / e.student)
        else:
            keep.append((e.student, e.assignment))
    for folder in (root / "submitted").iterdir():
        if not any((folder / a).is_dir() for _, a in keep):
            shutil.rmtree(folder)
    return keep + lms_students(root)


def lms_students(root: Path) -> list[tuple[str, str]]:
    """The synthetic Canvas zip's students, added to root/submitted in nbgrader's layout.

    Each gets the file the LMS's rule picks, as handed in (its saved outputs too), in the
    folder named by its student id: both graders read the same bytes.
    """
    make_lms_zips(root / "zips")
    zip_path = root / "zips" / "canvas.zip"
    out = []
    with zipfile.ZipFile(zip_path) as z:
        for sub in collect(zip_path, known_assignments(), LMS_ASSIGNMENT):
            target = root / "submitted" / sub.student / sub.assignment / f"{sub.assignment}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(sub.origin.rsplit(":", 1)[1]))
            out.append((sub.student, sub.assignment))
    return out


def time_ours(submitted: Path, out: Path, workers: int, timeout: float) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(out),
                           "--workers", str(workers), "--timeout", str(timeout), "--no-progress"],
                          capture_output=True, text=True, cwd=REPO_DIR)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"autograder grade failed:\n{proc.stderr[-3000:]}")
    return seconds


def time_nbgrader(notebooks: list[tuple[str, str]], submitted: Path, course: Path, timeout: float) -> float:
    tools_on_path()
    assignments = sorted({a for _, a in notebooks})
    shutil.copytree(SOLUTIONS, course / "source")
    (course / "nbgrader_config.py").write_text(
        f"exec(open({str(NBGRADER_CONFIG)!r}).read())\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "for name in ('source', 'release', 'submitted', 'autograded', 'feedback'):\n"
        "    setattr(c.CourseDirectory, name + '_directory', name)\n"
        f"c.CourseDirectory.db_url = 'sqlite:///{course}/gradebook.db'\n"
        f"c.Execute.timeout = {int(timeout)}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    for a in assignments:  # release time, not grading time: untimed
        subprocess.run(["nbgrader", "generate_assignment", a, "--force"], cwd=course, env=env,
                       capture_output=True, check=True)
    for student, a in notebooks:
        target = course / "submitted" / student / a
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(submitted / student / a / f"{a}.ipynb", target / f"{a}.ipynb")
    start = time.monotonic()
    for a in assignments:
        subprocess.run(["nbgrader", "autograde", a], cwd=course, env=env, capture_output=True)
    return time.monotonic() - start


def agreement(ours: Path, course: Path) -> tuple[int, int, list[str]]:
    """How many notebooks both graders scored the same, and the ones they did not."""
    tools_on_path()
    subprocess.run(["nbgrader", "export", "--to", str(course / "nbgrader.csv")], cwd=course,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO_DIR)})
    with open(course / "nbgrader.csv", newline="") as f:
        theirs = {(r["student_id"], r["assignment"]): float(r["score"]) for r in csv.DictReader(f)}
    with open(ours / "grades.csv", newline="") as f:
        mine = {(r["student_id"], r["assignment"]): float(r["score"]) for r in csv.DictReader(f)
                if r["status"] != "missing"}
    both = set(theirs) & set(mine)
    differ = [f"{s}/{a}: nbgrader {theirs[s, a]:g}, autograder {mine[s, a]:g}" for s, a in sorted(both)
              if theirs[s, a] != mine[s, a]]
    return len(both) - len(differ), len(both), differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.bench_grading", description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=1,
                        help="students of each correct, blank and wrong kind (1: 58 notebooks)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per cell, for both graders")
    parser.add_argument("--keep", metavar="DIR", help="keep the class and both outputs in DIR")
    args = parser.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bngrade-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        notebooks = build_class(work / "class", args.copies)
        n = len(notebooks)
        load_before = os.getloadavg()
        ours = time_ours(work / "class" / "submitted", work / "ours", args.workers, args.timeout)
        theirs = time_nbgrader(notebooks, work / "class" / "submitted", work / "nbgrader", args.timeout)
        load_after = os.getloadavg()
        same, compared, differ = agreement(work / "ours", work / "nbgrader")
        rate_ours, rate_theirs = 60 * n / ours, 60 * n / theirs
        mode = "warm runner per slot" if warm_available() else "fresh sandbox per notebook"
        print(json.dumps({"notebooks": n, "workers": args.workers, "cores": len(os.sched_getaffinity(0)),
                          "root": is_root(), "sandbox": mode,
                          "load_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
                          "autograder_seconds": round(ours, 1), "nbgrader_seconds": round(theirs, 1),
                          "same_score": f"{same}/{compared}", "different_score": differ}, indent=1))
        print(f"\n{n} notebooks ({', '.join(sorted({a for _, a in notebooks}))}), {args.workers} workers, "
              f"{len(os.sched_getaffinity(0))} cores, load {load_before[0]:.1f} -> {load_after[0]:.1f}")
        print(f"python -m autograder grade : {ours:7.1f} s  {rate_ours:7.1f} notebooks/minute")
        print(f"nbgrader autograde         : {theirs:7.1f} s  {rate_theirs:7.1f} notebooks/minute")
        print(f"ratio                      : {rate_ours / rate_theirs:7.2f}x")
        print(f"same score in both         : {same} of {compared} notebooks")
        for line in differ:  # plain nbgrader trusts the student's process: a forged probe passes there
            print(f"  differs: {line}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
