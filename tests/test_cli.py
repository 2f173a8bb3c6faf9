"""The instructor's command line: every subcommand explains itself; bad input gets a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autograder.paths import REPO_DIR


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder", *map(str, args)], cwd=REPO_DIR,
                          capture_output=True, text=True)


@pytest.mark.parametrize("command, words", [
    ("grade", ["SUBMISSIONS", "--out", "--assignment", "--workers", "--scheduler", "--timeout", "--force",
               "--id-pattern", "doejane"]),
    ("report", ["DIR", "gradebook"]),
])
def test_every_subcommand_has_help(command, words):
    proc = _cli(command, "--help")
    assert proc.returncode == 0
    for word in words:
        assert word in proc.stdout


def test_the_top_level_help_lists_release_grade_and_report():
    proc = _cli("--help")
    assert proc.returncode == 0
    for command in ("release", "grade", "report"):
        assert command in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["grade", "/no/such/folder", "--out", "{tmp}/out"], "/no/such/folder does not exist"),
    (["grade", "{tmp}/class.zip", "--out", "{tmp}/out"], "name it with --assignment"),
    (["grade", "{tmp}", "--out", "{tmp}/out", "--assignment", "homework"], "unknown assignment 'homework'"),
    (["grade", "{tmp}", "--out", "{tmp}/out", "--workers", "0"], "must be positive"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, message):
    import zipfile

    with zipfile.ZipFile(tmp_path / "class.zip", "w") as z:
        z.writestr("ada_1_2_x.ipynb", "{}")
    proc = _cli(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    assert message in " ".join(proc.stderr.split())
    assert not (tmp_path / "out").exists()


def test_grading_without_bubblewrap_stops_at_once_with_a_clear_error(tmp_path):
    """No sandbox, no grading: the command says what to install and grades nothing."""
    import os

    notebook = tmp_path / "ada.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": f"{empty}:{os.path.dirname(sys.executable)}"}
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", str(notebook), "--assignment", "bn-torch",
                           "--out", str(tmp_path / "out")], cwd=REPO_DIR, capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "bubblewrap (`bwrap`) is not installed" in " ".join(proc.stderr.split())
    assert not (tmp_path / "out").exists()
