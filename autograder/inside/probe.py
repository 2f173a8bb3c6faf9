r"""The call in every hidden test cell: ``check(check_id, globals())``.

A graded hidden test cell of the course's notebooks reads::

    '''Check that bn_forward_train normalizes with the batch mean and the biased variance.'''
    ### BEGIN HIDDEN TESTS
    from autograder.inside.probe import check; check("forward_train_output", globals())
    ### END HIDDEN TESTS

:func:`check` runs that check's scenario (:mod:`autograder.inside.scenarios`) on the student's functions
and then does one of two things.

**Channel mode** (the autograder's sandbox sets ``BNGRADE_CHANNEL=<dir>`` and
``BNGRADE_SEED=<int>``): it writes ``<dir>/<check_id>.npz`` and ``<dir>/<check_id>.json`` and
returns. It never raises for a wrong answer: nothing the student's process concludes counts. The
trusted side (:func:`autograder.judging.verdict`) replays the scenario on bnlib with the same seed,
compares, and writes the verdict into the cell's outputs itself. Patching ``np.allclose``, assert
helpers, ``torch.testing`` or bnlib inside the notebook changes nothing there: the only way to
pass is to return the right numbers.

**Local mode** (no channel; ``nbgrader validate``, plain ``nbgrader autograde``, a student's own
run of the solution notebook): it uses the fixed seed :data:`LOCAL_SEED`, calls the judge in
the same process and raises :class:`CheckFailed` (an ``AssertionError``) with the judge's
message, so plain nbgrader grades the same notebooks the same way. This mode trusts the
student's process (a notebook that monkeypatches NumPy can fool it); grade a class with the
autograder's sandbox, which uses channel mode.

Runs inside the sandbox: imports only the standard library and :mod:`autograder.inside.scenarios` at
import time (the judge, and with it bnlib, only in local mode, which never runs in the sandbox).
"""

from __future__ import annotations

import inspect
import os
import textwrap
from collections.abc import Mapping
from typing import Any

from autograder.inside import scenarios

__all__ = ["check", "CheckFailed", "LOCAL_SEED", "CHANNEL_ENV", "SEED_ENV"]

#: Environment variable naming the directory where records go (channel mode).
CHANNEL_ENV = "BNGRADE_CHANNEL"
#: Environment variable holding the seed of the challenge inputs (channel mode).
SEED_ENV = "BNGRADE_SEED"
#: The seed used without a channel.
LOCAL_SEED = 2015


class CheckFailed(AssertionError):
    """A hidden check failed (local mode). Shows its message alone, without a traceback.

    IPython renders an exception through ``_render_traceback_`` when it has one: the output
    then carries the feedback and none of the hidden test's code.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"] if str(self) else [type(self).__name__]


def check(check_id: str, namespace: Mapping[str, Any]) -> None:
    """Run the hidden check ``check_id`` on the functions defined in ``namespace``.

    Args:
        check_id: the test cell's nbgrader ``grade_id`` (a key of ``scenarios.SCENARIOS``).
        namespace: the notebook's ``globals()``.

    Raises:
        CheckFailed: in local mode, when the check fails (the message says why and where to read).
        KeyError: for a check id that no scenario has (a broken notebook, not a student's mistake).
    """
    if check_id not in scenarios.SCENARIOS:
        raise KeyError(f"no hidden check is called {check_id!r}; known: {sorted(scenarios.SCENARIOS)}")
    channel = os.environ.get(CHANNEL_ENV)
    if channel:
        _channel(check_id, namespace, channel)
    else:
        _local(check_id, namespace)


def _channel(check_id: str, namespace: Mapping[str, Any], channel: str) -> None:
    try:
        seed = int(os.environ.get(SEED_ENV, ""))
    except ValueError:
        raise RuntimeError(f"{CHANNEL_ENV} is set but {SEED_ENV} is not an integer") from None
    try:
        record = scenarios.run(check_id, namespace, seed)
    except Exception as exc:  # a bug of ours, or a namespace too broken to inspect
        record = scenarios.Record(facts={"probe_error": f"{type(exc).__name__}: {exc}"[:400]})
    record.save(channel, check_id)


def _local(check_id: str, namespace: Mapping[str, Any]) -> None:
    record = scenarios.run(check_id, namespace, LOCAL_SEED)
    from autograder import judging  # noqa: PLC0415 - the trusted side: local mode only, never in a sandbox

    source = student_source(namespace, scenarios.SCENARIOS[check_id].targets)
    verdict = judging.verdict(check_id, record, LOCAL_SEED, source)
    if not verdict.passed:
        raise CheckFailed(verdict.message) from None


def student_source(namespace: Mapping[str, Any], names: tuple[str, ...]) -> str:
    """The source of the student's functions and classes ``names`` (local mode's best knowledge).

    The autograder reads the student's cells from the notebook instead
    (:func:`autograder.notebook.student_source`).
    """
    parts = []
    for name in names:
        obj = namespace.get(name) if hasattr(namespace, "get") else None
        if obj is None:
            continue
        if isinstance(obj, type):  # a notebook's class has no file: rebuild it from its methods
            methods = []
            for value in vars(obj).values():
                try:
                    methods.append(textwrap.dedent(inspect.getsource(getattr(value, "__func__", value))))
                except (OSError, TypeError):
                    continue
            body = textwrap.indent("\n".join(methods), "    ") if methods else "    pass"
            parts.append(f"class {obj.__name__}:\n{body}")
            continue
        try:
            parts.append(textwrap.dedent(inspect.getsource(obj)))
        except (OSError, TypeError):
            continue
    return "\n\n".join(parts)
