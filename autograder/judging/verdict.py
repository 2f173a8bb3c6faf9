r"""The verdict on one check: what the probe saw in the student's notebook, against bnlib.

TRUSTED SIDE ONLY (it imports bnlib, which the sandbox hides).

How a verdict is reached (:func:`verdict`):

1. No record: the check did not run; 0 for this part, and the message says so.
2. Delegation (:mod:`autograder.judging.delegation`): the check's functions (or helpers they
   call) use bnlib, a library's normalization kernel, torch in a NumPy assignment, or autograd
   inside the hand-written backward, in the source or at run time. 0 for this part, and the
   message says why.
3. The scenario is replayed on bnlib's reference with the same seed
   (:mod:`autograder.judging.replay`) and the records are compared
   (:mod:`autograder.judging.compare`): arrays in float64 with a relative tolerance on the max
   norm (``Scenario.rtol``: ``1e-6``, or ``1e-4`` where eps's placement must not matter because
   another check grades it); facts listed in ``Scenario.compare_facts`` must be equal. Correct
   implementations (two-pass or one-pass variance, staged or fused, any cache layout) agree to
   about ``1e-12``; every catalogued mistake is off by far more (``tests/test_mistakes.py``).
4. On a failure, the wrong variants of :mod:`autograder.course.mistakes` that touch the check's
   functions are replayed; the first whose results match the student's names the mistake
   (:mod:`autograder.judging.naming`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autograder.course.mistakes import Reading
from autograder.course.spec import READING
from autograder.inside.scenarios import SCENARIOS, Record
from autograder.judging.compare import problems
from autograder.judging.delegation import delegation
from autograder.judging.naming import name_mistake
from autograder.judging.replay import reference_record

__all__ = ["Verdict", "verdict"]

#: The differences a failed check quotes; more are counted.
_SHOWN = 3


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check.

    Attributes:
        passed: full points for this part.
        message: the feedback (empty when passed): what the check wants, what came back, what
            that looks like and where to read. Plain text.
        mistake: the name of the matching :class:`autograder.course.mistakes.Mistake`, if one matched.
        delegated: the part scored 0 because the code delegated to a library.
    """

    passed: bool
    message: str = ""
    mistake: str | None = None
    delegated: bool = False


def verdict(
    check_id: str,
    record: Record | None,
    seed: int,
    student_source: str = "",
    options: Mapping[str, Any] | None = None,
) -> Verdict:
    """Judge one check. See the module docstring for the steps.

    Args:
        check_id: the hidden test cell's ``grade_id`` (a key of ``SCENARIOS``).
        record: what the probe wrote for this check (``Record.load(channel_dir, check_id)``),
            or ``None`` when the check never ran (a timeout, a crash, a deleted cell).
        seed: the seed the sandbox was given.
        student_source: the student's code (:func:`autograder.notebook.student_source` of the
            submitted notebook), to spot delegation in it. Default: "" (run-time facts only).
        options: the scenario's options (``{"device": ...}``). Default: those the record names.

    Raises:
        KeyError: for an unknown ``check_id``.
        RuntimeError: if bnlib's reference itself fails the scenario (a bug of the course).
    """
    sc = SCENARIOS[check_id]
    want = f"This check wants: {sc.behaviour}."
    if record is None:
        return Verdict(
            False,
            f"{want}\nThis check did not run to the end: the notebook stopped before it (an error "
            "that ended the kernel, a time limit, or a cell that was deleted), so it scores 0.",
        )
    facts = record.facts
    if "probe_error" in facts:
        return Verdict(False, f"{want}\nThe check could not inspect your notebook: {facts['probe_error']}")

    reason = delegation(sc, record, student_source)
    if reason:
        return Verdict(
            False,
            f"{want}\n{reason}\nThe point of this assignment is to compute batch norm yourself, "
            "so this part scores 0 (whatever the numbers).",
            delegated=True,
        )
    if "missing" in facts:
        name = facts["missing"]
        return Verdict(
            False,
            f"{want}\n`{name}` is not defined when this check runs. Keep the name and the "
            "signature given in the notebook, and make sure its cell runs without error.",
        )

    options = dict(options or {})
    if "device" in facts and "device" not in options:
        options["device"] = _replay_device(str(facts["device"]))
    ref = reference_record(check_id, sc.assignment, seed, options)
    wrong, diag = problems(sc, record, ref)
    if not wrong:
        return Verdict(True, "")

    unfinished = facts.get("error", {}).get("type") == "NotImplementedError"
    mistake = None if unfinished else name_mistake(sc, record, ref, seed, options)
    lines = [want, *wrong[:_SHOWN]]
    if len(wrong) > _SHOWN:
        lines.append(f"(and {len(wrong) - _SHOWN} more differences of the same kind)")
    if diag:
        lines.append(diag)
    if mistake is not None:
        lines.append(f"This looks like {mistake.title}. {mistake.looks_like}")
        lines.append(f"Reread {mistake.read}.")
    else:
        lines.append(f"Reread {_reading(check_id)}.")
    return Verdict(False, "\n".join(lines), mistake=mistake.name if mistake else None)


def _reading(check_id: str) -> Reading:
    """Where to read when no catalogued mistake matches."""
    stem, section = READING.get(check_id, ("assignments", "The graded notebooks"))
    return Reading(stem, section)


def _replay_device(device: str) -> str:
    """The device to replay a device check on: CUDA where this machine has it, else the CPU."""
    if device == "cuda":
        import torch  # noqa: PLC0415 - only a device check recorded on CUDA needs torch here

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
