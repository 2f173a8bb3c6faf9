"""Grading a class: the submissions, the coordinator, the workers, the grading folder."""
