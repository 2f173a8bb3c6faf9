"""The grading folder: our table round-trips, seeds are stable and secret per folder, speeds follow the notebook."""

from __future__ import annotations

import pytest

from autograder.grading.jobs import Answer, PartResult, Status
from autograder.grading.store import GradingFolder, Result, tree_sha256


@pytest.fixture
def folder(tmp_path) -> GradingFolder:
    folder = GradingFolder(tmp_path / "grades")
    folder.root.mkdir()
    folder.meta("created")  # the autograder's tables exist (prepare makes them, with nbgrader's)
    return folder


def _result(student="ada", **kw) -> Result:
    fields = dict(status=Status.GRADED, reason="", score=9.0, max_score=12.0,
                  parts={"running_mean": {"title": "Check the running mean.", "passed": False,
                                          "message": "off by m/(m-1)", "mistake": "biased_running_var", "cell": 7,
                                          "score": 0.0, "max_score": 3.0}},
                  mistakes=["biased_running_var"], sha256="abc", source_sha256="src", origin="in/ada.ipynb",
                  seconds=1.5)
    return Result(student, "bn-numpy-forward", **{**fields, **kw})


def test_a_saved_result_reads_back_the_same_with_its_time(folder):
    folder.save_result(_result())
    (key, got), = folder.results().items()
    assert key == ("ada", "bn-numpy-forward")
    assert got.graded_at, "the database stamps the row"
    assert got == _result(graded_at=got.graded_at)


def test_saving_again_replaces_the_row(folder):
    folder.save_result(_result(score=1.0))
    folder.save_result(_result(score=12.0))
    assert [r.score for r in folder.results().values()] == [12.0]


def test_a_result_is_made_from_an_answer_by_field():
    answer = Answer("ada", "bn-torch", Status.TIMEOUT, "cell 3 ran too long",
                    parts={"module": PartResult("Check the module.", True, "", None, 4, 2.0, 2.0)},
                    mistakes=[], score=2.0, max_score=19.0, seconds=3.25)
    r = Result.from_answer(answer, sha256="nb", source_sha256="src", origin="zip:ada.ipynb")
    assert (r.student_id, r.assignment, r.status, r.reason, r.score, r.max_score, r.seconds) == \
        ("ada", "bn-torch", Status.TIMEOUT, "cell 3 ran too long", 2.0, 19.0, 3.25)
    assert r.parts == {"module": {"title": "Check the module.", "passed": True, "message": "", "mistake": None,
                                  "cell": 4, "score": 2.0, "max_score": 2.0, "manual": False}}
    assert (r.sha256, r.source_sha256, r.origin) == ("nb", "src", "zip:ada.ipynb")


def test_a_folder_that_was_never_graded_has_no_results(tmp_path):
    folder = GradingFolder(tmp_path / "nothing")
    assert folder.results() == {} and folder.speeds() == {} and folder.students() == []


def test_a_students_seed_is_stable_across_instances_and_secret_per_folder(tmp_path):
    first, again = GradingFolder(tmp_path / "a"), GradingFolder(tmp_path / "a")
    other = GradingFolder(tmp_path / "b")
    for f in (first, other):
        f.root.mkdir()
    seed = first.seed("ada", "bn-torch")
    assert again.seed("ada", "bn-torch") == seed, "a rerun gives the same challenge inputs"
    assert other.seed("ada", "bn-torch") != seed, "another folder has another salt"
    assert first.seed("bob", "bn-torch") != seed and first.seed("ada", "bn-numpy-forward") != seed
    assert 0 <= seed < 2**31


def test_a_speed_entry_counts_only_for_the_notebook_it_timed(folder):
    folder.save_result(_result(sha256="v1"))
    folder.save_speed("ada", "bn-numpy-forward", {"ratio": 1.5}, "v1")
    assert folder.speeds() == {("ada", "bn-numpy-forward"): {"ratio": 1.5}}
    folder.save_result(_result(sha256="v2"))  # a new notebook, graded without --speed
    assert folder.speeds() == {}


def test_the_fingerprint_of_a_folder_follows_names_and_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.ipynb").write_text("1")
    before = tree_sha256(tmp_path / "a")
    (tmp_path / "a" / "__pycache__").mkdir()
    (tmp_path / "a" / "__pycache__" / "x.pyc").write_text("junk")
    assert tree_sha256(tmp_path / "a") == before, "caches do not count"
    (tmp_path / "a" / "x.ipynb").write_text("2")
    assert tree_sha256(tmp_path / "a") != before
    (tmp_path / "a" / "x.ipynb").rename(tmp_path / "a" / "y.ipynb")
    (tmp_path / "a" / "y.ipynb").write_text("1")
    assert tree_sha256(tmp_path / "a") != before


@pytest.mark.slow
def test_prepare_is_idempotent(tmp_path):
    """Preparing again leaves the release and the gradebook's assignment as they were; a changed source does not."""
    folder = GradingFolder(tmp_path / "grades")
    folder.prepare(["bn-numpy-forward"])
    released = folder.root / "release" / "bn-numpy-forward" / "bn-numpy-forward.ipynb"
    stamp, digest = released.stat().st_mtime_ns, folder.meta("source:bn-numpy-forward")
    assert digest == tree_sha256(folder.solutions / "bn-numpy-forward")
    assert (folder.root / "nbgrader_config.py").is_file()
    folder.prepare(["bn-numpy-forward"])
    assert released.stat().st_mtime_ns == stamp
    assert folder.meta("source:bn-numpy-forward") == digest
    folder.set_meta("source:bn-numpy-forward", "an older source")
    folder.prepare(["bn-numpy-forward"])
    assert released.stat().st_mtime_ns != stamp, "a changed source is released again"
    assert folder.meta("source:bn-numpy-forward") == digest


def test_names_as_written_and_lms_ids_are_kept(tmp_path):
    folder = GradingFolder(tmp_path)
    folder.root.mkdir(exist_ok=True)
    folder.save_name("Jane-Doe-abc123", "Jane Doe", "4242")
    folder.save_name("李雷", "李雷")
    folder.save_name("Jane-Doe-abc123", "Jane Doe")  # a later run without the LMS id keeps it
    assert folder.names() == {"Jane-Doe-abc123": ("Jane Doe", "4242"), "李雷": ("李雷", "")}
