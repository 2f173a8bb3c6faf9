r"""A small CNN on the digits with and without BatchNorm2d, each at its own best learning rate.

The chapter "Batch norm for convolutions" asks what ``BatchNorm2d`` after each convolution
does for a small convolutional network (:func:`support.convnets.digits_cnn`) on the 28×28
digits, pixels divided by 255. A fair answer gives each network the learning rate that
suits it: both are trained at every rate of :data:`RATES`, with each seed of :data:`SEEDS`,
with plain SGD on batches of :data:`BATCH_SIZE` for :data:`EPOCHS` epochs, on 3,500 training
digits. After every epoch each run is measured on the other 500 training digits (the
*validation* set, which chooses each network's best rate: :func:`support.seeds.best_rate`)
and on the 1,000 test digits, which play no part in the choice.

A seed fixes the initial weights of the convolutions and of the linear layer, and the order
of the batches, the same for both networks. The results are committed in
``book/results/conv_digits.json``; regenerate them with (about 4 minutes of one core)::

    cd book && ../.venv/bin/python -m support.conv_digits
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from support import results
from support.convnets import digits_cnn
from support.experiments import TRAINING_CODE, Digits, load_digits, run_all, train
from support.seeds import best_rate, by_seed, regenerate

__all__ = ["CONFIGS", "RATES", "SEEDS", "EPOCHS", "BATCH_SIZE", "N_VALIDATION", "CHANCE", "RESULTS",
           "SOURCES", "COMMAND", "digits", "run", "load"]

#: The two networks, by key: the normalization after each convolution, and what the book calls it.
CONFIGS: dict[str, dict[str, str]] = {
    "bn": {"norm": "batch", "label": "BatchNorm2d after each convolution"},
    "plain": {"norm": "none", "label": "no normalization"},
}
#: Learning rates of the sweep: half decades from 0.01 to 3.
RATES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
SEEDS = tuple(range(5))
EPOCHS = 3
BATCH_SIZE = 64
N_VALIDATION = 500
#: What a diverged run's accuracy counts as when rates are compared: chance for ten digits.
CHANCE = 0.1

RESULTS = Path(__file__).resolve().parents[1] / "results" / "conv_digits.json"
COMMAND = "cd book && ../.venv/bin/python -m support.conv_digits"
SOURCES = ("support.conv_digits", "support.convnets", *TRAINING_CODE, "support.seeds:spread",
           "support.seeds:Spread", "support.seeds:best_rate", "support.seeds:by_seed")


@functools.cache
def digits(validation: bool = False) -> Digits:
    """The digits, pixels divided by 255; with ``validation``, the last 500 training digits held out."""
    data = load_digits().scaled(1 / 255)
    return data.holdout(N_VALIDATION) if validation else data


def _run(key: str, lr: float, seed: int) -> dict[str, Any]:
    """One training run of network ``key``: its per-epoch record, as JSON-able lists."""
    test = digits()
    model = digits_cnn(CONFIGS[key]["norm"], seed=seed)
    history = train(model, digits(validation=True), epochs=EPOCHS, lr=lr, batch_size=BATCH_SIZE, seed=seed,
                    also_measure={"test": (test.x_test, test.y_test)})
    return {"train_loss": history.train_loss, "accuracy": history.test_accuracy,
            "test_accuracy": history.accuracy_on["test"], "diverged": history.diverged}


def run(jobs: int = 1, log=print) -> dict[str, Any]:
    """Both networks at every rate with every seed; the results as :func:`load` returns them.

    ``runs[key][str(rate)]`` holds, per seed and epoch, ``train_loss``, ``accuracy`` (the
    validation digits) and ``test_accuracy``.
    """
    start = time.perf_counter()
    tasks = [(key, lr, seed) for key in CONFIGS for lr in RATES for seed in SEEDS]
    log(f"{len(tasks)} runs of {EPOCHS} epochs")
    records = iter(run_all(_run, tasks, jobs))
    runs = {key: {str(lr): by_seed([next(records) for _ in SEEDS]) for lr in RATES} for key in CONFIGS}
    log(f"done in {time.perf_counter() - start:.0f} s")
    return {
        "parameters": {"rates": list(RATES), "seeds": list(SEEDS), "epochs": EPOCHS, "batch_size": BATCH_SIZE,
                       "n_validation": N_VALIDATION, "chance": CHANCE},
        "configs": CONFIGS,
        "runs": runs,
        "best_rate": {key: best_rate(runs[key], diverged=CHANCE) for key in CONFIGS},
    }


def load() -> dict[str, Any]:
    """The committed results, refused (:class:`support.results.StaleResults`) if the code changed."""
    return results.load(RESULTS, SOURCES)


if __name__ == "__main__":
    regenerate(__doc__, run, RESULTS, SOURCES, COMMAND)
