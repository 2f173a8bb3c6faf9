"""Grading a class, one module per concern.

- :mod:`~autograder.grading.submissions`: finding the class's notebooks (nbgrader's folders, an LMS zip, one notebook);
- :mod:`~autograder.grading.jobs`: the typed contracts, :class:`Job` in and :class:`Answer` out of a worker;
- :mod:`~autograder.grading.coordinator`: ``grade()``: what to grade, in what order, and writing back;
- :mod:`~autograder.grading.runners`: where the tasks run (a local process pool, a Dask cluster);
- :mod:`~autograder.grading.worker`: one notebook: read, sanitize, run, judge, score;
- :mod:`~autograder.grading.process`: a worker process's state (sandbox slots, scratch, warm-up);
- :mod:`~autograder.grading.classify`: the status-and-reason decision table;
- :mod:`~autograder.grading.store`: the grading folder, an nbgrader course directory with our table;
- :mod:`~autograder.grading.progress`: the progress bar and the summary table.
"""
