"""support.results: committed results are tied to the source of the code that produced them."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from support import results


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    """A throwaway module ``toy_experiment`` with two functions, importable from tmp_path."""
    path = tmp_path / "toy_experiment.py"

    def write(body: str):
        path.write_text(textwrap.dedent(body))
        sys.modules.pop("toy_experiment", None)
        return path

    monkeypatch.syspath_prepend(str(tmp_path))
    write("""
        def produce():
            return 1

        def helper():
            return 2
    """)
    yield write
    sys.modules.pop("toy_experiment", None)


def test_saved_results_load_back_with_their_data(experiment, tmp_path):
    results.save(tmp_path / "r.json", {"accuracy": [0.9, 0.91]}, ["toy_experiment:produce"], command="make it")
    assert results.load(tmp_path / "r.json", ["toy_experiment:produce"]) == {"accuracy": [0.9, 0.91]}
    stored = json.loads((tmp_path / "r.json").read_text())
    assert stored["command"] == "make it" and stored["made"]["torch"]


def test_a_change_in_the_named_code_makes_the_results_stale(experiment, tmp_path):
    results.save(tmp_path / "r.json", [1], ["toy_experiment:produce"], command="python -m toy_experiment")
    experiment("""
        def produce():
            return 1 + 0  # changed

        def helper():
            return 2
    """)
    with pytest.raises(results.StaleResults, match=r"other code .* regenerate it with `python -m toy_experiment`"):
        results.load(tmp_path / "r.json", ["toy_experiment:produce"])


def test_a_change_elsewhere_in_the_module_leaves_an_object_fingerprint_alone(experiment):
    before = results.fingerprint(["toy_experiment:produce"])
    whole = results.fingerprint(["toy_experiment"])
    experiment("""
        def produce():
            return 1

        def helper():
            return 3
    """)
    assert results.fingerprint(["toy_experiment:produce"]) == before
    assert results.fingerprint(["toy_experiment"]) != whole


def test_missing_results_and_other_sources_are_refused(experiment, tmp_path):
    with pytest.raises(results.StaleResults, match="does not exist"):
        results.load(tmp_path / "none.json", ["toy_experiment"])
    results.save(tmp_path / "r.json", [1], ["toy_experiment:produce"], command="c")
    with pytest.raises(results.StaleResults, match="was made from"):
        results.load(tmp_path / "r.json", ["toy_experiment:helper"])
