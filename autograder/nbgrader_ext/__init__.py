"""The course's use of nbgrader: releasing the student notebooks and its preprocessors."""
