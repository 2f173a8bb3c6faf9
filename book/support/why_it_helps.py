r"""Why batch norm helps: shifting noise after its layers, the growth of the weights, its placement.

The chapter "Why batch norm helps" tests two explanations on the 784-300-100-10 network
(:func:`~support.experiments.digits_mlp`) and measures one practical choice:

- **Noise after batch norm.** If batch norm helped by keeping the distribution of each
  layer's inputs fixed (the *internal covariate shift* story), then undoing that, after every
  batch-norm layer, should take the benefit away. :class:`ShiftingNoise` gives every feature
  a new mean and a new scale at every training step, so that the distribution of the next
  layer's inputs moves from step to step, in the spirit of the
  "noisy batch norm" of Santurkar et al. (2018).
- **Scale invariance.** A linear layer followed by batch norm (through a ReLU or not) gives
  the same outputs when its parameters are multiplied by any ``a > 0``, so its gradient is
  orthogonal to them and their norm can only grow under SGD, which lowers the layer's
  effective learning rate. Every run records the norm of each linear layer's parameters
  (:func:`record_norms`).
- **Placement.** The 784-300-100-10 network puts batch norm after each hidden ReLU;
  :func:`bn_before_relu` puts it before, everything else unchanged.

Four configurations (:data:`CONFIGS`), the 784-300-100-10 network, the same with batch norm
before the ReLU, the same with shifting noise, and the network without batch norm on
standardized pixels, are trained with plain SGD on batches of 64 for
:data:`EPOCHS` epochs, in two stages as in :mod:`support.learning_rates`:

1. **Sweep.** Every configuration at every rate of :data:`RATES`, with each seed of
   :data:`SWEEP_SEEDS`, on 3,500 training digits, measured on the 500 held-out ones; its best rate
   is the one with the highest mean final validation accuracy (:func:`support.seeds.best_rate`).
2. **Curves.** Every configuration again at its best rate, with each seed of
   :data:`CURVE_SEEDS`, on all 4,000 training digits, measured on them and on the 1,000 test
   digits after every epoch (in evaluation mode, so without the noise).

For a seed, all configurations start from the same weights of their linear layers and see the
same batches. The results are committed in ``book/results/why_it_helps.json``; regenerate them
with (about 8 minutes of one core; ``--jobs 2`` uses two)::

    cd book && ../.venv/bin/python -m support.why_it_helps
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from support import results
from support.experiments import TRAINING_CODE, Digits, batch_norm_layers, digits_mlp, load_digits, run_all, train
from support.seeds import best_rate, by_seed, regenerate

__all__ = ["ShiftingNoise", "bn_before_relu", "with_shifting_noise", "record_norms", "parameter_norm", "Config",
           "CONFIGS", "RATES", "EPOCHS", "SWEEP_SEEDS", "CURVE_SEEDS", "SHIFT", "SCALE", "NORM_EVERY", "RESULTS",
           "SOURCES", "COMMAND", "run", "load"]

#: The noise's new mean of a feature is drawn uniformly from ``[-SHIFT, SHIFT]`` at every step.
SHIFT = 1.0
#: The noise's new scale of a feature is drawn log-uniformly from ``[1/SCALE, SCALE]`` at every step.
SCALE = 2.0


class ShiftingNoise(nn.Module):
    r"""A new mean and scale for every feature at every training step: covariate shift on purpose.

    In training mode, every call draws, for each feature ``j``, a shift
    :math:`b_j \sim U(-\mathrm{shift}, \mathrm{shift})` and a scale :math:`s_j` with
    :math:`\ln s_j \sim U(-\ln \mathrm{scale}, \ln \mathrm{scale})`, and returns
    :math:`y^{(i)}_j = s_j x^{(i)}_j + b_j`. Placed after a batch-norm layer (whose output has
    batch mean 0 and variance 1 per feature, before :math:`\gamma` and :math:`\beta` are
    learned), it gives the next layer inputs whose batch mean and variance are about
    :math:`b_j` and :math:`s_j^2`, different at every step. In evaluation mode it is the identity.

    Santurkar et al. (2018) also perturb each example independently; this layer keeps only what
    the covariate-shift story is about, a distribution that moves from step to step.

    Args:
        num_features: ``C``.
        shift: the largest shift of a mean. Default: :data:`SHIFT`
        scale: the largest factor of a scale, at least 1. Default: :data:`SCALE`
        seed: seeds the layer's own random numbers. Default: 0

    Shape:
        ``(N, C)`` in and out.
    """

    def __init__(self, num_features: int, shift: float = SHIFT, scale: float = SCALE, seed: int = 0) -> None:
        super().__init__()
        if shift < 0 or scale < 1:
            raise ValueError(f"need shift >= 0 and scale >= 1, got shift={shift}, scale={scale}")
        self.num_features, self.shift, self.scale = num_features, shift, scale
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> tuple[Tensor, Tensor]:
        """The next step's ``(b, s)``, one value per feature each."""
        u = torch.rand(2, self.num_features, generator=self.generator) * 2 - 1
        return u[0] * self.shift, torch.exp(u[1] * math.log(self.scale))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"ShiftingNoise({self.num_features}) takes (N, {self.num_features}), got {tuple(x.shape)}")
        if not self.training:
            return x
        b, s = self.draw()
        return s * x + b

    def extra_repr(self) -> str:
        return f"{self.num_features}, shift={self.shift}, scale={self.scale}"


def with_shifting_noise(model: nn.Sequential, seed: int = 0) -> nn.Sequential:
    """``model`` with a :class:`ShiftingNoise` after each of its batch-norm layers (each its own seed)."""
    normalizing = set(batch_norm_layers(model))
    layers: list[nn.Module] = []
    for layer in model:
        layers.append(layer)
        if layer in normalizing:
            layers.append(ShiftingNoise(layer.num_features, seed=1000 * seed + len(layers)))
    return nn.Sequential(*layers)


def bn_before_relu(model: nn.Sequential) -> nn.Sequential:
    """``model`` with every ``ReLU → BatchNorm1d`` pair swapped into ``BatchNorm1d → ReLU``.

    The same layer objects, so the same weights: applied to ``digits_mlp(seed=s)`` it gives
    ``Linear → BatchNorm1d → ReLU`` for each hidden layer, and only the placement differs.

    Raises:
        ValueError: ``model`` has no ``ReLU → BatchNorm1d`` pair.
    """
    layers = list(model)
    swapped = 0
    for k in range(len(layers) - 1):
        if isinstance(layers[k], nn.ReLU) and isinstance(layers[k + 1], nn.BatchNorm1d):
            layers[k], layers[k + 1] = layers[k + 1], layers[k]
            swapped += 1
    if not swapped:
        raise ValueError("the model has no ReLU followed by BatchNorm1d to swap")
    return nn.Sequential(*layers)


def parameter_norm(layer: nn.Linear) -> float:
    """‖θ‖ of a linear layer: the Euclidean norm of its weights and bias together."""
    parts = [layer.weight.detach().flatten()] + ([layer.bias.detach()] if layer.bias is not None else [])
    return torch.cat(parts).norm().item()


def record_norms(layer: nn.Linear, every: int) -> list[float]:
    """A list that receives :func:`parameter_norm` of ``layer`` before every ``every``-th training step.

    A forward pre-hook counts the layer's calls in training mode (one per step of
    :func:`~support.experiments.train`); calls in evaluation mode are not steps and are skipped.
    """
    norms: list[float] = []
    steps = [0]

    def hook(module: nn.Module, _inputs) -> None:
        if module.training:
            if steps[0] % every == 0:
                norms.append(parameter_norm(module))
            steps[0] += 1

    layer.register_forward_pre_hook(hook)
    return norms


@dataclass(frozen=True)
class Config:
    """One way to place batch norm in the digits network.

    Args:
        label: what the book calls it.
        before_relu: batch norm between each hidden ``Linear`` and its ReLU (else after the ReLU,
            as in the 784-300-100-10 network).
        noise: a :class:`ShiftingNoise` after every batch-norm layer.
        batch_norm: the network's three batch-norm layers; without them (the fair baseline of
            the chapter "The 784-300-100-10 network on handwritten digits") it is fed
            standardized pixels. Default: ``True``
    """

    label: str
    before_relu: bool
    noise: bool
    batch_norm: bool = True

    def data(self, digits: Digits) -> Digits:
        return digits if self.batch_norm else digits.standardized()

    def model(self, seed: int) -> nn.Sequential:
        if not self.batch_norm:
            return digits_mlp(input_bn=False, hidden_bn=False, seed=seed)
        model = digits_mlp(seed=seed)
        if self.before_relu:
            model = bn_before_relu(model)
        return with_shifting_noise(model, seed) if self.noise else model


CONFIGS: dict[str, Config] = {
    "after": Config("batch norm after the ReLU (the 784-300-100-10 network)", before_relu=False, noise=False),
    "before": Config("batch norm before the ReLU", before_relu=True, noise=False),
    "noisy": Config("batch norm after the ReLU, then shifting noise", before_relu=False, noise=True),
    "none": Config("no batch norm, standardized pixels", before_relu=False, noise=False, batch_norm=False),
}
RATES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
EPOCHS = 8
BATCH_SIZE = 64
SWEEP_SEEDS = tuple(range(5))
CURVE_SEEDS = tuple(range(10))
N_VALIDATION = 500
CHANCE = 0.1
#: A run records its linear layers' parameter norms before every NORM_EVERY-th step.
NORM_EVERY = 11

RESULTS = Path(__file__).resolve().parents[1] / "results" / "why_it_helps.json"
COMMAND = "cd book && ../.venv/bin/python -m support.why_it_helps"
SOURCES = ("support.why_it_helps", *TRAINING_CODE, "support.seeds:best_rate", "support.seeds:by_seed",
           "support.seeds:spread", "support.seeds:Spread")


@functools.cache
def _data(key: str, validation: bool) -> Digits:
    data = CONFIGS[key].data(load_digits())
    return data.holdout(N_VALIDATION) if validation else data


def _run(key: str, lr: float, seed: int, validation: bool) -> dict[str, Any]:
    """One training run of configuration ``key``: its per-epoch record and its norms, JSON-able."""
    model = CONFIGS[key].model(seed)
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    norms = [record_norms(layer, NORM_EVERY) for layer in linears]
    history = train(model, _data(key, validation), epochs=EPOCHS, lr=lr, batch_size=BATCH_SIZE, seed=seed)
    return {"train_loss": history.train_loss, "train_accuracy": history.train_accuracy,
            "accuracy": history.test_accuracy, "diverged": history.diverged,
            "norms": [[*n, parameter_norm(layer)] for n, layer in zip(norms, linears, strict=True)]}


def run(jobs: int = 1, log=print) -> dict[str, Any]:
    """Both stages for every configuration; the results as :func:`load` returns them."""
    start = time.perf_counter()
    tasks = [(key, lr, seed, True) for key in CONFIGS for lr in RATES for seed in SWEEP_SEEDS]
    log(f"sweep: {len(tasks)} runs of {EPOCHS} epochs")
    records = iter(run_all(_run, tasks, jobs))
    sweep = {key: {str(lr): by_seed([next(records) for _ in SWEEP_SEEDS]) for lr in RATES} for key in CONFIGS}
    best = {key: best_rate(sweep[key], diverged=CHANCE) for key in CONFIGS}
    log(f"best rates {best} after {time.perf_counter() - start:.0f} s")
    tasks = [(key, best[key], seed, False) for key in CONFIGS for seed in CURVE_SEEDS]
    log(f"curves: {len(tasks)} runs")
    records = iter(run_all(_run, tasks, jobs))
    curves = {key: by_seed([next(records) for _ in CURVE_SEEDS]) for key in CONFIGS}
    log(f"done in {time.perf_counter() - start:.0f} s")
    return {
        "parameters": {"rates": list(RATES), "epochs": EPOCHS, "batch_size": BATCH_SIZE,
                       "sweep_seeds": list(SWEEP_SEEDS), "curve_seeds": list(CURVE_SEEDS),
                       "n_validation": N_VALIDATION, "chance": CHANCE, "shift": SHIFT, "scale": SCALE,
                       "norm_every": NORM_EVERY},
        "configs": {key: asdict(c) for key, c in CONFIGS.items()},
        "sweep": sweep,
        "best_rate": best,
        "curves": curves,
    }


def load() -> dict[str, Any]:
    """The committed results, refused (:class:`support.results.StaleResults`) if the code changed."""
    return results.load(RESULTS, SOURCES)


if __name__ == "__main__":
    regenerate(__doc__, run, RESULTS, SOURCES, COMMAND)
