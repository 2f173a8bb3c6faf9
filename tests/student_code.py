"""Student code for the notebook tests: correct alternatives, known mistakes, delegation, tampering.

Each submission is a released notebook whose solution cells are filled with source code:

- ``solution_sources(a)``: the instructor's solutions, markers stripped;
- ``ALTERNATIVES[a]``: two more correct implementations of every function, written differently
  (one-pass variance, fused scale and shift, other cache layouts, einsum, lerp...);
- ``VARIANTS``: each known mistake of :mod:`autograder.course.mistakes`, written as a student would write it
  (an edit of the solution), with the checks it must fail; ``GROUPS[a]`` puts variants whose
  failing checks do not overlap into one notebook, so one autograde run covers several;
- ``DELEGATING``: code that hands its work to a library, plainly or in disguise;
- ``TAMPERING``: a cell that tries to make wrong code pass.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.course.spec import ASSIGNMENTS  # noqa: F401 - the test modules take it from here

ROOT = Path(__file__).resolve().parent.parent


def solution_notebook(assignment: str):
    return nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def solution_sources(assignment: str, cell_type: str = "code") -> dict[str, str]:
    """``grade_id -> source`` of the solution cells, with the solution markers removed.

    ``cell_type="markdown"`` gives the model answers of the written questions instead.
    """
    out = {}
    for cell in solution_notebook(assignment).cells:
        meta = _nbgrader(cell)
        if meta.get("solution") and cell.cell_type == cell_type:
            lines = [line for line in cell.source.splitlines()
                     if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line]
            out[meta["grade_id"]] = "\n".join(lines)
    return out


def hidden_test_sources(assignment: str) -> dict[str, str]:
    """``grade_id -> source`` of the graded test cells, hidden tests included."""
    return {_nbgrader(c)["grade_id"]: c.source for c in solution_notebook(assignment).cells
            if _nbgrader(c).get("grade") and c.cell_type == "code"}


def points(assignment: str) -> dict[str, float]:
    """``grade_id -> points`` of the automatically graded cells (the written answers are graded by hand)."""
    return {_nbgrader(c)["grade_id"]: float(_nbgrader(c)["points"]) for c in solution_notebook(assignment).cells
            if _nbgrader(c).get("grade") and c.cell_type == "code"}


def written_points(assignment: str) -> dict[str, float]:
    """``grade_id -> points`` of the written answers, which a grader scores by hand."""
    return {_nbgrader(c)["grade_id"]: float(_nbgrader(c)["points"]) for c in solution_notebook(assignment).cells
            if _nbgrader(c).get("grade") and c.cell_type == "markdown"}


def automatic_full_marks(row: dict) -> float:
    """Full marks a grades.csv row can have before a grader scores the written answers that wait.

    A written answer left as released scores 0 at once; an answered one waits (``provisional``).
    """
    waiting = sum(written_points(row["assignment"]).values()) if row.get("provisional") == "yes" else 0.0
    return float(row["max_score"]) - waiting


def fill(released, sources: dict[str, str], extra_cells: list[tuple[int, str]] = ()):
    """A copy of a released notebook with its solution cells replaced by ``sources``.

    ``extra_cells``: ``(position, source)`` code cells a student added (no nbgrader metadata).
    """
    nb = copy.deepcopy(released)
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta.get("solution") and meta["grade_id"] in sources:
            cell.source = sources[meta["grade_id"]]
    for k, (position, source) in enumerate(extra_cells):
        cell = nbformat.v4.new_code_cell(source)
        cell["id"] = f"student-added-{k}"
        nb.cells.insert(position, cell)
    return nb


def edited(assignment: str, edits: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """The solution sources with textual edits ``{grade_id: [(old, new), ...]}`` applied."""
    sources = solution_sources(assignment)
    for grade_id, pairs in edits.items():
        for old, new in pairs:
            if sources[grade_id].count(old) != 1:
                raise AssertionError(f"edit {old!r} does not match exactly once in {assignment}:{grade_id}")
            sources[grade_id] = sources[grade_id].replace(old, new)
    return sources


# ============================================================================================
# Correct implementations written differently from the solutions
# ============================================================================================

FORWARD_ALT_1 = {
    # one-pass variance E[x^2] - E[x]^2, a dict cache
    "solution_bn_forward_train": '''
def bn_forward_train(x, gamma, beta, eps=1e-5):
    mean = np.mean(x, axis=0)
    var = np.mean(x * x, axis=0) - mean * mean
    inv = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv
    return x_hat * gamma + beta, {"x_hat": x_hat, "inv": inv, "gamma": gamma}
''',
    # scale and shift folded into one affine map
    "solution_bn_forward_eval": '''
def bn_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    scale = gamma / np.sqrt(running_var + eps)
    return x * scale + (beta - running_mean * scale)
''',
    # np.var with ddof=1, and the update written as a step towards the batch
    "solution_update_running_stats": '''
def update_running_stats(running_mean, running_var, x, momentum=0.1):
    new_mean = running_mean + momentum * (x.mean(axis=0) - running_mean)
    new_var = running_var + momentum * (np.var(x, axis=0, ddof=1) - running_var)
    return new_mean, new_var
''',
}

FORWARD_ALT_2 = {
    # einsum sums, a small class as the cache, feature by feature
    "solution_bn_forward_train": '''
class Saved:
    def __init__(self, **kw):
        self.__dict__.update(kw)

def bn_forward_train(x, gamma, beta, eps=1e-5):
    n = x.shape[0]
    ones = np.ones(n)
    mu = np.einsum("i,ij->j", ones, x) / n
    centered = x - mu[None, :]
    var = np.einsum("ij,ij->j", centered, centered) / n
    std = np.sqrt(var + eps)
    x_hat = centered / std
    y = np.empty_like(x)
    for j in range(x.shape[1]):
        y[:, j] = gamma[j] * x_hat[:, j] + beta[j]
    return y, Saved(x_hat=x_hat, std=std, gamma=gamma, n=n)
''',
    "solution_bn_forward_eval": '''
def bn_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    out = np.zeros(x.shape)
    for j in range(x.shape[1]):
        out[:, j] = (x[:, j] - running_mean[j]) / (running_var[j] + eps) ** 0.5 * gamma[j] + beta[j]
    return out
''',
    # biased variance first, then Bessel's correction; np.average
    "solution_update_running_stats": '''
def update_running_stats(running_mean, running_var, x, momentum=0.1):
    m = len(x)
    mu = np.average(x, axis=0)
    biased = np.average((x - mu) ** 2, axis=0)
    return (1.0 - momentum) * running_mean + momentum * mu, (1.0 - momentum) * running_var + momentum * biased * m / (m - 1)
''',
}

BACKWARD_ALT_1 = {
    "solution_bn_forward_train": FORWARD_ALT_1["solution_bn_forward_train"],
    # the staged graph on the dict cache, with x - mu rebuilt from x_hat
    "solution_bn_backward_staged": '''
def bn_backward_staged(dy, cache):
    x_hat, inv, gamma = cache["x_hat"], cache["inv"], cache["gamma"]
    m = dy.shape[0]
    dbeta = np.sum(dy, axis=0)
    dgamma = np.sum(dy * x_hat, axis=0)
    dxhat = dy * gamma
    xmu = x_hat / inv
    dinv = np.sum(dxhat * xmu, axis=0)
    dxmu1 = dxhat * inv
    dvar = dinv * (-0.5) * inv ** 3
    dxmu2 = 2.0 * xmu * dvar / m
    dx1 = dxmu1 + dxmu2
    dmu = -np.sum(dx1, axis=0)
    dx = dx1 + dmu / m
    return dx, dgamma, dbeta
''',
    # the compact formula with means instead of sums
    "solution_bn_backward_compact": '''
def bn_backward_compact(dy, cache):
    x_hat, inv, gamma = cache["x_hat"], cache["inv"], cache["gamma"]
    dbeta = dy.sum(0)
    dgamma = (dy * x_hat).sum(0)
    dx = gamma * inv * (dy - dy.mean(0) - x_hat * (dy * x_hat).mean(0))
    return dx, dgamma, dbeta
''',
}

BACKWARD_ALT_2 = {
    "solution_bn_forward_train": FORWARD_ALT_2["solution_bn_forward_train"],
    # through the standard deviation instead of its inverse, einsum sums
    "solution_bn_backward_staged": '''
def bn_backward_staged(dy, cache):
    x_hat, std, gamma, n = cache.x_hat, cache.std, cache.gamma, cache.n
    dbeta = np.einsum("ij->j", dy)
    dgamma = np.einsum("ij,ij->j", dy, x_hat)
    dx_hat = dy * gamma
    centered = x_hat * std
    dcentered = dx_hat / std
    dstd = -np.einsum("ij,ij->j", dx_hat, centered) / std ** 2
    dvar = dstd * 0.5 / std
    dcentered = dcentered + dvar * 2.0 * centered / n
    dmu = -np.einsum("ij->j", dcentered)
    return dcentered + dmu / n, dgamma, dbeta
''',
    "solution_bn_backward_compact": '''
def bn_backward_compact(dy, cache):
    x_hat, std, gamma, n = cache.x_hat, cache.std, cache.gamma, cache.n
    sum_dy = dy.sum(axis=0)
    sum_dy_xhat = np.einsum("ij,ij->j", dy, x_hat)
    dx = (n * dy - sum_dy[None, :] - x_hat * sum_dy_xhat[None, :]) * (gamma / (n * std))[None, :]
    return dx, sum_dy_xhat, sum_dy
''',
}

TORCH_ALT_1 = {
    # var_mean, x and the statistics saved (x_hat recomputed in backward)
    "solution_batch_norm_function": '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        var, mu = torch.var_mean(x, dim=0, unbiased=False)
        rstd = 1.0 / torch.sqrt(var + eps)
        ctx.save_for_backward(x, mu, rstd, gamma)
        return torch.addcmul(beta, (x - mu) * rstd, gamma)

    @staticmethod
    def backward(ctx, grad_out):
        x, mu, rstd, gamma = ctx.saved_tensors
        x_hat = (x - mu) * rstd
        g = grad_out * gamma
        dx = rstd * (g - g.mean(0) - x_hat * (g * x_hat).mean(0))
        return dx, (grad_out * x_hat).sum(0), grad_out.sum(0), None
''',
    # reductions over dims (0, 2) with keepdim, lerp_ for the running statistics
    "solution_batch_norm_1d": '''
class BatchNorm1d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        kw = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(num_features, **kw)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features, **kw)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **kw))
            self.register_buffer("running_var", torch.ones(num_features, **kw))
            self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long, device=device))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x):
        flat = x.movedim(1, -1).reshape(-1, self.num_features)
        if self.training or not self.track_running_stats:
            gamma = self.weight if self.affine else torch.ones_like(flat[0])
            beta = self.bias if self.affine else torch.zeros_like(flat[0])
            out = BatchNormFunction.apply(flat, gamma, beta, self.eps)
            if self.training and self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    w = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                    self.running_mean.lerp_(flat.mean(0), w)
                    self.running_var.lerp_(flat.var(0, unbiased=True), w)
        else:
            out = (flat - self.running_mean) / torch.sqrt(self.running_var + self.eps)
            if self.affine:
                out = out * self.weight + self.bias
        return out.reshape(x.movedim(1, -1).shape).movedim(-1, 1)
''',
}

TORCH_ALT_2 = {
    # einsum reductions, staged backward on saved x - mu and 1/std
    "solution_batch_norm_function": '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        m = x.shape[0]
        mean = torch.einsum("ij->j", x) / m
        xc = x - mean
        var = torch.einsum("ij,ij->j", xc, xc) / m
        inv_std = (var + eps).rsqrt()
        ctx.save_for_backward(xc, inv_std, gamma)
        ctx.m = m
        return xc * (inv_std * gamma) + beta

    @staticmethod
    def backward(ctx, dy):
        xc, inv_std, gamma = ctx.saved_tensors
        m = ctx.m
        x_hat = xc * inv_std
        dgamma = torch.einsum("ij,ij->j", dy, x_hat)
        dbeta = torch.einsum("ij->j", dy)
        dxhat = dy * gamma
        dvar = -0.5 * torch.einsum("ij,ij->j", dxhat, xc) * inv_std ** 3
        dxc = dxhat * inv_std + 2.0 * xc * dvar / m
        dx = dxc - torch.einsum("ij->j", dxc) / m
        return dx, dgamma, dbeta, None
''',
    # statistics taken directly over dims (0, 2); the (N·L, C) view only for the Function
    "solution_batch_norm_1d": '''
class BatchNorm1d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super(BatchNorm1d, self).__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if self.affine:
            self.weight = nn.Parameter(torch.empty(num_features, device=device, dtype=dtype).fill_(1.0))
            self.bias = nn.Parameter(torch.empty(num_features, device=device, dtype=dtype).zero_())
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        for name, value in (("running_mean", 0.0), ("running_var", 1.0)):
            tensor = torch.full((num_features,), value, device=device, dtype=dtype) if track_running_stats else None
            self.register_buffer(name, tensor)
        self.register_buffer(
            "num_batches_tracked",
            torch.tensor(0, dtype=torch.long, device=device) if track_running_stats else None,
        )

    def _stats_dims(self, x):
        return (0,) if x.ndim == 2 else (0, 2)

    def forward(self, x):
        dims = self._stats_dims(x)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1)
        use_batch = self.training or self.running_mean is None
        if use_batch:
            n_values = x.numel() // x.shape[1]
            if self.training and self.track_running_stats:
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                with torch.no_grad():
                    mean = x.mean(dim=dims)
                    var = ((x - mean.view(shape)) ** 2).sum(dim=dims) / (n_values - 1)
                    self.running_mean.copy_(self.running_mean * (1 - factor) + mean * factor)
                    self.running_var.copy_(self.running_var * (1 - factor) + var * factor)
            c = self.num_features
            flat = x if x.ndim == 2 else x.permute(0, 2, 1).reshape(-1, c)
            ones = torch.ones(c, dtype=x.dtype, device=x.device)
            out = BatchNormFunction.apply(flat, self.weight if self.affine else ones, self.bias if self.affine else 0 * ones, self.eps)
            return out if x.ndim == 2 else out.reshape(x.shape[0], x.shape[2], c).permute(0, 2, 1)
        scale = torch.rsqrt(self.running_var + self.eps)
        if self.affine:
            scale = scale * self.weight
        shift = -self.running_mean * scale + (self.bias if self.affine else 0.0)
        return x * scale.view(shape) + shift.view(shape)
''',
}

CONV_ALT_1 = {
    # statistics over the axes (0, 2, 3) directly, a dict cache, the backward node by node
    "solution_batchnorm2d_forward_train": '''
def batchnorm2d_forward_train(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    std = np.sqrt(var + eps)
    x_hat = (x - mean) / std
    g = gamma[None, :, None, None]
    return g * x_hat + beta[None, :, None, None], {"x": x, "mean": mean, "std": std, "x_hat": x_hat, "g": g}
''',
    "solution_batchnorm2d_backward": '''
def batchnorm2d_backward(dy, cache):
    x, mean, std, x_hat, g = cache["x"], cache["mean"], cache["std"], cache["x_hat"], cache["g"]
    axes = (0, 2, 3)
    m = x.size // x.shape[1]
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    dx_hat = dy * g
    xmu = x - mean
    dvar = (dx_hat * xmu).sum(axis=axes, keepdims=True) * -0.5 / std**3
    dmu = -(dx_hat / std).sum(axis=axes, keepdims=True) - 2 * dvar * xmu.mean(axis=axes, keepdims=True)
    dx = dx_hat / std + dvar * 2 * xmu / m + dmu / m
    return dx, dgamma, dbeta
''',
    "solution_layernorm_forward": '''
def layernorm_forward(x, gamma, beta, eps=1e-5):
    mean = np.mean(x, axis=-1, keepdims=True)
    var = np.mean(x * x, axis=-1, keepdims=True) - mean * mean
    inv = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv
    return x_hat * gamma + beta, {"x_hat": x_hat, "inv": inv, "gamma": gamma}
''',
    "solution_layernorm_backward": '''
def layernorm_backward(dy, cache):
    x_hat, inv, gamma = cache["x_hat"], cache["inv"], cache["gamma"]
    g = dy * gamma
    dx = inv * (g - g.mean(axis=-1, keepdims=True) - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    return dx, np.einsum("nd,nd->d", dy, x_hat), np.einsum("nd->d", dy)
''',
    "solution_groupnorm_forward": '''
def groupnorm_forward(x, num_groups, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    xg = x.reshape(n, num_groups, c // num_groups, h, w)
    mean = xg.mean(axis=(2, 3, 4), keepdims=True)
    var = xg.var(axis=(2, 3, 4), keepdims=True)
    x_hat = ((xg - mean) / np.sqrt(var + eps)).reshape(n, c, h, w)
    return x_hat * gamma[:, None, None] + beta[:, None, None], {"x_hat": x_hat, "var": var, "eps": eps,
                                                                 "gamma": gamma, "G": num_groups}
''',
    "solution_groupnorm_backward": '''
def groupnorm_backward(dy, cache):
    x_hat, gamma, groups = cache["x_hat"], cache["gamma"], cache["G"]
    n, c, h, w = x_hat.shape
    inv = 1.0 / np.sqrt(cache["var"] + cache["eps"])
    g = (dy * gamma[:, None, None]).reshape(n, groups, c // groups, h, w)
    xh = x_hat.reshape(g.shape)
    axes = (2, 3, 4)
    dx = inv * (g - g.mean(axis=axes, keepdims=True) - xh * (g * xh).mean(axis=axes, keepdims=True))
    return dx.reshape(n, c, h, w), (dy * x_hat).sum(axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))
''',
}

CONV_ALT_2 = {
    # the (N, C, H, W) input transposed to (C, N*H*W), einsum sums, a tuple cache with x itself
    "solution_batchnorm2d_forward_train": '''
def batchnorm2d_forward_train(x, gamma, beta, eps=1e-5):
    c = x.shape[1]
    xc = x.transpose(1, 0, 2, 3).reshape(c, -1)
    mu = np.einsum("cm->c", xc) / xc.shape[1]
    var = np.einsum("cm,cm->c", xc - mu[:, None], xc - mu[:, None]) / xc.shape[1]
    scale = gamma / np.sqrt(var + eps)
    y = (x - mu[:, None, None]) * scale[:, None, None] + beta[:, None, None]
    return y, (x, mu, var, gamma, eps)
''',
    "solution_batchnorm2d_backward": '''
def batchnorm2d_backward(dy, cache):
    x, mu, var, gamma, eps = cache
    m = x.shape[0] * x.shape[2] * x.shape[3]
    istd = (1.0 / np.sqrt(var + eps))[:, None, None]
    x_hat = (x - mu[:, None, None]) * istd
    dbeta = np.einsum("nchw->c", dy)
    dgamma = np.einsum("nchw,nchw->c", dy, x_hat)
    dx = gamma[:, None, None] * istd / m * (m * dy - dbeta[:, None, None] - x_hat * dgamma[:, None, None])
    return dx, dgamma, dbeta
''',
    "solution_layernorm_forward": '''
def layernorm_forward(x, gamma, beta, eps=1e-5):
    xt = x.T
    mu = xt.mean(axis=0)
    sd = np.sqrt(xt.var(axis=0) + eps)
    x_hat = ((xt - mu) / sd).T
    return gamma * x_hat + beta, [x, gamma, eps]
''',
    "solution_layernorm_backward": '''
def layernorm_backward(dy, cache):
    x, gamma, eps = cache
    d = x.shape[1]
    mu = x.mean(axis=1, keepdims=True)
    sd = np.sqrt(x.var(axis=1, keepdims=True) + eps)
    x_hat = (x - mu) / sd
    dxh = dy * gamma
    dx = (d * dxh - dxh.sum(axis=1, keepdims=True) - x_hat * (dxh * x_hat).sum(axis=1, keepdims=True)) / (d * sd)
    return dx, (dy * x_hat).sum(axis=0), dy.sum(axis=0)
''',
    "solution_groupnorm_forward": '''
def groupnorm_forward(x, num_groups, gamma, beta, eps=1e-5):
    shape = x.shape
    rows = x.reshape(shape[0] * num_groups, -1)
    mu = rows.mean(axis=1)[:, None]
    sd = np.sqrt(((rows - mu) ** 2).mean(axis=1) + eps)[:, None]
    x_hat = ((rows - mu) / sd).reshape(shape)
    y = np.einsum("nchw,c->nchw", x_hat, gamma) + beta.reshape(-1, 1, 1)
    return y, (x_hat, sd, gamma)
''',
    "solution_groupnorm_backward": '''
def groupnorm_backward(dy, cache):
    x_hat, sd, gamma = cache
    rows = sd.shape[0]
    dxh = np.einsum("nchw,c->nchw", dy, gamma).reshape(rows, -1)
    xh = x_hat.reshape(rows, -1)
    k = xh.shape[1]
    dx = (k * dxh - dxh.sum(axis=1, keepdims=True) - xh * np.einsum("rk,rk->r", dxh, xh)[:, None]) / (k * sd)
    return dx.reshape(x_hat.shape), np.einsum("nchw,nchw->c", dy, x_hat), np.einsum("nchw->c", dy)
''',
}

ALTERNATIVES = {
    "bn-numpy-forward": [FORWARD_ALT_1, FORWARD_ALT_2],
    "bn-numpy-backward": [BACKWARD_ALT_1, BACKWARD_ALT_2],
    "bn-torch": [TORCH_ALT_1, TORCH_ALT_2],
    "bn-conv": [CONV_ALT_1, CONV_ALT_2],
}


# ============================================================================================
# Known mistakes, written as students write them
# ============================================================================================


@dataclass(frozen=True)
class Variant:
    """A catalogued mistake as a student makes it: edits of the solution, and what it costs.

    ``key``: unique name (the mistake, and where it is made when it can be made in several
    places). ``fails``: the checks that must fail; every other check must pass. ``named``: the
    checks whose feedback must name the mistake (default: all of ``fails``).
    """

    key: str
    mistake: str
    assignment: str
    edits: dict[str, list[tuple[str, str]]]
    fails: frozenset[str]
    named: frozenset[str] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        if self.named is None:
            object.__setattr__(self, "named", self.fails)


def _v(key, mistake, assignment, edits, fails, named=None):
    return Variant(key, mistake, assignment, edits, frozenset(fails), None if named is None else frozenset(named))


_TRAIN = "solution_bn_forward_train"
_EVAL = "solution_bn_forward_eval"
_UPDATE = "solution_update_running_stats"
_STAGED = "solution_bn_backward_staged"
_COMPACT = "solution_bn_backward_compact"
_FN = "solution_batch_norm_function"
_MOD = "solution_batch_norm_1d"
_F = "bn-numpy-forward"
_B = "bn-numpy-backward"
_T = "bn-torch"
_C = "bn-conv"
_BN2D_FWD = "solution_batchnorm2d_forward_train"
_BN2D_BWD = "solution_batchnorm2d_backward"
_LN_FWD = "solution_layernorm_forward"
_LN_BWD = "solution_layernorm_backward"
_GN_FWD = "solution_groupnorm_forward"
_GN_BWD = "solution_groupnorm_backward"
_INTERLEAVE = ".reshape(n, c // num_groups, num_groups, -1).transpose(0, 2, 1, 3)"
_DEINTERLEAVE = ".reshape(n, num_groups, c // num_groups, -1).transpose(0, 2, 1, 3)"

_UNBIASED = [("var = (xmu**2).sum(axis=0) / m", "var = (xmu**2).sum(axis=0) / (m - 1)")]
_NO_SQRT = [("std = np.sqrt(var + eps)", "std = var + eps")]
_OVER_FEATURES = [
    ("m = x.shape[0]", "m = x.shape[1]"),
    ("mu = x.sum(axis=0) / m", "mu = x.sum(axis=1, keepdims=True) / m"),
    ("var = (xmu**2).sum(axis=0) / m", "var = (xmu**2).sum(axis=1, keepdims=True) / m"),
]
_SWAP = [("y = gamma * x_hat + beta", "y = beta * x_hat + gamma")]
_UPDATE_IN_EVAL = """
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                mu = x2.mean(dim=0)
                unbiased_var = ((x2 - mu) ** 2).sum(dim=0) / (m - 1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mu)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased_var)"""
_EVAL_LINE = "            y2 = (x2 - self.running_mean) * torch.rsqrt(self.running_var + self.eps) * weight + bias"

VARIANTS: list[Variant] = [
    # ---- bn-numpy-forward -----------------------------------------------------------------
    _v("unbiased_variance_normalizes", "unbiased_variance_normalizes", _F, {_TRAIN: _UNBIASED}, {"forward_train_output", "forward_train_eps"}),
    _v("eps_outside_sqrt", "eps_outside_sqrt", _F, {
        _TRAIN: [("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps")],
        _EVAL: [("np.sqrt(running_var + eps)", "(np.sqrt(running_var) + eps)")],
    }, {"forward_train_eps", "forward_eval_eps"}),
    _v("eps_ignored", "eps_ignored", _F, {
        _TRAIN: [("std = np.sqrt(var + eps)", "std = np.sqrt(var)")],
        _EVAL: [("np.sqrt(running_var + eps)", "np.sqrt(running_var)")],
    }, {"forward_train_eps", "forward_eval_eps"}),
    _v("variance_not_square_rooted", "variance_not_square_rooted", _F, {_TRAIN: _NO_SQRT}, {"forward_train_output", "forward_train_eps"}),
    _v("statistics_over_features", "statistics_over_features", _F, {_TRAIN: _OVER_FEATURES}, {"forward_train_output", "forward_train_eps"}),
    _v("gamma_beta_swapped", "gamma_beta_swapped", _F, {_TRAIN: _SWAP, _EVAL: _SWAP},
       {"forward_train_output", "forward_train_eps", "forward_eval_output", "forward_eval_eps"}),
    _v("eval_uses_batch_statistics", "eval_uses_batch_statistics", _F, {
        _EVAL: [("x_hat = (x - running_mean) / np.sqrt(running_var + eps)", "x_hat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)")],
    }, {"forward_eval_output", "forward_eval_eps"}),
    _v("biased_running_var", "biased_running_var", _F, {_UPDATE: [("/ (m - 1)", "/ m")]}, {"running_var_unbiased"}),
    _v("momentum_reversed", "momentum_reversed", _F, {_UPDATE: [
        ("(1 - momentum) * running_mean + momentum * mu", "momentum * running_mean + (1 - momentum) * mu"),
        ("(1 - momentum) * running_var + momentum * unbiased_var", "momentum * running_var + (1 - momentum) * unbiased_var"),
    ]}, {"running_momentum"}),
    _v("running_stats_updated_in_place", "running_stats_updated_in_place", _F, {_UPDATE: [
        ("    running_mean = (1 - momentum) * running_mean + momentum * mu\n    running_var = (1 - momentum) * running_var + momentum * unbiased_var",
         "    running_mean *= 1 - momentum\n    running_mean += momentum * mu\n    running_var *= 1 - momentum\n    running_var += momentum * unbiased_var"),
    ]}, {"running_stats_new_arrays"}),
    # ---- bn-numpy-backward ----------------------------------------------------------------
    _v("backward:unbiased_variance_normalizes", "unbiased_variance_normalizes", _B, {_TRAIN: _UNBIASED},
       {"forward_train_output", "backward_staged_dx", "backward_staged_dgamma", "backward_compact_dx", "backward_compact_dgamma"}),
    _v("backward:variance_not_square_rooted", "variance_not_square_rooted", _B, {_TRAIN: _NO_SQRT},
       {"forward_train_output", "backward_staged_dx", "backward_staged_dgamma", "backward_compact_dx", "backward_compact_dgamma"}),
    _v("backward:statistics_over_features", "statistics_over_features", _B, {_TRAIN: _OVER_FEATURES},
       {"forward_train_output", "backward_staged_dx", "backward_staged_dgamma", "backward_compact_dx", "backward_compact_dgamma"}),
    _v("backward:gamma_beta_swapped", "gamma_beta_swapped", _B, {_TRAIN: _SWAP}, {"forward_train_output"}),
    _v("staged:dx_missing_mean_path", "dx_missing_mean_path", _B, {_STAGED: [("dx = dx + dmu / m", "dx = dx")]}, {"backward_staged_dx"}),
    _v("compact:dx_missing_mean_path", "dx_missing_mean_path", _B, {_COMPACT: [("m * dy - dbeta - x_hat * dgamma", "m * dy - x_hat * dgamma")]}, {"backward_compact_dx"}),
    _v("staged:dx_missing_variance_path", "dx_missing_variance_path", _B, {_STAGED: [("dxmu = dxmu + 2 * xmu * dvar / m", "dxmu = dxmu")]}, {"backward_staged_dx"}),
    _v("compact:dx_missing_variance_path", "dx_missing_variance_path", _B, {_COMPACT: [("m * dy - dbeta - x_hat * dgamma", "m * dy - dbeta")]}, {"backward_compact_dx"}),
    _v("compact:dx_statistics_held_constant", "dx_statistics_held_constant", _B, {_COMPACT: [
        ("dx = (gamma * istd / m) * (m * dy - dbeta - x_hat * dgamma)", "dx = dy * gamma * istd")]}, {"backward_compact_dx"}),
    _v("staged:dx_missing_gamma", "dx_missing_gamma", _B, {_STAGED: [("dx_hat = dy * gamma", "dx_hat = dy")]}, {"backward_staged_dx"}),
    _v("staged:dgamma_wrong_axis", "dgamma_wrong_axis", _B, {_STAGED: [("dgamma = (dy * x_hat).sum(axis=0)", "dgamma = (dy * x_hat).sum(axis=1)")]}, {"backward_staged_dgamma"}),
    _v("staged:dbeta_wrong_axis", "dbeta_wrong_axis", _B, {_STAGED: [("dbeta = dy.sum(axis=0)", "dbeta = dy.sum(axis=1)")]}, {"backward_staged_dbeta"}),
    _v("staged:dgamma_uses_x", "dgamma_uses_x", _B, {_STAGED: [("dgamma = (dy * x_hat).sum(axis=0)", "dgamma = (dy * x).sum(axis=0)")]}, {"backward_staged_dgamma"}),
    _v("backward_ignores_cache", "backward_ignores_cache", _B, {
        _TRAIN: [("cache = (x, mu, xmu, var, std, istd, x_hat, gamma, eps)", "cache = (x, mu, xmu, var, std, istd, x_hat, gamma, eps)\n    globals()['last_cache'] = cache")],
        _STAGED: [("x, mu, xmu, var, std, istd, x_hat, gamma, eps = cache", "x, mu, xmu, var, std, istd, x_hat, gamma, eps = last_cache")],
        _COMPACT: [("x, mu, xmu, var, std, istd, x_hat, gamma, eps = cache", "x, mu, xmu, var, std, istd, x_hat, gamma, eps = last_cache")],
    }, {"backward_uses_cache"}),
    _v("backward_changes_cache", "backward_changes_cache", _B, {
        _STAGED: [("    return dx, dgamma, dbeta", "    x_hat *= 2.0\n    return dx, dgamma, dbeta")],
        _COMPACT: [("    return dx, dgamma, dbeta", "    x_hat *= 2.0\n    return dx, dgamma, dbeta")],
    }, {"backward_uses_cache"}),
    # ---- bn-torch -------------------------------------------------------------------------
    _v("torch:unbiased_variance_normalizes", "unbiased_variance_normalizes", _T, {_FN: [
        ("var = (xmu * xmu).mean(dim=0)", "var = (xmu * xmu).sum(dim=0) / (x.shape[0] - 1)")]},
       {"function_forward", "function_backward_dx", "function_backward_dgamma", "module_train_output", "module_ncl", "module_options", "module_backward"}),
    _v("torch:eps_outside_sqrt", "eps_outside_sqrt", _T, {_FN: [("istd = torch.rsqrt(var + eps)", "istd = 1 / (torch.sqrt(var) + eps)")]}, {"function_forward"}),
    _v("torch:dx_missing_mean_path", "dx_missing_mean_path", _T, {_FN: [("m * dy - dbeta - x_hat * dgamma", "m * dy - x_hat * dgamma")]},
       {"function_backward_dx", "module_backward"}),
    _v("torch:dx_missing_variance_path", "dx_missing_variance_path", _T, {_FN: [("m * dy - dbeta - x_hat * dgamma", "m * dy - dbeta")]},
       {"function_backward_dx", "module_backward"}),
    _v("torch:dgamma_wrong_axis", "dgamma_wrong_axis", _T, {_FN: [("return dx, dgamma, dbeta, None", "return dx, (dy * x_hat).sum(dim=1), dbeta, None")]},
       {"function_backward_dx", "function_backward_dgamma", "function_backward_dbeta", "module_backward"}),
    _v("backward_missing_eps_gradient", "backward_missing_eps_gradient", _T, {_FN: [("return dx, dgamma, dbeta, None", "return dx, dgamma, dbeta")]},
       {"function_backward_dx", "function_backward_dgamma", "function_backward_dbeta", "module_backward"}),
    _v("torch:eval_uses_batch_statistics", "eval_uses_batch_statistics", _T, {_MOD: [
        ("if self.training or self.running_mean is None:", "if True:")]}, {"module_eval_output"}),
    _v("torch:biased_running_var", "biased_running_var", _T, {_MOD: [("/ (m - 1)", "/ m")]}, {"module_ncl", "module_running_var"}),
    _v("torch:momentum_reversed", "momentum_reversed", _T, {_MOD: [
        ("self.running_mean.mul_(1 - momentum).add_(momentum * mu)", "self.running_mean.mul_(momentum).add_((1 - momentum) * mu)"),
        ("self.running_var.mul_(1 - momentum).add_(momentum * unbiased_var)", "self.running_var.mul_(momentum).add_((1 - momentum) * unbiased_var)"),
    ]}, {"module_momentum", "module_cumulative_average"}),
    _v("ncl_reshaped_without_transpose", "ncl_reshaped_without_transpose", _T, {_MOD: [
        ("x.transpose(1, 2).reshape(-1, c)", "x.reshape(-1, c)"),
        ("return y2.reshape(n, length, c).transpose(1, 2)", "return y2.reshape(x.shape)"),
    ]}, {"module_ncl", "module_backward"}),
    _v("running_var_unbiased_with_n", "running_var_unbiased_with_n", _T, {_MOD: [
        ("((x2 - mu) ** 2).sum(dim=0) / (m - 1)", "((x2 - mu) ** 2).sum(dim=0) / m * x.shape[0] / (x.shape[0] - 1)")]}, {"module_ncl"}),
    _v("running_stats_updated_in_eval", "running_stats_updated_in_eval", _T, {_MOD: [(_EVAL_LINE, _EVAL_LINE + _UPDATE_IN_EVAL)]},
       {"module_num_batches_tracked", "module_eval_output", "module_eval_keeps_stats"}),
    _v("num_batches_not_counted", "num_batches_not_counted", _T, {_MOD: [
        ("self.num_batches_tracked += 1", "self.seen = getattr(self, 'seen', 0) + 1"),
        ("1.0 / float(self.num_batches_tracked)", "1.0 / self.seen"),
    ]}, {"module_num_batches_tracked"}),
    _v("momentum_none_not_cumulative", "momentum_none_not_cumulative", _T, {_MOD: [
        ("momentum = 1.0 / float(self.num_batches_tracked)", "momentum = 0.1")]}, {"module_cumulative_average"}),
    _v("parameters_misnamed", "parameters_misnamed", _T, {_MOD: [
        ("self.weight = nn.Parameter", "self.gamma = nn.Parameter"),
        ("self.bias = nn.Parameter", "self.beta = nn.Parameter"),
        ('self.register_parameter("weight", None)', 'self.register_parameter("gamma", None)'),
        ('self.register_parameter("bias", None)', 'self.register_parameter("beta", None)'),
        ("weight = self.weight if self.weight is not None", "weight = self.gamma if self.gamma is not None"),
        ("bias = self.bias if self.bias is not None", "bias = self.beta if self.beta is not None"),
    ]}, {"module_state_dict"}),
    _v("buffers_not_registered", "buffers_not_registered", _T, {_MOD: [
        ('self.register_buffer("running_mean", torch.zeros(num_features, **factory))', "self.running_mean = torch.zeros(num_features, **factory)"),
        ('self.register_buffer("running_var", torch.ones(num_features, **factory))', "self.running_var = torch.ones(num_features, **factory)"),
        ('self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))',
         "self.num_batches_tracked = torch.tensor(0, dtype=torch.long, device=device)"),
    ]}, {"module_state_dict", "module_device"}),
    _v("tensor_on_default_device", "tensor_on_default_device", _T, {_MOD: [
        ("((x2 - mu) ** 2).sum(dim=0) / (m - 1)", "((x2 - mu) ** 2).sum(dim=0) / m * torch.full((c,), m / (m - 1), dtype=x2.dtype)")]},
       {"module_device"}),
    _v("untracked_uses_running_stats", "untracked_uses_running_stats", _T, {_MOD: [("if track_running_stats:", "if True:")]}, {"module_options"}),
    _v("affine_ignored", "affine_ignored", _T, {_MOD: [("if affine:", "if True:")]}, {"module_options"}),
    # ---- bn-conv --------------------------------------------------------------------------
    _v("bn2d_reshaped_without_transpose", "bn2d_reshaped_without_transpose", _C, {
        _BN2D_FWD: [("np.moveaxis(x, 1, -1).reshape(-1, c)", "x.reshape(-1, c)"),
                    ("np.moveaxis(y2.reshape(n, h, w, c), -1, 1)", "y2.reshape(n, c, h, w)")],
        _BN2D_BWD: [("np.moveaxis(dy, 1, -1).reshape(-1, c)", "dy.reshape(-1, c)"),
                    ("np.moveaxis(dx2.reshape(n, h, w, c), -1, 1)", "dx2.reshape(n, c, h, w)")],
    }, {"bn2d_forward_output", "bn2d_forward_eps", "bn2d_backward_dx", "bn2d_backward_dgamma", "bn2d_backward_dbeta"}),
    _v("bn2d_dgamma_per_position", "bn2d_dgamma_per_position", _C, {_BN2D_BWD: [
        ("dbeta = dy2.sum(axis=0)\n    dgamma = (dy2 * x_hat).sum(axis=0)",
         "dbeta = dy.sum(axis=0)\n    dgamma = (dy * np.moveaxis(x_hat.reshape(n, h, w, c), -1, 1)).sum(axis=0)")]},
       {"bn2d_backward_dgamma", "bn2d_backward_dbeta"}),
    _v("layernorm_over_batch", "layernorm_over_batch", _C, {
        _LN_FWD: [("d = x.shape[1]", "d = x.shape[0]"), ("x.sum(axis=1, keepdims=True)", "x.sum(axis=0, keepdims=True)"),
                  ("(xmu**2).sum(axis=1, keepdims=True)", "(xmu**2).sum(axis=0, keepdims=True)")],
        _LN_BWD: [("d = x_hat.shape[1]", "d = x_hat.shape[0]"),
                  ("dx_hat.sum(axis=1, keepdims=True)", "dx_hat.sum(axis=0, keepdims=True)"),
                  ("(dx_hat * x_hat).sum(axis=1, keepdims=True)", "(dx_hat * x_hat).sum(axis=0, keepdims=True)")],
    }, {"ln_forward_output", "ln_backward_dx", "ln_backward_dgamma"}),
    _v("layernorm_unbiased_variance", "layernorm_unbiased_variance", _C, {_LN_FWD: [
        ("var = (xmu**2).sum(axis=1, keepdims=True) / d", "var = (xmu**2).sum(axis=1, keepdims=True) / (d - 1)")]},
       {"ln_forward_output", "ln_backward_dx", "ln_backward_dgamma"}),
    _v("layernorm_running_statistics", "layernorm_running_statistics", _C, {_LN_FWD: [
        ("istd = 1.0 / np.sqrt(var + eps)\n    x_hat = xmu * istd",
         "momentum = 0.1\n    running_mean = (1 - momentum) * 0.0 + momentum * mu\n"
         "    running_var = (1 - momentum) * 1.0 + momentum * var\n"
         "    istd = 1.0 / np.sqrt(running_var + eps)\n    x_hat = (x - running_mean) * istd")]},
       {"ln_forward_output", "ln_backward_dx", "ln_backward_dgamma"}),
    _v("groupnorm_groups_interleaved", "groupnorm_groups_interleaved", _C, {
        _GN_FWD: [("x2 = x.reshape(n * num_groups, -1)", f"x2 = x{_INTERLEAVE}.reshape(n * num_groups, -1)"),
                  ("(xmu * istd).reshape(x.shape)", f"(xmu * istd){_DEINTERLEAVE}.reshape(x.shape)")],
        _GN_BWD: [(".reshape(1, c, 1, 1)).reshape(n * num_groups, -1)", f".reshape(1, c, 1, 1)){_INTERLEAVE}.reshape(n * num_groups, -1)"),
                  ("x_hat2 = x_hat.reshape(n * num_groups, -1)", f"x_hat2 = x_hat{_INTERLEAVE}.reshape(n * num_groups, -1)"),
                  ("dx = dx2.reshape(x_hat.shape)", f"dx = dx2{_DEINTERLEAVE}.reshape(x_hat.shape)")],
    }, {"gn_forward_output", "gn_backward_dx", "gn_backward_dgamma"}),
    _v("norm_dx_missing_mean_path", "norm_dx_missing_mean_path", _C, {
        **{cell: [("dx_hat - mean_path - variance_path", "dx_hat - variance_path")] for cell in (_BN2D_BWD, _LN_BWD, _GN_BWD)},
    }, {"bn2d_backward_dx", "ln_backward_dx", "gn_backward_dx"}),
    _v("norm_dx_missing_variance_path", "norm_dx_missing_variance_path", _C, {
        **{cell: [("dx_hat - mean_path - variance_path", "dx_hat - mean_path")] for cell in (_BN2D_BWD, _LN_BWD, _GN_BWD)},
    }, {"bn2d_backward_dx", "ln_backward_dx", "gn_backward_dx"}),
]

VARIANT = {v.key: v for v in VARIANTS}

#: Variants graded together: their failing checks do not overlap and they do not interact.
GROUPS: dict[str, list[list[str]]] = {
    "bn-numpy-forward": [
        ["unbiased_variance_normalizes", "eval_uses_batch_statistics", "biased_running_var"],
        ["variance_not_square_rooted", "momentum_reversed"],
        ["statistics_over_features", "running_stats_updated_in_place"],
        ["eps_outside_sqrt"],
        ["eps_ignored"],
        ["gamma_beta_swapped"],
    ],
    "bn-numpy-backward": [
        ["backward:unbiased_variance_normalizes", "staged:dbeta_wrong_axis"],
        ["staged:dx_missing_mean_path", "compact:dx_missing_variance_path", "staged:dgamma_uses_x"],
        ["staged:dx_missing_variance_path", "compact:dx_missing_mean_path"],
        ["staged:dx_missing_gamma", "compact:dx_statistics_held_constant"],
        ["staged:dgamma_wrong_axis", "backward:gamma_beta_swapped"],
        ["backward:variance_not_square_rooted", "backward_ignores_cache"],
        ["backward:statistics_over_features", "backward_changes_cache"],
    ],
    "bn-torch": [
        ["torch:unbiased_variance_normalizes", "num_batches_not_counted", "torch:momentum_reversed", "parameters_misnamed", "tensor_on_default_device"],
        ["torch:eps_outside_sqrt", "torch:dx_missing_variance_path", "torch:biased_running_var", "running_stats_updated_in_eval",
         "buffers_not_registered", "untracked_uses_running_stats"],
        ["torch:dx_missing_mean_path", "torch:eval_uses_batch_statistics", "running_var_unbiased_with_n", "momentum_none_not_cumulative", "affine_ignored"],
        ["ncl_reshaped_without_transpose"],
        ["torch:dgamma_wrong_axis"],
        ["backward_missing_eps_gradient"],
    ],
    "bn-conv": [
        ["bn2d_reshaped_without_transpose", "layernorm_over_batch", "groupnorm_groups_interleaved"],
        ["bn2d_dgamma_per_position", "layernorm_unbiased_variance"],
        ["norm_dx_missing_mean_path"],
        ["norm_dx_missing_variance_path"],
        ["layernorm_running_statistics"],
    ],
}


def group_sources(assignment: str, keys: list[str]) -> dict[str, str]:
    """The solution with every edit of the group's variants applied."""
    edits: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        for grade_id, pairs in VARIANT[key].edits.items():
            edits.setdefault(grade_id, []).extend(pairs)
    return edited(assignment, edits)


# ============================================================================================
# Delegation and tampering
# ============================================================================================

DELEGATING = {
    # plainly: bnlib's reference
    "bnlib": ("bn-numpy-forward", {_TRAIN: '''
import bnlib.numpy as bn

def bn_forward_train(x, gamma, beta, eps=1e-5):
    return bn.forward_train(x, gamma, beta, eps)
'''}, ["forward_train_output", "forward_train_eps"]),
    # in disguise: the module name assembled at run time (only the run-time watch can tell)
    "bnlib_disguised": ("bn-numpy-forward", {_TRAIN: '''
def bn_forward_train(x, gamma, beta, eps=1e-5):
    library = __import__("bn" + "lib.num" + "py", fromlist=["forward_train"])
    return library.forward_train(x, gamma, beta, eps)
'''}, ["forward_train_output", "forward_train_eps"]),
    # torch doing the NumPy assignment's work
    "torch_in_numpy": ("bn-numpy-forward", {_EVAL: '''
def bn_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    import torch
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))
    return torch.nn.functional.batch_norm(t(x), t(running_mean), t(running_var), t(gamma), t(beta), False, 0.1, eps).numpy()
'''}, ["forward_eval_output", "forward_eval_eps"]),
    # PyTorch's kernel fetched by a name built at run time
    "torch_kernel_disguised": ("bn-torch", {_FN: '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        kernel = getattr(torch.nn.functional, "batch" + "_norm")
        ctx.save_for_backward(x, gamma)
        ctx.eps = eps
        return kernel(x, None, None, gamma, beta, True, 0.0, eps)

    @staticmethod
    def backward(ctx, dy):
        x, gamma = ctx.saved_tensors
        m = x.shape[0]
        var, mu = torch.var_mean(x, dim=0, unbiased=False)
        istd = torch.rsqrt(var + ctx.eps)
        x_hat = (x - mu) * istd
        dbeta, dgamma = dy.sum(0), (dy * x_hat).sum(0)
        return (gamma * istd / m) * (m * dy - dbeta - x_hat * dgamma), dgamma, dbeta, None
'''}, ["function_forward", "function_backward_dx", "function_backward_dgamma", "function_backward_dbeta"]),
    # the notebook's own gradient checker computing dx (it would pass numerically)
    "finite_differences": ("bn-numpy-backward", {_STAGED: '''
def bn_backward_staged(dy, cache):
    x, mu, xmu, var, std, istd, x_hat, gamma, eps = cache

    def forward(x, gamma, beta):
        return bn_forward_train(x, gamma, beta, eps)[0]

    dx = numerical_gradient(forward, {"x": x, "gamma": gamma, "beta": np.zeros_like(gamma)}, "x", dy)
    return dx, (dy * x_hat).sum(axis=0), dy.sum(axis=0)
'''}, ["backward_staged_dx", "backward_staged_dgamma", "backward_staged_dbeta", "backward_uses_cache"]),
    # ... and in bn-torch's hand-written backward, under another name
    "finite_differences_torch": ("bn-torch", {_FN: '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        mu = x.mean(dim=0)
        var = ((x - mu) ** 2).mean(dim=0)
        ctx.save_for_backward(x, gamma, beta)
        ctx.eps = eps
        return gamma * (x - mu) / torch.sqrt(var + eps) + beta

    @staticmethod
    def backward(ctx, dy):
        x, gamma, beta = (t.detach().numpy() for t in ctx.saved_tensors)
        eps, estimate = ctx.eps, numerical_gradient

        def f(x, gamma, beta):
            mu = x.mean(axis=0)
            return gamma * (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=0) + eps) + beta

        args = {"x": x, "gamma": gamma, "beta": beta}
        g = [torch.from_numpy(estimate(f, args, k, dy.detach().numpy())) for k in args]
        return g[0], g[1], g[2], None
'''}, ["function_backward_dx", "function_backward_dgamma", "function_backward_dbeta"]),
    # autograd computing the "hand-written" backward pass
    "autograd_backward": ("bn-torch", {_FN: '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        with torch.enable_grad():
            xs, gs, bs = (t.detach().requires_grad_() for t in (x, gamma, beta))
            mu = xs.mean(0)
            var = ((xs - mu) ** 2).mean(0)
            y = gs * (xs - mu) / torch.sqrt(var + eps) + bs
        ctx.graph = (y, xs, gs, bs)
        return y.detach()

    @staticmethod
    def backward(ctx, dy):
        y, xs, gs, bs = ctx.graph
        dx, dgamma, dbeta = torch.autograd.grad(y, (xs, gs, bs), dy)
        return dx, dgamma, dbeta, None
'''}, ["function_backward_dx", "function_backward_dgamma", "function_backward_dbeta"]),
    # bn-conv: bnlib's GroupNorm layer doing the forward and backward passes
    "bnlib_groupnorm": ("bn-conv", {_GN_FWD: '''
from bnlib.numpy import GroupNorm

def groupnorm_forward(x, num_groups, gamma, beta, eps=1e-5):
    layer = GroupNorm(num_groups, x.shape[1], eps=eps, dtype=np.float64)
    layer.gamma, layer.beta = gamma, beta
    return layer(x), layer
''', _GN_BWD: '''
def groupnorm_backward(dy, cache):
    dx = cache.backward(dy)
    return dx, cache.dgamma, cache.dbeta
'''}, ["gn_forward_output", "gn_backward_dx", "gn_backward_dgamma", "gn_backward_dbeta"]),
    # ... and PyTorch's layer norm computing y in the NumPy assignment (the cache by hand)
    "torch_layer_norm": ("bn-conv", {_LN_FWD: '''
def layernorm_forward(x, gamma, beta, eps=1e-5):
    import torch
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))
    y = torch.nn.functional.layer_norm(t(x), (x.shape[1],), t(gamma), t(beta), eps).numpy()
    istd = 1.0 / np.sqrt(x.var(axis=1, keepdims=True) + eps)
    return y, ((x - x.mean(axis=1, keepdims=True)) * istd, istd, gamma)
'''}, ["ln_forward_output", "ln_backward_dx", "ln_backward_dgamma", "ln_backward_dbeta"]),
}

#: A cell that tries to make every check pass: patched comparisons, a fake bnlib, a fake probe result.
TAMPERING = '''
import sys, types
import numpy as np
np.allclose = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
np.array_equal = lambda *a, **k: True
np.isclose = lambda a, b, *r, **k: np.ones(np.broadcast(a, b).shape, dtype=bool)
try:
    import torch, torch.testing
    torch.testing.assert_close = lambda *a, **k: None
    torch.allclose = lambda *a, **k: True
except ImportError:
    pass
fake = types.ModuleType("bnlib.numpy")
fake.forward_train = lambda *a, **k: (_ for _ in ()).throw(AssertionError("tampered"))
sys.modules["bnlib.numpy"] = fake
import builtins
builtins.AssertionError = type("AssertionError", (Exception,), {})
'''


def stub_sources(assignment: str) -> dict[str, str]:
    """The solution code cells as students receive them: each solution region replaced by nbgrader's stub."""
    out = {}
    for cell in solution_notebook(assignment).cells:
        meta = _nbgrader(cell)
        if not meta.get("solution") or cell.cell_type != "code":  # written answers are not code
            continue
        lines, inside = [], False
        for line in cell.source.splitlines():
            if "### BEGIN SOLUTION" in line:
                indent = line[: len(line) - len(line.lstrip())]
                lines += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
                inside = True
            elif "### END SOLUTION" in line:
                inside = False
            elif not inside:
                lines.append(line)
        out[meta["grade_id"]] = "\n".join(lines)
    return out
