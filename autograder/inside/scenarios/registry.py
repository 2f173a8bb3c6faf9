r"""The registry of scenarios: one :class:`Scenario` per graded behaviour, by check id.

Each assignment's module (:mod:`~autograder.inside.scenarios.bn_numpy_forward`, ...) registers
its scenarios with the decorator that :func:`registrar` makes for it; importing
:mod:`autograder.inside.scenarios` imports them all.

This module runs INSIDE the sandbox: the standard library and NumPy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from autograder.inside.policy import FAMILIES
from autograder.inside.trial import Trial

__all__ = ["Scenario", "SCENARIOS", "registrar"]


@dataclass(frozen=True)
class Scenario:
    """One graded behaviour.

    Attributes:
        check_id: the hidden test cell's ``grade_id``.
        assignment: the assignment whose notebook grades it (``"bn-numpy-forward"``, ...).
        family: ``"numpy"`` or ``"torch"`` (which delegation policy applies).
        targets: the student's names this check exercises (for delegation and mistakes).
        behaviour: one line, "what this check wants", used in the feedback.
        body: ``body(trial, rng)``: calls the student's code through the
            :class:`~autograder.inside.trial.Trial` on inputs drawn from ``rng``.
        rtol: largest relative error (max-norm, per array) that passes. Default: 1e-6
        compare_facts: facts that must equal the reference's. Default: none.
        pure: arguments must not be changed in place. Default: False
        same_arrays: pairs of the student's own arrays that must agree with each other (the
            reference is not consulted for these). Default: none.
        backward_of: the target class whose ``backward`` must be written by hand: autograd
            used inside it is delegation. Default: none.

    Arrays whose key starts with ``diag_`` are diagnostics: the judge does not grade them (it
    uses them to explain a failure, e.g. a wrong forward pass under a backward check).
    """

    check_id: str
    assignment: str
    family: str
    targets: tuple[str, ...]
    behaviour: str
    body: Callable[[Trial, np.random.Generator], None]
    rtol: float = 1e-6
    compare_facts: tuple[str, ...] = ()
    pure: bool = False
    same_arrays: tuple[tuple[str, str], ...] = ()
    backward_of: str = ""


#: Every check, by id (the hidden test cell's ``grade_id``).
SCENARIOS: dict[str, Scenario] = {}


def registrar(assignment: str, family: str) -> Callable[..., Callable]:
    """The decorator that registers the scenarios of ``assignment``.

    ``@scenario(check_id, targets, behaviour, **options)`` above a body registers it as the
    scenario of ``check_id``; ``options`` are the other fields of :class:`Scenario`.

    Raises:
        ValueError: for an unknown family, or (when used) a check id registered twice, or a
            ``backward_of`` that is not one of the targets.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; the families are {FAMILIES}")

    def scenario(check_id: str, targets: tuple[str, ...], behaviour: str, **options: Any) -> Callable:
        def register(body: Callable[[Trial, np.random.Generator], None]) -> Callable:
            if check_id in SCENARIOS:
                raise ValueError(f"two scenarios for check {check_id!r}")
            sc = Scenario(check_id, assignment, family, tuple(targets), behaviour, body, **options)
            if sc.backward_of and sc.backward_of not in sc.targets:
                raise ValueError(f"check {check_id!r}: backward_of {sc.backward_of!r} is not one of its targets")
            SCENARIOS[check_id] = sc
            return body

        return register

    return scenario
