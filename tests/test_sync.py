"""bnlib.torch.SyncBatchNorm: a batch split over processes, normalized as one batch.

The distributed tests start 3 processes on this machine once (``support.distributed``: gloo
on 127.0.0.1, bounded in time); the 2-process cases run on the process group of the first
two (``process_group=``), the 3-process cases on the whole world. Each process runs every
case below on its slice of a float64 batch whose slices differ in size (5, 3 and 8 rows;
one case has an empty slice) and in mean, and sends back what it saw. The tests then compare, slice by
slice, with one ``nn.BatchNorm1d``/``nn.BatchNorm2d`` on the concatenated batch: outputs,
input gradients, parameter gradients (each process holds its slice's share), running
statistics, ``num_batches_tracked``, evaluation mode and state dicts. Slices of different
means make the merge's between-slice term matter: merging the variances of the slices
without it (or averaging them) fails every case.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bnlib.torch as bnt
from support.distributed import run_processes

CUDA2 = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (nccl, one per process)")

# ---------------------------------------------------------------------------------------------
# The cases every process runs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One layer configuration on one split batch: ``(N, C, *tail)``, N split into ``slices``."""

    c: int
    tail: tuple[int, ...]
    slices: tuple[int, ...]
    options: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float64
    offset: float = 0.0  #: added to every input (large: the variance is tiny next to the mean squared)
    scale: float = 1.0  #: of the input's spread
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{(sum(self.slices), self.c, *self.tail)}-{'+'.join(map(str, self.slices))}-{self.options}"


def batches(case: Case) -> dict[str, torch.Tensor]:
    """Two training batches, their upstream gradients and an evaluation batch, all ``(N, C, *tail)``.

    Row ``i`` is shifted by ``3 i / N``, so that consecutive slices have different means.
    """
    g = torch.Generator().manual_seed(case.seed)
    n = sum(case.slices)
    shape = (n, case.c, *case.tail)
    shift = (3.0 * torch.arange(n, dtype=torch.float64) / n).view(-1, *[1] * (len(shape) - 1))

    def draw(center: float) -> torch.Tensor:
        x = torch.randn(shape, generator=g, dtype=torch.float64) * case.scale + shift * case.scale + center
        return x.to(case.dtype)

    return {"x1": draw(case.offset + 1.0), "x2": draw(case.offset - 2.0), "x_eval": draw(case.offset),
            "g1": torch.randn(shape, generator=g, dtype=torch.float64).to(case.dtype),
            "g2": torch.randn(shape, generator=g, dtype=torch.float64).to(case.dtype)}


def params(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """The gamma and beta every copy of the layer starts from."""
    g = torch.Generator().manual_seed(case.seed + 1)
    return (torch.rand(case.c, generator=g, dtype=torch.float64) + 0.5,
            torch.randn(case.c, generator=g, dtype=torch.float64))


def bounds(case: Case, rank: int) -> slice:
    start = sum(case.slices[:rank])
    return slice(start, start + case.slices[rank])


def set_params(layer: nn.Module, case: Case) -> None:
    gamma, beta = params(case)
    with torch.no_grad():
        if layer.weight is not None:
            layer.weight.copy_(gamma)
        if layer.bias is not None:
            layer.bias.copy_(beta)


def steps(layer: nn.Module, data: dict[str, torch.Tensor], rows: slice, device: str = "cpu") -> dict:
    """Two training steps and one evaluation step of ``layer`` on the rows ``rows`` of each batch."""
    seen = {}
    for k in ("1", "2"):
        x = data["x" + k][rows].to(device).requires_grad_()
        y = layer(x)
        y.backward(data["g" + k][rows].to(device))
        seen["y" + k], seen["dx" + k] = y.detach().cpu(), x.grad.cpu()
        for name, p in (("dgamma", layer.weight), ("dbeta", layer.bias)):
            if p is not None:
                seen[name + k] = p.grad.detach().cpu().clone()
                p.grad = None
    seen["state"] = {key: v.detach().cpu().clone() for key, v in layer.state_dict().items()}
    layer.eval()
    with torch.no_grad():
        seen["y_eval"] = layer(data["x_eval"][rows].to(device)).cpu()
    return seen


def sync_worker(rank: int, world_size: int, cases: list[Case], device: str = "cpu") -> list[dict | None]:
    """What each process runs: every case on its own slice (``None`` for a case it takes no part in).

    A case split in fewer slices than there are processes runs on the group of the first ones.
    """
    if device == "cuda":
        device = f"cuda:{rank}"
    groups = {n: torch.distributed.new_group(list(range(n))) for n in range(2, world_size)}  # every rank calls it
    results = []
    for case in cases:
        n = len(case.slices)
        if rank >= n:
            results.append(None)
            continue
        layer = bnt.SyncBatchNorm(case.c, dtype=case.dtype, device=device, process_group=groups.get(n),
                                  **case.options)
        set_params(layer, case)
        results.append(steps(layer, batches(case), bounds(case, rank), device))
    return results


def reference(case: Case) -> dict:
    """One PyTorch batch norm on the whole batch, same steps."""
    kind = nn.BatchNorm2d if len(case.tail) == 2 else nn.BatchNorm1d
    layer = kind(case.c, dtype=case.dtype, **case.options)
    set_params(layer, case)
    return steps(layer, batches(case), slice(None))


OPTIONS = [{}, {"momentum": None}, {"affine": False}, {"bias": False}, {"track_running_stats": False}]
TAILS = [(), (4,), (3, 2)]


def cases_for(slices: tuple[int, ...]) -> list[Case]:
    return [Case(3 if len(tail) < 2 else 2, tail, slices, options, seed=i)
            for i, (tail, options) in enumerate((t, o) for t in TAILS for o in OPTIONS)]


TWO = cases_for((5, 3))
THREE = cases_for((5, 3, 8)) + [Case(3, (4,), (4, 0, 3), {}, seed=99)]  # one process with no rows
#: float32, inputs near 3000 with a spread of 0.1: the variance is 1e-9 of the mean squared
FLOAT32_LARGE_MEAN = Case(2, (), (5, 3, 8), {"momentum": 1.0}, dtype=torch.float32, offset=3000.0, scale=0.1)


@pytest.fixture(scope="module")
def runs() -> list[list[dict | None]]:
    """One run of 3 processes: the 2-process cases (on a group of two), then the 3-process ones."""
    return run_processes(sync_worker, 3, TWO + THREE + [FLOAT32_LARGE_MEAN], timeout=120)


@pytest.fixture(scope="module")
def two_processes(runs) -> list[list[dict]]:
    """Per process of the group of two, its results of the cases TWO."""
    assert all(r is None for r in runs[2][: len(TWO)]), "the third process took part in a 2-process case"
    return [results[: len(TWO)] for results in runs[:2]]


@pytest.fixture(scope="module")
def three_processes(runs) -> list[list[dict]]:
    """Per process, its results of the cases THREE, then of FLOAT32_LARGE_MEAN."""
    return [results[len(TWO) :] for results in runs]


def assert_close(actual, expected, what: str, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def check_like_one_batch(case: Case, per_rank: list[dict]) -> None:
    ref = reference(case)
    for rank, seen in enumerate(per_rank):
        rows = bounds(case, rank)
        where = f"{case.name}, process {rank}"
        for k in ("1", "2"):
            assert_close(seen["y" + k], ref["y" + k][rows], f"{where}: output of step {k}")
            assert_close(seen["dx" + k], ref["dx" + k][rows], f"{where}: dx of step {k}")
        assert list(seen["state"]) == list(ref["state"]), where
        for key, value in ref["state"].items():
            if key == "num_batches_tracked":
                assert torch.equal(seen["state"][key], value), f"{where}: num_batches_tracked"
            else:
                assert_close(seen["state"][key], value, f"{where}: {key}")
        if case.options.get("track_running_stats", True):
            assert_close(seen["y_eval"], ref["y_eval"][rows], f"{where}: evaluation-mode output")
    # parameter gradients: each process holds its slice's sum; together, the whole batch's
    for name in ("dgamma", "dbeta"):
        for k in ("1", "2"):
            if name + k in ref:
                total = sum(seen[name + k] for seen in per_rank)
                assert_close(total, ref[name + k], f"{case.name}: {name} of step {k} summed over processes")


@pytest.mark.parametrize("index", range(len(TWO)), ids=[c.name for c in TWO])
def test_two_processes_compute_what_one_batch_norm_computes_on_the_whole_batch(two_processes, index):
    check_like_one_batch(TWO[index], [results[index] for results in two_processes])


@pytest.mark.parametrize("index", range(len(THREE)), ids=[c.name for c in THREE])
def test_three_processes_compute_what_one_batch_norm_computes_on_the_whole_batch(three_processes, index):
    check_like_one_batch(THREE[index], [results[index] for results in three_processes])


def test_parameter_gradients_are_each_processs_own_share(two_processes):
    """As PyTorch's: dgamma and dbeta are sums over the process's slice (data parallelism adds them up)."""
    case = TWO[0]
    data = batches(case)
    for rank, results in enumerate(two_processes):
        rows = bounds(case, rank)
        assert_close(results[0]["dbeta1"], data["g1"][rows].sum(0), f"process {rank}: dbeta")
        assert not torch.allclose(results[0]["dbeta1"], data["g1"].sum(0))


def test_processes_hold_bitwise_identical_running_statistics(three_processes):
    """Every process merges the same messages in the same order: the buffers agree to the last bit."""
    for index, case in enumerate(THREE):
        states = [results[index]["state"] for results in three_processes]
        for key in states[0]:
            assert all(torch.equal(s[key], states[0][key]) for s in states), f"{case.name}: {key}"


def test_evaluation_without_running_statistics_normalizes_each_slice_alone(three_processes):
    """PyTorch's rule: no synchronization in evaluation mode, even when the batch's statistics are used."""
    for index, case in enumerate(THREE):
        if case.options.get("track_running_stats", True):
            continue
        kind = nn.BatchNorm2d if len(case.tail) == 2 else nn.BatchNorm1d
        for rank, results in enumerate(three_processes):
            alone = kind(case.c, dtype=case.dtype, **case.options).eval()
            set_params(alone, case)
            rows = bounds(case, rank)
            assert_close(results[index]["y_eval"], alone(batches(case)["x_eval"][rows]), f"{case.name}, {rank}")


def test_variance_merge_keeps_its_digits_when_the_mean_is_large(three_processes):
    """The merge is Chan's, not a sum of squares.

    In float32, inputs near 3000 with a spread of 0.1: their variance is about 1e-9 of their
    squared mean, below float32's resolution of 6e-8, so E[x^2] - E[x]^2 from all-reduced
    sums (computed here on the same slices) is off by more than the variance itself, while
    the running variance and the outputs of SyncBatchNorm match a float64 computation on the
    whole batch to 1e-3.
    """
    case = FLOAT32_LARGE_MEAN
    data = batches(case)
    x = data["x1"]
    truth = x.double().var(0, unbiased=True)
    # the naive alternative: all-reduce count, sum x and sum x^2 in float32
    m = torch.tensor(float(len(x)))
    s1 = sum(x[bounds(case, r)].sum(0) for r in range(3))
    s2 = sum(x[bounds(case, r)].square().sum(0) for r in range(3))
    naive = (s2 / m - (s1 / m).square()) * m / (m - 1)
    assert ((naive.double() - truth).abs() / truth).min() > 0.5, "the input does not defeat the naive formula"
    ref64 = nn.BatchNorm1d(case.c, dtype=torch.float64, momentum=1.0)
    set_params(ref64, case)
    y64 = ref64(x.double())
    for rank, results in enumerate(three_processes):
        seen = results[-1]
        assert_close(seen["y1"].double(), y64[bounds(case, rank)].detach(), f"process {rank}: y", rtol=0, atol=1e-3)
    ref64(data["x2"].double())  # with momentum 1, the running variance is the last batch's
    for rank, results in enumerate(three_processes):
        running_var = results[-1]["state"]["running_var"].double()
        assert_close(running_var, ref64.running_var, f"process {rank}: running_var", rtol=1e-3, atol=0)


@CUDA2
@pytest.mark.cuda
def test_two_gpus_over_nccl_compute_what_one_batch_norm_computes():
    results = run_processes(sync_worker, 2, TWO[:5], "cuda", timeout=120, backend="nccl")
    for index, case in enumerate(TWO[:5]):
        check_like_one_batch(case, [r[index] for r in results])


# ---------------------------------------------------------------------------------------------
# The merge, in one process
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=5).filter(lambda s: sum(s) > 0), st.integers(0, 2**16))
def test_merged_moments_are_those_of_the_whole_batch(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), 3, generator=g, dtype=torch.float64) * 5 + torch.arange(sum(sizes)).view(-1, 1)
    parts = [bnt.Moments.of(part) for part in x.split(sizes)]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    whole = bnt.Moments.of(x)
    assert float(merged.count) == len(x)
    torch.testing.assert_close(merged.mean, whole.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged.m2, whole.m2, rtol=1e-11, atol=1e-10)


def test_moments_pack_into_one_message_of_2c_plus_1_numbers():
    moments = bnt.Moments.of(torch.randn(6, 4, 5, dtype=torch.float64))
    message = moments.pack()
    assert message.shape == (2 * 4 + 1,) and float(message[0]) == 30
    back = bnt.Moments.unpack(message)
    assert all(torch.equal(a, b) for a, b in zip(back, moments, strict=True))


# ---------------------------------------------------------------------------------------------
# Without synchronization: not initialized, a world of one, evaluation mode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tail", TAILS, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_without_torch_distributed_it_is_plain_batch_norm(tail, options):
    """As nn.SyncBatchNorm: with torch.distributed not initialized, the layer is batch norm on its input."""
    assert not torch.distributed.is_initialized()
    case = Case(3 if len(tail) < 2 else 2, tail, (9,), options)
    layer = bnt.SyncBatchNorm(case.c, dtype=torch.float64, **options)
    set_params(layer, case)
    check_like_one_batch(case, [steps(layer, batches(case), slice(None))])


@pytest.fixture
def world_of_one(tmp_path, monkeypatch):
    """torch.distributed initialized in this process, gloo, one process; every collective forbidden."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                                         world_size=1)

    def forbidden(*args, **kwargs):
        raise AssertionError("a world of one process must not communicate")

    monkeypatch.setattr(torch.distributed, "all_gather_single", forbidden)
    monkeypatch.setattr(torch.distributed, "all_reduce", forbidden)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("tail", TAILS, ids=str)
def test_a_world_of_one_process_is_plain_batch_norm_without_communication(world_of_one, tail):
    """As nn.SyncBatchNorm: one process has nothing to synchronize (PyTorch's also refuses CPU input there)."""
    case = Case(3 if len(tail) < 2 else 2, tail, (9,), {"momentum": None})
    layer = bnt.SyncBatchNorm(case.c, dtype=torch.float64, momentum=None)
    set_params(layer, case)
    check_like_one_batch(case, [steps(layer, batches(case), slice(None))])


def test_a_single_value_per_feature_is_refused_in_training_as_pytorch():
    layer = bnt.SyncBatchNorm(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 3))
    assert int(layer.num_batches_tracked) == 0


def test_input_of_the_wrong_shape_is_refused_with_pytorchs_messages():
    layer = bnt.SyncBatchNorm(3)
    with pytest.raises(ValueError, match=r"expected at least 2D input \(got 1D input\)"):
        layer(torch.randn(3))
    with pytest.raises(ValueError, match="number of input channels should be non-zero"):
        bnt.SyncBatchNorm(0)(torch.randn(4, 0))
    with pytest.raises(ValueError, match="expected input with 3 features"):
        layer(torch.randn(4, 5, 2, 2))


# ---------------------------------------------------------------------------------------------
# A drop-in: constructor, parameters, buffers, repr, state dict
# ---------------------------------------------------------------------------------------------


def test_constructor_signature_is_pytorchs():
    ours = inspect.signature(bnt.SyncBatchNorm.__init__).parameters
    theirs = inspect.signature(nn.SyncBatchNorm.__init__).parameters
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].default == theirs[name].default, name
        assert ours[name].kind == theirs[name].kind, name


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_parameters_buffers_repr_and_state_dict_are_pytorchs(options):
    ours, theirs = bnt.SyncBatchNorm(5, **options), nn.SyncBatchNorm(5, **options)
    assert repr(ours) == repr(theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (key, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), key
    assert ours.process_group is None


@pytest.mark.parametrize("kind", [nn.SyncBatchNorm, nn.BatchNorm1d, nn.BatchNorm2d])
def test_state_dict_moves_both_ways(two_processes, kind):
    """A state dict trained over two processes loads into PyTorch's layers, and back."""
    trained = two_processes[0][0]["state"]
    theirs = kind(3, dtype=torch.float64)
    theirs.load_state_dict(trained)
    ours = bnt.SyncBatchNorm(3, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    for key, value in trained.items():
        assert torch.equal(ours.state_dict()[key], value), key


# ---------------------------------------------------------------------------------------------
# convert_sync_batchnorm
# ---------------------------------------------------------------------------------------------


def model_with_every_batch_norm() -> nn.Sequential:
    bias_free = nn.BatchNorm1d(4, bias=False)
    return nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None), bias_free,
        nn.Sequential(nn.Unflatten(1, (1, 2, 2)), nn.BatchNorm2d(1, eps=1e-3),
                      nn.Unflatten(2, (1, 2)), nn.BatchNorm3d(1, affine=False)),
        nn.Flatten(), bnt.BatchNorm1d(4, track_running_stats=False), nn.SyncBatchNorm(4),
    )


def test_convert_replaces_every_batch_norm_as_pytorch_does():
    model = model_with_every_batch_norm().double().eval()
    group = object()  # convert only stores the group
    originals = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, bnt.BatchNorm1d))]
    theirs = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model), group)
    ours = bnt.convert_sync_batchnorm(model, group)
    assert ours is model  # a container is converted in place
    converted = [m for m in ours.modules() if isinstance(m, bnt.SyncBatchNorm)]
    assert len(converted) == len(originals) == 6
    for new, old in zip(converted, originals, strict=True):
        assert new.process_group is group and not new.training
        for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
            assert getattr(new, attr) == getattr(old, attr), attr
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert getattr(new, name) is getattr(old, name), f"{name} is shared, not copied"
    # PyTorch's converts the same layers, bnlib's own BatchNorm1d (index 4) aside, into the same state
    expected = [m for m in theirs.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert len(expected) == 5
    for new, pytorchs in zip(converted[:4] + converted[5:], expected, strict=True):
        assert repr(new) == repr(pytorchs) and new.process_group is pytorchs.process_group
        assert list(new.state_dict()) == list(pytorchs.state_dict())


def test_convert_of_one_layer_returns_a_new_layer_with_qconfig_and_training_flag():
    layer = nn.BatchNorm1d(3)
    layer.qconfig = "a quantization config"
    new = bnt.convert_sync_batchnorm(layer)
    assert isinstance(new, bnt.SyncBatchNorm) and new is not layer
    assert new.qconfig == "a quantization config" and new.training and new.process_group is None
    assert bnt.SyncBatchNorm.convert_sync_batchnorm(nn.ReLU()).__class__ is nn.ReLU


def test_converted_model_gives_the_same_outputs_without_distributed():
    model = model_with_every_batch_norm().double()
    x = torch.randn(8, 3, dtype=torch.float64)
    expected = copy.deepcopy(model)(x)
    assert math.isfinite(float(expected.detach().sum()))
    torch.testing.assert_close(bnt.convert_sync_batchnorm(model)(x), expected, rtol=1e-12, atol=1e-12)
