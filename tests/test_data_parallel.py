"""support.data_parallel: the chapter's three ways of training over processes.

The processes' runs themselves are the chapter's (executed by the book build) and, for
SyncBatchNorm's equality with one batch norm, tests/test_sync.py's. Here: the committed
results come from the current code, the single-process parts, and the summaries.
"""

from __future__ import annotations

import pytest

from support import data_parallel as dp
from support import results
from support.experiments import load_digits


def test_the_committed_accuracy_results_come_from_the_current_code():
    """Fails when code they depend on changed: regenerate with the command in the message."""
    report = dp.load_accuracy()
    assert report["world_size"] == 2 and report["seeds"] >= 5
    for batch_size in report["batch_sizes"]:
        for mode in dp.MODES:
            _, _, values = dp.accuracy_over_seeds(report, batch_size, mode)
            assert len(values) == report["seeds"], (batch_size, mode)


def test_the_fingerprint_names_code_that_exists():
    assert results.fingerprint(dp.SOURCES)


def test_one_process_training_is_seeded():
    data = load_digits()
    setup = dp.Setup(batch_size=32, epochs=1, max_steps=3)
    a, _ = dp.train(setup, "one process", data)
    b, _ = dp.train(setup, "one process", data)
    assert all((x == y).all() for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_modes_and_world_sizes_that_do_not_go_together_are_refused():
    data = load_digits()
    with pytest.raises(ValueError, match="must be one of"):
        dp.train(dp.Setup(), "ghost BN", data)
    with pytest.raises(ValueError, match="runs on several"):
        dp.train(dp.Setup(), "SyncBN", data)
    with pytest.raises(ValueError, match="does not split into 3 equal slices"):
        dp.train(dp.Setup(batch_size=64), "SyncBN", data, rank=0, world_size=3)


def test_accuracy_over_seeds_gives_mean_and_sample_standard_deviation():
    report = {"runs": [{"setup": {"batch_size": 8}, "mode": "SyncBN", "test_accuracy": [0.5, v]}
                       for v in (0.8, 0.9, 1.0)]}
    mean, sd, values = dp.accuracy_over_seeds(report, 8, "SyncBN")
    assert values == [0.8, 0.9, 1.0] and mean == pytest.approx(0.9) and sd == pytest.approx(0.1)
