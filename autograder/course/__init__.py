"""The course's contract: the assignments, their graded names, the reference they are compared
with, and the catalogue of known mistakes with the chapters that explain them."""
