"""Finding a class's submissions: nbgrader's folders, an LMS zip, a single notebook; bad input named."""

from __future__ import annotations

import csv
import json
import stat
import unicodedata
import zipfile

import pytest
from student_code import automatic_full_marks

from autograder.course import spec
from autograder.grading.submissions import (
    MAX_FILE_BYTES,
    MAX_NOTEBOOK_BYTES,
    Submission,
    SubmissionsError,
    check_ids,
    collect,
    student_id,
)

ASSIGNMENTS = list(spec.ASSIGNMENTS)
NB = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


def _by_student(subs):
    return {s.student: s for s in subs}


def _zip(path, entries):
    """entries: name -> bytes, or ('symlink', target)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            if isinstance(data, tuple):
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                z.writestr(info, data[1])
            else:
                z.writestr(name, data)
    return path


# ---------------------------------------------------------------- nbgrader's layout
def test_nbgrader_layout_finds_each_student_and_assignment(tmp_path):
    for student, assignment in [("ada", "bn-numpy-forward"), ("bob", "bn-numpy-forward"), ("ada", "bn-torch")]:
        (tmp_path / student / assignment).mkdir(parents=True, exist_ok=True)
        (tmp_path / student / assignment / f"{assignment}.ipynb").write_bytes(NB)
    subs = collect(tmp_path, ASSIGNMENTS)
    found = {(s.student, s.assignment): s.status for s in subs}
    assert found == {("ada", "bn-numpy-forward"): None, ("bob", "bn-numpy-forward"): None,
                     ("ada", "bn-torch"): None, ("bob", "bn-torch"): "missing"}


def test_a_course_folder_with_submitted_inside_works_too(tmp_path):
    (tmp_path / "submitted" / "ada" / "bn-torch").mkdir(parents=True)
    (tmp_path / "submitted" / "ada" / "bn-torch" / "bn-torch.ipynb").write_bytes(NB)
    assert [(s.student, s.assignment) for s in collect(tmp_path, ASSIGNMENTS)] == [("ada", "bn-torch")]


def test_a_student_folder_without_the_notebook_is_missing_and_says_what_was_found(tmp_path):
    (tmp_path / "ada" / "bn-torch").mkdir(parents=True)
    (tmp_path / "ada" / "bn-torch" / "my-work.ipynb").write_bytes(NB)
    (sub,) = collect(tmp_path, ASSIGNMENTS, "bn-torch")
    assert sub.status == "missing" and "my-work.ipynb" in sub.problem


def test_a_symlinked_notebook_is_malformed_and_not_read(tmp_path):
    secret = tmp_path / "solution.ipynb"
    secret.write_bytes(NB)
    (tmp_path / "subs" / "eve" / "bn-torch").mkdir(parents=True)
    (tmp_path / "subs" / "eve" / "bn-torch" / "bn-torch.ipynb").symlink_to(secret)
    (sub,) = collect(tmp_path / "subs", ASSIGNMENTS, "bn-torch")
    assert sub.status == "malformed" and "symbolic link" in sub.problem and sub.data is None


def test_nbgraders_timestamp_is_read(tmp_path):
    folder = tmp_path / "ada" / "bn-torch"
    folder.mkdir(parents=True)
    (folder / "bn-torch.ipynb").write_bytes(NB)
    (folder / "timestamp.txt").write_text("2025-03-01 12:30:00.000000 UTC")
    (sub,) = collect(tmp_path, ASSIGNMENTS)
    assert (sub.timestamp.year, sub.timestamp.month, sub.timestamp.hour) == (2025, 3, 12)


def test_a_folder_without_assignment_folders_is_a_clear_error(tmp_path):
    (tmp_path / "ada" / "homework").mkdir(parents=True)
    with pytest.raises(SubmissionsError, match="no folder .* is named after an assignment"):
        collect(tmp_path, ASSIGNMENTS)


# ---------------------------------------------------------------- LMS zips
def test_canvas_file_names_give_the_student_id(tmp_path):
    z = _zip(tmp_path / "canvas.zip", {"doejane_12345_67890_bn-numpy-forward.ipynb": NB,
                                       "smithjo_LATE_222_333_bn-numpy-forward-1.ipynb": NB})
    subs = _by_student(collect(z, ASSIGNMENTS, "bn-numpy-forward"))
    assert set(subs) == {"doejane", "smithjo"} and all(s.data == NB for s in subs.values())


def test_moodle_folders_give_the_student_id(tmp_path):
    z = _zip(tmp_path / "moodle.zip", {"Jane Doe_4242_assignsubmission_file_/bn-numpy-forward.ipynb": NB})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert (sub.student, sub.name, sub.lms_id) == (student_id("Jane Doe"), "Jane Doe", "4242")
    assert sub.student.startswith("Jane-Doe-")


def test_a_custom_pattern_picks_another_part_of_the_name(tmp_path):
    z = _zip(tmp_path / "c.zip", {"doejane_12345_67890_x.ipynb": NB})
    subs = collect(z, ASSIGNMENTS, "bn-numpy-forward", id_pattern=r"_(?P<student>\d+)_")
    assert list(_by_student(subs)) == ["12345"]


def test_a_zip_entry_with_dot_dot_is_malformed_and_never_extracted(tmp_path):
    z = _zip(tmp_path / "evil.zip", {"../../evil_1_2_bn-numpy-forward.ipynb": NB, "ok_1_2_x.ipynb": NB})
    subs = _by_student(collect(z, ASSIGNMENTS, "bn-numpy-forward"))
    assert subs["evil"].status == "malformed" and "'..'" in subs["evil"].problem and subs["evil"].data is None
    assert subs["ok"].status is None
    assert not list(tmp_path.parent.glob("evil*")) and not list(tmp_path.glob("evil_*"))


def test_an_absolute_zip_entry_is_malformed(tmp_path):
    z = _zip(tmp_path / "abs.zip", {"/etc/abs_1_2_x.ipynb": NB})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.status == "malformed" and "outside the archive" in sub.problem


def test_a_symlink_zip_entry_is_malformed_and_not_followed(tmp_path):
    z = _zip(tmp_path / "link.zip", {"mallory_1_2_bn-numpy-forward.ipynb": ("symlink", "/work/solutions/x.ipynb")})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.student == "mallory" and sub.status == "malformed" and "symbolic link" in sub.problem


def test_a_name_that_does_not_match_the_pattern_is_reported_not_dropped(tmp_path):
    z = _zip(tmp_path / "odd.zip", {"notebook.ipynb": NB, "__MACOSX/._doejane_1_2_x.ipynb": b"junk",
                                    "doejane_1_2_report.pdf": b"%PDF"})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.student == "notebook" and sub.status == "malformed" and "does not match" in sub.problem


def test_several_notebooks_pick_the_one_named_after_the_assignment(tmp_path):
    z = _zip(tmp_path / "two.zip", {"ada_1_2_scratch.ipynb": b"{}", "ada_1_3_bn-numpy-forward.ipynb": NB})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.status is None and sub.data == NB
    z = _zip(tmp_path / "ambiguous.zip", {"ada_1_2_a.ipynb": NB, "ada_1_3_b.ipynb": NB})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.status is None and sub.origin.endswith("ada_1_3_b.ipynb")
    assert "graded ada_1_3_b.ipynb" in sub.note and "set aside: ada_1_2_a.ipynb" in sub.note


def test_an_oversized_file_is_malformed_without_being_read(tmp_path):
    z = _zip(tmp_path / "big.zip", {"big_1_2_x.ipynb": b" " * (MAX_FILE_BYTES + 1)})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.status == "malformed" and "not read" in sub.problem and sub.data is None


@pytest.mark.parametrize("kwargs, message", [
    ({}, "name it with --assignment"),
    ({"assignment": "bn-numpy-forward", "id_pattern": "(unclosed"}, "not a regular expression"),
    ({"assignment": "bn-numpy-forward", "id_pattern": r"^(\w+)_"}, "no group named 'student'"),
    ({"assignment": "homework-1"}, "unknown assignment 'homework-1'"),
])
def test_bad_zip_options_are_clear_errors(tmp_path, kwargs, message):
    z = _zip(tmp_path / "c.zip", {"ada_1_2_x.ipynb": NB})
    with pytest.raises(SubmissionsError, match=message):
        collect(z, ASSIGNMENTS, **kwargs)


def test_a_zip_without_notebooks_is_a_clear_error(tmp_path):
    z = _zip(tmp_path / "empty.zip", {"readme.txt": b"hello"})
    with pytest.raises(SubmissionsError, match="holds no notebook"):
        collect(z, ASSIGNMENTS, "bn-torch")


def test_a_file_that_is_not_a_zip_is_a_clear_error(tmp_path):
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(SubmissionsError, match="not a readable zip"):
        collect(tmp_path / "fake.zip", ASSIGNMENTS, "bn-torch")


# ---------------------------------------------------------------- one notebook
def test_a_single_notebook_takes_its_id_from_its_name_or_from_student(tmp_path):
    (tmp_path / "ada.ipynb").write_bytes(NB)
    (sub,) = collect(tmp_path / "ada.ipynb", ASSIGNMENTS, "bn-torch")
    assert (sub.student, sub.assignment, sub.data) == ("ada", "bn-torch", NB)
    (sub,) = collect(tmp_path / "ada.ipynb", ASSIGNMENTS, "bn-torch", student="a.lovelace@uni.edu")
    assert sub.student == "a.lovelace@uni.edu"


def test_a_single_notebook_named_after_the_assignment_takes_its_folders_name(tmp_path):
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "bn-torch.ipynb").write_bytes(NB)
    (sub,) = collect(tmp_path / "bob" / "bn-torch.ipynb", ASSIGNMENTS)
    assert (sub.student, sub.assignment) == ("bob", "bn-torch")


def test_a_single_notebook_of_an_unknown_assignment_asks_for_it(tmp_path):
    (tmp_path / "ada.ipynb").write_bytes(NB)
    with pytest.raises(SubmissionsError, match="pass --assignment"):
        collect(tmp_path / "ada.ipynb", ASSIGNMENTS)


def test_a_path_that_does_not_exist_is_a_clear_error(tmp_path):
    with pytest.raises(SubmissionsError, match="does not exist"):
        collect(tmp_path / "nowhere", ASSIGNMENTS)


def test_ids_are_made_safe_for_folders_and_csv():
    for name, slug in [("Jane Doe", "Jane-Doe-"), ("../../etc", "etc-"), ("a,b;c", "a-b-c-"), ("...", "unknown-"),
                       ("zo*[é]?", "zo-é-")]:
        got = student_id(name)
        assert got.startswith(slug) and len(got) == len(slug) + 6, (name, got)
    assert student_id("a,b;c") != student_id("a;b,c")


def test_names_in_any_script_are_their_own_id_in_nfc():
    for name in ["zoë", "zoé", "josé", "李雷", "韩梅梅", "Ольга", "नमस्ते", "o'neill@uni.edu".replace("'", "")]:
        assert student_id(name) == unicodedata.normalize("NFC", name)
    assert student_id("zoe\u0308") == "zoë"  # NFD in, NFC out
    assert len({student_id(n) for n in ["zoë", "zoé", "zoe", "Zoë"]}) == 4
    assert len(student_id("x" * 300)) <= 64


def test_students_of_every_script_keep_their_own_grade(tmp_path):
    names = [f"{who}_{k}_{k}_bn-numpy-forward.ipynb" for who, k in
             [("zoë", 101), ("zoé", 102), ("李雷", 103), ("韩梅梅", 104), ("josé", 105)]]
    z = _zip(tmp_path / "intl.zip", {n: NB for n in names})
    subs = _by_student(collect(z, ASSIGNMENTS, "bn-numpy-forward"))
    assert set(subs) == {"zoë", "zoé", "李雷", "韩梅梅", "josé"}
    assert all(s.status is None and s.data == NB and s.note == "" for s in subs.values())
    assert (subs["李雷"].name, subs["李雷"].lms_id) == ("李雷", "103")


def test_a_zip_without_the_utf8_flag_still_gives_the_name_as_written(tmp_path):
    z = tmp_path / "legacy.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("zoXY_101_1_bn-numpy-forward.ipynb", NB)  # 4 ASCII bytes, as long as zoë in UTF-8
    z.write_bytes(z.read_bytes().replace(b"zoXY_101", "zoë_101".encode()))  # what an old zip tool writes
    with zipfile.ZipFile(z) as f:
        assert not f.infolist()[0].flag_bits & 0x800
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.student == "zoë"


def test_two_students_claiming_one_id_is_an_error_naming_both_files(tmp_path):
    z = _zip(tmp_path / "clash.zip", {"zoe_101_1_bn-numpy-forward.ipynb": NB, "zoe_102_2_bn-numpy-forward.ipynb": NB})
    with pytest.raises(SubmissionsError, match="zoe_101_1_bn-numpy-forward.ipynb.*zoe_102_2_bn-numpy-forward.ipynb"):
        collect(z, ASSIGNMENTS, "bn-numpy-forward")
    forged = student_id("Jane Doe")  # a name written as another student's encoded id
    z = _zip(tmp_path / "forged.zip", {"Jane Doe_7_assignsubmission_file_/bn-numpy-forward.ipynb": NB,
                                       f"{forged}_8_assignsubmission_file_/bn-numpy-forward.ipynb": NB})
    with pytest.raises(SubmissionsError, match="two files claim the student id"):
        collect(z, ASSIGNMENTS, "bn-numpy-forward")
    z = _zip(tmp_path / "case.zip", {"Ada_1_2_bn-numpy-forward.ipynb": NB, "ada_3_4_bn-numpy-forward.ipynb": NB})
    with pytest.raises(SubmissionsError, match="'Ada'.*'ada'|'ada'.*'Ada'"):
        collect(z, ASSIGNMENTS, "bn-numpy-forward")


def test_an_id_graded_earlier_for_another_student_is_an_error():
    sub = Submission("zoe", "bn-numpy-forward", b"{}", "b.zip:zoe_102_2_x.ipynb", lms_id="102")
    check_ids([sub], {"zoe": ("zoe", "102")})
    with pytest.raises(SubmissionsError, match="graded earlier in this folder"):
        check_ids([sub], {"zoe": ("zoe", "101")})


def test_canvas_resubmissions_grade_the_highest_number_and_say_so(tmp_path):
    z = _zip(tmp_path / "late.zip", {"late_106_6_bn-numpy-forward.ipynb": b"{}",
                                     "late_106_7_bn-numpy-forward-1.ipynb": NB,
                                     "late_106_5_notes.ipynb": b"{}"})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.status is None and sub.data == NB and sub.origin.endswith("late_106_7_bn-numpy-forward-1.ipynb")
    assert "graded late_106_7_bn-numpy-forward-1.ipynb (the highest Canvas resubmission number)" in sub.note
    assert "late_106_6_bn-numpy-forward.ipynb" in sub.note and "late_106_5_notes.ipynb" in sub.note


def test_moodle_grades_the_latest_file_of_the_folder(tmp_path):
    z = tmp_path / "moodle.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr(zipfile.ZipInfo("Jane Doe_42_assignsubmission_file_/bn-numpy-forward.ipynb",
                                   (2026, 3, 2, 12, 0, 0)), NB)
        f.writestr(zipfile.ZipInfo("Jane Doe_42_assignsubmission_file_/old/bn-numpy-forward.ipynb",
                                   (2026, 3, 1, 12, 0, 0)), b"{}")
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.data == NB and "(the latest file in the Moodle folder)" in sub.note and "set aside" in sub.note


def test_pick_overrides_the_lms_rule(tmp_path):
    z = _zip(tmp_path / "late.zip", {"late_106_6_bn-numpy-forward.ipynb": NB,
                                     "late_106_7_bn-numpy-forward-1.ipynb": b"{}"})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward", picks=["late_106_6_bn-numpy-forward.ipynb"])
    assert sub.data == NB and "picked with --pick" in sub.note
    with pytest.raises(SubmissionsError, match="is no notebook in the zip"):
        collect(z, ASSIGNMENTS, "bn-numpy-forward", picks=["nobody.ipynb"])
    with pytest.raises(SubmissionsError, match="pick one"):
        collect(z, ASSIGNMENTS, "bn-numpy-forward",
                picks=["late_106_6_bn-numpy-forward.ipynb", "late_106_7_bn-numpy-forward-1.ipynb"])


def _with_outputs(code: str, output_bytes: int) -> bytes:
    cell = {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": code,
            "outputs": [{"output_type": "display_data", "metadata": {},
                         "data": {"image/png": "A" * output_bytes, "text/plain": "<Figure>"}}]}
    return json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode()


def test_saved_outputs_do_not_count_against_the_size_cap(tmp_path):
    big = _with_outputs("x = 1", MAX_NOTEBOOK_BYTES + 2**20)
    z = _zip(tmp_path / "plot.zip", {"ada_1_2_bn-numpy-forward.ipynb": big})
    (sub,) = collect(z, ASSIGNMENTS, "bn-numpy-forward")
    assert sub.status is None and len(sub.data) < 2**10 and "saved outputs" in sub.note
    (cell,) = json.loads(sub.data)["cells"]
    assert cell["source"] == "x = 1" and cell["outputs"] == []


def test_a_notebook_whose_code_is_too_large_is_malformed_and_says_so(tmp_path):
    code = _with_outputs("# " + "x" * (MAX_NOTEBOOK_BYTES + 10), 10)
    (tmp_path / "ada.ipynb").write_bytes(code)
    (sub,) = collect(tmp_path / "ada.ipynb", ASSIGNMENTS, "bn-numpy-forward")
    assert sub.status == "malformed" and "even without its saved outputs" in sub.problem and sub.data is None


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_grading_an_lms_zip_grades_the_good_entries_and_reports_the_bad(tmp_path, released):
    import nbformat
    from grade_runs import run_grade

    from autograder.paths import SOLUTIONS
    from autograder.synthetic import _read, correct_notebook

    a = "bn-numpy-forward"
    good = nbformat.writes(correct_notebook(_read(released[a]), _read(SOLUTIONS / a / f"{a}.ipynb"))).encode()
    z = _zip(tmp_path / "class.zip", {f"doejane_1_2_{a}.ipynb": good,
                                      f"smithjo_3_4_{a}.ipynb": released[a].read_bytes(),
                                      f"../escape_5_6_{a}.ipynb": good,
                                      f"link_7_8_{a}.ipynb": ("symlink", "/etc/passwd")})
    run = run_grade([z, "--assignment", a, "--timeout", "10", "--no-progress"], tmp_path / "grades", tmp_path / "s")
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "grades" / "grades.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    doejane = rows["doejane"]
    assert doejane["status"] == "graded" and float(doejane["score"]) == automatic_full_marks(doejane)
    assert (rows["smithjo"]["status"], rows["smithjo"]["score"]) == ("graded", "0")
    assert rows["escape"]["status"] == "malformed" and "'..'" in rows["escape"]["reason"]
    assert rows["link"]["status"] == "malformed" and "symbolic link" in rows["link"]["reason"]
    assert not (tmp_path / f"escape_5_6_{a}.ipynb").exists() and not list(tmp_path.parent.glob("escape*"))
    assert (tmp_path / "grades" / "submitted" / "doejane" / a / f"{a}.ipynb").read_bytes() == good


@pytest.mark.slow
def test_grading_a_single_notebook(tmp_path, released):
    from grade_runs import run_grade

    a = "bn-numpy-forward"
    notebook = tmp_path / "ada.ipynb"
    notebook.write_bytes(released[a].read_bytes())
    run = run_grade([notebook, "--assignment", a, "--no-progress"], tmp_path / "grades", tmp_path / "s")
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "grades" / "grades.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["student_id"], row["assignment"], row["status"], row["score"]) == ("ada", a, "graded", "0")
    assert (tmp_path / "grades" / "feedback" / "ada" / f"{a}.html").is_file()
