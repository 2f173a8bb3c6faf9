r"""A synthetic class: one notebook per kind of student the autograder must get right.

For the tests, the throughput benchmark and the README's worked example::

    python -m autograder.synthetic _build/demo-class
    python -m autograder grade _build/demo-class/submitted --out _build/demo-grades

makes ``_build/demo-class/submitted/<student>/<assignment>/<assignment>.ipynb`` (nbgrader's
layout) and ``_build/demo-class/expected.json``, the outcome each student must get:

- ``correct-<assignment>``: the instructor's solutions typed into the released notebook;
- ``blank-<assignment>``: the released notebook as handed out (every stub still raises);
- ``wrong-<mistake>`` for each entry of :data:`autograder.course.mistakes.MISTAKES` (for one of its
  assignments): a notebook whose functions behave exactly like that catalogued mistake. The
  student's cells carry the mistake's implementation with its source pasted in (bnlib's
  code renamed ``_bnref``, which the sandbox does not hide: it is the student's own code);
- ``hostile-<case>`` (``bn-numpy-forward``): the correct notebook plus one cell that does
  something a grader must survive (:data:`HOSTILE`): loops forever, exits, crashes, bombs
  memory or processes, prints a gigabyte, writes the gradebook, reads the solutions, opens a
  socket, monkeypatches the test helpers or the probe, forges records, deletes, duplicates
  or edits graded cells, or strips nbgrader's metadata (with and without the graded names);
- ``malformed-json``, ``malformed-not-a-notebook``, and ``missing-<assignment>`` (a student
  folder without the notebook).

Each synthetic student hands in one assignment; graded together, nbgrader's layout makes each
of them ``missing`` for the others, and ``expected.json`` says so too.

Each expected outcome names the status, the score (``"full"``, ``0`` or ``"partial"``, less
than full but more than 0) and, where it matters, a piece of the reason or the mistake's name.

:func:`make_lms_zips` writes the class as LMSs hand it over (``python -m autograder.synthetic DIR
--lms-zips``): ``canvas.zip`` and ``moodle.zip`` (``bn-numpy-forward``) with students named in
several scripts (:data:`LMS_NAMES`), resubmissions in Canvas's form (``-1``) and Moodle's (two
files in one folder), and a notebook with large saved outputs; ``expected-canvas.json`` and
``expected-moodle.json`` hold the outcome of each; ``collision.zip`` holds two students who claim
one id, which must stop grading with an error naming both files.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import tempfile
import unicodedata
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from autograder.course.mistakes import MISTAKES
from autograder.course.spec import INTERFACE
from autograder.grading.jobs import Status
from autograder.grading.store import GradingFolder, known_assignments
from autograder.grading.submissions import MAX_NOTEBOOK_BYTES, student_id
from autograder.notebook import grade_id, is_solution, is_test
from autograder.paths import BUILD_DIR, REPO_DIR, SOLUTIONS

#: The assignment the hostile cases use (the cheapest to run).
HOSTILE_ASSIGNMENT = "bn-numpy-forward"


@dataclass
class Expected:
    """What grading one synthetic student must give."""

    student: str
    assignment: str
    status: str
    score: object  # "full", 0, "partial" (0 < score < max)
    reason: str = ""  # a piece of the reason, when one is expected
    mistake: str | None = None  # the named mistake, for the wrong variants
    name: str = ""  # the name as written, where it is not the id (an LMS zip)
    lms_id: str = ""  # the LMS's id of the student (an LMS zip)


# ---------------------------------------------------------------- hostile cells
def _hostile(grading_dir: Path | None) -> dict[str, tuple[str, str, object, str]]:
    """case -> (cell source, status, score, piece of the reason)."""
    gradebook = (grading_dir / "gradebook.db") if grading_dir else BUILD_DIR / "gradebook.db"
    solution = SOLUTIONS / HOSTILE_ASSIGNMENT / f"{HOSTILE_ASSIGNMENT}.ipynb"
    return {
        "infinite_loop": ("while True:\n    pass", Status.TIMEOUT, "full", "interrupted"),
        "stubborn_loop": ("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
                          Status.TIMEOUT, 0, "did not stop"),
        "os_exit": ("import os\nos._exit(0)", Status.CRASHED, 0, "os._exit"),
        "sys_exit": ("import sys\nsys.exit()", Status.GRADED, "full", "sys.exit"),
        "segfault": ("import ctypes\nctypes.string_at(0)", Status.CRASHED, 0, "segmentation fault"),
        "memory_bomb": ("hoard = bytearray(50 * 2**30)", Status.MEMORY, "full", "memory"),
        "fork_bomb": ("import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(3600)",
                      Status.CRASHED, "full", "processes"),
        "print_1gb": ("import sys\nline = 'x' * 2**20\nfor _ in range(1024):\n    sys.stdout.write(line)",
                      Status.GRADED, "full", "printed too much"),
        "write_gradebook": (f"open({str(gradebook)!r}, 'w').write('all full marks')", Status.GRADED, "full", ""),
        "read_solutions": (f"print(open({str(solution)!r}).read())", Status.GRADED, "full", ""),
        "socket": ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)", Status.GRADED, "full",
                   "network"),
    }


# cases applied to the blank notebook: tricks that must not turn stubs into points
_TRICKS = {
    "monkeypatch_helpers": (
        "import numpy as np, numpy.testing\n"
        "np.allclose = lambda *a, **k: True\nnp.isclose = lambda *a, **k: True\n"
        "np.array_equal = lambda *a, **k: True\nnumpy.testing.assert_allclose = lambda *a, **k: None\n"
        "import builtins\nbuiltins.AssertionError = type('Ignored', (Exception,), {})"),
    "monkeypatch_probe": (
        "import autograder.inside.probe as probe, autograder.inside.scenarios as scenarios\n"
        "probe.check = lambda *a, **k: None\nscenarios.run = lambda *a, **k: None"),
}


# ---------------------------------------------------------------- notebooks
def _read(path: Path):
    return nbformat.read(path, as_version=4)


def correct_notebook(released, solution):
    """The released notebook with every solution cell typed in from the instructor's."""
    answers = {grade_id(c): c.source for c in solution.cells if is_solution(c)}
    nb = copy.deepcopy(released)
    for cell in nb.cells:
        if is_solution(cell) and grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    return nb


#: The modules a synthetic wrong student pastes into its notebook, in import order: (name under _bnref,
#: file). The ones that import torch are left out where torch is not installed.
_VENDORED = (("numpy", "bnlib/numpy.py"), ("torch", "bnlib/torch.py"), ("gradcheck", "bnlib/gradcheck.py"),
             ("spec", "autograder/course/spec.py"), ("reference", "autograder/course/reference.py"),
             ("numpy_variants", "autograder/course/numpy_variants.py"),
             ("conv_variants", "autograder/course/conv_variants.py"),
             ("torch_variants", "autograder/course/torch_variants.py"),
             ("mistakes", "autograder/course/mistakes.py"))
_NEEDS_TORCH = ("torch", "torch_variants")


def _vendored_bnlib() -> str:
    """bnlib's reference and mistakes, as code pasted into a notebook under the name ``_bnref``."""
    parts = ["import sys as _sys, types as _types\n",
             "def _bnref_module(name, source):\n"
             "    module = _types.ModuleType(name)\n"
             "    _sys.modules[name] = module\n"
             "    exec(compile(source, '<' + name + '>', 'exec'), module.__dict__)\n"
             "    return module\n",
             "_bnref = _types.ModuleType('_bnref'); _bnref.__path__ = []; _sys.modules['_bnref'] = _bnref\n"]
    for name, path in _VENDORED:
        source = (REPO_DIR / path).read_text()
        source = re.sub(r"\bautograder\.course\.(\w+)", r"_bnref.\1", source)
        source = re.sub(r"\bfrom autograder\.course import\b", "from _bnref import", source)
        source = re.sub(r"\bbnlib\b", "_bnref", source)
        parts.append(f"_bnref.{name} = _bnref_module('_bnref.{name}', {source!r})\n"
                     if name not in _NEEDS_TORCH else
                     f"try:\n    _bnref.{name} = _bnref_module('_bnref.{name}', {source!r})\n"
                     "except ImportError:\n    pass\n")
    return "".join(parts)


def wrong_notebook(released, mistake: str, assignment: str):
    """The released notebook whose functions behave exactly like the catalogued `mistake`."""
    nb = copy.deepcopy(released)
    solutions = [c for c in nb.cells if is_solution(c) and c.cell_type == "code"]
    first = solutions[0]
    names = INTERFACE[assignment]
    first.source = (f"# The synthetic student who made the mistake {mistake!r}.\n" + _vendored_bnlib()
                    + f"_impl = _bnref.mistakes.by_name({mistake!r}).implementation({assignment!r})\n"
                    + "".join(f"{n} = _impl[{n!r}]\n" for n in names))
    for cell in solutions[1:]:
        cell.source = "# see the first solution cell"
    return nb


def _insert_after_first_solution(nb, source: str):
    nb = copy.deepcopy(nb)
    index = next(i for i, c in enumerate(nb.cells) if is_solution(c)) + 1
    nb.cells.insert(index, nbformat.v4.new_code_cell(source))
    return nb


def _structural(nb, case: str):
    """Graded cells deleted, duplicated or edited, their points changed; nbgrader's metadata stripped."""
    nb = copy.deepcopy(nb)
    tests = [i for i, c in enumerate(nb.cells) if is_test(c)]
    if case == "delete_cells":
        for i in reversed(tests[:2]):
            del nb.cells[i]
    elif case == "duplicate_cells":  # copy and paste in Jupyter: same metadata, a new cell id
        first, last = copy.deepcopy(nb.cells[tests[0]]), copy.deepcopy(nb.cells[tests[-1]])
        first["id"], last["id"] = "pasted-1", "pasted-2"
        nb.cells.insert(tests[0] + 1, first)
        nb.cells.append(last)
    elif case == "edit_tests":
        for i in tests:
            nb.cells[i].source = "pass"
            nb.cells[i].metadata.nbgrader["points"] = 1000
    elif case in ("strip_metadata", "strip_definitions"):  # re-created in another editor: no nbgrader metadata
        for cell in nb.cells:
            cell.metadata.pop("nbgrader", None)
        if case == "strip_definitions":  # ... and none of the student's functions
            nb.cells = [c for c in nb.cells if "def " not in c.source and "class " not in c.source]
    return nb


# ---------------------------------------------------------------- the class
def released_notebooks(assignments: list[str], work: Path) -> dict[str, Path]:
    """The student version of each assignment, generated with nbgrader into `work`."""
    GradingFolder(work).prepare(assignments)
    return {a: work / "release" / a / f"{a}.ipynb" for a in assignments}


def make_class(out: str | Path, assignments: list[str] | None = None, released: dict[str, Path] | None = None,
               grading_dir: Path | None = None, wrong: bool = True, hostile: bool = True,
               copies: int = 1) -> list[Expected]:
    """Write the synthetic class into `out`/submitted and return what grading it must give.

    Args:
        out: the class folder (``submitted/`` and ``expected.json`` go there).
        assignments: which assignments. Default: every one in solutions/.
        released: the released notebook of each assignment. Default: generated here.
        grading_dir: the ``--out`` folder it will be graded into (the target of the
            gradebook-writing student). Default: the release's gradebook under _build/.
        wrong: include a student per catalogued mistake. Default: True.
        hostile: include the hostile students. Default: True.
        copies: students of each correct, blank and wrong kind (more notebooks for the
            benchmark; copy k > 1 is suffixed ``-k``). Default: 1.
    """
    out = Path(out)
    assignments = list(assignments or known_assignments())
    temporary = None
    if released is None:
        temporary = tempfile.mkdtemp(prefix="bngrade-release-")
        released = released_notebooks(assignments, Path(temporary))
    try:
        expected: list[Expected] = []
        submitted = out / "submitted"

        def put(student: str, assignment: str, nb=None, data: bytes | None = None) -> None:
            folder = submitted / student / assignment
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{assignment}.ipynb"
            if nb is not None:
                nbformat.write(nb, path)
            elif data is not None:
                path.write_bytes(data)

        def suffix(k: int) -> str:
            return "" if k == 0 else f"-{k + 1}"

        base = {}
        for a in assignments:
            rel = _read(released[a])
            sol = _read(SOLUTIONS / a / f"{a}.ipynb")
            base[a] = (rel, correct_notebook(rel, sol))
            for k in range(copies):
                put(f"correct-{a}{suffix(k)}", a, base[a][1])
                expected.append(Expected(f"correct-{a}{suffix(k)}", a, Status.GRADED, "full"))
                put(f"blank-{a}{suffix(k)}", a, rel)
                expected.append(Expected(f"blank-{a}{suffix(k)}", a, Status.GRADED, 0))
            (submitted / f"missing-{a}").mkdir(parents=True, exist_ok=True)
            expected.append(Expected(f"missing-{a}", a, Status.MISSING, 0, "no submission"))
        if wrong:
            for m in MISTAKES:
                a = next((x for x in m.assignments if x in assignments), None)
                if a is None:
                    continue
                for k in range(copies):
                    student = f"wrong-{m.name}{suffix(k)}"
                    put(student, a, wrong_notebook(base[a][0], m.name, a))
                    expected.append(Expected(student, a, Status.GRADED, "partial", mistake=m.name))
        a = HOSTILE_ASSIGNMENT
        if hostile and a in assignments:
            rel, good = base[a]
            for case, (source, status, score, reason) in _hostile(grading_dir).items():
                put(f"hostile-{case}", a, _insert_after_first_solution(good, source))
                expected.append(Expected(f"hostile-{case}", a, status, score, reason))
            for case, source in _TRICKS.items():
                put(f"hostile-{case}", a, _insert_after_first_solution(rel, source))
                expected.append(Expected(f"hostile-{case}", a, Status.GRADED, 0))
            checks = [grade_id(c) for c in rel.cells if is_test(c)]
            forge = (f"CHECKS = {checks!r}\n" + _hostile_forge())
            put("hostile-forge_records", a, _insert_after_first_solution(rel, forge))
            expected.append(Expected("hostile-forge_records", a, Status.GRADED, 0))
            put("hostile-delete_cells", a, _structural(good, "delete_cells"))
            expected.append(Expected("hostile-delete_cells", a, Status.GRADED, "full", "put back"))
            put("hostile-duplicate_cells", a, _structural(good, "duplicate_cells"))
            expected.append(Expected("hostile-duplicate_cells", a, Status.GRADED, "full", "appears 2 times"))
            put("hostile-edit_tests", a, _structural(good, "edit_tests"))
            expected.append(Expected("hostile-edit_tests", a, Status.GRADED, "full"))
            put("hostile-strip_metadata", a, _structural(good, "strip_metadata"))
            expected.append(Expected("hostile-strip_metadata", a, Status.GRADED, "full", "no nbgrader metadata"))
            put("hostile-strip_definitions", a, _structural(rel, "strip_definitions"))
            expected.append(Expected("hostile-strip_definitions", a, Status.MALFORMED, 0,
                                     "defines none of the graded names"))
            put("malformed-json", a, data=b'{"cells": [ {"cell_type": "code", "source": "1 +')
            expected.append(Expected("malformed-json", a, Status.MALFORMED, 0, "not valid JSON"))
            put("malformed-not-a-notebook", a, data=b'["a", "list"]')
            expected.append(Expected("malformed-not-a-notebook", a, Status.MALFORMED, 0, "not a notebook"))
        # nbgrader's layout: a student folder without an assignment's notebook is that student
        # missing the assignment (the synthetic students each hand in one assignment)
        handed_in = {(e.student, e.assignment) for e in expected}
        for student in sorted({e.student for e in expected}):
            for a in assignments:
                if (student, a) not in handed_in:
                    expected.append(Expected(student, a, Status.MISSING, 0, "no submission"))
        (out / "expected.json").write_text(json.dumps([asdict(e) for e in expected], indent=1))
        return expected
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


# ---------------------------------------------------------------- the class as LMSs hand it over
#: Students of the LMS zips: (name as written, Canvas user id, correct?), in several scripts;
#: ``zoë`` and ``zoé`` differ by one accent, NFD in the zip for one of them.
LMS_NAMES = [("zoë", "101", True), ("zoe\u0301", "102", False), ("李雷", "103", True), ("韩梅梅", "104", False),
             ("josé", "105", True), ("Ольга", "108", True), ("नेहा", "109", True), ("O'Brien", "110", True)]
#: Notebooks of :func:`make_lms_zips` are of this assignment.
LMS_ASSIGNMENT = HOSTILE_ASSIGNMENT


def with_saved_outputs(nb, size: int) -> bytes:
    """`nb` as bytes, with a saved plot of about `size` bytes in its first code cell's outputs."""
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo" + "A" * size,
                                                                 "text/plain": "<Figure size 640x480>"})]
    return nbformat.writes(nb).encode()


def make_lms_zips(out: str | Path, released: dict[str, Path] | None = None) -> dict[str, list[Expected]]:
    """Write ``canvas.zip``, ``moodle.zip`` and ``collision.zip`` into `out` (see the module docstring).

    Returns the expected outcomes of ``canvas.zip`` and ``moodle.zip`` by zip name, also
    written as ``expected-<zip>.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    a = LMS_ASSIGNMENT
    temporary = None
    if released is None:
        temporary = tempfile.mkdtemp(prefix="bngrade-release-")
        released = released_notebooks([a], Path(temporary))
    try:
        blank = _read(released[a])
        good = nbformat.writes(correct_notebook(blank, _read(SOLUTIONS / a / f"{a}.ipynb"))).encode()
        blank_bytes = nbformat.writes(blank).encode()
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    canvas, expected = {}, {"canvas": [], "moodle": []}

    def expect(which: str, name: str, lms_id: str, status: str, score, reason: str = "") -> None:
        written = unicodedata.normalize("NFC", name)
        expected[which].append(Expected(student_id(name), a, status, score, reason, name=written, lms_id=lms_id))

    for k, (name, lms_id, correct) in enumerate(LMS_NAMES):
        canvas[f"{name}_{lms_id}_{k + 1}_{a}.ipynb"] = good if correct else blank_bytes
        expect("canvas", name, lms_id, Status.GRADED, "full" if correct else 0)
    canvas[f"late_106_6_{a}.ipynb"] = blank_bytes
    canvas[f"late_106_7_{a}-1.ipynb"] = good
    expect("canvas", "late", "106", Status.GRADED, "full", f"graded late_106_7_{a}-1.ipynb")
    canvas[f"plot_LATE_107_11_{a}.ipynb"] = with_saved_outputs(_read_bytes(good), MAX_NOTEBOOK_BYTES + 2**20)
    expect("canvas", "plot", "107", Status.GRADED, "full", "saved outputs; they were removed before grading")
    _write_zip(out / "canvas.zip", {n: (d, (2026, 3, 1, 12, 0, 0)) for n, d in canvas.items()})
    folder = "{}_{}_assignsubmission_file_/{}"
    moodle = {folder.format("Jane Doe", "4242", f"{a}.ipynb"): (good, (2026, 3, 1, 12, 0, 0)),
              folder.format("Chloé Dupont", "4243", f"{a}.ipynb"): (blank_bytes, (2026, 3, 1, 9, 0, 0)),
              folder.format("Chloé Dupont", "4243", f"{a} (1).ipynb"): (good, (2026, 3, 2, 9, 0, 0)),
              folder.format("Lin Wei 林伟", "4244", f"{a}.ipynb"): (blank_bytes, (2026, 3, 1, 12, 0, 0))}
    expect("moodle", "Jane Doe", "4242", Status.GRADED, "full")
    expect("moodle", "Chloé Dupont", "4243", Status.GRADED, "full", f"graded {a} (1).ipynb (the latest file")
    expect("moodle", "Lin Wei 林伟", "4244", Status.GRADED, 0)
    _write_zip(out / "moodle.zip", moodle)
    _write_zip(out / "collision.zip", {f"zoe_201_1_{a}.ipynb": (good, (2026, 3, 1, 12, 0, 0)),
                                       f"zoe_202_2_{a}.ipynb": (blank_bytes, (2026, 3, 1, 12, 0, 0))})
    for which, items in expected.items():
        (out / f"expected-{which}.json").write_text(json.dumps([asdict(e) for e in items], indent=1,
                                                               ensure_ascii=False))
    return expected


def _read_bytes(data: bytes):
    return nbformat.reads(data.decode(), as_version=4)


def _write_zip(path: Path, entries: dict[str, tuple[bytes, tuple]]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, (data, when) in entries.items():
            z.writestr(zipfile.ZipInfo(name, when), data, zipfile.ZIP_DEFLATED)


def _hostile_forge() -> str:
    return (
        "import os, json, numpy as np\n"
        "channel = os.environ.get('BNGRADE_CHANNEL') or '.'\n"
        "os.makedirs(channel, exist_ok=True)\n"
        "rng = np.random.default_rng(0)\n"
        "for check in CHECKS:\n"
        "    np.savez(os.path.join(channel, check + '.npz'), y=rng.normal(size=(8, 3)),\n"
        "             running_mean=np.zeros(3), running_var=np.ones(3))\n"
        "    with open(os.path.join(channel, check + '.json'), 'w') as f:\n"
        "        json.dump({'passed': True, 'calls': {}}, f)\n"
        "import autograder.inside.probe as probe\n"
        "probe.check = lambda *a, **k: None\n"
    )


def load_expected(out: str | Path, which: str = "") -> list[Expected]:
    """The expected outcomes in `out`: of the class, or (`which`: canvas, moodle) of an LMS zip."""
    name = f"expected-{which}.json" if which else "expected.json"
    return [Expected(**e) for e in json.loads((Path(out) / name).read_text())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("out", metavar="DIR", help="the class folder to write (submitted/, expected.json)")
    parser.add_argument("--assignment", action="append", dest="assignments", metavar="NAME",
                        help="only this assignment (repeatable; default: all)")
    parser.add_argument("--copies", type=int, default=1, help="students of each correct, blank and wrong kind")
    parser.add_argument("--grading-dir", type=Path, help="the --out folder it will be graded into")
    parser.add_argument("--lms-zips", action="store_true",
                        help="write the LMS zips instead (canvas.zip, moodle.zip, collision.zip)")
    args = parser.parse_args(argv)
    if args.lms_zips:
        found = make_lms_zips(args.out)
        print(f"{sum(map(len, found.values()))} students in {Path(args.out)}/canvas.zip and moodle.zip; "
              f"two who claim one id in collision.zip")
        return 0
    expected = make_class(args.out, args.assignments, grading_dir=args.grading_dir, copies=args.copies)
    print(f"{len(expected)} students in {Path(args.out) / 'submitted'}; expected outcomes in "
          f"{Path(args.out) / 'expected.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
