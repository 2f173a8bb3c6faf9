r"""Batch norm, layer norm and group norm in the digits network, at batch sizes from 2 to 256.

The chapter "The normalization family" measures what the batch size does to each
normalization. The network is the 784-300-100-10 network without its first
``BatchNorm1d(784)`` (pixels divided by 255), whose two hidden normalization layers are one
of :data:`NORMS` (:func:`normalized_mlp`): PyTorch's ``BatchNorm1d``, whose statistics come
from the batch; ``LayerNorm``, over each example's features; or ``GroupNorm`` with
:data:`GROUPS` groups of features. A hidden layer's batch norm takes its statistics from
:math:`m = N` values, so small batches hurt it most: the case the chapter wants to show.

The experiment has two stages, both with SGD (momentum 0.9) for :data:`EPOCHS` epochs on
3,500 training digits, with each seed of :data:`SEEDS`:

1. **Rates.** Every normalization is trained on batches of :data:`REFERENCE_BATCH` at each
   learning rate of :data:`RATE_SCALES` and measured on the other 500 training digits (the
   *validation* set); its best rate is the one with the highest mean final validation
   accuracy (:func:`support.seeds.best_rate`). The test digits play no part in the choice.
2. **Batch sizes.** Every normalization is trained at every batch size of
   :data:`BATCH_SIZES` with the linear scaling rule of Goyal et al. (2017): learning rate
   ``best * batch_size / 64`` (:func:`learning_rate`), so that every run sees the same
   digits as often and moves its weights about as far per epoch; it is measured on the
   validation and on the 1,000 test digits after every epoch.

A seed fixes the initial weights (the same for every normalization) and the order of the
batches.

The results are committed in ``book/results/batch_sizes.json``; regenerate them with
(about 6 minutes of one core; ``--jobs 2`` uses two)::

    cd book && ../.venv/bin/python -m support.batch_sizes
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from torch import nn

from support import results
from support.experiments import TRAINING_CODE, Digits, digits_mlp, load_digits, run_all, train
from support.seeds import best_rate, by_seed, regenerate

__all__ = ["NORMS", "GROUPS", "BATCH_SIZES", "REFERENCE_BATCH", "RATE_SCALES", "SEEDS", "EPOCHS", "MOMENTUM",
           "N_VALIDATION", "CHANCE", "RESULTS", "SOURCES", "COMMAND", "normalized_mlp", "learning_rate", "digits",
           "run", "load"]

#: The normalization layers of the hidden layers, by key, with what the book calls them.
NORMS: dict[str, str] = {"batch": "batch norm", "layer": "layer norm", "group": "group norm (10 groups)"}
#: Groups of the group norm: 30 features per group in the first hidden layer, 10 in the second.
GROUPS = 10
BATCH_SIZES = (2, 4, 16, 64, 256)
#: The batch size at which each normalization's learning rate is chosen.
REFERENCE_BATCH = 64
#: The learning rates of the sweep, at batches of :data:`REFERENCE_BATCH`.
RATE_SCALES = (0.01, 0.03, 0.1, 0.3)
SEEDS = tuple(range(5))
EPOCHS = 2
MOMENTUM = 0.9
N_VALIDATION = 500
#: What a diverged run's accuracy counts as when rates are compared: chance for ten digits.
CHANCE = 0.1

RESULTS = Path(__file__).resolve().parents[1] / "results" / "batch_sizes.json"
COMMAND = "cd book && ../.venv/bin/python -m support.batch_sizes"
SOURCES = ("support.batch_sizes", *TRAINING_CODE, "support.seeds:spread", "support.seeds:Spread",
           "support.seeds:best_rate", "support.seeds:by_seed")


def normalized_mlp(norm: str, seed: int = 0) -> nn.Sequential:
    """The digits network (no input batch norm) with hidden normalization layers of kind ``norm``.

    ``digits_mlp(input_bn=False, seed=seed)`` with each hidden ``BatchNorm1d(c)`` kept
    (``"batch"``) or replaced by ``LayerNorm(c)`` (``"layer"``) or ``GroupNorm(GROUPS, c)``
    (``"group"``): the linear layers' initial weights are the same for every ``norm``.

    Raises:
        ValueError: for a ``norm`` not in :data:`NORMS`.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    layers = list(digits_mlp(input_bn=False, hidden_bn=True, seed=seed))
    for k, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm1d) and norm != "batch":
            c = layer.num_features
            layers[k] = nn.LayerNorm(c) if norm == "layer" else nn.GroupNorm(GROUPS, c)
    return nn.Sequential(*layers)


def learning_rate(scale: float, batch_size: int) -> float:
    """The linear scaling rule: ``scale`` at batches of :data:`REFERENCE_BATCH`, proportional to the batch size."""
    return scale * batch_size / REFERENCE_BATCH


@functools.cache
def digits(validation: bool = False) -> Digits:
    """The digits, pixels divided by 255; with ``validation``, the last 500 training digits held out."""
    data = load_digits().scaled(1 / 255)
    return data.holdout(N_VALIDATION) if validation else data


def _run(norm: str, batch_size: int, scale: float, seed: int) -> dict[str, Any]:
    """One training run: its per-epoch record, as JSON-able lists."""
    test = digits()
    history = train(normalized_mlp(norm, seed), digits(validation=True), epochs=EPOCHS,
                    lr=learning_rate(scale, batch_size), batch_size=batch_size, momentum=MOMENTUM, seed=seed,
                    also_measure={"test": (test.x_test, test.y_test)})
    return {"accuracy": history.test_accuracy, "test_accuracy": history.accuracy_on["test"],
            "train_accuracy": history.train_accuracy, "diverged": history.diverged}


def run(jobs: int = 1, log=print) -> dict[str, Any]:
    """Both stages for every normalization; the results as :func:`load` returns them.

    ``sweep[norm][str(scale)]`` and ``runs[norm][str(batch_size)]`` hold, per seed and
    epoch, ``accuracy`` (the validation digits), ``test_accuracy`` and ``train_accuracy``;
    ``best_scale[norm]`` is the rate chosen at batches of :data:`REFERENCE_BATCH`.
    """
    start = time.perf_counter()
    tasks = [(norm, REFERENCE_BATCH, s, seed) for norm in NORMS for s in RATE_SCALES for seed in SEEDS]
    log(f"rates: {len(tasks)} runs of {EPOCHS} epochs")
    records = iter(run_all(_run, tasks, jobs))
    sweep = {norm: {str(s): by_seed([next(records) for _ in SEEDS]) for s in RATE_SCALES} for norm in NORMS}
    best = {norm: best_rate(sweep[norm], diverged=CHANCE) for norm in NORMS}
    log(f"best rates {best} after {time.perf_counter() - start:.0f} s")
    tasks = [(norm, b, best[norm], seed) for norm in NORMS for b in BATCH_SIZES for seed in SEEDS]
    log(f"batch sizes: {len(tasks)} runs")
    records = iter(run_all(_run, tasks, jobs))
    runs = {norm: {str(b): by_seed([next(records) for _ in SEEDS]) for b in BATCH_SIZES} for norm in NORMS}
    log(f"done in {time.perf_counter() - start:.0f} s")
    return {
        "parameters": {"batch_sizes": list(BATCH_SIZES), "reference_batch": REFERENCE_BATCH,
                       "rate_scales": list(RATE_SCALES), "seeds": list(SEEDS), "epochs": EPOCHS,
                       "momentum": MOMENTUM, "groups": GROUPS, "n_validation": N_VALIDATION, "chance": CHANCE},
        "norms": NORMS,
        "sweep": sweep,
        "best_scale": best,
        "runs": runs,
    }


def load() -> dict[str, Any]:
    """The committed results, refused (:class:`support.results.StaleResults`) if the code changed."""
    return results.load(RESULTS, SOURCES)


if __name__ == "__main__":
    regenerate(__doc__, run, RESULTS, SOURCES, COMMAND)
