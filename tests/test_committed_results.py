"""The book's committed results (book/results/*.json) come from the current code and its command.

Each experiment module of book/support/ commits its results with a fingerprint of its
source and of the training code it uses; the chapters load them with the module's
``load()``, which refuses results whose code has changed. These tests fail on a fresh
clone when an experiment was edited and its results were not regenerated.
"""

from __future__ import annotations

import json

import pytest

from support import (
    batch_sizes,
    conv_digits,
    eval_statistics,
    forgot_train,
    label_noise,
    learning_rates,
    results,
    why_it_helps,
)

EXPERIMENTS = [learning_rates, label_noise, eval_statistics, forgot_train, conv_digits, batch_sizes, why_it_helps]


@pytest.mark.parametrize("module", EXPERIMENTS, ids=lambda m: m.__name__)
def test_committed_results_come_from_the_current_code_and_command(module):
    data = module.load()  # raises StaleResults, naming the command, if the code changed
    document = json.loads(module.RESULTS.read_text())
    assert document["command"] == module.COMMAND == f"cd book && ../.venv/bin/python -m {module.__name__}"
    assert document["sources"][0] == module.__name__  # the whole experiment module, parameters included
    assert data["parameters"], "the results record the parameters they were made with"
    assert module.RESULTS.parent.name == "results" and module.RESULTS.name == f"{module.__name__.split('.')[-1]}.json"


@pytest.mark.parametrize("module", EXPERIMENTS, ids=lambda m: m.__name__)
def test_an_edit_to_the_experiment_makes_its_results_stale(module, monkeypatch):
    source = results._source

    def edited(name):
        return source(name) + ("\nEPOCHS = 1  # edited\n" if name == module.__name__ else "")

    monkeypatch.setattr(results, "_source", edited)
    with pytest.raises(results.StaleResults, match=f"regenerate it with `{module.COMMAND}`"):
        module.load()


def test_an_edit_to_the_training_code_makes_every_result_stale(monkeypatch):
    source = results._source
    monkeypatch.setattr(results, "_source",
                        lambda name: source(name) + ("  # edited" if name == "support.experiments:train" else ""))
    for module in EXPERIMENTS:
        with pytest.raises(results.StaleResults):
            module.load()
