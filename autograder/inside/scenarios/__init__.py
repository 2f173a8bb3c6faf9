r"""The scenarios behind the hidden tests: what each graded check does with a student's code.

A *scenario* calls the student's functions (looked up by name in the notebook's namespace) on
challenge inputs drawn from a seed (:mod:`autograder.inside.inputs`), and keeps what came back
as a :class:`Record`: named float64 arrays, plus small JSON *facts* (an exception the student's
code raised, the keys of a state_dict, the devices of the outputs, which forbidden functions
ran during the student's calls...). A scenario never judges: the trusted side
(:mod:`autograder.judging`) replays the same scenario, with the same seed, on bnlib's
reference and on each known wrong variant, and compares.

One module per assignment registers its scenarios (:mod:`.bn_numpy_forward`,
:mod:`.bn_numpy_backward`, :mod:`.bn_torch`, :mod:`.bn_conv`) in :data:`SCENARIOS`, through the registry
(:mod:`.registry`); a :class:`~autograder.inside.trial.Trial` calls the student's code and
watches it (:mod:`autograder.inside.watch`, on the policy of :mod:`autograder.inside.policy`).

This package runs INSIDE the grading sandbox, in the student's process: it imports only NumPy
and the standard library (torch only inside the ``bn-torch`` scenarios, never bnlib).

Stable API (used by :mod:`autograder.inside.probe`, :mod:`autograder.judging` and the autograder):

``SCENARIOS: dict[str, Scenario]``
    every check, by id. The id is the nbgrader ``grade_id`` of the hidden test cell.
``run(check_id, namespace, seed, options=None) -> Record``
    run one check on the functions in ``namespace`` (a notebook's ``globals()``); never raises
    because of the student's code.
``Record(arrays, facts)``, ``Record.save(directory, check_id)``, ``Record.load(directory, check_id)``
    ``<check_id>.npz`` (loaded with ``allow_pickle=False``) and ``<check_id>.json``.

Facts every record may carry (scenario-specific ones are documented with each assignment's module):

- ``error``: ``{"call", "type", "message"}``: the student's code raised (the scenario stops there);
- ``missing``: a name the check needs that the notebook does not define;
- ``calls``: ``{array_key: "how it was computed"}``, for the feedback;
- ``types``: ``{array_key: type name}`` for results that were not arrays (or tensors);
- ``modified``: arguments the student's code changed in place;
- ``foreign``: dotted names of the forbidden functions that ran during the student's calls
  (bnlib, torch in NumPy assignments, normalization kernels, or autograd inside the student's
  backward in ``bn-torch``), as :func:`autograder.inside.policy.rule` decides;
- ``globals``: ``{name: origin}``, the global names the student's functions use that are bound
  to such things.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autograder.inside.inputs import rng
from autograder.inside.record import Record, shorten
from autograder.inside.scenarios import bn_conv, bn_numpy_backward, bn_numpy_forward, bn_torch  # noqa: F401 - they register
from autograder.inside.scenarios.registry import SCENARIOS, Scenario, registrar
from autograder.inside.trial import Missing, StudentCodeFailed, Trial

__all__ = ["Record", "Scenario", "SCENARIOS", "run", "registrar"]


def run(
    check_id: str,
    namespace: Mapping[str, Any],
    seed: int,
    options: Mapping[str, Any] | None = None,
) -> Record:
    """Run check ``check_id`` on the functions in ``namespace`` with inputs drawn from ``seed``.

    Never raises because of the student's code: a failure is recorded as the ``error`` fact (a
    missing function as ``missing``).

    Args:
        check_id: a key of :data:`SCENARIOS`.
        namespace: the notebook's ``globals()`` (or any mapping of the student's names).
        seed: the seed of the challenge inputs.
        options: ``{"device": "cuda" | "cpu" | "meta"}`` for the device check. Default: CUDA
            if present, else the meta device.

    Raises:
        KeyError: for an unknown ``check_id``.
    """
    sc = SCENARIOS[check_id]
    trial = Trial(namespace, sc.family, options or {}, sc.backward_of)
    try:
        sc.body(trial, rng(seed, check_id))
    except Missing:
        pass
    except StudentCodeFailed as failed:
        exc = failed.exc
        trial.record.facts["error"] = {
            "call": failed.call,
            "type": type(exc).__name__ if isinstance(exc, BaseException) else "Error",
            "message": shorten(str(exc)),
        }
    return trial.finish()
