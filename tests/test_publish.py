"""Publishing: ``make publish`` to a gh-pages branch, the site's address, the icons.

``make publish`` builds the book, then ``make publish-site`` pushes it; the tests push a tiny
site of their own (building the whole book is the job of tests/test_book.py) from a
throwaway checkout to a throwaway bare repository, the remote. The site's address comes from
one setting read in two places (the book's Sphinx extension ``book/_ext/site_address.py``,
and the release of the student notebooks): both must read it the same way.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.course.spec import CHAPTERS
from autograder.nbgrader_ext.release import book_url, release

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = REPO / "Makefile"
STATIC = REPO / "book" / "_static"


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


site_address = _module(REPO / "book" / "_ext" / "site_address.py", "site_address")
make_icons = _module(STATIC / "make_icons.py", "make_icons")


# --------------------------------------------------------------------------------------------
# make publish
# --------------------------------------------------------------------------------------------


def _git(*args, cwd: Path | None = None, env=None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture
def git_env(tmp_path):
    """A git identity of its own, and no user or system configuration."""
    return dict(
        os.environ,
        GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"), GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Course Staff", GIT_AUTHOR_EMAIL="staff@example.org",
        GIT_COMMITTER_NAME="Course Staff", GIT_COMMITTER_EMAIL="staff@example.org",
    )


@pytest.fixture
def remote(tmp_path, git_env) -> Path:
    path = tmp_path / "remote.git"
    _git("init", "--quiet", "--bare", str(path), env=git_env)
    return path


def _checkout(tmp_path: Path, name: str, git_env) -> Path:
    """A fresh clone of the course repository, as an instructor would have (here: an empty one)."""
    path = tmp_path / name
    _git("init", "--quiet", str(path), env=git_env)
    return path


def _site(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _publish(checkout: Path, site: Path, remote: Path, git_env, *extra: str) -> subprocess.CompletedProcess:
    """``make publish-site`` with this repository's Makefile, run in ``checkout``."""
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(MAKEFILE), "-C", str(checkout), "publish-site",
         f"SITE={site}", f"PUBLISH_REMOTE={remote}", f"VENV={sys.prefix}", *extra],
        capture_output=True, text=True, env=git_env, timeout=120,
    )


def _published(remote: Path, branch: str = "gh-pages") -> dict[str, str]:
    names = _git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", branch).split()
    return {n: _git("--git-dir", str(remote), "show", f"{branch}:{n}") for n in names}


def test_make_publish_pushes_the_site_with_nojekyll_to_gh_pages(tmp_path, remote, git_env):
    site = _site(tmp_path / "html", {"index.html": "<p>the book</p>\n", "_static/theme.css": "body {}\n"})
    proc = _publish(_checkout(tmp_path, "course", git_env), site, remote, git_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # .nojekyll: without it GitHub Pages runs Jekyll, which drops every folder named _*, _static/ too
    assert _published(remote) == {"index.html": "<p>the book</p>\n", "_static/theme.css": "body {}\n", ".nojekyll": ""}


def test_publishing_again_replaces_the_site_even_from_another_checkout(tmp_path, remote, git_env):
    first = _site(tmp_path / "v1", {"index.html": "v1\n", "book/old-chapter.html": "gone soon\n"})
    assert _publish(_checkout(tmp_path, "a", git_env), first, remote, git_env).returncode == 0
    # another machine: no local gh-pages branch, the remote's holds the first site
    second = _site(tmp_path / "v2", {"index.html": "v2\n"})
    proc = _publish(_checkout(tmp_path, "b", git_env), second, remote, git_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _published(remote) == {"index.html": "v2\n", ".nojekyll": ""}


def test_publish_takes_the_branch_from_the_command_line(tmp_path, remote, git_env):
    site = _site(tmp_path / "html", {"index.html": "x\n"})
    proc = _publish(_checkout(tmp_path, "c", git_env), site, remote, git_env, "PUBLISH_BRANCH=site")
    assert proc.returncode == 0, proc.stderr
    assert set(_published(remote, "site")) == {"index.html", ".nojekyll"}
    assert "gh-pages" not in _git("--git-dir", str(remote), "branch")


def test_publish_without_a_built_site_says_so_and_pushes_nothing(tmp_path, remote, git_env):
    proc = _publish(_checkout(tmp_path, "d", git_env), tmp_path / "not-built", remote, git_env)
    assert proc.returncode != 0
    assert "index.html is missing: build the book first" in proc.stderr, proc.stderr
    assert _git("--git-dir", str(remote), "branch") == ""


def test_make_publish_builds_before_it_pushes():
    rule = re.search(r"^publish:(.*)\n((?:\t.*\n)+)", MAKEFILE.read_text(), flags=re.M)
    assert rule, "the Makefile has no publish target"
    assert "all" in rule.group(1).split(), "make publish must build (make all) first"
    assert "publish-site" in rule.group(2)


# --------------------------------------------------------------------------------------------
# The site's address
# --------------------------------------------------------------------------------------------


def test_base_url_ends_with_a_slash_and_the_environment_wins(monkeypatch):
    monkeypatch.delenv(site_address.ENV_VAR, raising=False)
    assert site_address.base_url("") == ""
    assert site_address.base_url(None) == ""
    assert site_address.base_url("https://org.github.io/course") == "https://org.github.io/course/"
    assert site_address.base_url("https://org.github.io/course/") == "https://org.github.io/course/"
    monkeypatch.setenv(site_address.ENV_VAR, "https://bn.example.edu")
    assert site_address.base_url("https://org.github.io/course/") == "https://bn.example.edu/"


@pytest.mark.parametrize(("url", "prefix"), [
    ("", "/"),
    ("https://bn.example.edu/", "/"),
    ("https://bn.example.edu", "/"),
    ("https://org.github.io/course/", "/course/"),
    ("https://org.github.io/a/b", "/a/b/"),
])
def test_the_404_pages_links_start_with_the_sites_path(url, prefix):
    assert site_address.url_prefix(url) == prefix


def _course_root(tmp_path: Path, baseurl: str) -> Path:
    (tmp_path / "_config.yml").write_text(f'title: t\nhtml:\n  baseurl: "{baseurl}"\n')
    return tmp_path


@pytest.mark.parametrize("env", [None, "https://bn.example.edu/course/"])
def test_the_book_and_the_release_agree_on_the_address(tmp_path, monkeypatch, env):
    if env is None:
        monkeypatch.delenv(site_address.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(site_address.ENV_VAR, env)
    root = _course_root(tmp_path, "https://org.github.io/course/")
    assert book_url(root) + "/" == site_address.base_url("https://org.github.io/course/")


@pytest.mark.slow
def test_with_html_baseurl_set_the_released_notebooks_link_every_chapter_on_the_web(tmp_path, monkeypatch):
    """``html.baseurl`` in _config.yml -> each ``book:`` link of a notebook, a link into the site."""
    monkeypatch.delenv(site_address.ENV_VAR, raising=False)
    url = "https://org.github.io/batch-normalization-course/"
    assignment = "bn-numpy-backward"
    (path,) = release([assignment], output=tmp_path / "release", db_url=f"sqlite:///{tmp_path / 'gb.db'}",
                      url=book_url(_course_root(tmp_path, url)))
    source = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    named = re.findall(r"\]\(book:([A-Za-z0-9_-]+)(#[^)\s]*)?\)",
                       "\n".join(c.source for c in source.cells if c.cell_type == "markdown"))
    assert named, "the notebook links no chapter"
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    for stem, anchor in named:
        assert stem in CHAPTERS
        assert f"({url}book/{stem}.html{anchor})" in text, f"book:{stem}{anchor} is not a web link"
    assert "](book:" not in text


# --------------------------------------------------------------------------------------------
# The icons
# --------------------------------------------------------------------------------------------


def test_committed_icons_are_what_make_icons_draws(tmp_path):
    from PIL import Image, ImageChops

    make_icons.write(tmp_path)
    assert (STATIC / "logo.svg").read_text() == (tmp_path / "logo.svg").read_text(), (
        "book/_static/logo.svg differs from what make_icons.py draws: run it again")
    committed = Image.open(STATIC / "favicon.ico")
    drawn = Image.open(io.BytesIO((tmp_path / "favicon.ico").read_bytes()))
    assert committed.ico.sizes() == drawn.ico.sizes() == {(s, s) for s in make_icons.FAVICON_SIZES}
    for size in make_icons.FAVICON_SIZES:
        a, b = committed.ico.getimage((size, size)), drawn.ico.getimage((size, size))
        assert a.size == b.size == (size, size), (a.size, b.size)
        diff = ImageChops.difference(a.convert("RGBA"), b.convert("RGBA")).getextrema()
        assert max(hi for _, hi in diff) <= 2, f"favicon.ico at {size} px differs from make_icons.py's"


def test_the_favicon_still_shows_a_bell_at_16_px():
    """The tile's blue at the corners' inside, white and amber under the curve, blue above it."""
    icon = _favicon_at(16)
    tile, band = _rgb(make_icons.TILE), _rgb(make_icons.BAND)
    assert _close(icon.getpixel((8, 11))[:3], band), "the centre under the curve should be amber"
    assert _close(icon.getpixel((2, 2))[:3], tile), "above the tails should be the tile"
    assert _close(icon.getpixel((8, 1))[:3], tile), "above the peak should be the tile"
    assert icon.getpixel((0, 0))[3] < 128, "the tile's corners are rounded (transparent)"


def _favicon_at(size: int):
    from PIL import Image

    return Image.open(STATIC / "favicon.ico").ico.getimage((size, size)).convert("RGBA")


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def _close(a, b, tolerance: int = 40) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))
