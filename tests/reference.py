"""Side-by-side runs of torch.nn.BatchNorm1d and bnlib's layers, shared by the bnlib tests.

A :class:`Config` describes one layer and one sequence of steps (training steps, then
evaluation steps); :func:`run_side_by_side` plays it on ``nn.BatchNorm1d`` (the truth),
``bnlib.numpy.BatchNorm1d`` and ``bnlib.torch.BatchNorm1d`` from the same non-trivial
starting state (random gamma, beta, running statistics), with a random upstream gradient,
and returns everything each layer produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import bnlib.numpy as bnp
import bnlib.torch as bnt

DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}


@dataclass(frozen=True)
class Config:
    n: int = 8
    c: int = 3
    length: int | None = None
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    bias: bool = True
    train_steps: int = 3
    eval_steps: int = 1
    seed: int = 0
    dtype: str = "float64"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, self.c) if self.length is None else (self.n, self.c, self.length)

    def kwargs(self) -> dict:
        return dict(
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            track_running_stats=self.track_running_stats,
            bias=self.bias,
        )


@dataclass
class Step:
    training: bool
    y: np.ndarray
    dx: np.ndarray
    dgamma: np.ndarray | None
    dbeta: np.ndarray | None
    state: dict[str, np.ndarray] = field(default_factory=dict)
    x: np.ndarray | None = None
    dy: np.ndarray | None = None

    def _stats(self, eps: float):
        x2 = self.x if self.x.ndim == 2 else self.x.transpose(0, 2, 1).reshape(-1, self.x.shape[1])
        dy2 = self.dy if self.dy.ndim == 2 else self.dy.transpose(0, 2, 1).reshape(-1, self.dy.shape[1])
        if self.training or "running_var" not in self.state:
            mu, var = x2.mean(axis=0), x2.var(axis=0)
        else:
            mu = self.state["running_mean"].astype(np.float64)
            var = self.state["running_var"].astype(np.float64)
        return x2, dy2, (x2 - mu) / np.sqrt(var + eps), var

    def scales(self, eps: float) -> dict[str, float]:
        """The size of the terms each gradient is a sum of, before they cancel.

        dx is a difference of terms of size gamma·dy/sqrt(var + eps), nearly zero for tiny
        batches (with N = 2 every correct dx is ~0); dgamma and dbeta are sums over the batch
        of dy·x_hat and dy. Rounding errors scale with these, not with the results.
        """
        _, dy2, x_hat, var = self._stats(eps)
        gamma = np.abs(self.state.get("weight", np.ones(1))).max()
        return {
            "dx": float(np.abs(dy2).max() * gamma / np.sqrt(var.min() + eps)),
            "dgamma": float(np.abs(dy2 * x_hat).sum(axis=0).max()),
            "dbeta": float(np.abs(dy2).sum(axis=0).max()),
        }


def randomize(layer: nn.Module, rng: np.random.Generator) -> None:
    """Give a torch layer non-trivial gamma, beta and running statistics."""
    with torch.no_grad():
        c = layer.num_features
        if layer.weight is not None:
            layer.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)))
        if layer.bias is not None:
            layer.bias.copy_(torch.from_numpy(rng.normal(0, 1, c)))
        if layer.running_mean is not None:
            layer.running_mean.copy_(torch.from_numpy(rng.normal(0, 1, c)))
            layer.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, c)))
            layer.num_batches_tracked.fill_(int(rng.integers(0, 5)))


def batches(cfg: Config) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (x, dy) pairs for every step: shifted, scaled inputs and a random upstream gradient."""
    rng = np.random.default_rng(cfg.seed + 1)
    out = []
    for _ in range(cfg.train_steps + cfg.eval_steps):
        shift = rng.normal(0, 2, cfg.c)
        scale = rng.uniform(0.1, 3.0, cfg.c)
        per_feature = (1, cfg.c) if cfg.length is None else (1, cfg.c, 1)
        x = rng.normal(size=cfg.shape) * scale.reshape(per_feature) + shift.reshape(per_feature)
        dy = rng.normal(size=cfg.shape)
        out.append((x, dy))
    return out


def _torch_steps(layer: nn.Module, cfg: Config, tdtype) -> list[Step]:
    steps = []
    for i, (x, dy) in enumerate(batches(cfg)):
        layer.train(i < cfg.train_steps)
        xt = torch.tensor(x, dtype=tdtype, requires_grad=True)
        layer.zero_grad()
        y = layer(xt)
        y.backward(torch.tensor(dy, dtype=tdtype))
        steps.append(
            Step(
                layer.training,
                y.detach().numpy().copy(),
                xt.grad.numpy().copy(),
                None if layer.weight is None else layer.weight.grad.numpy().copy(),
                None if layer.bias is None else layer.bias.grad.numpy().copy(),
                {k: v.numpy().copy() for k, v in layer.state_dict().items()},
                x,
                dy,
            )
        )
    return steps


def _numpy_steps(layer: bnp.BatchNorm1d, cfg: Config, ndtype) -> list[Step]:
    steps = []
    for i, (x, dy) in enumerate(batches(cfg)):
        layer.train(i < cfg.train_steps)
        y = layer(x.astype(ndtype))
        dx = layer.backward(dy.astype(ndtype))
        steps.append(Step(layer.training, y, dx, layer.dgamma, layer.dbeta, layer.state_dict(), x, dy))
    return steps


def play_from_torch_start(layer, cfg: Config) -> list[Step]:
    """Play ``cfg`` on ``layer`` (a torch or a bnlib.numpy-style layer), from the start state
    :func:`run_side_by_side` gives nn.BatchNorm1d."""
    ndtype, tdtype = DTYPES[cfg.dtype]
    start = nn.BatchNorm1d(cfg.c, **cfg.kwargs(), dtype=tdtype)
    randomize(start, np.random.default_rng(cfg.seed))
    layer.load_state_dict(start.state_dict())
    if isinstance(layer, nn.Module):
        return _torch_steps(layer, cfg, tdtype)
    return _numpy_steps(layer, cfg, ndtype)


def run_side_by_side(cfg: Config) -> dict[str, list[Step]]:
    """Play ``cfg`` on nn.BatchNorm1d ('torch.nn'), bnlib.numpy and bnlib.torch."""
    ndtype, tdtype = DTYPES[cfg.dtype]
    rng = np.random.default_rng(cfg.seed)
    ref = nn.BatchNorm1d(cfg.c, **cfg.kwargs(), dtype=tdtype)
    randomize(ref, rng)
    start = ref.state_dict()
    ours_t = bnt.BatchNorm1d(cfg.c, **cfg.kwargs(), dtype=tdtype)
    ours_t.load_state_dict(start)
    ours_n = bnp.BatchNorm1d(cfg.c, **cfg.kwargs(), dtype=ndtype)
    ours_n.load_state_dict(start)
    return {
        "torch.nn": _torch_steps(ref, cfg, tdtype),
        "bnlib.numpy": _numpy_steps(ours_n, cfg, ndtype),
        "bnlib.torch": _torch_steps(ours_t, cfg, tdtype),
    }


def assert_close(actual, expected, rtol: float, what: str = "", scale: float | None = None) -> None:
    """Normwise-relative comparison: every entry within ``rtol`` of ``scale``.

    ``scale`` defaults to the largest expected entry.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), scale or 0.0, 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_same_steps(ours: list[Step], ref: list[Step], rtol: float, name: str, eps: float) -> None:
    """Every output, gradient and state entry of ``ours`` matches ``ref`` at every step."""
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        where = f"{name}, step {i} ({'train' if b.training else 'eval'})"
        assert_close(a.y, b.y, rtol, f"{where}: y")
        scales = b.scales(eps)
        assert_close(a.dx, b.dx, rtol, f"{where}: dx", scale=scales["dx"])
        for g in ("dgamma", "dbeta"):
            if getattr(b, g) is None:
                assert getattr(a, g) is None, f"{where}: {g} should be None"
            else:
                assert_close(getattr(a, g), getattr(b, g), rtol, f"{where}: {g}", scale=scales[g])
        assert list(a.state) == list(b.state), f"{where}: state_dict keys"
        for k in b.state:
            if k == "num_batches_tracked":
                assert int(a.state[k]) == int(b.state[k]), f"{where}: {k}"
            else:
                assert_close(a.state[k], b.state[k], rtol, f"{where}: {k}")
