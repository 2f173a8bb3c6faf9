"""Grading one notebook, start to finish, wherever it runs: a local process or a Dask worker.

:func:`grade_notebook` is the one task the coordinator (:mod:`autograder.grading.coordinator`) hands out,
to a local process pool by default or to a Dask cluster with ``--scheduler``
(:mod:`autograder.grading.runners`): the same code either way. It needs no shared file system:
the :class:`~autograder.grading.jobs.Job` carries the notebook's bytes, a copy of the gradebook's
assignment tables comes with it, and the :class:`~autograder.grading.jobs.Answer` carries
everything back (the judged notebook, the feedback page, the scores), so that only the
coordinator writes the gradebook. The process's own state (its sandbox slots, its scratch
files) is :mod:`autograder.grading.process`.

For one notebook it:

1. reads it (not JSON, or not a notebook: ``malformed``);
2. sanitizes it with the preprocessors ``nbgrader autograde`` runs before executing, as the
   course configures them (``Autograde.sanitize_preprocessors`` in ``nbgrader_config.py``:
   nbgrader's ``ClearOutput``, ``OverwriteKernelspec``, ``CheckCellMetadata``, and the course's
   ``DeduplicateCells`` and ``RestoreCells`` from :mod:`autograder.nbgrader_ext.preprocessors`): locked cells
   and hidden tests come back from the gradebook, deleted graded cells are put back where they
   were, and a duplicated graded cell (which makes nbgrader 0.9.6 abort a whole assignment) is
   graded once; each of these goes into the reason;
3. runs its code cells in a fresh sandbox (:mod:`autograder.sandbox`) in channel mode;
4. asks :func:`autograder.judging.verdict` about every graded test cell, from the record the
   probe wrote (or None when the check never ran), and writes the verdict into that cell's
   outputs (nothing when it passed, an error with the judge's message when it failed);
5. scores the cells with nbgrader's rule (``nbgrader.utils.determine_grade``), decides the
   status (graded, timeout, crashed, memory, malformed) and its reason
   (:mod:`autograder.grading.classify`), and renders the student's feedback page
   (:mod:`autograder.output.feedback`);
6. with ``--speed``, times a correct ``bn-torch`` notebook's layer (:mod:`autograder.output.speed`).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import nbformat
from nbgrader.preprocessors import LimitOutput
from nbgrader.utils import determine_grade
from traitlets.config import Config
from traitlets.utils.importstring import import_item

from autograder.grading import process
from autograder.grading.classify import cell_notes, classify, reason
from autograder.grading.jobs import Answer, Job, Part, PartResult, Status
from autograder.inside import scenarios
from autograder import judging
from autograder.notebook import is_test, student_source, title
from autograder.output import feedback, speed
from autograder.sandbox import RunResult, SandboxError

__all__ = ["grade_notebook", "ungraded_answer", "read_notebook", "DEFAULT_SANITIZE"]

#: nbgrader's own sanitizing steps, for a course whose configuration does not name any.
DEFAULT_SANITIZE = ["nbgrader.preprocessors.ClearOutput", "nbgrader.preprocessors.DeduplicateIds",
                    "nbgrader.preprocessors.OverwriteKernelspec", "nbgrader.preprocessors.OverwriteCells",
                    "nbgrader.preprocessors.CheckCellMetadata"]
#: Output items of a cell kept from the sandbox, at most.
_OUTPUT_ITEMS = 200
#: Characters of an exception's first line quoted in a reason or a message.
_ONE_LINE_CHARS = 300


def grade_notebook(job: Job, gradebook: bytes) -> Answer:
    """Grade one notebook, with `gradebook` (the coordinator's, as bytes) for nbgrader's cells.

    Never raises for anything a notebook can do; raises SandboxError when the grader's own
    machinery fails (then nothing is recorded and a rerun grades it again).
    """
    started = time.monotonic()
    process.private_caches()
    try:
        nb = read_notebook(job.notebook)
    except ValueError as exc:
        return _ungraded(job, Status.MALFORMED, str(exc), started)
    try:
        nb, notes = _sanitize(nb, job, gradebook)
    except Exception as exc:  # noqa: BLE001 - nbgrader refused the notebook's metadata or structure
        return _ungraded(job, Status.MALFORMED,
                         f"nbgrader could not read the notebook's grading metadata: {_one_line(exc)}", started)
    answer = Answer(job.student_id, job.assignment)
    run = _execute(nb, job)
    _judge(nb, run, job, answer)
    outcome = classify(run, job.limits)
    answer.status, answer.reason = outcome.status, reason(outcome, notes + run.problems)
    if job.speed and job.kind == "torch":
        _speed(nb, job, answer)
    return _finish(answer, job, nb, started)


def read_notebook(data: bytes) -> nbformat.NotebookNode:
    """The notebook in `data`, checked against nbformat 4's shapes; ValueError says what is wrong."""
    if not data:
        raise ValueError("the file is empty, not a notebook")
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ValueError("the file is not text (UTF-8), so not a notebook") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the file is not valid JSON, so not a notebook ({exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise ValueError("the file is JSON but not a notebook (no list of cells)")
    if raw.get("nbformat") != 4:
        raise ValueError(f"the notebook is in format {raw.get('nbformat')!r}; Jupyter's format 4 is expected")
    try:
        nb = nbformat.from_dict(raw)
        for cell in nb.cells:
            if cell.get("cell_type") not in ("code", "markdown", "raw"):
                raise ValueError(f"a cell has the unknown type {cell.get('cell_type')!r}")
            if not isinstance(cell.get("source", ""), (str, list)):
                raise ValueError("a cell's source is not text")
            if isinstance(cell.get("source"), list):
                cell["source"] = "".join(str(s) for s in cell["source"])
            cell.setdefault("metadata", nbformat.NotebookNode())
            if cell["cell_type"] == "code":
                cell.setdefault("outputs", [])
                cell.setdefault("execution_count", None)
        nb.setdefault("metadata", nbformat.NotebookNode())
    except (TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"the notebook's structure is broken ({_one_line(exc)})") from None
    return nb


def _graded_ids(nb) -> list[str | None]:
    """The grade ids of the cells that have a grading role, in order (with repeats)."""
    out = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if isinstance(meta, dict) and (meta.get("grade") or meta.get("solution") or meta.get("locked")):
            out.append(meta.get("grade_id"))
    return out


def _sanitize(nb, job: Job, gradebook: bytes):
    """The course's ``Autograde.sanitize_preprocessors`` (nbgrader's, with the course's fixes for
    duplicated and deleted graded cells, :mod:`autograder.nbgrader_ext.preprocessors`), run with the
    gradebook's copy; returns (notebook, notes for the reason)."""
    config = Config(job.nbgrader_config)
    names = list(config.Autograde.get("sanitize_preprocessors", DEFAULT_SANITIZE))
    resources = {"nbgrader": {"db_url": process.gradebook_url(gradebook), "assignment": job.assignment,
                              "notebook": job.assignment, "student": job.student_id}}
    before = _graded_ids(nb)
    for name in names:
        cls = import_item(name) if isinstance(name, str) else name
        nb, resources = cls(config=config).preprocess(nb, resources)
        nb = nbformat.from_dict(nb)  # cells put back arrive as plain dicts
    return nb, cell_notes(before, _graded_ids(nb), job.cell_order)


def _execute(nb, job: Job) -> RunResult:
    cells = [{"index": i, "source": c.source} for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    run = process.sandbox(job.limits).run(cells, kind=job.kind, seed=job.seed, limits=job.limits)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        got = run.cells.get(index)
        cell.outputs = _outputs(got.outputs) if got else []
        cell.execution_count = got.count if got else None
    return run


def _outputs(raw: list) -> list:
    """The notebook's own outputs, checked against nbformat's shapes (they came from the sandbox)."""
    out = []
    for item in raw[:_OUTPUT_ITEMS]:
        if not isinstance(item, dict):
            continue
        kind = item.get("output_type")
        try:
            if kind == "stream":
                out.append(nbformat.v4.new_output("stream", name=str(item.get("name", "stdout"))
                                                  if item.get("name") in ("stdout", "stderr") else "stdout",
                                                  text=str(item.get("text", ""))))
            elif kind in ("execute_result", "display_data"):
                data = item.get("data") if isinstance(item.get("data"), dict) else {}
                text = {"text/plain": str(data.get("text/plain", ""))}
                extra = {"execution_count": item.get("execution_count")} if kind == "execute_result" else {}
                if kind == "execute_result" and not isinstance(extra["execution_count"], int):
                    extra["execution_count"] = None
                out.append(nbformat.v4.new_output(kind, data=text, **extra))
            elif kind == "error":
                tb = item.get("traceback") if isinstance(item.get("traceback"), list) else []
                out.append(nbformat.v4.new_output("error", ename=str(item.get("ename", "Error")),
                                                  evalue=str(item.get("evalue", "")),
                                                  traceback=[str(t) for t in tb]))
        except (ValueError, TypeError):
            continue
    return out


# ---------------------------------------------------------------- verdicts
def _record(run: RunResult, check_id: str, folder: str):
    """The probe's record for `check_id`, or None when the check never wrote one."""
    npz, meta = run.records.get(f"{check_id}.npz"), run.records.get(f"{check_id}.json")
    if npz is None or meta is None:
        return None
    Path(folder, f"{check_id}.npz").write_bytes(npz)
    Path(folder, f"{check_id}.json").write_bytes(meta)
    return scenarios.Record.load(folder, check_id)


def _judge(nb, run: RunResult, job: Job, answer: Answer) -> None:
    source = student_source(nb)
    with tempfile.TemporaryDirectory(prefix="bngrade-records-", dir=process.scratch_folder()) as tmp:
        for index, cell in enumerate(nb.cells):
            if not is_test(cell):
                continue
            check_id = cell.metadata.nbgrader["grade_id"]
            try:
                record = _record(run, check_id, tmp)
            except Exception:  # noqa: BLE001 - a forged or broken record is no record
                record = None
            try:
                verdict = judging.verdict(check_id, record, job.seed, source)
                passed, message = bool(verdict.passed), str(verdict.message or "")
                mistake = getattr(verdict, "mistake", None)
            except Exception as exc:  # noqa: BLE001 - never let one record stop the grading
                passed, mistake = False, None
                message = f"The grader could not judge this check ({_one_line(exc)}); ask your instructor."
            cell.outputs = [] if passed else [_failure_output(message)]
            answer.parts[check_id] = PartResult(title=title(cell.source), passed=passed,
                                                message="" if passed else message, mistake=mistake, cell=index + 1)
            if mistake and not passed:
                answer.mistakes.append(str(mistake))


def _failure_output(message: str):
    lines = message.strip().split("\n") or ["This check failed."]
    return nbformat.v4.new_output("error", ename="CheckFailed", evalue=lines[0], traceback=lines)


# ---------------------------------------------------------------- speed, score, feedback
def _speed(nb, job: Job, answer: Answer) -> None:
    """``--speed``: time the student's BatchNorm1d in a second sandboxed run (:mod:`autograder.output.speed`)."""
    try:
        answer.speed = speed.time_submission(nb, answer, job, process.sandbox(job.limits))
    except SandboxError:
        raise  # the grader's machinery: nothing is recorded, a rerun grades it again
    except Exception as exc:  # noqa: BLE001 - an ungraded column never costs a grade
        answer.speed = speed.not_timed(f"not timed: the grader could not time it ({_one_line(exc)})")


def ungraded_answer(student_id: str, assignment: str, status: str, why: str, parts: dict[str, Part]) -> Answer:
    """The answer, with its feedback page, for a submission that did not run: every part scores 0."""
    answer = Answer.ungraded(student_id, assignment, status, why, parts)
    answer.feedback = feedback.render(answer, None)
    return answer


def _ungraded(job: Job, status: str, why: str, started: float) -> Answer:
    answer = ungraded_answer(job.student_id, job.assignment, status, why, job.parts)
    answer.seconds = round(time.monotonic() - started, 3)
    return answer


def _finish(answer: Answer, job: Job, nb, started: float) -> Answer:
    """Score the judged notebook by nbgrader's rule, keep it, and render the feedback."""
    nb, _ = LimitOutput(config=Config(job.nbgrader_config)).preprocess(nb, {})
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            score, points = determine_grade(cell)
            part = answer.parts.setdefault(meta["grade_id"], PartResult(title=title(cell.source)))
            part.score, part.max_score = float(score or 0.0), float(points)
    answer.score = sum(p.score for p in answer.parts.values())
    answer.max_score = sum(p.max_score for p in answer.parts.values())
    answer.notebook = nbformat.writes(nb)
    answer.seconds = round(time.monotonic() - started, 3)
    answer.feedback = feedback.render(answer, nb)
    return answer


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n")[0] or type(exc).__name__
    return text[:_ONE_LINE_CHARS]
