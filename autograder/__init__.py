"""The course's autograder: release the student notebooks, grade them, report.

This package is light on purpose: importing it imports nothing heavy (no nbgrader, no torch,
no bnlib), because :mod:`autograder.inside.probe` and the scenario modules run *inside* the grading
sandbox, where only NumPy, torch (for ``bn-torch``), the standard library and this package's
sandbox-side modules exist.

Sandbox side (student process):
    :mod:`autograder.inside.probe`      ``check(check_id, namespace)``, the call in every hidden test cell
    :mod:`autograder.inside.scenarios`  one scenario per graded behaviour, run on the student's functions
    :mod:`autograder.inside.executor`   the lean runner that executes a notebook's cells in the sandbox

Trusted side (instructor process):
    :mod:`autograder.judging.judge`          verdicts: compares a scenario's record with bnlib and names mistakes
    :mod:`autograder.nbgrader_ext.release`        the student notebooks, generated with nbgrader
    :mod:`autograder.nbgrader_ext.preprocessors`  nbgrader preprocessors for deleted and duplicated graded cells
    :mod:`autograder.sandbox`        bubblewrap sandboxes, their limits, the warm runner per slot
    :mod:`autograder.grading.submissions`    a class's notebooks: nbgrader's folders, an LMS zip, one notebook
    :mod:`autograder.grading.coordinator`          ``grade``: the coordinator (gradebook writes, pool or Dask, resume)
    :mod:`autograder.grading.worker`         one notebook, start to finish: sanitize, run, judge, score, feedback
    :mod:`autograder.output.speed`          ``grade --speed``: the ungraded class speed table
    :mod:`autograder.output.feedback`       the student's feedback page
    :mod:`autograder.output.report`         grades.csv and the instructor's report, from the gradebook
    :mod:`autograder.grading.store`         the grading folder as an nbgrader course directory
    :mod:`autograder.synthetic`      a synthetic class for tests, benchmarks and the README
    :mod:`autograder.bench_grading`  throughput against plain ``nbgrader autograde``
    :mod:`autograder.cli`            ``python -m autograder {release,grade,report}``
    ``nbgrader_config.py``           nbgrader's configuration for the course
"""

__all__: list[str] = []
