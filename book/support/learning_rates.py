r"""Five variants of the digits network, each at its own best learning rate, over several seeds.

The chapters "Batch norm and standardization" and "The 784-300-100-10 network on
handwritten digits" compare batch norm with the alternatives a careful user would try, so
every comparison has its fair baseline: the same 784-300-100-10 stack of linear layers and
ReLUs, with or without batch-norm layers, fed raw, scaled or standardized pixels
(:data:`VARIANTS`), each trained at the learning rate that suits it best.

The experiment has two stages, both run with plain SGD on batches of 64:

1. **Sweep.** Every variant is trained at every rate of :data:`RATES` for :data:`EPOCHS`
   epochs, with each seed of :data:`SWEEP_SEEDS`, on 3,500 training digits, and measured on
   the 500 held-out ones (:meth:`~support.experiments.Digits.holdout`): the test digits play
   no part in the choice. A variant's best rate is the one with the highest mean validation
   accuracy over seeds at the end, a diverged run counting as chance, 0.1
   (:func:`support.seeds.best_rate`).
2. **Curves.** Every variant is trained again at its best rate, with each seed of
   :data:`CURVE_SEEDS`, on all 4,000 training digits, and measured on the 1,000 test digits
   after every epoch.

A seed fixes the initial weights of the linear layers and the order of the batches, the same
for every variant, so that two variants trained with one seed differ only in what the
variant changes. The results are committed in ``book/results/learning_rates.json``;
regenerate them with (about 10 minutes of one core; ``--jobs 2`` uses two)::

    cd book && ../.venv/bin/python -m support.learning_rates
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from support import results
from support.experiments import TRAINING_CODE, Digits, digits_mlp, load_digits, run_all, train
from support.seeds import best_rate, by_seed, regenerate

__all__ = ["Variant", "VARIANTS", "RATES", "EPOCHS", "SWEEP_SEEDS", "CURVE_SEEDS", "N_VALIDATION",
           "RESULTS", "SOURCES", "COMMAND", "run", "load"]


@dataclass(frozen=True)
class Variant:
    """One way to build and feed the digits network.

    Args:
        label: what the book calls it.
        input_bn: a ``BatchNorm1d(784)`` first, on the pixels.
        hidden_bn: ``BatchNorm1d`` after each hidden ReLU.
        pixels: ``"raw"`` (grey levels 0 to 255), ``"scaled"`` (divided by 255) or
            ``"standardized"`` (each pixel by the training set's mean and standard deviation).
    """

    label: str
    input_bn: bool
    hidden_bn: bool
    pixels: str

    def data(self, digits: Digits) -> Digits:
        if self.pixels == "raw":
            return digits
        if self.pixels == "scaled":
            return digits.scaled(1 / 255)
        if self.pixels == "standardized":
            return digits.standardized()
        raise ValueError(f"pixels must be 'raw', 'scaled' or 'standardized', got {self.pixels!r}")

    def model(self, seed: int) -> nn.Sequential:
        return digits_mlp(input_bn=self.input_bn, hidden_bn=self.hidden_bn, seed=seed)


#: The variants, by key. "bn" is the course's network as it is; the others take away its
#: batch-norm layers one group at a time and prepare the pixels instead.
VARIANTS: dict[str, Variant] = {
    "bn": Variant("batch norm everywhere, raw pixels", input_bn=True, hidden_bn=True, pixels="raw"),
    "input_bn": Variant("BatchNorm1d(784) first only, raw pixels", input_bn=True, hidden_bn=False, pixels="raw"),
    "standardized": Variant("no batch norm, standardized pixels", input_bn=False, hidden_bn=False,
                            pixels="standardized"),
    "scaled": Variant("no batch norm, pixels / 255", input_bn=False, hidden_bn=False, pixels="scaled"),
    "raw": Variant("no batch norm, raw pixels", input_bn=False, hidden_bn=False, pixels="raw"),
}
#: Learning rates of the sweep: half decades from 1e-4 to 10.
RATES = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
EPOCHS = 8
BATCH_SIZE = 64
SWEEP_SEEDS = tuple(range(5))
CURVE_SEEDS = tuple(range(10))
N_VALIDATION = 500
#: What a diverged run's accuracy counts as when rates are compared: chance for ten digits.
CHANCE = 0.1

RESULTS = Path(__file__).resolve().parents[1] / "results" / "learning_rates.json"
COMMAND = "cd book && ../.venv/bin/python -m support.learning_rates"
SOURCES = ("support.learning_rates", *TRAINING_CODE, "support.seeds:spread", "support.seeds:Spread",
           "support.seeds:best_rate", "support.seeds:by_seed")


@functools.cache
def _data(key: str, validation: bool) -> Digits:
    data = VARIANTS[key].data(load_digits())
    return data.holdout(N_VALIDATION) if validation else data


def _run(key: str, lr: float, seed: int, validation: bool) -> dict[str, Any]:
    """One training run of variant ``key``: its per-epoch record, as JSON-able lists."""
    model = VARIANTS[key].model(seed)
    history = train(model, _data(key, validation), epochs=EPOCHS, lr=lr, batch_size=BATCH_SIZE, seed=seed)
    return {"train_loss": history.train_loss, "accuracy": history.test_accuracy, "diverged": history.diverged}


def run(jobs: int = 1, log=print) -> dict[str, Any]:
    """Both stages for every variant; the results as :func:`load` returns them."""
    start = time.perf_counter()
    tasks = [(key, lr, seed, True) for key in VARIANTS for lr in RATES for seed in SWEEP_SEEDS]
    log(f"sweep: {len(tasks)} runs of {EPOCHS} epochs")
    records = iter(run_all(_run, tasks, jobs))
    sweep = {key: {str(lr): by_seed([next(records) for _ in SWEEP_SEEDS]) for lr in RATES} for key in VARIANTS}
    best = {key: best_rate(sweep[key], diverged=CHANCE) for key in VARIANTS}
    log(f"best rates {best} after {time.perf_counter() - start:.0f} s")
    tasks = [(key, best[key], seed, False) for key in VARIANTS for seed in CURVE_SEEDS]
    log(f"curves: {len(tasks)} runs")
    records = iter(run_all(_run, tasks, jobs))
    curves = {key: by_seed([next(records) for _ in CURVE_SEEDS]) for key in VARIANTS}
    log(f"done in {time.perf_counter() - start:.0f} s")
    return {
        "parameters": {"rates": list(RATES), "epochs": EPOCHS, "batch_size": BATCH_SIZE,
                       "sweep_seeds": list(SWEEP_SEEDS), "curve_seeds": list(CURVE_SEEDS),
                       "n_validation": N_VALIDATION, "chance": CHANCE},
        "variants": {key: asdict(v) for key, v in VARIANTS.items()},
        "sweep": sweep,
        "best_rate": best,
        "curves": curves,
    }


def load() -> dict[str, Any]:
    """The committed results, refused (:class:`support.results.StaleResults`) if the code changed."""
    return results.load(RESULTS, SOURCES)


if __name__ == "__main__":
    regenerate(__doc__, run, RESULTS, SOURCES, COMMAND)
