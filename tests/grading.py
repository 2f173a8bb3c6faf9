"""Helpers for the notebook tests: run a submission in channel mode, or autograde with nbgrader.

``run_channel(nb, channel, seed)`` runs a notebook's code cells top to bottom in a fresh Python
process with the probe in channel mode (``BNGRADE_CHANNEL``/``BNGRADE_SEED``), as the
autograder's sandbox does; ``judge_channel(...)`` then judges every graded cell in this
(trusted) process. ``autograde(release, assignment, submissions, workdir)`` runs plain ``nbgrader
autograde`` (local mode) on many submissions in one nbgrader process and returns the scores
and the outputs of every graded cell.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from student_code import ROOT, hidden_test_sources

_RUNNER = textwrap.dedent(
    """
    import builtins, json, sys, traceback
    cells = json.load(sys.stdin)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for i, source in enumerate(cells):
        try:
            exec(compile(source, f"<cell {i}>", "exec"), namespace)
        except BaseException:
            print(f"--- cell {i} raised", file=sys.stderr)
            traceback.print_exc()
    """
)


def with_hidden_tests(nb, assignment: str):
    """The notebook as the grader runs it: graded cells carry their hidden tests again."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    hidden = hidden_test_sources(assignment)
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in hidden:
            cell.source = hidden[grade_id]
    return nb


def run_channel(nb, channel: Path, seed: int, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the code cells of ``nb`` (hidden tests restored by the caller) with the probe in channel mode."""
    channel.mkdir(parents=True, exist_ok=True)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    env = dict(os.environ, BNGRADE_CHANNEL=str(channel), BNGRADE_SEED=str(seed), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        env=env,
        cwd=str(channel),
        timeout=timeout,
    )


def judge_channel(nb, channel: Path, seed: int) -> dict[str, Any]:
    """``grade_id -> Verdict`` for every graded cell of ``nb``, from the records in ``channel``."""
    from autograder import judging
    from autograder.inside.scenarios import Record
    from autograder.notebook import student_source

    source = student_source(nb)
    verdicts = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and cell.get("cell_type") == "code":  # written answers are graded by hand
            record = Record.load(channel, meta["grade_id"])
            verdicts[meta["grade_id"]] = judging.verdict(meta["grade_id"], record, seed, source)
    return verdicts


# --------------------------------------------------------------------------------------------
# Plain nbgrader
# --------------------------------------------------------------------------------------------


@dataclass
class Graded:
    """One autograded submission: points per graded cell, and each graded cell's outputs."""

    scores: dict[str, float]
    outputs: dict[str, list[dict]]
    notebook: Any

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    def error_text(self, grade_id: str) -> str:
        """The text of the error output of a graded cell ('' if it passed)."""
        texts = []
        for out in self.outputs.get(grade_id, []):
            if out.get("output_type") == "error":
                texts.append(out.get("evalue", "") + "\n" + "\n".join(out.get("traceback", [])))
        return "\n".join(texts)


_AUTOGRADE = textwrap.dedent(
    """
    import json, sys
    from autograder.nbgrader_ext.release import load_config, tools_on_path
    from nbgrader.apps import NbGraderAPI
    from nbgrader.api import Gradebook
    args = json.loads(sys.argv[1])
    cfg = load_config()
    for key, value in args["course"].items():
        setattr(cfg.CourseDirectory, key, value)
    cfg.Execute.timeout = args["timeout"]
    tools_on_path()
    api = NbGraderAPI(config=cfg)
    result = {}
    for student in args["students"]:
        out = api.autograde(args["assignment"], student)
        if not out["success"]:
            result[student] = {"error": (out.get("error") or "") + out.get("log", "")[-3000:]}
            continue
        with Gradebook(args["course"]["db_url"]) as gb:
            nb = gb.find_submission_notebook(args["assignment"], args["assignment"], student)
            # the written answers wait for a grader (no score): the automatic parts only
            result[student] = {"scores": {g.name: g.score for g in nb.grades if g.cell.cell_type == "code"}}
    print(json.dumps(result))
    """
)


def autograde(release: Path, assignment: str, submissions: dict[str, Any], workdir: Path,
              timeout: int = 120) -> dict[str, Graded]:
    """Autograde ``{student_id: notebook}`` with plain nbgrader (local mode).

    ``release``: the release folder (``_build/release``); its gradebook, ``../gradebook.db``,
    is copied into ``workdir``, where the submissions and nbgrader's outputs go.

    Runs one nbgrader process for all the submissions (a fresh kernel per notebook), with its
    own copy of the gradebook. Raises ``AssertionError`` with nbgrader's log if a submission
    could not be graded at all.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "gradebook.db"
    shutil.copy(Path(release).parent / "gradebook.db", db)
    for student, nb in submissions.items():
        target = workdir / "submitted" / student / assignment
        target.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target / f"{assignment}.ipynb")
    args = {
        "assignment": assignment,
        "students": list(submissions),
        "timeout": timeout,
        "course": {
            "root": str(workdir),
            "source_directory": str(ROOT / "solutions"),
            "release_directory": str(release),
            "submitted_directory": "submitted",
            "autograded_directory": "autograded",
            "feedback_directory": "feedback",
            "db_url": f"sqlite:///{db}",
        },
    }
    proc = subprocess.run(
        [sys.executable, "-c", _AUTOGRADE, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=str(workdir),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=60 + timeout * len(submissions),
    )
    assert proc.returncode == 0, f"nbgrader autograde failed:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    graded = {}
    for student, info in result.items():
        assert "error" not in info, f"nbgrader could not grade {student}:\n{info['error']}"
        nb = nbformat.read(workdir / "autograded" / student / assignment / f"{assignment}.ipynb", as_version=4)
        outputs = {
            c.metadata["nbgrader"]["grade_id"]: c.get("outputs", [])
            for c in nb.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("grade")
        }
        graded[student] = Graded(info["scores"], outputs, nb)
    return graded
