r"""Which statistics should a trained network predict with? Running averages, recomputed ones, or the batch's.

The chapter "train() and eval()" measures, for the digits network trained with each seed
of :data:`SEEDS` (:data:`EPOCHS` epochs of SGD at rate :data:`LR` on batches of 64, raw
pixels), its accuracy on the 1,000 test digits when each batch-norm layer normalizes with

- its running averages (``momentum=0.1``), as ``model.eval()`` does: ``"running"``;
- statistics recomputed after training over one pass of the training digits with the
  final weights, every batch weighted equally (``momentum=None``,
  :func:`recompute_statistics`): ``"recomputed"``, what Wu and Johnson (2021) call
  PreciseBN;
- the same, recomputed over the test digits instead (inputs only, no labels):
  ``"recomputed_on_test"``, to tell where the gain of the next item comes from;
- the statistics of the test batch itself, in training mode, for batches of each size of
  :data:`BATCH_SIZES`: ``"train_mode"``, and for batches of 100 digits of one label each:
  ``"train_mode_sorted"``;

and in evaluation mode again after one training-mode pass over the test digits in pairs,
which rewrites the running averages: ``"after_pairs"``.

The results are committed in ``book/results/eval_statistics.json``; regenerate them with
(about 2 minutes of one core)::

    cd book && ../.venv/bin/python -m support.eval_statistics
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from support import results
from support.experiments import (
    TRAINING_CODE,
    Digits,
    batch_norm_layers,
    digits_mlp,
    evaluate,
    evaluating,
    load_digits,
    run_all,
    train,
)
from support.seeds import by_seed, regenerate

__all__ = ["SEEDS", "EPOCHS", "LR", "BATCH_SIZES", "RESULTS", "SOURCES", "COMMAND", "accuracy_in_batches",
           "recompute_statistics", "measure", "run", "load"]

SEEDS = tuple(range(10))
EPOCHS = 5
LR = 0.1
BATCH_SIZE = 64
#: Sizes of the test batches fed in training mode (1,000 is the whole test set at once).
BATCH_SIZES = (1000, 250, 100, 32, 8, 4, 2)
SORTED_BATCH_SIZE = 100

RESULTS = Path(__file__).resolve().parents[1] / "results" / "eval_statistics.json"
COMMAND = "cd book && ../.venv/bin/python -m support.eval_statistics"


@torch.no_grad()
def accuracy_in_batches(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, training: bool) -> float:
    """Accuracy on ``(x, y)`` fed in consecutive batches, in training or evaluation mode, on a copy.

    A copy, because a training-mode pass rewrites the running statistics of the model it runs on.
    """
    copy_ = copy.deepcopy(model).train(training)
    hits = sum((copy_(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
               for i in range(0, len(y), batch_size))
    return hits / len(y)


@torch.no_grad()
def recompute_statistics(model: nn.Module, x: Tensor, batch_size: int = BATCH_SIZE, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose running statistics are recomputed over one pass of ``x``.

    Every batch-norm layer forgets its running averages (``reset_running_stats``) and
    switches to ``momentum=None``, the plain average of the batches' statistics; then
    ``x`` goes through the copy once, in training mode, in batches of ``batch_size`` in an
    order drawn from ``seed``, without gradients. The weights do not change, so every
    batch's statistics describe the final network, and every batch counts equally. The
    copy is returned in evaluation mode, with each layer's ``momentum`` as it was.
    """
    copy_ = copy.deepcopy(model)
    layers = batch_norm_layers(copy_)
    momenta = [bn.momentum for bn in layers]
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
    copy_.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(x) - 1, batch_size):
        copy_(x[order[start:start + batch_size]])
    for bn, momentum in zip(layers, momenta, strict=True):
        bn.momentum = momentum
    return copy_.eval()


def measure(model: nn.Module, data: Digits) -> dict[str, Any]:
    """Every accuracy of the module docstring for one trained ``model``."""
    x, y = data.x_test, data.y_test

    def in_eval(m: nn.Module) -> float:
        with evaluating(m):
            return evaluate(m, x, y)[0]

    by_label = torch.argsort(y, stable=True)
    polluted = copy.deepcopy(model).train()
    with torch.no_grad():
        for i in range(0, len(y), 2):
            polluted(x[i:i + 2])
    return {
        "running": in_eval(model),
        "recomputed": in_eval(recompute_statistics(model, data.x_train)),
        "recomputed_on_test": in_eval(recompute_statistics(model, x)),
        "train_mode": [accuracy_in_batches(model, x, y, b, training=True) for b in BATCH_SIZES],
        "train_mode_sorted": accuracy_in_batches(model, x[by_label], y[by_label], SORTED_BATCH_SIZE, training=True),
        "after_pairs": in_eval(polluted),
    }


def trained(seed: int, data: Digits | None = None) -> nn.Module:
    """The digits network trained as this experiment trains it, with ``seed``."""
    model = digits_mlp(seed=seed)
    train(model, data or load_digits(), epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, seed=seed)
    return model


def _run(seed: int) -> dict[str, Any]:
    data = load_digits()
    return measure(trained(seed, data), data)


def run(jobs: int = 1) -> dict[str, Any]:
    """:func:`measure` for a network trained with each seed; the results as :func:`load` returns them."""
    return {
        "parameters": {"seeds": list(SEEDS), "epochs": EPOCHS, "lr": LR, "batch_size": BATCH_SIZE,
                       "batch_sizes": list(BATCH_SIZES), "sorted_batch_size": SORTED_BATCH_SIZE},
        "runs": by_seed(run_all(_run, [(seed,) for seed in SEEDS], jobs)),
    }


SOURCES = ("support.eval_statistics", *TRAINING_CODE, "support.seeds:by_seed")


def load() -> dict[str, Any]:
    """The committed results, refused (:class:`support.results.StaleResults`) if the code changed."""
    return results.load(RESULTS, SOURCES)


if __name__ == "__main__":
    regenerate(__doc__, run, RESULTS, SOURCES, COMMAND)
