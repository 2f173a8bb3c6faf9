r"""The catalogue of known wrong batch norms: what each looks like, and where to reread.

Every entry is a :class:`Mistake`: a name, a one-line description of what the results look
like, the chapter (and section) of the book that gets it right, and a wrong implementation of
the graded notebooks' interface (:mod:`autograder.course.reference`). The autograder's judge runs a
failed check on each variant; when a student's numbers match one, the feedback names it
("your running_var equals the biased variance: PyTorch stores the unbiased one, m/(m-1) times
larger"). This is the one place these mistakes are written down; ``tests/test_mistakes.py``
checks that each one really differs from the reference.

A variant is the reference with one step changed, written out as plainly as a student would
write it: a subclass of :class:`autograder.course.numpy_variants.NumpyBatchNorm` for the NumPy
assignments, of :class:`autograder.course.torch_variants.FunctionSteps` or
:class:`autograder.course.torch_variants.BatchNorm1d` for ``bn-torch`` (named by a
:class:`TorchVariant`: that module imports torch, and only building a bn-torch variant imports
it). ``Mistake.implementation(assignment)`` returns the whole interface of an assignment (the
reference's names, with the variant's replacements), built fresh on every call: some variants
keep state (one remembers the last forward pass). ``bn-conv``'s variants subclass
:class:`autograder.course.conv_variants.NumpyNormFamily` instead.

The chapters named here are those of :data:`autograder.course.spec.CHAPTERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autograder.course import conv_variants as cv
from autograder.course import numpy_variants as nv
from autograder.course.reference import reference
from autograder.course.spec import CHAPTERS, INTERFACE, kind_of

__all__ = ["CHAPTERS", "Reading", "TorchVariant", "Mistake", "MISTAKES", "by_name", "for_assignment"]


@dataclass(frozen=True)
class Reading:
    """Where in the book to reread: a chapter (by stem) and a section within it."""

    chapter: str
    section: str

    @property
    def title(self) -> str:
        return CHAPTERS[self.chapter]

    def __str__(self) -> str:
        return f'the chapter "{self.title}" (book/{self.chapter}), section "{self.section}"'


@dataclass(frozen=True)
class TorchVariant:
    """A bn-torch variant, by the names of its classes in :mod:`autograder.course.torch_variants`.

    Attributes:
        function: a ``FunctionSteps`` subclass; "" for bnlib's own ``BatchNormFunction`` (a
            mistake of the module alone). Default: ""
        module: a ``BatchNorm1d`` subclass, built on that function. Default: the base, which
            has PyTorch's semantics.
    """

    function: str = ""
    module: str = "BatchNorm1d"


@dataclass(frozen=True)
class Mistake:
    """One known wrong variant.

    Attributes:
        name: identifier, ``snake_case``.
        title: what the student did, in a few words ("eps outside the square root").
        looks_like: one line on what the results look like, for the feedback.
        read: where the book gets it right.
        assignments: the assignments where it can happen.
        overrides: the interface names the variant replaces (in a NumPy assignment, exactly
            those; in ``bn-torch`` both names are built, the module on the variant's function).
        numpy: the NumPy variant, for the NumPy assignments among ``assignments``.
        torch: the bn-torch variant, when ``bn-torch`` is among ``assignments``.
    """

    name: str
    title: str
    looks_like: str
    read: Reading
    assignments: tuple[str, ...]
    overrides: tuple[str, ...]
    numpy: type[nv.NumpyBatchNorm] | type[cv.NumpyNormFamily] | None = None
    torch: TorchVariant | None = None

    def __post_init__(self) -> None:
        kinds = {kind_of(a) for a in self.assignments}
        if ("numpy" in kinds) != (self.numpy is not None) or ("torch" in kinds) != (self.torch is not None):
            raise ValueError(f"mistake {self.name!r}: a variant for each kind of {self.assignments}, and no other")

    def implementation(self, assignment: str) -> dict[str, Any]:
        """The interface of ``assignment`` with this mistake in it (a fresh dict, fresh state)."""
        if assignment not in self.assignments:
            raise KeyError(f"mistake {self.name!r} does not apply to {assignment!r}")
        names = reference(assignment)
        names.update({k: v for k, v in self._variant(assignment).items() if k in INTERFACE[assignment]})
        return names

    def _variant(self, assignment: str) -> dict[str, Any]:
        if kind_of(assignment) == "torch":
            import autograder.course.torch_variants as torch_variants  # noqa: PLC0415 - it imports torch

            return torch_variants.build(self.torch.function, self.torch.module)
        variant = self.numpy()
        return {name: getattr(variant, name) for name in self.overrides if name in INTERFACE[assignment]}

    def describe(self) -> str:
        """``title: looks_like`` and where to read, as the feedback shows it."""
        return f"{self.title}. {self.looks_like} Reread {self.read}."


# ============================================================================================
# The catalogue
# ============================================================================================

_FWD = ("bn-numpy-forward", "bn-numpy-backward")
_NP = ("bn-numpy-forward",)
_BWD = ("bn-numpy-backward",)
_TORCH = ("bn-torch",)
_CONV = ("bn-conv",)
#: A bn-conv variant replaces a layer's forward and backward passes together: its cache is its own.
_BN2D = ("batchnorm2d_forward_train", "batchnorm2d_backward")
_LN = ("layernorm_forward", "layernorm_backward")
_GN = ("groupnorm_forward", "groupnorm_backward")
_BOTH_FWD = ("bn_forward_train", "bn_forward_eval")

MISTAKES: tuple[Mistake, ...] = (
    # ---- the forward pass ------------------------------------------------------------------
    Mistake(
        "unbiased_variance_normalizes",
        "the unbiased variance used to normalize",
        "You divided the squared deviations by m - 1: the outputs are a little too small "
        "(by sqrt((m-1)/m)), most visibly for small batches. Normalization uses the batch's own, "
        "biased variance (divide by m); only the running variance stores the unbiased one.",
        Reading("batch-variance", "Biased or unbiased"),
        _FWD + _TORCH,
        ("bn_forward_train", "BatchNormFunction", "BatchNorm1d"),
        numpy=nv.UnbiasedVarianceNormalizes,
        torch=TorchVariant("UnbiasedVarianceNormalizes"),
    ),
    Mistake(
        "eps_outside_sqrt",
        "eps added outside the square root",
        "You computed sqrt(var) + eps instead of sqrt(var + eps): the same at large variances, "
        "far off when a feature varies little or not at all.",
        Reading("normalize", "What eps protects against"),
        _NP + _TORCH,
        _BOTH_FWD + ("BatchNormFunction",),
        numpy=nv.EpsOutsideSqrt,
        torch=TorchVariant("EpsOutsideSqrt"),
    ),
    Mistake(
        "eps_ignored",
        "eps left out",
        "Your outputs ignore eps: a constant feature gives nan (0/0) instead of beta, and "
        "features with a tiny variance are blown up.",
        Reading("normalize", "What eps protects against"),
        _NP,
        _BOTH_FWD,
        numpy=nv.EpsIgnored,
    ),
    Mistake(
        "variance_not_square_rooted",
        "divided by the variance instead of the standard deviation",
        "You divided by var + eps, not sqrt(var + eps): the normalized features do not have "
        "unit variance.",
        Reading("normalize", "The normalization"),
        _FWD,
        ("bn_forward_train",),
        numpy=nv.VarianceNotSquareRooted,
    ),
    Mistake(
        "statistics_over_features",
        "statistics taken over the wrong axis",
        "You averaged over the features of each example (axis=1) instead of over the batch "
        "(axis=0): that is layer normalization, not batch normalization.",
        Reading("batch-mean", "One mean per feature"),
        _FWD,
        ("bn_forward_train",),
        numpy=nv.StatisticsOverFeatures,
    ),
    Mistake(
        "gamma_beta_swapped",
        "gamma and beta swapped",
        "You computed beta * x_hat + gamma: gamma scales, beta shifts.",
        Reading("scale-shift", "Scale and shift"),
        _FWD,
        _BOTH_FWD,
        numpy=nv.GammaBetaSwapped,
    ),
    # ---- evaluation and running statistics (NumPy) -----------------------------------------
    Mistake(
        "eval_uses_batch_statistics",
        "batch statistics used in evaluation",
        "Your evaluation output normalizes with the batch's own mean and variance, so one "
        "example's output depends on its batch-mates (and a batch of one gives beta). "
        "Evaluation uses the running statistics.",
        Reading("inference", "Why inference must not depend on the batch"),
        _NP + _TORCH,
        ("bn_forward_eval", "BatchNorm1d"),
        numpy=nv.EvalUsesBatchStatistics,
        torch=TorchVariant(module="EvalUsesBatchStatistics"),
    ),
    Mistake(
        "biased_running_var",
        "the biased variance stored in running_var",
        "Your running_var moves towards the biased batch variance: PyTorch stores the "
        "unbiased one, m/(m-1) times larger (m values per feature).",
        Reading("inference", "The unbiased running variance"),
        _NP + _TORCH,
        ("update_running_stats", "BatchNorm1d"),
        numpy=nv.BiasedRunningVar,
        torch=TorchVariant(module="BiasedRunningVar"),
    ),
    Mistake(
        "momentum_reversed",
        "momentum reversed (the Keras / CS231n convention)",
        "You computed momentum * running + (1 - momentum) * batch. In PyTorch momentum is the "
        "weight of the NEW batch: (1 - momentum) * running + momentum * batch, with momentum "
        "0.1 by default (Keras' 0.99 is the weight of the old value).",
        Reading("inference", "PyTorch's momentum and Keras' momentum"),
        _NP + _TORCH,
        ("update_running_stats", "BatchNorm1d"),
        numpy=nv.MomentumReversed,
        torch=TorchVariant(module="MomentumReversed"),
    ),
    Mistake(
        "running_stats_updated_in_place",
        "running statistics changed in place",
        "Your update_running_stats modified the arrays it was given (running_mean *= ...): "
        "return new arrays and leave the arguments as they were.",
        Reading("inference", "Running averages"),
        _NP,
        ("update_running_stats",),
        numpy=nv.RunningStatsUpdatedInPlace,
    ),
    # ---- the backward pass (NumPy and torch) ------------------------------------------------
    Mistake(
        "dx_missing_mean_path",
        "the mean's path missing from dx",
        "Your dx leaves out the gradient that flows through the batch mean mu: it is off by "
        "gamma / sqrt(var + eps) times the batch average of dy, and it no longer sums to zero "
        "over the batch.",
        Reading("backward", "Two paths into x"),
        _BWD + _TORCH,
        ("bn_backward_staged", "bn_backward_compact", "BatchNormFunction"),
        numpy=nv.DxMissingMeanPath,
        torch=TorchVariant("DxMissingMeanPath"),
    ),
    Mistake(
        "dx_missing_variance_path",
        "the variance's path missing from dx",
        "Your dx leaves out the gradient that flows through the batch variance: the term "
        "-x_hat * mean(dy * x_hat) (times gamma / sqrt(var + eps)) is missing.",
        Reading("backward", "Through the variance"),
        _BWD + _TORCH,
        ("bn_backward_staged", "bn_backward_compact", "BatchNormFunction"),
        numpy=nv.DxMissingVariancePath,
        torch=TorchVariant("DxMissingVariancePath"),
    ),
    Mistake(
        "dx_statistics_held_constant",
        "dx computed as if the statistics were constants",
        "Your dx is dy * gamma / sqrt(var + eps): the evaluation-mode gradient. In training "
        "mu and var depend on x, so two more paths add to dx.",
        Reading("backward", "The computational graph"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        numpy=nv.DxStatisticsHeldConstant,
    ),
    Mistake(
        "dx_missing_gamma",
        "gamma missing from dx",
        "Your dx is the gradient for gamma = 1: the upstream gradient of x_hat is dy * gamma.",
        Reading("backward", "Scale and shift"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        numpy=nv.DxMissingGamma,
    ),
    Mistake(
        "dgamma_wrong_axis",
        "dgamma summed over the wrong axis",
        "Your dgamma has one value per example instead of one per feature: sum dy * x_hat over "
        "the batch (axis 0).",
        Reading("backward", "Scale and shift"),
        _BWD + _TORCH,
        ("bn_backward_staged", "bn_backward_compact", "BatchNormFunction"),
        numpy=nv.DgammaWrongAxis,
        torch=TorchVariant("DgammaWrongAxis"),
    ),
    Mistake(
        "dbeta_wrong_axis",
        "dbeta summed over the wrong axis",
        "Your dbeta has one value per example instead of one per feature: sum dy over the "
        "batch (axis 0).",
        Reading("backward", "Scale and shift"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        numpy=nv.DbetaWrongAxis,
    ),
    Mistake(
        "dgamma_uses_x",
        "dgamma computed with x instead of x_hat",
        "Your dgamma is sum(dy * x): gamma multiplies the NORMALIZED input, so dgamma = "
        "sum(dy * x_hat).",
        Reading("backward", "Scale and shift"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        numpy=nv.DgammaUsesX,
    ),
    Mistake(
        "backward_ignores_cache",
        "backward uses the last forward pass, not its cache",
        "Your backward pass gives the gradients of the most recent forward call (kept in a "
        "global variable), not of the cache it was given.",
        Reading("backward", "What the forward pass keeps"),
        _BWD,
        ("bn_forward_train", "bn_backward_staged", "bn_backward_compact"),
        numpy=nv.BackwardIgnoresCache,
    ),
    Mistake(
        "backward_changes_cache",
        "backward changes the cache in place",
        "Calling your backward pass twice with the same cache gives two different answers: "
        "it modifies the arrays in the cache.",
        Reading("backward", "What the forward pass keeps"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        numpy=nv.BackwardChangesCache,
    ),
    Mistake(
        "backward_missing_eps_gradient",
        "backward returns three gradients for four inputs",
        "autograd needs one gradient per input of forward(ctx, x, gamma, beta, eps): return "
        "(dx, dgamma, dbeta, None), None for eps.",
        Reading("backward", "In PyTorch"),
        _TORCH,
        ("BatchNormFunction",),
        torch=TorchVariant("BackwardMissingEpsGradient"),
    ),
    # ---- the PyTorch module ------------------------------------------------------------------
    Mistake(
        "ncl_reshaped_without_transpose",
        "(N, C, L) input reduced over the wrong axes",
        "You reshaped (N, C, L) straight to (N*L, C), which mixes channels and positions. Move "
        "C last first (x.transpose(1, 2).reshape(-1, C)), or reduce over dims (0, 2).",
        Reading("batch-mean", "Inputs of shape (N, C, L)"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="NclReshapedWithoutTranspose"),
    ),
    Mistake(
        "running_var_unbiased_with_n",
        "running_var made unbiased with N instead of N*L",
        "For (N, C, L) input each channel's variance comes from m = N*L values: the unbiased "
        "correction is m/(m-1), not N/(N-1).",
        Reading("inference", "The unbiased running variance"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="RunningVarUnbiasedWithN"),
    ),
    Mistake(
        "running_stats_updated_in_eval",
        "running statistics updated in evaluation mode",
        "Your module changes running_mean / running_var (and counts the batch) in evaluation "
        "mode: only training batches update them.",
        Reading("train-eval", "What eval() changes"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="RunningStatsUpdatedInEval"),
    ),
    Mistake(
        "num_batches_not_counted",
        "num_batches_tracked not counted",
        "Your num_batches_tracked stays 0: it counts the training batches (add 1 per "
        "training forward pass), and momentum=None averages over it.",
        Reading("inference", "momentum=None: the cumulative average"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="NumBatchesNotCounted"),
    ),
    Mistake(
        "momentum_none_not_cumulative",
        "momentum=None not a cumulative average",
        "With momentum=None your running statistics are not the plain average of the batches "
        "seen so far: use momentum = 1 / num_batches_tracked (after counting this batch).",
        Reading("inference", "momentum=None: the cumulative average"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="MomentumNoneNotCumulative"),
    ),
    Mistake(
        "parameters_misnamed",
        "parameters named other than weight and bias",
        "Your state_dict's keys differ from nn.BatchNorm1d's: the parameters must be called "
        "weight and bias (gamma and beta in the equations).",
        Reading("train-eval", "Parameters, buffers and the state_dict"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="ParametersMisnamed"),
    ),
    Mistake(
        "buffers_not_registered",
        "running statistics kept as plain attributes",
        "Your running_mean, running_var and num_batches_tracked are plain tensors, not "
        "buffers: they are missing from the state_dict and module.to(device) leaves them "
        "behind. Use self.register_buffer.",
        Reading("train-eval", "Parameters, buffers and the state_dict"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="BuffersNotRegistered"),
    ),
    Mistake(
        "tensor_on_default_device",
        "a tensor created on the default device",
        "Your forward pass creates a tensor without device=x.device (e.g. torch.full(...) or "
        "torch.ones(C)), so it breaks when the input lives elsewhere (a GPU). Create tensors "
        "on the input's device, or avoid creating them.",
        Reading("train-eval", "Devices"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="TensorOnDefaultDevice"),
    ),
    Mistake(
        "untracked_uses_running_stats",
        "track_running_stats=False ignored",
        "With track_running_stats=False there are no running buffers (they are None) and "
        "evaluation mode normalizes with the batch's statistics.",
        Reading("train-eval", "Without running statistics"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="UntrackedUsesRunningStats"),
    ),
    Mistake(
        "affine_ignored",
        "affine=False ignored",
        "With affine=False the module has no parameters: weight and bias are None and the "
        "output is x_hat itself.",
        Reading("scale-shift", "Scale and shift"),
        _TORCH,
        ("BatchNorm1d",),
        torch=TorchVariant(module="AffineIgnored"),
    ),
    # ---- bn-conv: BatchNorm2d, LayerNorm, GroupNorm -------------------------------------------
    Mistake(
        "bn2d_reshaped_without_transpose",
        "(N, C, H, W) input reshaped to (N*H*W, C) without moving C last",
        "You reshaped (N, C, H, W) straight to (-1, C), so each column mixes channels and "
        "positions: the statistics are not those of a channel. Move C last first "
        "(np.moveaxis(x, 1, -1).reshape(-1, C), and back the same way), or reduce over axes (0, 2, 3).",
        Reading("convolutions", "The equations, per channel"),
        _CONV,
        _BN2D,
        numpy=cv.Bn2dReshapedWithoutTranspose,
    ),
    Mistake(
        "bn2d_dgamma_per_position",
        "a per-pixel instead of per-channel gamma in the backward pass",
        "Your dgamma and dbeta have shape (C, H, W), one value per channel and pixel: you summed "
        "over the batch axis only. BatchNorm2d has one gamma and one beta per channel, shared by "
        "every position, so their gradients sum over N, H and W (axes 0, 2 and 3).",
        Reading("norm-family", "The backward pass, with the axes swapped"),
        _CONV,
        _BN2D,
        numpy=cv.Bn2dDgammaPerPosition,
    ),
    Mistake(
        "layernorm_over_batch",
        "layer norm's statistics taken over the batch",
        "Your layernorm_forward averages over the examples (axis 0), one mean per feature: that "
        "is batch normalization. Layer norm takes the mean and variance of each example over its "
        "own D features (axis 1), so a batch of one works and nothing depends on the other examples.",
        Reading("norm-family", "The idea: the same normalization, over different values"),
        _CONV,
        _LN,
        numpy=cv.LayernormOverBatch,
    ),
    Mistake(
        "layernorm_unbiased_variance",
        "the unbiased variance used in layer norm",
        "You divided each example's squared deviations by D - 1: the outputs are a little too "
        "small (by sqrt((D-1)/D)). Layer norm normalizes with the biased variance (divide by D), "
        "and it has no running variance that would want the unbiased one.",
        Reading("norm-family", "The idea: the same normalization, over different values"),
        _CONV,
        _LN,
        numpy=cv.LayernormUnbiasedVariance,
    ),
    Mistake(
        "layernorm_running_statistics",
        "running statistics in layer norm",
        "You normalized with running averages of the mean and variance (started at 0 and 1 and "
        "moved by momentum towards the example's statistics), as batch norm does for "
        "evaluation. Layer norm has no running statistics: every example is normalized with its "
        "own mean and variance, in training and evaluation alike.",
        Reading("norm-family", "The idea: the same normalization, over different values"),
        _CONV,
        _LN,
        numpy=cv.LayernormRunningStatistics,
    ),
    Mistake(
        "groupnorm_groups_interleaved",
        "groups split along the wrong axis",
        "You reshaped (N, C, ...) to (N, C/G, G, ...) and normalized over the C/G axis, so "
        "channel c lands in group c % G: the groups interleave. A group is C/G CONSECUTIVE "
        "channels: reshape to (N, G, C/G, ...), or to (N*G, -1), and normalize each row.",
        Reading("norm-family", "Layer norm and instance norm are group norm"),
        _CONV,
        _GN,
        numpy=cv.GroupnormGroupsInterleaved,
    ),
    Mistake(
        "norm_dx_missing_mean_path",
        "the mean's path missing from dx",
        "Your dx leaves out the gradient that flows through the mean: the term -mean(dx_hat) "
        "(over the same m values the forward pass averaged) is missing, and dx no longer sums to "
        "zero over them.",
        Reading("norm-family", "The backward pass, with the axes swapped"),
        _CONV,
        _BN2D + _LN + _GN,
        numpy=cv.NormDxMissingMeanPath,
    ),
    Mistake(
        "norm_dx_missing_variance_path",
        "the variance's path missing from dx",
        "Your dx leaves out the gradient that flows through the variance: the term "
        "-x_hat * mean(dx_hat * x_hat) (over the same m values the forward pass averaged, "
        "times 1 / sqrt(var + eps)) is missing.",
        Reading("norm-family", "The backward pass, with the axes swapped"),
        _CONV,
        _BN2D + _LN + _GN,
        numpy=cv.NormDxMissingVariancePath,
    ),
)

_BY_NAME = {m.name: m for m in MISTAKES}
if len(_BY_NAME) != len(MISTAKES):
    raise RuntimeError("two mistakes share a name")


def by_name(name: str) -> Mistake:
    """The mistake called ``name``; ``KeyError`` names the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no mistake called {name!r}; known: {sorted(_BY_NAME)}") from None


def for_assignment(assignment: str, names: tuple[str, ...] | None = None) -> list[Mistake]:
    """The mistakes of ``assignment`` (that replace one of ``names``, when given), in catalogue order."""
    return [
        m
        for m in MISTAKES
        if assignment in m.assignments and (names is None or set(m.overrides) & set(names))
    ]
