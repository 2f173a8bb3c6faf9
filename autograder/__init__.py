"""The course's autograder: release the student notebooks, grade them, report.

This package is light on purpose: importing it imports nothing heavy (no nbgrader, no torch,
no bnlib), because :mod:`autograder.probe` and the scenario modules run *inside* the grading
sandbox, where only NumPy, torch (for ``bn-torch``), the standard library and this package's
sandbox-side modules exist.

Sandbox side (student process):
    :mod:`autograder.probe`      ``check(check_id, namespace)``, the call in every hidden test cell
    :mod:`autograder.scenarios`  one scenario per graded behaviour, run on the student's functions

Trusted side (instructor process):
    :mod:`autograder.judge`          verdicts: compares a scenario's record with bnlib and names mistakes
    :mod:`autograder.release`        the student notebooks, generated with nbgrader
    :mod:`autograder.preprocessors`  nbgrader preprocessors for deleted and duplicated graded cells
    :mod:`autograder.cli`            ``python -m autograder {release,...}``
    ``nbgrader_config.py``           nbgrader's configuration for the course
"""

__all__: list[str] = []
