"""The book's two editions from one source (``book/_ext/edition.py``).

``make`` builds the student edition; ``make book EDITION=instructor`` the instructor edition,
into its own folder. The unit tests check how an edition is chosen and which blocks each
edition keeps; the slow tests compare the two builds of the session.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
from sphinx.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("book_ext_edition", REPO / "book" / "_ext" / "edition.py")
edition = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(edition)

CHAPTER = """# A chapter

Both editions.

````{only} instructor
```{literalinclude} ../bnlib/numpy.py
:pyobject: backward_staged
```
````

````{only} student
The graph and a check to run.
````

```{exercise} Try it
:label: ex
```

````{solution} ex
:class: dropdown
The answer.
````

The end.
"""


def _strip(text: str, name: str) -> str:
    return edition.strip_blocks(text, lambda expression: expression.strip() == name, hide_solutions=name == "student")


def test_the_student_edition_drops_instructor_blocks_and_solutions():
    student = _strip(CHAPTER, "student")
    assert "literalinclude" not in student and "The answer." not in student and "{solution}" not in student
    assert "The graph and a check to run." in student and "Both editions." in student and "The end." in student
    assert "```{exercise} Try it" in student


def test_the_instructor_edition_keeps_the_listing_and_the_solution():
    instructor = _strip(CHAPTER, "instructor")
    assert ":pyobject: backward_staged" in instructor and "The answer." in instructor
    assert "The graph and a check to run." not in instructor


def test_an_unclosed_block_is_kept_rather_than_swallowing_the_chapter():
    text = "Before.\n\n````{only} instructor\nnever closed\n\nAfter.\n"
    assert _strip(text, "student") == text


def test_the_edition_comes_from_the_environment_then_the_configuration(monkeypatch):
    monkeypatch.delenv(edition.ENV_VAR, raising=False)
    assert edition.edition(None) == "student"
    assert edition.edition("instructor") == "instructor"
    monkeypatch.setenv(edition.ENV_VAR, "Instructor")
    assert edition.edition("student") == "instructor"
    monkeypatch.setenv(edition.ENV_VAR, "teacher")
    with pytest.raises(ConfigError, match="unknown edition 'teacher'"):
        edition.edition(None)


def _dry_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "book", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_make_book_builds_the_student_edition_unless_told_otherwise():
    student = _dry_run().stdout
    assert "BN_EDITION=student" in student and "--path-output ." in student
    instructor = _dry_run("EDITION=instructor").stdout
    assert "BN_EDITION=instructor" in instructor and "--path-output _build/instructor" in instructor
    # both editions share one execution cache
    cache = re.compile(r"BN_EXECUTION_CACHE=(\S+)")
    assert cache.search(student)[1] == cache.search(instructor)[1]


def test_make_book_refuses_an_unknown_edition():
    proc = subprocess.run(["make", "book", "EDITION=teacher"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "EDITION must be student or instructor, not 'teacher'" in proc.stderr


# --------------------------------------------------------------------------------------------
# The two builds of the session
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_only_the_instructor_edition_says_it_is_one(book_build, instructor_build):
    assert instructor_build.returncode == 0, instructor_build.log[-4000:]
    assert "building the instructor edition" in instructor_build.log
    for html, banner in ((book_build.html, False), (instructor_build.html, True)):
        page = (html / "book" / "backward.html").read_text()
        assert ("Instructor edition" in page) is banner, html


@pytest.mark.slow
def test_the_instructor_edition_ran_no_notebook_again(instructor_build):
    assert "Executed notebook in" not in instructor_build.log, \
        "the instructor edition executed chapters that the student edition had already run"


@pytest.mark.slow
def test_student_sources_and_downloads_hold_no_instructor_block(book_build):
    assert book_build.returncode == 0, book_build.log[-4000:]
    sources = book_build.html / "_sources"
    texts = [p.read_text() for p in sources.rglob("*.md")]
    texts += [c.source for p in sources.rglob("*.ipynb") for c in nbformat.read(p, as_version=4).cells]
    assert len(texts) > 50
    assert not [t for t in texts if "{only} instructor" in t or "{solution}" in t]
    assert any("{only} student" in t for t in texts), "the student blocks should stay in the student sources"
    # and the page itself: the instructor-only prose around a listing is gone too
    page = (book_build.html / "book" / "batch-mean.html").read_text()
    assert "makes that table with one transpose" not in page and "Three checks tell" in page


@pytest.mark.slow
def test_instructor_sources_keep_the_listings(instructor_build):
    md = (instructor_build.html / "_sources" / "book" / "backward.md").read_text()
    assert ":pyobject: backward_staged" in md and "{only} student" not in md
