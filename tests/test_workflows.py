"""The GitHub Actions workflows: what can be checked without GitHub.

``book.yml`` builds the book with ``make`` and deploys it with GitHub's Pages actions;
``test.yml`` runs ``make test``. These tests check that each file is valid YAML with the
shape Actions expects, that the triggers and permissions are those Pages needs, that every
``run:`` step calls something that exists (a target of the Makefile, a script of this
repository, a command this Debian-like machine has), that every ``uses:`` step names an
official action at a pinned major version, and that the paths the steps name are the ones
the Makefile and the book's configuration produce.
"""

from __future__ import annotations

import glob
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
BOOK, TESTS = WORKFLOWS / "book.yml", WORKFLOWS / "test.yml"

#: GitHub's own actions, each at the major version these workflows were written for
OFFICIAL = re.compile(r"^actions/[a-z0-9-]+@v\d+$")


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def uses(workflow: dict, action: str) -> list[dict]:
    return [s for s in steps(workflow) if s.get("uses", "").split("@")[0] == action]


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*)\s*:(?!=)", text, flags=re.M))


@pytest.fixture(params=[BOOK, TESTS], ids=lambda p: p.name)
def workflow_file(request) -> Path:
    return request.param


def test_workflows_are_valid_yaml_with_jobs_and_steps(workflow_file):
    workflow = load(workflow_file)
    assert isinstance(workflow.get("name"), str) and workflow["on"], workflow_file
    assert workflow["jobs"], f"{workflow_file.name} has no jobs"
    for name, job in workflow["jobs"].items():
        assert job.get("runs-on") == "ubuntu-latest", (name, job.get("runs-on"))
        assert job.get("steps"), f"job {name} has no steps"
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), f"a step needs exactly one of run/uses: {step}"
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            assert need in workflow["jobs"], f"job {name} needs an unknown job {need}"


def test_every_action_is_official_and_pinned_to_a_major_version(workflow_file):
    for step in steps(load(workflow_file)):
        if "uses" in step:
            assert OFFICIAL.match(step["uses"]), f"{workflow_file.name}: {step['uses']} is not actions/<name>@v<major>"


def _commands(script: str) -> list[list[str]]:
    """The commands of a ``run:`` script: one word list per line, continuation lines joined."""
    lines = script.replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if shlex.split(line, comments=True)]


def test_every_run_step_calls_something_that_exists(workflow_file):
    targets = make_targets()
    for step in steps(load(workflow_file)):
        for words in _commands(step.get("run", "")):
            if words[0] == "sudo":
                words = words[1:]
            command, args = words[0], words[1:]
            if command == "make":
                goals = [a for a in args if not a.startswith("-") and "=" not in a]
                assert all(g in targets for g in goals), f"make targets {goals}: the Makefile has {sorted(targets)}"
            elif "/" in command:
                script = REPO / command
                assert script.is_file() and script.stat().st_mode & 0o111, f"{command} is not a script here"
            else:
                assert shutil.which(command) or Path("/usr/sbin", command).exists(), f"no command {command}"


def test_the_book_is_built_and_deployed_on_every_push_to_main():
    workflow = load(BOOK)
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in workflow["on"]
    # exactly what GitHub's Pages starter workflows grant
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert workflow["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    names = [s["run"].strip() if "run" in s else s["uses"].split("@")[0] for s in build["steps"]]
    # the address is known before the build, and the build is uploaded after it
    order = ["actions/checkout", "actions/configure-pages", "make", "actions/upload-pages-artifact"]
    positions = [names.index(n) for n in order]
    assert positions == sorted(positions), names


def test_the_book_workflow_builds_with_the_readmes_make_and_the_pages_address():
    step = next(s for s in steps(load(BOOK)) if "run" in s)
    assert step["run"].strip() == "make", "the README's one command for a fresh machine"
    pages = uses(load(BOOK), "actions/configure-pages")[0]
    assert step["env"]["BN_BOOK_URL"] == "${{ steps." + pages["id"] + ".outputs.base_url }}"
    readme = (REPO / "README.md").read_text()
    assert "```bash\nmake " in readme


def test_the_uploaded_site_is_where_make_builds_it():
    upload = uses(load(BOOK), "actions/upload-pages-artifact")[0]
    assert upload["with"]["path"] == "_build/html"
    book_recipe = re.search(r"^book:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), flags=re.M).group(1)
    assert "jupyter-book build" in book_recipe, book_recipe
    # The student edition (the default, what the workflow publishes) builds into the checkout's _build/html.
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^EDITION \?= student$", makefile, flags=re.M), "make book builds the student edition"
    assert re.search(r"^BOOK_OUTPUT_student := \.$", makefile, flags=re.M), "the student edition goes to ./_build/html"
    assert "--path-output $(BOOK_OUTPUT_$(EDITION))" in book_recipe, book_recipe


@pytest.mark.parametrize("path", [BOOK, TESTS], ids=lambda p: p.name)
def test_the_venv_cache_is_keyed_on_what_installs_it(path):
    cache = [s for s in uses(load(path), "actions/cache") if s["with"]["path"] == ".venv"]
    assert len(cache) == 1
    key = cache[0]["with"]["key"]
    assert "hashFiles('pyproject.toml', 'constraints.txt')" in key, key
    assert "steps.python.outputs.python-version" in key, "the venv links to one exact Python"


def test_the_execution_cache_is_the_books_and_keyed_on_its_sources():
    cache = [s for s in uses(load(BOOK), "actions/cache") if s["with"]["path"] == "_build/.jupyter_cache"]
    assert len(cache) == 1
    assert "_build/.jupyter_cache" in (REPO / "README.md").read_text()
    patterns = re.findall(r"'([^']+)'", re.search(r"hashFiles\(([^)]*)\)", cache[0]["with"]["key"]).group(1))
    assert "book/**" in patterns and "_toc.yml" in patterns and "_config.yml" in patterns, patterns
    for pattern in patterns:  # each one matches files, or the key would not follow them
        assert glob.glob(str(REPO / pattern), recursive=True), f"{pattern} matches nothing"


def test_the_tests_workflow_runs_make_test_on_pushes_and_pull_requests():
    workflow = load(TESTS)
    assert workflow["on"]["push"]["branches"] == ["main"] and "pull_request" in workflow["on"]
    assert workflow["permissions"] == {"contents": "read"}
    runs = [s["run"].strip() for s in steps(workflow) if "run" in s]
    assert runs[-1] == "make test", runs
    ci = (REPO / ".ci" / "run").read_text()
    assert "exec make test" in ci, "CI and the workflow run the same command"


@pytest.mark.parametrize("path", [BOOK, TESTS], ids=lambda p: p.name)
def test_the_runner_installs_torch_s_cpu_wheel(path):
    jobs = load(path)["jobs"]
    installing = [job for job in jobs.values() if any("make" in str(s.get("run", "")).split() for s in job["steps"])]
    assert installing and all(job.get("env", {}).get("PIP_EXTRA_INDEX_URL") == "https://download.pytorch.org/whl/cpu"
                              for job in installing), "without the CPU index, pip takes PyPI's CUDA build of torch"
