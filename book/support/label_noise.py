r"""Does the noise of mini-batch statistics regularize? The digits network on partly wrong labels.

The chapter "Why mini-batch statistics" turns the noise of batch norm's statistics up and
down without changing anything else, and compares it with dropout and with neither. The
digits (pixels divided by 255) get 30 % of their training labels replaced by random digits
(:meth:`~support.experiments.Digits.with_noisy_labels`), a standard test of regularizers: a
network that memorizes the wrong labels does worse on the clean test digits.

Every configuration (:data:`CONFIGS`) trains the same stack of linear layers and ReLUs, from
the same initial weights for a given seed, with SGD (momentum 0.9) on batches of 256 for
:data:`EPOCHS` epochs:

- hidden batch norm whose statistics come from slices of 256 (the whole batch), 32, 8, 4 or
  2 examples (:class:`~support.experiments.GhostBatchNorm1d`): the gradient step is the same
  size, only the noise of the statistics changes;
- no batch norm but dropout (``p = 0.5``) after each hidden ReLU;
- neither, the plain baseline.

Every configuration is trained at every rate of :data:`RATES`, with each seed of
:data:`SEEDS`, on 3,500 of the (noisy) training digits. After every epoch it is measured on
its noisy training labels, on the other 500 training digits with their noisy labels (the
*validation* set), and on the 1,000 clean test digits. The chapter compares configurations
at one shared rate (only the noise, or the regularizer, changes) and each at its own best
rate, the one with the highest mean final validation accuracy
(:func:`support.seeds.best_rate`): accuracy on uniformly wrong labels is
``0.7 × clean accuracy + 0.03`` on average, so it ranks models as clean labels would, and
the test digits play no part in the choice.

The results are committed in ``book/results/label_noise.json``; regenerate them with (about
15 minutes of one core; ``--jobs 2`` uses two)::

    cd book && ../.venv/bin/python -m support.label_noise
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

__all__ = ["Config", "CONFIGS", "RATES", "SEEDS", "EPOCHS", "NOISE", "RESULTS", "SOURCES", "COMMAND",
           "run", "load"]


@dataclass(frozen=True)
class Config:
    """One way to train the network on noisy labels.

    Args:
        label: what the book calls it.
        ghost_size: hidden batch norm with statistics over slices of this many examples, or
            ``None`` for no batch norm.
        dropout: dropout probability after each hidden ReLU (0: none).
    """

    label: str
    ghost_size: int | None = None
    dropout: float = 0.0

    def model(self, seed: int) -> nn.Sequential:
        return digits_mlp(input_bn=False, hidden_bn=self.ghost_size is not None, ghost_size=self.ghost_size,
                          dropout=self.dropout, seed=seed)


CONFIGS: dict[str, Config] = {
    **{f"bn-{g}": Config(f"batch norm, statistics over {g}", ghost_size=g) for g in (256, 32, 8, 4, 2)},
    "dropout": Config("no batch norm, dropout 0.5", dropout=0.5),
    "plain": Config("no batch norm, no dropout"),
}
NOISE = 0.3  #: the fraction of training labels replaced by random digits
LABEL_SEED = 1  #: which labels are replaced, and by what
RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
SEEDS = tuple(range(5))
EPOCHS = 20
BATCH_SIZE = 256
MOMENTUM = 0.9
N_VALIDATION = 500
CHANCE = 0.1

RESULTS = Path(__file__).resolve().parents[1] / "results" / "label_noise.json"
COMMAND = "cd book && ../.venv/bin/python -m support.label_noise"
SOURCES = ("support.label_noise", *TRAINING_CODE, "support.seeds:spread", "support.seeds:Spread",
           "support.seeds:best_rate", "support.seeds:by_seed")


@functools.cache
def noisy_digits(validation: bool = False) -> Digits:
    """The digits, pixels divided by 255, with :data:`NOISE` of the training labels replaced.

    With ``validation=True``, the last :data:`N_VALIDATION` training digits (noisy labels
    included) are held out as the test part of the split.
    """
    data = load_digits().scaled(1 / 255).with_noisy_labels(NOISE, seed=LABEL_SEED)
    return data.holdout(N_VALIDATION) if validation else data


def _run(key: str, lr: float, seed: int) -> dict[str, Any]:
    clean = noisy_digits()
    history = train(CONFIGS[key].model(seed), noisy_digits(validation=True), epochs=EPOCHS, lr=lr,
                    batch_size=BATCH_SIZE, momentum=MOMENTUM, seed=seed,
                    also_measure={"test": (clean.x_test, clean.y_test)})
    return {"train_accuracy": history.train_accuracy, "accuracy": history.test_accuracy,
            "test_accuracy": history.accuracy_on["test"], "diverged": history.diverged}


def run(jobs: int = 1, log=print) -> dict[str, Any]:
    """Every configuration at every rate with every seed; the results as :func:`load` returns them.

    ``runs[key][str(rate)]`` holds, per seed and epoch, ``train_accuracy`` (noisy training
    labels), ``accuracy`` (noisy validation labels) and ``test_accuracy`` (clean test digits).
    """
    start = time.perf_counter()
    tasks = [(key, lr, seed) for key in CONFIGS for lr in RATES for seed in SEEDS]
    log(f"{len(tasks)} runs of {EPOCHS} epochs")
    records = iter(run_all(_run, tasks, jobs))
    runs = {key: {str(lr): by_seed([next(records) for _ in SEEDS]) for lr in RATES} for key in CONFIGS}
    log(f"done in {time.perf_counter() - start:.0f} s")
    labels, clean = noisy_digits(validation=True), load_digits().holdout(N_VALIDATION)
    return {
        "parameters": {"noise": NOISE, "label_seed": LABEL_SEED, "rates": list(RATES), "seeds": list(SEEDS),
                       "epochs": EPOCHS, "batch_size": BATCH_SIZE, "momentum": MOMENTUM,
                       "n_validation": N_VALIDATION, "chance": CHANCE},
        "right_labels": (labels.y_train == clean.y_train).float().mean().item(),
        "configs": {key: asdict(c) for key, c in CONFIGS.items()},
        "runs": runs,
        "best_rate": {key: best_rate(runs[key], diverged=CHANCE) for key in CONFIGS},
    }


def load() -> dict[str, Any]:
    """The committed results, refused (:class:`support.results.StaleResults`) if the code changed."""
    return results.load(RESULTS, SOURCES)


if __name__ == "__main__":
    regenerate(__doc__, run, RESULTS, SOURCES, COMMAND)
