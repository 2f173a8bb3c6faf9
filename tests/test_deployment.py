"""support.deployment: the folded digits network timed against the unfolded one, side by side.

No timed assertion here (machine-speed numbers belong to the benchmark's output): the tests
check what the report holds and that it compares the right things.
"""

from __future__ import annotations

import pytest
import torch

from support import deployment


def test_benchmark_reports_both_times_their_ratio_and_the_load():
    timings = deployment.benchmark(batches=(1, 64), rounds=3)
    assert [t.batch for t in timings] == [1, 64]
    for t in timings:
        assert t.rounds == 3 and t.calls >= 1 and t.same_predictions
        assert t.unfolded_ms > 0 and t.folded_ms > 0
        assert t.ratio_low <= t.ratio <= t.ratio_high
        assert t.cores >= 1 and t.load_before >= 0
    table = deployment.format_table(timings)
    assert "folded/unfolded" in table and "load" in table and "on " in table


def test_a_busy_machine_is_said_so(monkeypatch):
    timings = deployment.benchmark(batches=(2,), rounds=2)
    busy = [t.__class__(**{**t.__dict__, "load_before": 4.0 * t.cores}) for t in timings]
    assert busy[0].busy
    assert "the machine was busy" in deployment.format_table(busy)


def test_models_in_training_mode_are_refused():
    from support.experiments import digits_mlp

    model = digits_mlp()
    with pytest.raises(ValueError, match="evaluation mode"):
        deployment.time_side_by_side(model, model, torch.rand(4, 784))


def test_the_command_line_prints_the_table(capsys):
    assert deployment.main(["--rounds", "2", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "folded/unfolded" in out and "     3" in out
