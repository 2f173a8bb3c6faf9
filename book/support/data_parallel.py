r"""Data-parallel training of the course's digits network over local processes, three ways.

The chapter "Batch norm at scale and in deployment" compares, on the same stream of batches:

- ``"one process"``: one process trains on every batch of ``batch_size`` digits;
- ``"per-process BN"``: ``world_size`` processes each take an equal slice of every batch,
  and their gradients are averaged after each backward pass, as data-parallel training does
  (``DistributedDataParallel`` does it with the same all-reduce); each batch-norm layer
  normalizes with its own slice's statistics;
- ``"SyncBN"``: the same, with the batch-norm layers converted by
  :func:`bnlib.torch.convert_sync_batchnorm`, so that they normalize with the whole batch's.

With equal slices the averaged gradient is the gradient of the whole batch's mean loss, so
``"SyncBN"`` computes what ``"one process"`` computes, while ``"per-process BN"`` is another
computation, whose statistics come from ``batch_size / world_size`` examples.

Two experiments:

- :func:`agreement`: a few float64 steps of each mode; how far each one's parameters and
  running statistics end from "one process"'s, and the bytes each process hands to
  ``torch.distributed`` in one step. Exact claims, no seeds needed; quick, run by the chapter.
- :func:`accuracy_experiment`: test accuracy after training, in float32, for several seeds
  (initial weights and order of the batches) and batch sizes. Minutes long, so its results
  are committed as ``book/data-parallel.json`` (:mod:`support.results`), regenerated with::

      cd book && ../.venv/bin/python -m support.data_parallel
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import bnlib.torch as bnt
from support import results
from support.distributed import run_processes
from support.experiments import Digits, digits_mlp, evaluate, evaluating, load_digits

__all__ = ["MODES", "Setup", "train", "agreement", "accuracy_experiment", "load_accuracy",
           "accuracy_over_seeds", "CACHE", "SOURCES", "main"]

MODES = ("one process", "per-process BN", "SyncBN")

#: The committed results of :func:`accuracy_experiment`, next to the chapter.
CACHE = Path(__file__).resolve().parents[1] / "data-parallel.json"

#: The code those results depend on: their fingerprint (:mod:`support.results`).
SOURCES = (
    "support.data_parallel:Setup", "support.data_parallel:train", "support.data_parallel:_average_gradients",
    "support.data_parallel:_accuracy_worker", "support.data_parallel:accuracy_experiment",
    "support.distributed",
    "support.experiments:load_digits", "support.experiments:digits_mlp", "support.experiments:evaluate",
    "support.experiments:evaluating",
    "bnlib.torch:Moments", "bnlib.torch:_all_gather_moments", "bnlib.torch:SyncBatchNormFunction",
    "bnlib.torch:SyncBatchNorm", "bnlib.torch:convert_sync_batchnorm", "bnlib.torch:BatchNorm1d",
    "bnlib.torch:_scale_shift", "bnlib.torch:_input_grad", "bnlib.torch:needed_grads", "bnlib.torch:cast",
    "bnlib.torch:update_running_stats", "bnlib.torch:BatchNormFunction", "bnlib.torch:FrozenBatchNormFunction",
    "bnlib.torch:constant", "bnlib.torch:_constant", "bnlib.torch:output_like", "bnlib.torch:_numpy_allocates",
    "bnlib.torch:out_for", "bnlib.torch:per_feature", "bnlib.torch:batch_dims", "bnlib.torch:compute_dtype",
    "bnlib.torch:_register_affine", "bnlib.torch:_reset_affine",
)
REGENERATE = "cd book && ../.venv/bin/python -m support.data_parallel"


@dataclass(frozen=True)
class Setup:
    """One training run: the global batch, split evenly between the processes."""

    batch_size: int = 64  #: examples per step, all processes together
    epochs: int = 2
    lr: float = 0.1
    seed: int = 0  #: initial weights and the order of the batches
    dtype: str = "float32"
    max_steps: int | None = None  #: stop after this many steps (None: every epoch)


def _average_gradients(model: nn.Module, world_size: int) -> None:
    """What data-parallel training does after backward: every gradient becomes the processes' mean."""
    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    for g, new in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(new.view_as(g))


def train(setup: Setup, mode: str, data: Digits, rank: int = 0, world_size: int = 1) -> tuple[nn.Module, list[float]]:
    """Train the digits network as ``mode`` says; returns the model and the test accuracy after each epoch.

    Every process draws the same initial weights and the same batches; process ``rank`` takes
    the ``rank``-th of ``world_size`` equal slices of each batch ("one process": all of it).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if (mode == "one process") != (world_size == 1):
        raise ValueError(f"{mode!r} runs on {'one process' if mode == 'one process' else 'several'}, "
                         f"not {world_size}")
    if setup.batch_size % world_size:
        raise ValueError(f"batch_size {setup.batch_size} does not split into {world_size} equal slices")
    dtype = getattr(torch, setup.dtype)
    model = digits_mlp(seed=setup.seed).to(dtype)
    if mode == "SyncBN":
        model = bnt.convert_sync_batchnorm(model)
    x_train, x_test = data.x_train.to(dtype), data.x_test.to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=setup.lr)
    order_generator = torch.Generator().manual_seed(setup.seed)
    accuracies, step = [], 0
    for _ in range(setup.epochs):
        model.train()
        order = torch.randperm(len(data.y_train), generator=order_generator)
        for start in range(0, len(order) - setup.batch_size + 1, setup.batch_size):
            batch = order[start : start + setup.batch_size].chunk(world_size)[rank]
            loss = F.cross_entropy(model(x_train[batch]), data.y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            if world_size > 1:
                _average_gradients(model, world_size)
            optimizer.step()
            step += 1
            if setup.max_steps is not None and step == setup.max_steps:
                return model, accuracies
        with evaluating(model):
            accuracies.append(evaluate(model, x_test, data.y_test)[0])
    return model, accuracies


# -- agreement: a few float64 steps, and the bytes of one step ----------------------------------


@contextlib.contextmanager
def _counting_bytes() -> Iterator[dict[str, int]]:
    """Count the bytes this process contributes to ``all_gather_single`` and ``all_reduce`` in the block."""
    sent = {"all_gather_single": 0, "all_reduce": 0}
    originals = {name: getattr(dist, name) for name in sent}

    def counted(name):
        def call(*args, **kwargs):
            contributed = args[1] if name == "all_gather_single" else args[0]  # (output, input) / (tensor)
            sent[name] += contributed.numel() * contributed.element_size()
            return originals[name](*args, **kwargs)
        return call

    for name in sent:
        setattr(dist, name, counted(name))
    try:
        yield sent
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _agreement_worker(rank: int, world_size: int, setup: Setup) -> dict:
    data = load_digits()
    out = {"states": {}, "bytes_per_step": {}}
    for mode in ("per-process BN", "SyncBN"):
        out["states"][mode] = _state(train(setup, mode, data, rank, world_size)[0])
        with _counting_bytes() as sent:  # one more step, float32, counted
            train(Setup(batch_size=setup.batch_size, max_steps=1), mode, data, rank, world_size)
        out["bytes_per_step"][mode] = dict(sent)
    return out


def _difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest relative difference between two state dicts' parameters and running statistics.

    Per tensor, ``max |a - b| / max |b|`` (the running variances of raw pixels are in the
    thousands, a layer's weights below 1); the largest over the tensors.
    """
    keys = [k for k in a if k.endswith(("weight", "bias", "running_mean", "running_var"))]
    return max(float((a[k].double() - b[k].double()).abs().max() / b[k].double().abs().max()) for k in keys)


def agreement(steps: int = 20, batch_size: int = 64, world_size: int = 2) -> dict:
    """``steps`` float64 training steps in each mode, from the same start, on the same batches.

    Returns:
        ``{"difference": {mode: d}, "between processes": {mode: d}, "bytes_per_step": {mode:
        {collective: bytes}}}``: ``d`` is the largest relative difference of any parameter or
        running statistic from "one process"'s after the steps (or between the processes' copies);
        the bytes are those each process contributes to one float32 step.
    """
    setup = Setup(batch_size=batch_size, dtype="float64", max_steps=steps)
    per_rank = run_processes(_agreement_worker, world_size, setup, timeout=300)
    reference = _state(train(setup, "one process", load_digits())[0])
    return {
        "steps": steps, "batch_size": batch_size, "world_size": world_size,
        "difference": {mode: _difference(per_rank[0]["states"][mode], reference) for mode in MODES[1:]},
        "between processes": {mode: max(_difference(r["states"][mode], per_rank[0]["states"][mode])
                                        for r in per_rank[1:]) for mode in MODES[1:]},
        "bytes_per_step": per_rank[0]["bytes_per_step"],
    }


# -- accuracy over seeds (cached) ---------------------------------------------------------------


def _accuracy_worker(rank: int, world_size: int, setups: list[Setup]) -> list[dict]:
    data = load_digits()
    return [{"setup": asdict(setup), "mode": mode, "test_accuracy": train(setup, mode, data, rank, world_size)[1]}
            for setup in setups for mode in MODES[1:]]


def accuracy_experiment(seeds: int = 5, epochs: int = 2, batch_sizes: tuple[int, ...] = (64, 8),
                        world_size: int = 2) -> dict:
    """Test accuracy after each epoch, per seed, batch size and mode (float32)."""
    setups = [Setup(batch_size=b, epochs=epochs, seed=s) for b in batch_sizes for s in range(seeds)]
    runs = run_processes(_accuracy_worker, world_size, setups, timeout=3600)[0]  # process 0's models
    data = load_digits()
    runs += [{"setup": asdict(s), "mode": "one process", "test_accuracy": train(s, "one process", data)[1]}
             for s in setups]
    return {"world_size": world_size, "seeds": seeds, "epochs": epochs, "batch_sizes": list(batch_sizes),
            "runs": runs}


def load_accuracy() -> dict:
    """The committed results of :func:`accuracy_experiment`, checked against the current code."""
    return results.load(CACHE, SOURCES)


def accuracy_over_seeds(report: dict, batch_size: int, mode: str) -> tuple[float, float, list[float]]:
    """``(mean, standard deviation, values)`` of the final test accuracy over the seeds."""
    values = [r["test_accuracy"][-1] for r in report["runs"]
              if r["setup"]["batch_size"] == batch_size and r["mode"] == mode]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd, values


def main(argv: list[str] | None = None) -> int:
    """Run :func:`accuracy_experiment` and commit-ready results to :data:`CACHE`."""
    parser = argparse.ArgumentParser(description="Regenerate book/data-parallel.json (minutes).")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = accuracy_experiment(seeds=args.seeds, epochs=args.epochs)
    results.save(CACHE, report, SOURCES, command=REGENERATE)
    print(f"wrote {CACHE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
