r"""The challenge inputs: seeded batches, parameters and running statistics that tell right from wrong.

Every scenario draws its inputs here, from a generator seeded by the sandbox's seed and the
check's id (:func:`rng`), so the trusted side replays exactly the same inputs on the reference.
They are chosen so that wrong implementations give visibly wrong numbers:

- batch sizes ``N >= 4`` and ``N != D`` in training mode: with ``N = 2`` every correct batch
  norm has ``dx = 0``, and with ``N = D`` a sum over the wrong axis has the right shape;
- each feature with its own mean and spread (:func:`batch`), so statistics over the wrong
  axis, or a missing centring, show;
- ``gamma`` of either sign, between 0.5 and 2.5 in size, and ``beta`` spread around 0
  (:func:`affine`), so a swapped or forgotten scale and shift show;
- running statistics far from their initial 0 and 1 (:func:`running`);
- where eps is under test, a scenario asks :func:`batch` for tiny spreads, so that eps's
  placement changes the output by far more than the tolerance.

This module runs INSIDE the sandbox: the standard library and NumPy only.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["rng", "batch", "affine", "running", "ncl", "nchw", "examples"]


def rng(seed: int, check_id: str) -> np.random.Generator:
    """The generator of one check's inputs: the same for the same seed and check, different otherwise."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(check_id.encode())])


def batch(rng: np.random.Generator, n: int, d: int, sd=(0.5, 2.0), centre: float = 2.0) -> np.ndarray:
    """``(n, d)`` float64: each feature with its own mean in ``±centre`` and std in ``sd``."""
    mu = rng.uniform(-centre, centre, d)
    std = rng.uniform(*sd, d)
    return mu + std * rng.standard_normal((n, d))


def affine(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-trivial ``gamma`` (either sign, size in [0.5, 2.5]) and ``beta`` (normal, sd 1.5)."""
    gamma = rng.uniform(0.5, 2.5, d) * rng.choice([-1.0, 1.0], d)
    beta = rng.normal(0.0, 1.5, d)
    return gamma, beta


def running(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Running statistics far from the initial 0 and 1: ``(running_mean, running_var)``."""
    return rng.uniform(-2.0, 2.0, d), rng.uniform(0.3, 3.0, d)


def ncl(rng: np.random.Generator, n: int, c: int, length: int) -> np.ndarray:
    """``(N, C, L)`` float64 with per-channel statistics (channel ``c`` is feature ``c`` of :func:`batch`)."""
    return np.ascontiguousarray(batch(rng, n * length, c).reshape(n, length, c).transpose(0, 2, 1))


def nchw(rng: np.random.Generator, n: int, c: int, h: int, w: int, sd=(0.5, 2.0)) -> np.ndarray:
    """``(N, C, H, W)`` float64: each channel with its own mean and spread, each example shifted and scaled too.

    The per-channel statistics tell a mean per channel from a mean per position or per example;
    the per-example shift and scale tell a mean per example (group norm) from one per channel.
    """
    x = np.ascontiguousarray(batch(rng, n * h * w, c, sd).reshape(n, h, w, c).transpose(0, 3, 1, 2))
    return x * rng.uniform(0.7, 1.4, (n, 1, 1, 1)) + rng.normal(0.0, 0.7, (n, 1, 1, 1))


def examples(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """``(N, D)`` float64 for layer norm: each example with its own mean and spread, each feature shifted too."""
    mu = rng.uniform(-2.0, 2.0, (n, 1))
    std = rng.uniform(0.5, 2.0, (n, 1))
    return mu + std * rng.standard_normal((n, d)) + rng.normal(0.0, 0.5, d)
