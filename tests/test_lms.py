"""Grades in the LMSs' own import formats (``--lms canvas``, ``--lms moodle``), parsed as the LMS would."""

from __future__ import annotations

import csv
import io

import pytest

from autograder.output.lms import CANVAS_FIELDS, LMS_FORMATS, MOODLE_FIELDS, files

ROWS = [
    {"student_id": "zoë", "name": "zoë", "lms_id": "101", "assignment": "bn-numpy-forward", "score": "12",
     "max_score": "12", "graded_at": "2026-03-02 10:00:00"},
    {"student_id": "李雷", "name": "李雷", "lms_id": "103", "assignment": "bn-numpy-forward", "score": "4.5",
     "max_score": "12", "graded_at": "2026-03-02 10:00:01"},
    {"student_id": "zoë", "name": "zoë", "lms_id": "101", "assignment": "bn-torch", "score": "3", "max_score": "10",
     "graded_at": "2026-03-02 10:00:02"},
    {"student_id": "ada", "name": "ada", "lms_id": "", "assignment": "bn-torch", "score": "10", "max_score": "10",
     "graded_at": "2026-03-02 10:00:03"},
]


def _parse(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_canvas_csv_has_its_columns_a_points_row_and_one_row_per_student():
    texts, left_out = files(ROWS, "canvas")
    (text,) = texts.values()
    rows = _parse(text)
    header = list(rows[0])
    assert header == CANVAS_FIELDS + ["bn-numpy-forward", "bn-torch"]
    points = rows[0]
    assert points["Student"] == "Points Possible" and (points["bn-numpy-forward"], points["bn-torch"]) == ("12", "10")
    students = {r["ID"]: r for r in rows[1:]}
    assert set(students) == {"101", "103"} and all(r["ID"].isdigit() for r in rows[1:])
    assert (students["101"]["Student"], float(students["101"]["bn-numpy-forward"]),
            float(students["101"]["bn-torch"])) == ("zoë", 12.0, 3.0)
    assert float(students["103"]["bn-numpy-forward"]) == 4.5 and students["103"]["bn-torch"] == ""
    assert left_out == ["ada"]


def test_moodle_worksheet_per_assignment_keyed_by_participant():
    texts, left_out = files(ROWS, "moodle")
    assert sorted(texts) == ["moodle-bn-numpy-forward.csv", "moodle-bn-torch.csv"]
    rows = _parse(texts["moodle-bn-numpy-forward.csv"])
    assert list(rows[0]) == MOODLE_FIELDS
    assert {r["Identifier"]: float(r["Grade"]) for r in rows} == {"Participant 101": 12.0, "Participant 103": 4.5}
    assert all(r["Maximum grade"] == "12" and r["Last modified (grade)"] for r in rows)
    assert [r["Identifier"] for r in _parse(texts["moodle-bn-torch.csv"])] == ["Participant 101"]
    assert left_out == ["ada"]


def test_an_unknown_lms_is_a_clear_error():
    assert LMS_FORMATS == ("canvas", "moodle")
    with pytest.raises(ValueError, match="unknown LMS 'blackboard'"):
        files(ROWS, "blackboard")
