"""Helpers for the autograder's end-to-end tests: run ``grade`` in a subprocess, look for strays."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from autograder.paths import REPO_DIR
from autograder.sandbox import running_sandboxes


@dataclass
class GradingRun:
    """One run of ``python -m autograder grade`` in a subprocess, and what it left behind."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    out: Path
    leftovers: list = field(default_factory=list)  # processes still running afterwards
    stray_files: list = field(default_factory=list)  # files left in its TMPDIR and working folder


def grade_command(args: list, out: Path) -> list[str]:
    return [sys.executable, "-m", "autograder", "grade", *map(str, args), "--out", str(out)]


def environment(scratch: Path, marker: str) -> tuple[dict, Path]:
    """A private TMPDIR and working folder, and a marker every process of the run inherits."""
    tmpdir, cwd = scratch / "tmp", scratch / "cwd"
    tmpdir.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir), "BNGRADE_TEST_MARK": marker, "PYTHONPATH": str(REPO_DIR)}
    return env, cwd


def run_grade(args: list, out: Path, scratch: Path, timeout: float = 900) -> GradingRun:
    """Run the grade command, then wait for its processes to be gone and list what remains."""
    marker = uuid.uuid4().hex
    env, cwd = environment(scratch, marker)
    start = time.monotonic()
    proc = subprocess.run(grade_command(args, out), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.monotonic() - start
    return GradingRun(proc.returncode, proc.stdout, proc.stderr, seconds, out, leftovers(marker),
                      stray_files(scratch))


def leftovers(marker: str, wait: float = 10.0) -> list[int]:
    """Processes of a finished run still alive after `wait` seconds (workers exit just after it)."""
    found: list[int] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = processes_with_marker(marker) + running_sandboxes()
        if not found:
            break
        time.sleep(0.2)
    return found


def stray_files(scratch: Path) -> list[str]:
    return sorted(str(p) for d in ("tmp", "cwd") for p in (scratch / d).rglob("*"))


def processes_with_marker(marker: str) -> list[int]:
    """Every process whose environment carries `marker` (what a run started, and their children)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if f"BNGRADE_TEST_MARK={marker}".encode() in f.read():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found
