"""support.seeds: mean and spread over seeds, counts, the choice of a learning rate, the command line."""

from __future__ import annotations

import json
import math

import pytest

from support import seeds
from support.seeds import Spread, ahead, best_rate, by_seed, count, level, spread


def test_spread_prints_mean_and_sample_standard_deviation():
    s = spread([0.90, 0.92, 0.94])
    assert s.n == 3 and s.mean == pytest.approx(0.92) and s.sd == pytest.approx(0.02)
    assert f"{s:.3f}" == "0.920 ± 0.020" and str(s) == "0.920 ± 0.020"
    assert f"{s:.1%}" == "92.0% ± 2.0%"
    assert (s.low, s.high) == (0.90, 0.94)
    assert spread([0.5]).sd == 0.0


def test_spread_refuses_a_diverged_run_unless_told_what_it_stands_for():
    with pytest.raises(ValueError, match="1 of 3 values are nan.*diverged="):
        spread([0.9, math.nan, 0.8])
    assert spread([0.9, math.nan, 0.8], diverged=0.1).values == (0.9, 0.1, 0.8)
    with pytest.raises(ValueError, match="no values"):
        spread([])


def test_level_and_ahead_compare_means_against_the_larger_spread():
    tight, wide = spread([0.90, 0.91, 0.92]), spread([0.88, 0.93, 0.98])  # sd 0.01 and 0.05
    assert level(tight, wide) and level(wide, tight)  # 0.02 apart, less than 0.05
    assert not ahead(wide, tight) and not ahead(tight, wide)
    far = spread([0.80, 0.81, 0.82])  # 0.10 below tight, ten of its spreads
    assert ahead(tight, far) and not ahead(far, tight) and not level(tight, far)
    edge = spread([-1.0, 0.0, 1.0])  # sd exactly 1: a gap of exactly one spread is still level
    assert level(spread([1.0]), edge) and not ahead(spread([1.0]), edge)
    for a, b in [(tight, wide), (tight, far), (spread([0.5]), spread([0.5])), (spread([0.5]), spread([0.6]))]:
        assert level(a, b) == (not ahead(a, b) and not ahead(b, a))


def test_count_compares_seed_by_seed():
    assert count(lambda a, b: a > b, [3, 1, 5], [2, 2, 2]) == (2, 3)
    with pytest.raises(ValueError, match="different numbers of seeds"):
        count(lambda a, b: a > b, [1, 2], [1])


def test_by_seed_turns_records_into_series():
    assert by_seed([{"a": 1, "b": [1]}, {"a": 2, "b": [2]}]) == {"a": [1, 2], "b": [[1], [2]]}


def test_best_rate_takes_the_highest_mean_final_accuracy_and_counts_divergence_as_chance():
    sweep = {
        "0.1": {"accuracy": [[0.5, 0.90], [0.5, 0.92]]},
        # the best single run, but one seed diverged: mean (0.99 + 0.1) / 2 < 0.91
        "1.0": {"accuracy": [[0.6, 0.99], [math.nan, math.nan]]},
        "0.01": {"accuracy": [[0.4, 0.80], [0.4, 0.95]]},  # a high first epoch does not count
    }
    assert best_rate(sweep, diverged=0.1) == 0.1
    assert best_rate(sweep, diverged=0.9) == 1.0


def test_regenerate_writes_results_that_load_back(tmp_path, monkeypatch):
    calls = []

    def run(jobs):
        calls.append(jobs)
        return {"value": 1}

    path = tmp_path / "results" / "toy.json"
    seeds.regenerate("Toy experiment.\n\nMore.", run, path, ["support.seeds:by_seed"], "make toy", argv=["--jobs", "2"])
    assert calls == [2]
    document = json.loads(path.read_text())
    assert document["data"] == {"value": 1} and document["command"] == "make toy"
    assert format(Spread((1.0, 1.0))) == "1.000 ± 0.000"  # the default format
