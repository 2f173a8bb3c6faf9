"""autograder: the instructor's side of the course: release, grade, report (wraps nbgrader).

Light on purpose: importing this package loads nothing heavy, because it is also
importable inside the grading sandbox (see :mod:`autograder.probe`).
"""
