"""Everything that runs inside the grading sandbox, in the student's process.

This package is mounted whole into every sandbox (:mod:`autograder.sandbox`), and nothing else
of the autograder is: its modules import only the standard library, NumPy, and (in the
``bn-torch`` scenarios) torch. Never bnlib, nbgrader, or the trusted side.
"""
