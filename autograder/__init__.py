"""The course's autograder: release the student notebooks, grade them, report.

This package is light on purpose: importing it imports nothing heavy (no nbgrader, no torch,
no bnlib), because :mod:`autograder.inside.probe` and the scenario modules run *inside* the grading
sandbox, where only NumPy, torch (for ``bn-torch``), the standard library and this package's
sandbox-side modules exist.

Sandbox side (the student's process): :mod:`autograder.inside`, mounted whole into every sandbox
    :mod:`autograder.inside.probe`      ``check(check_id, namespace)``, the call in every hidden test cell
    :mod:`autograder.inside.scenarios`  one scenario per graded behaviour, run on the student's functions
    :mod:`autograder.inside.executor`   the lean runner that executes a notebook's cells in the sandbox
    :mod:`autograder.inside.protocol`   the wire protocol, the one module both sides of the boundary import
    :mod:`autograder.inside.timing`     ``grade --speed``'s measurement, in the student's process

Trusted side (the instructor's processes), one package per concern:
    :mod:`autograder.course`        the course's contract: assignments, graded names, reference, mistakes
    :mod:`autograder.sandbox`       bubblewrap sandboxes: limits, mounts, slots, the monitor, the warm runner
    :mod:`autograder.judging`       verdicts: a scenario's record compared with bnlib, the mistake named
    :mod:`autograder.grading`       ``grade``: submissions, jobs, the coordinator, its runners, the worker,
                                    the status table (classify), the grading folder (store), progress
    :mod:`autograder.output`        the student's feedback, grades.csv and the report, the speed table
    :mod:`autograder.nbgrader_ext`  the release, and nbgrader preprocessors for deleted and duplicated cells
    :mod:`autograder.paths`          the repository's folders; :mod:`autograder.notebook`, nbgrader's cell rules
    :mod:`autograder.synthetic`      a synthetic class for tests, benchmarks and the README
    :mod:`autograder.bench_grading`  throughput against plain ``nbgrader autograde``
    :mod:`autograder.cli`            ``python -m autograder {release,grade,report}``
    ``nbgrader_config.py``           nbgrader's configuration for the course
"""

__all__: list[str] = []
