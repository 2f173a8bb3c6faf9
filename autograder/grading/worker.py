"""Grading one notebook, start to finish, wherever it runs: a local process or a Dask worker.

:func:`grade_notebook` is the one task the coordinator (:mod:`autograder.grading.coordinator`) hands out,
to a local process pool by default or to a Dask cluster with ``--scheduler``: the same code
either way. It needs no shared file system: the job carries the notebook's bytes and a copy
of the gradebook's assignment tables, and the answer carries everything back (the judged
notebook, the feedback page, the scores), so that only the coordinator writes the gradebook.

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
4. asks :func:`autograder.judging.judge.verdict` about every graded test cell, from the record the
   probe wrote (or None when the check never ran), and writes the verdict into that cell's
   outputs (nothing when it passed, an error with the judge's message when it failed);
5. scores the cells with nbgrader's rule (``nbgrader.utils.determine_grade``), decides the
   status (graded, timeout, crashed, memory, malformed) and its reason, and renders the
   student's feedback page (:mod:`autograder.output.feedback`).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from autograder.notebook import is_test, student_source, title

#: Per thread: the sandbox slot this thread grades in.
_local = threading.local()
_sandboxes: list = []
_lock = threading.RLock()
_scratch: dict[str, str] = {}


# ---------------------------------------------------------------- the worker process's state
def _sandbox(limits):
    from autograder.sandbox import Sandbox

    box = getattr(_local, "sandbox", None)
    if box is None or box.closed:
        box = Sandbox(limits)
        _local.sandbox = box
        with _lock:
            _sandboxes.append(box)
    return box


def shutdown() -> None:
    """Release this process's sandbox slots (their cgroups, their user ids) and scratch files."""
    with _lock:
        while _sandboxes:
            _sandboxes.pop().close()
        for path in list(_scratch.values()):
            if os.path.isdir(path):
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        _scratch.clear()
    _local.__dict__.clear()


atexit.register(shutdown)


def _private_caches() -> None:
    """PyTorch's compiler caches (torch._dynamo is imported by the judge) go to a private folder."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    folder = os.environ.get("BNGRADE_SCRATCH") or None
    if folder:
        os.makedirs(folder, exist_ok=True)
    path = tempfile.mkdtemp(prefix="bngrade-torch-cache-", dir=folder)
    with _lock:
        _scratch[path] = path
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(path, "triton"))


def warm_up(kinds: list[str], limits: dict | None = None) -> None:
    """Start this thread's warm runners for `kinds` and import what grading them needs, meanwhile."""
    from autograder.sandbox import Limits

    box = _sandbox(Limits(**(limits or {})))
    for kind in kinds:
        box.prestart(kind)
    import nbformat  # noqa: F401
    import nbgrader.preprocessors  # noqa: F401

    from autograder.output import feedback  # noqa: F401
    if "torch" in kinds:
        import torch  # noqa: F401
        import torch._dynamo  # noqa: F401 - torch imports it lazily on the first autograd call

        import bnlib.torch  # noqa: F401


def _terminate(*_) -> None:
    """SIGTERM (the coordinator died, or stops the pool): release the sandboxes, then exit now.

    A pool worker cannot wait for its queue to tell it to stop: it holds both ends of it.
    """
    try:
        shutdown()
    finally:
        os._exit(143)


def init_process(scratch: str | None = None, kinds: list[str] | None = None, limits: dict | None = None) -> None:
    """Initializer of a local worker process: warm up; a clean exit (and cleanup) when told to stop."""
    import multiprocessing.util

    if scratch:
        os.environ["BNGRADE_SCRATCH"] = scratch
    multiprocessing.util.Finalize(None, shutdown, exitpriority=100)
    signal.signal(signal.SIGTERM, _terminate)
    try:  # die with the coordinator: PR_SET_PDEATHSIG, SIGTERM
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass
    if os.getppid() == 1:
        sys.exit(143)
    _private_caches()
    if kinds:
        warm_up(kinds, limits)


def _gradebook_url(snapshot: bytes) -> str:
    """A private copy of the coordinator's gradebook (assignment tables), one per content."""
    digest = hashlib.sha256(snapshot).hexdigest()[:16]
    with _lock:
        path = _scratch.get(digest)
        if path is None or not os.path.exists(path):
            folder = os.environ.get("BNGRADE_SCRATCH") or tempfile.gettempdir()
            os.makedirs(folder, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=f"bngrade-gradebook-{digest}-", suffix=".db", dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(snapshot)
            _scratch[digest] = path
    return f"sqlite:///{path}"


# ---------------------------------------------------------------- the task
def grade_notebook(job: dict) -> dict:
    """Grade one notebook. `job` and the answer are plain data (see :mod:`autograder.grading.coordinator`).

    Never raises for anything a notebook can do; raises SandboxError when the grader's own
    machinery fails (then nothing is recorded and a rerun grades it again).
    """
    started = time.monotonic()
    _private_caches()
    answer = {"student_id": job["student_id"], "assignment": job["assignment"], "status": "graded",
              "reason": "", "parts": {}, "mistakes": [], "notebook": None, "feedback": None,
              "score": 0.0, "max_score": 0.0, "notes": []}
    try:
        nb = _read(job["notebook"])
    except ValueError as exc:
        answer.update(status="malformed", reason=str(exc))
        return _finish(answer, job, None, started)
    try:
        nb, notes = _sanitize(nb, job)
    except Exception as exc:  # noqa: BLE001 - nbgrader refused the notebook's metadata or structure
        answer.update(status="malformed", reason=f"nbgrader could not read the notebook's grading metadata: "
                                                 f"{_one_line(exc)}")
        return _finish(answer, job, None, started)
    answer["notes"] += notes
    run = _execute(nb, job)
    _judge(nb, run, job, answer)
    _classify(nb, run, job, answer)
    if job.get("speed") and job.get("kind") == "torch":
        _speed(nb, job, answer)
    return _finish(answer, job, nb, started)


def _speed(nb, job, answer) -> None:
    """``--speed``: time the student's BatchNorm1d in a second sandboxed run (:mod:`autograder.output.speed`)."""
    import copy

    from autograder.output import speed
    from autograder.sandbox import Limits, SandboxError

    try:
        answer["speed"] = speed.time_submission(copy.deepcopy(nb), answer, job, _sandbox(Limits(**job.get("limits", {}))))
    except SandboxError:
        raise  # the grader's machinery: nothing is recorded, a rerun grades it again
    except Exception as exc:  # noqa: BLE001 - an ungraded column never costs a grade
        answer["speed"] = speed.not_timed(f"not timed: the grader could not time it ({_one_line(exc)})")


def _read(data: bytes):
    import nbformat

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


def _graded_ids(nb) -> list[str]:
    """The grade ids of the cells that have a grading role, in order (with repeats)."""
    out = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if isinstance(meta, dict) and (meta.get("grade") or meta.get("solution") or meta.get("locked")):
            out.append(meta.get("grade_id"))
    return out


#: nbgrader's own sanitizing steps, for a course whose configuration does not name any.
DEFAULT_SANITIZE = ["nbgrader.preprocessors.ClearOutput", "nbgrader.preprocessors.DeduplicateIds",
                    "nbgrader.preprocessors.OverwriteKernelspec", "nbgrader.preprocessors.OverwriteCells",
                    "nbgrader.preprocessors.CheckCellMetadata"]


def _sanitize(nb, job):
    """The course's ``Autograde.sanitize_preprocessors`` (nbgrader's, with the course's fixes for
    duplicated and deleted graded cells, :mod:`autograder.nbgrader_ext.preprocessors`), run with the
    gradebook's copy; returns (notebook, notes for the reason)."""
    import nbformat
    from traitlets.config import Config
    from traitlets.utils.importstring import import_item

    config = Config(job.get("nbgrader_config", {}))
    names = list(config.Autograde.get("sanitize_preprocessors", DEFAULT_SANITIZE))
    resources = {"nbgrader": {"db_url": _gradebook_url(job["gradebook"]), "assignment": job["assignment"],
                              "notebook": job["assignment"], "student": job["student_id"]}}
    before = _graded_ids(nb)
    for name in names:
        cls = import_item(name) if isinstance(name, str) else name
        nb, resources = cls(config=config).preprocess(nb, resources)
        nb = nbformat.from_dict(nb)  # cells put back arrive as plain dicts
    after = set(_graded_ids(nb))
    notes = [f"the cell {g!r} appears {before.count(g)} times; the last copy was graded"
             for g in sorted({g for g in before if before.count(g) > 1})]
    restored = [g for g in job.get("cell_order", sorted(after)) if g in after and g not in before]
    if restored:
        notes.append(f"graded cells missing from the notebook were put back: {', '.join(restored)}")
    return nb, notes


def _execute(nb, job):
    from autograder.sandbox import Limits

    limits = Limits(**job.get("limits", {}))
    cells = [{"index": i, "source": c.source} for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    run = _sandbox(limits).run(cells, kind=job.get("kind", "numpy"), seed=int(job["seed"]), limits=limits)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        got = run.cells.get(index)
        cell.outputs = _outputs(got["outputs"]) if got else []
        cell.execution_count = got.get("count") if got else None
    return run


def _outputs(raw: list) -> list:
    """The notebook's own outputs, checked against nbformat's shapes (they came from the sandbox)."""
    import nbformat

    out = []
    for item in raw[:200]:
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
def _record(run, check_id: str, folder: str):
    """The probe's record for `check_id`, or None when the check never wrote one."""
    from autograder.inside import scenarios

    npz, meta = run.records.get(f"{check_id}.npz"), run.records.get(f"{check_id}.json")
    if npz is None or meta is None:
        return None
    Path(folder, f"{check_id}.npz").write_bytes(npz)
    Path(folder, f"{check_id}.json").write_bytes(meta)
    return scenarios.Record.load(folder, check_id)


def _judge(nb, run, job, answer) -> None:
    from autograder import judging

    source = student_source(nb)
    seed = int(job["seed"])
    folder = os.environ.get("BNGRADE_SCRATCH") or None
    if folder:
        os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bngrade-records-", dir=folder) as tmp:
        for index, cell in enumerate(nb.cells):
            if not is_test(cell):
                continue
            check_id = cell.metadata.nbgrader["grade_id"]
            try:
                record = _record(run, check_id, tmp)
            except Exception:  # noqa: BLE001 - a forged or broken record is no record
                record = None
            try:
                verdict = judging.verdict(check_id, record, seed, source)
                passed, message = bool(verdict.passed), str(verdict.message or "")
                mistake = getattr(verdict, "mistake", None)
            except Exception as exc:  # noqa: BLE001 - never let one record stop the grading
                passed, mistake = False, None
                message = f"The grader could not judge this check ({_one_line(exc)}); ask your instructor."
            if passed:
                cell.outputs = []
            else:
                cell.outputs = [_failure_output(message)]
            answer["parts"][check_id] = {"title": title(cell.source), "passed": passed,
                                         "message": "" if passed else message,
                                         "mistake": mistake, "cell": index + 1}
            if mistake and not passed:
                answer["mistakes"].append(str(mistake))
    answer["notes"] += [p for p in run.problems]


def _failure_output(message: str):
    import nbformat

    lines = message.strip().split("\n") or ["This check failed."]
    return nbformat.v4.new_output("error", ename="CheckFailed", evalue=lines[0], traceback=lines)


# ---------------------------------------------------------------- status and reason
def _classify(nb, run, job, answer) -> None:
    limits = job.get("limits", {})
    cell_timeout = limits.get("cell_timeout", 30)
    memory = limits.get("memory", 3 * 2**30)
    processes = limits.get("processes", 32)
    where = f"cell {run.current_cell + 1}" if run.current_cell is not None else "the notebook"
    events = run.events()
    first = {}
    for index, event in events:
        first.setdefault(event, index + 1)
    status, reason = "graded", ""
    if run.killed_for == "cell-timeout":
        status, reason = "timeout", (f"{where} ran for more than {cell_timeout:g} s and did not stop when "
                                     "interrupted; the grader stopped the notebook there")
    elif run.killed_for == "notebook-timeout":
        status, reason = "timeout", (f"the notebook ran for more than {limits.get('notebook_timeout', 300):g} s "
                                     f"in all; the grader stopped it in {where}")
    elif run.killed_for in ("output", "protocol"):
        status, reason = "crashed", (f"{where} flooded the grader with output (more than "
                                     f"{limits.get('protocol', 256 * 2**20) / 2**20:.0f} MB); the grader stopped it")
    elif run.oom_killed:
        status, reason = "memory", (f"{where} used more than {memory / 2**30:.3g} GiB of memory and was killed")
    elif not run.finished:
        sig = run.exit_signal
        if sig == signal.SIGSEGV:
            status, reason = "crashed", (f"{where} crashed Python with a segmentation fault (ctypes or a C "
                                         "extension read memory it may not); the cells after it did not run")
        elif sig:
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
            status, reason = "crashed", f"{where} killed the notebook's process ({name}); the cells after it did not run"
        else:
            status, reason = "crashed", (f"{where} ended the notebook's process (os._exit or similar, exit code "
                                         f"{run.exit_code}); the cells after it did not run")
    elif "timeout" in first:
        status, reason = "timeout", (f"cell {first['timeout']} ran for more than {cell_timeout:g} s and was "
                                     "interrupted (an infinite loop?)")
    elif "memory" in first:
        status, reason = "memory", (f"cell {first['memory']} ran out of memory (MemoryError: the limit is "
                                    f"{memory / 2**30:.3g} GiB)")
    elif "process-limit" in first or run.pids_limited:
        cell = first.get("process-limit")
        status, reason = "crashed", (f"{f'cell {cell}' if cell else 'the notebook'} tried to start more than "
                                     f"{processes} processes (a fork bomb?) and was refused")
    notes = list(answer["notes"])
    if "exit" in first:
        notes.append(f"cell {first['exit']} called sys.exit(); the grader went on with the next cell")
    files = [(i, e[5:]) for i, e in events if e.startswith("file:")]
    if files:
        notes.append(f"cell {files[0][0] + 1} tried to use {files[0][1]}, outside the notebook's own folder; "
                     "the grader's sandbox has no such file and lets a notebook write only in its folder")
    if "network" in first:
        notes.append(f"cell {first['network']} tried to use the network; the grader has none")
    truncated = [i + 1 for i, c in run.cells.items() for o in c["outputs"]
                 if isinstance(o, dict) and "dropped by the grader" in str(o.get("text", ""))]
    if truncated:
        notes.append(f"cell {truncated[0]} printed too much; the grader kept the first "
                     f"{limits.get('output', 100_000):,} characters")
    answer["status"] = status
    answer["reason"] = "; ".join([r for r in [reason] if r] + notes)


def _finish(answer, job, nb, started) -> dict:
    import nbformat
    from nbgrader.preprocessors import LimitOutput
    from nbgrader.utils import determine_grade
    from traitlets.config import Config

    from autograder.output import feedback

    if nb is not None:
        nb, _ = LimitOutput(config=Config(job.get("nbgrader_config", {}))).preprocess(nb, {})
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade"):
                score, points = determine_grade(cell)
                part = answer["parts"].setdefault(meta["grade_id"], {"title": title(cell.source), "passed": None,
                                                                     "message": "", "mistake": None})
                part.update(score=float(score or 0.0), max_score=float(points))
        answer["score"] = sum(p.get("score", 0.0) for p in answer["parts"].values())
        answer["max_score"] = sum(p.get("max_score", 0.0) for p in answer["parts"].values())
        answer["notebook"] = nbformat.writes(nb)
    else:
        parts = job.get("parts", {})
        answer["parts"] = {gid: {"title": title, "passed": False, "message": "", "mistake": None,
                                 "score": 0.0, "max_score": float(points)} for gid, (title, points) in parts.items()}
        answer["max_score"] = float(sum(points for _, points in parts.values()))
    answer["seconds"] = round(time.monotonic() - started, 3)
    answer["feedback"] = feedback.render(answer, nb)
    return answer


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n")[0] or type(exc).__name__
    return text[:300]
