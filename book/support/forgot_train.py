"""Training in evaluation mode: a loop that calls ``model.eval()`` to measure and never ``model.train()`` again.

The chapter "train() and eval()" shows what this common mistake does to the digits network
(raw pixels, SGD on batches of 64, :data:`EPOCHS` epochs), for each seed of :data:`SEEDS`
and each learning rate of :data:`RATES`, side by side with

- the same network trained by a correct loop (:func:`support.experiments.train`);
- the same stack without any batch norm, on standardized pixels, trained by a correct loop:
  what "training as if it had no batch norm" would look like.

:func:`train_forgetting_train_mode` is the buggy loop. It calls ``model.train()`` once,
before the first epoch, so the first epoch is trained correctly and fills the running
statistics; from the second epoch on, every batch is normalized with those statistics,
frozen, and nothing updates them. The loop keeps going when the loss becomes ``nan``, as a
real one would; after each epoch it records the mean training loss and the test accuracy,
and once the first epoch with a ``nan`` loss.

The results are committed in ``book/results/forgot_train.json``; regenerate them with
(about 2 minutes of one core)::

    cd book && ../.venv/bin/python -m support.forgot_train
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from support import results
from support.experiments import TRAINING_CODE, Digits, digits_mlp, evaluate, load_digits, run_all, train
from support.seeds import by_seed, regenerate

__all__ = ["SEEDS", "RATES", "EPOCHS", "RESULTS", "SOURCES", "COMMAND", "train_forgetting_train_mode",
           "run", "load"]

SEEDS = tuple(range(5))
RATES = (0.1, 0.03, 0.01)
EPOCHS = 5
BATCH_SIZE = 64

RESULTS = Path(__file__).resolve().parents[1] / "results" / "forgot_train.json"
COMMAND = "cd book && ../.venv/bin/python -m support.forgot_train"


def train_forgetting_train_mode(model, data, epochs, lr, batch_size=64, seed=0):
    """A buggy loop: model.train() is called once, before the first epoch only."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    order_generator = torch.Generator().manual_seed(seed)
    record = {"train_loss": [], "accuracy": [], "first_nan_epoch": None}
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data.y_train), generator=order_generator)
        losses = []
        for start in range(0, len(order) - 1, batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()  # to measure... and never back to model.train()
        with torch.no_grad():
            record["accuracy"].append(evaluate(model, data.x_test, data.y_test)[0])
        record["train_loss"].append(float(np.mean(losses)))
        if record["first_nan_epoch"] is None and not all(map(math.isfinite, losses)):
            record["first_nan_epoch"] = epoch + 1
    return record


def _run(loop: str, lr: float, seed: int) -> dict[str, Any]:
    data: Digits = load_digits()
    if loop == "forgot":
        return train_forgetting_train_mode(digits_mlp(seed=seed), data, EPOCHS, lr, BATCH_SIZE, seed)
    if loop == "correct":
        model = digits_mlp(seed=seed)
    elif loop == "no_bn":
        model, data = digits_mlp(input_bn=False, hidden_bn=False, seed=seed), data.standardized()
    else:
        raise ValueError(f"loop must be 'forgot', 'correct' or 'no_bn', got {loop!r}")
    history = train(model, data, epochs=EPOCHS, lr=lr, batch_size=BATCH_SIZE, seed=seed)
    return {"train_loss": history.train_loss, "accuracy": history.test_accuracy, "diverged": history.diverged}


LOOPS = ("forgot", "correct", "no_bn")


def run(jobs: int = 1) -> dict[str, Any]:
    """Every loop at every rate with every seed; the results as :func:`load` returns them."""
    tasks = [(loop, lr, seed) for loop in LOOPS for lr in RATES for seed in SEEDS]
    records = iter(run_all(_run, tasks, jobs))
    runs = {loop: {str(lr): by_seed([next(records) for _ in SEEDS]) for lr in RATES} for loop in LOOPS}
    test_labels = load_digits().y_test
    return {
        "parameters": {"seeds": list(SEEDS), "rates": list(RATES), "epochs": EPOCHS, "batch_size": BATCH_SIZE},
        # argmax over a row of nan logits is 0: what a diverged network "predicts"
        "share_of_zeros_in_test": (test_labels == 0).float().mean().item(),
        "runs": runs,
    }


SOURCES = ("support.forgot_train", *TRAINING_CODE, "support.seeds:by_seed")


def load() -> dict[str, Any]:
    """The committed results, refused (:class:`support.results.StaleResults`) if the code changed."""
    return results.load(RESULTS, SOURCES)


if __name__ == "__main__":
    regenerate(__doc__, run, RESULTS, SOURCES, COMMAND)
