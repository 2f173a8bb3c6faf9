r"""The scenarios of ``bn-torch``: ``BatchNormFunction`` (forward, hand-written backward) and ``BatchNorm1d``.

Facts beyond the common ones: ``affine_false_parameters`` and ``untracked_buffers``
(``module_options``), ``state_dict`` and ``torch_loads_ours`` (``module_state_dict``),
``uses_function`` (``module_backward``), ``device``, ``devices``, ``shapes`` and ``matches_cpu``
(``module_device``).

Module checks compare outputs with rtol 1e-4: eps's placement is graded by function_forward.
Running statistics use momentum 0.5 where the check is about something else than momentum
(a reversed momentum changes nothing at 0.5), so one mistake costs the points of its behaviour.

This module runs INSIDE the sandbox. It is imported in every sandbox (the registry holds every
check), but imports torch only when a check of this assignment runs: the NumPy assignments'
sandboxes have no torch.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from autograder.inside.inputs import affine, batch, ncl, running
from autograder.inside.record import shorten
from autograder.inside.scenarios.registry import registrar
from autograder.inside.trial import StudentCodeFailed, Trial, to_numpy

scenario = registrar("bn-torch", "torch")


def _torch():
    """The torch module, imported on first use."""
    import torch  # noqa: PLC0415 - only bn-torch's sandbox has torch; the others import this module too

    return torch


def _t(a: np.ndarray, requires_grad: bool = False, device: str = "cpu"):
    """A float64 tensor of ``a``."""
    torch = _torch()
    return torch.tensor(a, dtype=torch.float64, device=device, requires_grad=requires_grad)


@scenario(
    "function_forward",
    ("BatchNormFunction",),
    "BatchNormFunction.apply(x, gamma, beta, eps) returns gamma * x_hat + beta with the batch "
    "mean and the biased batch variance, eps inside the square root",
)
def _function_forward(t: Trial, rng) -> None:
    F = t.fn("BatchNormFunction")
    for n, d, eps, sd in ((8, 5, 1e-5, (0.5, 2.0)), (6, 4, 0.01, (0.01, 0.1))):
        x = batch(rng, n, d, sd=sd)
        gamma, beta = affine(rng, d)
        label = f"BatchNormFunction.apply(x, gamma, beta, {eps}) with float64 x of shape {(n, d)}"
        y = t.call(label, F.apply, _t(x, True), _t(gamma, True), _t(beta, True), eps)
        t.array(f"y_{n}x{d}", y, f"the output of {label}")


def _function_backward(t: Trial, rng, keep: str) -> None:
    """Gradient ``keep`` of the student's backward, called by autograd on a random ``dy``."""
    torch = _torch()
    F = t.fn("BatchNormFunction")
    for n, d in ((8, 5), (6, 3)):
        x = batch(rng, n, d)
        gamma, beta = affine(rng, d)
        dy = rng.normal(0, 1, (n, d))
        xt, gt, bt = _t(x, True), _t(gamma, True), _t(beta, True)
        label = f"BatchNormFunction.apply(x, gamma, beta, 1e-05) with float64 x of shape {(n, d)}"
        y = t.call(label, F.apply, xt, gt, bt, 1e-5)
        t.array(f"diag_y_{n}x{d}", y, f"the output of {label}")
        blabel = "torch.autograd.grad(y, (x, gamma, beta), dy), which calls your BatchNormFunction.backward"
        grads = t.call(blabel, torch.autograd.grad, y, (xt, gt, bt), _t(dy), allow_unused=True)
        grad = grads[("dx", "dgamma", "dbeta").index(keep)]
        t.array(f"{keep}_{n}x{d}", grad, f"{keep} from {blabel}, x of shape {(n, d)}")


for _keep in ("dx", "dgamma", "dbeta"):
    scenario(
        f"function_backward_{_keep}",
        ("BatchNormFunction",),
        f"BatchNormFunction.backward returns the right {_keep}, computed by hand (not by autograd)",
        rtol=1e-4,  # eps's placement is graded by function_forward
        backward_of="BatchNormFunction",
    )(partial(_function_backward, keep=_keep))


def _module(t: Trial, label: str, *args: Any, **kwargs: Any):
    """Build the student's BatchNorm1d in float64 and training mode."""
    M = t.fn("BatchNorm1d")
    m = t.call(label, M, *args, **kwargs)
    m = t.call(f"{label}.double()", lambda: m.double())
    t.call(f"{label}.train()", lambda: m.train())
    return m


def _forward(t: Trial, m, x, what: str):
    """``m(x)``, labelled ``what`` and x's shape."""
    return t.call(f"{what} with x of shape {tuple(x.shape)}", m, x)


def _buffer(t: Trial, m, name: str, key: str, how: str) -> None:
    """Keep the module's buffer ``name`` under ``key``; a module without it ends the check."""
    value = getattr(m, name, "<missing>")
    if isinstance(value, str):
        raise StudentCodeFailed(how, AttributeError(f"the module has no attribute {name!r}"))
    t.array(key, value, how)


def _set_buffers(t: Trial, rng, m, c: int) -> None:
    """Give the running statistics known values (as load_state_dict would), by attribute."""
    torch = _torch()
    rm, rv = running(rng, c)

    def assign():
        with torch.no_grad():
            m.running_mean.copy_(torch.tensor(rm))
            m.running_var.copy_(torch.tensor(rv))
            m.num_batches_tracked.fill_(3)

    t.call("setting module.running_mean, running_var and num_batches_tracked", assign)


@scenario(
    "module_train_output",
    ("BatchNorm1d", "BatchNormFunction"),
    "BatchNorm1d in training mode normalizes (N, C) input with the batch's statistics, as nn.BatchNorm1d",
    rtol=1e-4,
)
def _module_train_output(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5)", 5)
    for k in (1, 2):
        x = batch(rng, 16, 5)
        y = _forward(t, m, _t(x), f"module(x) in training mode, batch {k}")
        t.array(f"y_batch{k}", y, f"module(x) in training mode, batch {k}, x of shape (16, 5)")


@scenario(
    "module_ncl",
    ("BatchNorm1d", "BatchNormFunction"),
    "(N, C, L) input: statistics per channel C over both N and L (m = N*L values each), for the "
    "output and for the running statistics",
    rtol=1e-4,
)
def _module_ncl(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(4, momentum=0.5)", 4, momentum=0.5)
    x = ncl(rng, 6, 4, 7)
    y = _forward(t, m, _t(x), "module(x) in training mode")
    t.array("y", y, "module(x) in training mode, x of shape (6, 4, 7)")
    _buffer(t, m, "running_mean", "running_mean", "running_mean after that (N, C, L) batch (momentum 0.5)")
    _buffer(t, m, "running_var", "running_var", "running_var after that (N, C, L) batch (momentum 0.5)")


def _three_batches(t: Trial, rng, m, n: int = 8, c: int = 5) -> None:
    for k in range(3):
        x = batch(rng, n, c)
        _forward(t, m, _t(x), f"module(x) in training mode, batch {k + 1}")


@scenario(
    "module_running_mean",
    ("BatchNorm1d", "BatchNormFunction"),
    "the running mean after three training batches moves towards each batch's mean",
    rtol=1e-4,
)
def _module_running_mean(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5, momentum=0.5)", 5, momentum=0.5)
    _three_batches(t, rng, m)
    _buffer(t, m, "running_mean", "running_mean", "module.running_mean after three training batches (momentum 0.5)")


@scenario(
    "module_running_var",
    ("BatchNorm1d", "BatchNormFunction"),
    "the running variance after three training batches moves towards each batch's UNBIASED variance",
    rtol=1e-4,
)
def _module_running_var(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5, momentum=0.5)", 5, momentum=0.5)
    _three_batches(t, rng, m, n=4)
    how = "module.running_var after three training batches of 4 examples (momentum 0.5)"
    _buffer(t, m, "running_var", "running_var", how)


@scenario(
    "module_momentum",
    ("BatchNorm1d", "BatchNormFunction"),
    "momentum is the weight of the NEW batch: running = (1 - momentum) * running + momentum * batch "
    "(default 0.1)",
    rtol=1e-4,
)
def _module_momentum(t: Trial, rng) -> None:
    x = batch(rng, 8, 5)
    const = np.repeat(rng.normal(0, 1, (1, 5)), 8, axis=0)  # variance 0: biased or not, the same
    for label, kwargs, key in (
        ("BatchNorm1d(5, momentum=0.3)", {"momentum": 0.3}, "0.3"),
        ("BatchNorm1d(5)", {}, "default"),
    ):
        m = _module(t, label, 5, **kwargs)
        _forward(t, m, _t(x), "module(x) in training mode")
        _buffer(t, m, "running_mean", f"running_mean_{key}", f"running_mean after one batch of {label}")
        m = _module(t, label, 5, **kwargs)
        _forward(t, m, _t(const), "module(x) in training mode, constant features (variance 0)")
        _buffer(t, m, "running_var", f"running_var_{key}", f"running_var after one batch of constant features, {label}")


@scenario(
    "module_cumulative_average",
    ("BatchNorm1d", "BatchNormFunction"),
    "momentum=None keeps the plain average of all batches so far (momentum 1/num_batches_tracked)",
    rtol=1e-4,
)
def _module_cumulative(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5, momentum=None)", 5, momentum=None)
    _three_batches(t, rng, m)
    _buffer(t, m, "running_mean", "running_mean", "running_mean after three batches, momentum=None")
    m = _module(t, "BatchNorm1d(5, momentum=None)", 5, momentum=None)
    for k in range(3):
        const = np.repeat(rng.normal(0, 1, (1, 5)), 6, axis=0)
        _forward(t, m, _t(const), f"module(x) in training mode, constant batch {k + 1}")
    _buffer(t, m, "running_var", "running_var", "running_var after three constant batches (variance 0), momentum=None")


@scenario(
    "module_num_batches_tracked",
    ("BatchNorm1d", "BatchNormFunction"),
    "num_batches_tracked counts the training batches (and only them)",
)
def _module_nbt(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5)", 5)
    _three_batches(t, rng, m)
    t.call("module.eval()", lambda: m.eval())
    _forward(t, m, _t(batch(rng, 4, 5)), "module(x) in evaluation mode")
    how = "num_batches_tracked after three training batches and one evaluation batch"
    _buffer(t, m, "num_batches_tracked", "num_batches_tracked", how)


@scenario(
    "module_eval_output",
    ("BatchNorm1d", "BatchNormFunction"),
    "in evaluation mode BatchNorm1d normalizes with the running statistics (a batch of one works)",
    rtol=1e-4,
)
def _module_eval_output(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5)", 5)
    _set_buffers(t, rng, m, 5)
    t.call("module.eval()", lambda: m.eval())
    for n in (6, 1):
        x = batch(rng, n, 5)
        y = _forward(t, m, _t(x), "module(x) in evaluation mode")
        t.array(f"y_{n}", y, f"module(x) in evaluation mode, x of shape ({n}, 5), known running statistics")


@scenario(
    "module_eval_keeps_stats",
    ("BatchNorm1d", "BatchNormFunction"),
    "evaluation mode leaves running_mean, running_var and num_batches_tracked unchanged",
)
def _module_eval_keeps(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5)", 5)
    _set_buffers(t, rng, m, 5)
    t.call("module.eval()", lambda: m.eval())
    for k in range(2):
        _forward(t, m, _t(batch(rng, 6, 5)), f"module(x) in evaluation mode, batch {k + 1}")
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        _buffer(t, m, name, name, f"module.{name} after two evaluation batches")


@scenario(
    "module_options",
    ("BatchNorm1d", "BatchNormFunction"),
    "affine=False: no weight and bias (gamma 1, beta 0); track_running_stats=False: no running "
    "buffers, and the batch's statistics in evaluation mode too",
    rtol=1e-4,
    compare_facts=("affine_false_parameters", "untracked_buffers"),
)
def _module_options(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5, affine=False)", 5, affine=False)
    t.fact("affine_false_parameters", len(list(m.parameters())))
    x = batch(rng, 8, 5)
    y = _forward(t, m, _t(x), "module(x), affine=False")
    t.array("y_affine_false", y, "module(x) in training mode, affine=False")
    m = _module(t, "BatchNorm1d(5, track_running_stats=False)", 5, track_running_stats=False)
    t.fact(
        "untracked_buffers",
        sorted(k for k in ("running_mean", "running_var", "num_batches_tracked") if getattr(m, k, None) is not None),
    )
    _forward(t, m, _t(batch(rng, 8, 5)), "module(x) in training mode, track_running_stats=False")
    t.call("module.eval()", lambda: m.eval())
    x = batch(rng, 8, 5)
    y = _forward(t, m, _t(x), "module(x) in evaluation mode, track_running_stats=False")
    t.array("y_untracked_eval", y, "module(x) in evaluation mode, track_running_stats=False")


@scenario(
    "module_state_dict",
    ("BatchNorm1d",),
    "BatchNorm1d has nn.BatchNorm1d's parameters, buffers and state_dict (keys, shapes, dtypes), "
    "and state dicts load both ways",
    compare_facts=("state_dict", "torch_loads_ours"),
)
def _module_state_dict(t: Trial, rng) -> None:
    torch = _torch()
    M = t.fn("BatchNorm1d")
    m = t.call("BatchNorm1d(5)", M, 5)
    sd = t.call("BatchNorm1d(5).state_dict()", lambda: m.state_dict())
    t.fact("state_dict", [[str(k), list(getattr(v, "shape", [])), _dtype_name(v)] for k, v in sd.items()])
    try:
        torch.nn.BatchNorm1d(5).load_state_dict(sd)
        t.fact("torch_loads_ours", "ok")
    except Exception as exc:
        t.fact("torch_loads_ours", f"{type(exc).__name__}: {shorten(exc, 300)}")
    theirs = {
        "weight": torch.tensor(rng.uniform(0.5, 2, 5), dtype=torch.float32),
        "bias": torch.tensor(rng.normal(0, 1, 5), dtype=torch.float32),
        "running_mean": torch.tensor(rng.normal(0, 1, 5), dtype=torch.float32),
        "running_var": torch.tensor(rng.uniform(0.5, 2, 5), dtype=torch.float32),
        "num_batches_tracked": torch.tensor(7, dtype=torch.long),
    }
    m = t.call("BatchNorm1d(5)", M, 5)
    t.call("module.load_state_dict(an nn.BatchNorm1d(5) state_dict)", m.load_state_dict, theirs)
    loaded = t.call("module.state_dict() after load_state_dict", lambda: m.state_dict())
    for key in theirs:
        if key in loaded:
            t.array(f"loaded_{key}", loaded[key], f"state_dict()[{key!r}] after loading nn.BatchNorm1d's values")


@scenario(
    "module_backward",
    ("BatchNorm1d", "BatchNormFunction"),
    "gradients through BatchNorm1d (x, weight and bias, (N, C, L) input) are right and come from "
    "your BatchNormFunction",
    rtol=1e-4,
    compare_facts=("uses_function",),
    backward_of="BatchNormFunction",
)
def _module_backward(t: Trial, rng) -> None:
    torch = _torch()
    m = _module(t, "BatchNorm1d(4)", 4)
    F = t.fn("BatchNormFunction")
    params = list(m.parameters())
    if len(params) != 2:
        raise StudentCodeFailed(
            "list(BatchNorm1d(4).parameters())",
            ValueError(f"expected 2 parameters (weight, bias), found {len(params)}"),
        )
    gamma, beta = affine(rng, 4)
    with torch.no_grad():
        params[0].copy_(torch.tensor(gamma))
        params[1].copy_(torch.tensor(beta))
    x = ncl(rng, 6, 4, 5)
    xt = _t(x, True)
    y = _forward(t, m, xt, "module(x) in training mode")
    t.fact("uses_function", _graph_has(y, getattr(F, "__name__", "BatchNormFunction") + "Backward"))
    dy = _t(rng.normal(0, 1, x.shape))
    label = "torch.autograd.grad(y, (x, weight, bias), dy) through your module"
    grads = t.call(label, torch.autograd.grad, y, (xt, params[0], params[1]), dy, allow_unused=True)
    for key, g in zip(("dx", "dweight", "dbias"), grads, strict=True):
        t.array(key, g, f"{key} from {label}, x of shape (6, 4, 5)")


def _dtype_name(v: Any) -> str:
    """``"float32"`` for a float32 tensor; the type's name for anything else."""
    return str(getattr(v, "dtype", type(v).__name__)).replace("torch.", "")


def _graph_has(y: Any, node_name: str, limit: int = 200) -> bool:
    """Whether the autograd graph behind ``y`` has a node called ``node_name``."""
    todo, seen = [getattr(y, "grad_fn", None)], 0
    while todo and seen < limit:
        node = todo.pop()
        if node is None:
            continue
        seen += 1
        if type(node).__name__ == node_name:
            return True
        todo.extend(fn for fn, _ in getattr(node, "next_functions", ()))
    return False


def _default_device() -> str:
    torch = _torch()
    return "cuda" if torch.cuda.is_available() else "meta"


@scenario(
    "module_device",
    ("BatchNorm1d", "BatchNormFunction"),
    "BatchNorm1d works on the device of its input: after module.to(device), outputs, parameters "
    "and buffers stay there, in training and evaluation mode, for (N, C) and (N, C, L) (the GPU "
    "when there is one; otherwise PyTorch's meta device stands in for a second device)",
    compare_facts=("devices", "shapes", "matches_cpu"),
)
def _module_device(t: Trial, rng) -> None:
    torch = _torch()
    device = t.options.get("device") or _default_device()
    t.fact("device", device)
    M = t.fn("BatchNorm1d")
    on_device = t.call(f"BatchNorm1d(5).to({device!r})", lambda: M(5).to(device))
    on_cpu = t.call("BatchNorm1d(5)", M, 5) if device != "meta" else None
    dtype = torch.float32 if device == "meta" else torch.float64
    if on_cpu is not None:
        on_device = t.call("module.double()", lambda: on_device.double())
        on_cpu = t.call("module.double()", lambda: on_cpu.double())
    devices: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    worst = 0.0
    for mode in ("train", "eval"):
        for m in (on_device, on_cpu):
            if m is not None:
                t.call(f"module.{mode}()", getattr(m, mode))
        for shape in ((8, 5), (4, 5, 3)):
            x = ncl(rng, shape[0], 5, shape[2]) if len(shape) == 3 else batch(rng, *shape)
            key = f"{mode}_{len(shape)}d"
            xt = torch.tensor(x, dtype=dtype, device=device)
            y = _forward(t, on_device, xt, f"module(x) on {device} in {mode} mode")
            devices[key] = _where(y, device)
            shapes[key] = list(getattr(y, "shape", []))
            if on_cpu is not None:
                y_cpu = _forward(t, on_cpu, torch.tensor(x, dtype=dtype), f"module(x) on the CPU in {mode} mode")
                got, want = to_numpy(y), to_numpy(y_cpu)
                if got is not None and want is not None and got.shape == want.shape:
                    scale = float(np.abs(want).max()) or 1.0
                    worst = max(worst, float(np.abs(got - want).max()) / scale)
                else:
                    worst = float("inf")
    devices["parameters"] = sorted({str(_where(p, device)) for p in on_device.parameters()})
    devices["buffers"] = sorted({str(_where(b, device)) for b in on_device.buffers()})
    t.fact("devices", devices)
    t.fact("shapes", shapes)
    # on a GPU: the same numbers as on the CPU (float64); on the meta device there are no numbers
    t.fact("matches_cpu", None if on_cpu is None else bool(worst <= 1e-6))


def _where(v: Any, device: str) -> str | None:
    """``"the input's device"``, or the other device ``v`` is on (None for a missing tensor)."""
    d = getattr(getattr(v, "device", None), "type", None)
    return "the input's device" if d == device else d
