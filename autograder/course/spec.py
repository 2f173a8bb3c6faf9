"""The course's contract: its assignments in course order, what students write in each, and the chapter map.

This is the one place these are written down. The release, the grader, the judge, the
feedback and the tests all read them from here; the notebooks in ``solutions/`` implement
the graded names, and the book's chapters are the stems of :data:`CHAPTERS`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Assignment", "COURSE", "ASSIGNMENTS", "INTERFACE", "CHAPTERS", "READING", "VISIBLE", "COURSE_ID",
           "assignment", "kind_of"]

#: nbgrader's course id, in every gradebook the course makes.
COURSE_ID = "batch-normalization"


@dataclass(frozen=True)
class Assignment:
    """One graded notebook.

    Attributes:
        name: the nbgrader assignment (``solutions/<name>/<name>.ipynb``).
        kind: which packages its sandbox offers: ``"numpy"`` (NumPy only) or ``"torch"``
            (NumPy and PyTorch).
        names: what students implement; the hidden tests call these names.
    """

    name: str
    kind: str
    names: tuple[str, ...]


#: The assignments, in course order.
COURSE: tuple[Assignment, ...] = (
    Assignment("bn-numpy-forward", "numpy", ("bn_forward_train", "bn_forward_eval", "update_running_stats")),
    Assignment("bn-numpy-backward", "numpy", ("bn_forward_train", "bn_backward_staged", "bn_backward_compact")),
    Assignment("bn-torch", "torch", ("BatchNormFunction", "BatchNorm1d")),
    Assignment("bn-conv", "numpy", ("batchnorm2d_forward_train", "batchnorm2d_backward", "layernorm_forward",
                                    "layernorm_backward", "groupnorm_forward", "groupnorm_backward")),
)
#: Their names, in course order.
ASSIGNMENTS: tuple[str, ...] = tuple(a.name for a in COURSE)
#: The names students implement in each assignment.
INTERFACE: dict[str, tuple[str, ...]] = {a.name: a.names for a in COURSE}


def assignment(name: str) -> Assignment:
    """The assignment called ``name``; a KeyError that lists the course's for any other name."""
    for a in COURSE:
        if a.name == name:
            return a
    raise KeyError(f"unknown assignment {name!r}; the assignments are {', '.join(ASSIGNMENTS)}")


def kind_of(name: str) -> str:
    """Which packages an assignment's sandbox offers: 'torch' or 'numpy'."""
    return assignment(name).kind


#: The book's chapters that feedback and notebooks point to: ``book/<stem>.md`` -> title.
CHAPTERS: dict[str, str] = {
    "idea": "The idea",
    "batch-mean": "The batch mean",
    "batch-variance": "The batch variance",
    "normalize": "Normalization",
    "scale-shift": "Scale and shift",
    "backward": "The backward pass",
    "mini-batches": "Why mini-batch statistics",
    "inference": "Inference: running statistics",
    "train-eval": "train() and eval()",
    "convolutions": "Batch norm for convolutions",
    "norm-family": "The normalization family",
    "assignments": "The graded notebooks",
}

#: Where to read when a check fails and no catalogued mistake matches: chapter stem and section.
READING: dict[str, tuple[str, str]] = {
    "forward_train_output": ("normalize", "The normalization"),
    "forward_train_eps": ("normalize", "What eps protects against"),
    "forward_eval_output": ("inference", "Normalizing with the running statistics"),
    "forward_eval_eps": ("normalize", "What eps protects against"),
    "running_mean": ("inference", "Running averages"),
    "running_var_unbiased": ("inference", "The unbiased running variance"),
    "running_momentum": ("inference", "PyTorch's momentum and Keras' momentum"),
    "running_stats_new_arrays": ("inference", "Running averages"),
    "backward_uses_cache": ("backward", "What the forward pass keeps"),
    **{f"{which}_{grad}": ("backward", "The computational graph")
       for which in ("backward_staged", "backward_compact", "function_backward") for grad in ("dx", "dgamma", "dbeta")},
    "function_forward": ("normalize", "The normalization"),
    "module_train_output": ("train-eval", "The module"),
    "module_ncl": ("batch-mean", "Inputs of shape (N, C, L)"),
    "module_running_mean": ("inference", "Running averages"),
    "module_running_var": ("inference", "The unbiased running variance"),
    "module_momentum": ("inference", "PyTorch's momentum and Keras' momentum"),
    "module_cumulative_average": ("inference", "momentum=None: the cumulative average"),
    "module_num_batches_tracked": ("inference", "momentum=None: the cumulative average"),
    "module_eval_output": ("inference", "Normalizing with the running statistics"),
    "module_eval_keeps_stats": ("train-eval", "What eval() changes"),
    "module_options": ("train-eval", "Without running statistics"),
    "module_state_dict": ("train-eval", "Parameters, buffers and the state_dict"),
    "module_backward": ("backward", "In PyTorch"),
    "module_device": ("train-eval", "Devices"),
    # bn-conv: the math lives in the assignments page until its chapters exist
    "bn2d_forward_output": ("convolutions", "The equations, per channel"),
    "bn2d_forward_eps": ("convolutions", "The equations, per channel"),
    **{f"{norm}_backward_{grad}": ("norm-family", "The backward pass, with the axes swapped")
       for norm in ("bn2d", "ln", "gn") for grad in ("dx", "dgamma", "dbeta")},
    "ln_forward_output": ("norm-family", "The idea: the same normalization, over different values"),
    "gn_forward_output": ("norm-family", "Layer norm and instance norm are group norm"),
}

#: Each hidden check's visible counterparts: the test cells (by ``grade_id``) in which a student
#: checks the same behaviour on other inputs. Every hidden check has at least one
#: (``tests/test_notebooks.py`` fails for a hidden check without one).
VISIBLE: dict[str, tuple[str, ...]] = {
    # bn-numpy-forward
    "forward_train_output": ("test_forward_train_shapes", "test_forward_train_by_hand", "test_forward"),
    "forward_train_eps": ("test_forward_train_eps",),
    "forward_eval_output": ("test_forward_eval",),
    "forward_eval_eps": ("test_forward_eval_eps",),
    "running_mean": ("test_update_running_stats",),
    "running_var_unbiased": ("test_update_running_stats",),
    "running_momentum": ("test_running_momentum",),
    "running_stats_new_arrays": ("test_update_running_stats",),
    # bn-numpy-backward
    **{f"backward_staged_{grad}": ("test_backward_staged",) for grad in ("dx", "dgamma", "dbeta")},
    **{f"backward_compact_{grad}": ("test_backward_compact",) for grad in ("dx", "dgamma", "dbeta")},
    "backward_uses_cache": ("test_backward_cache",),
    # bn-torch
    "function_forward": ("test_function",),
    **{f"function_backward_{grad}": ("test_function",) for grad in ("dx", "dgamma", "dbeta")},
    "module_train_output": ("test_module",),
    "module_ncl": ("test_module",),
    "module_running_mean": ("test_module",),
    "module_running_var": ("test_module",),
    "module_momentum": ("test_module",),
    "module_cumulative_average": ("test_module_options",),
    "module_num_batches_tracked": ("test_module", "test_module_eval"),
    "module_eval_output": ("test_module", "test_module_eval"),
    "module_eval_keeps_stats": ("test_module_eval",),
    "module_options": ("test_module_options",),
    "module_state_dict": ("test_module",),
    "module_backward": ("test_module",),
    "module_device": ("test_module_device",),
    # bn-conv
    "bn2d_forward_output": ("test_bn2d_forward",),
    "bn2d_forward_eps": ("test_bn2d_forward_eps",),
    "ln_forward_output": ("test_ln_forward",),
    "gn_forward_output": ("test_gn_forward",),
    **{f"{norm}_backward_{grad}": (f"test_{norm}_backward",)
       for norm in ("bn2d", "ln", "gn") for grad in ("dx", "dgamma", "dbeta")},
}
